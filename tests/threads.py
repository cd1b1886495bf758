"""How mail clients group messages into conversations, to check invariant 8 from the
outside: Gmail's rule and JWZ threading (Thunderbird, mutt). Plain functions over
parsed messages; used by tests/test_agent_mail.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.message import EmailMessage

_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|rv|aw)\s*:\s*)+", re.IGNORECASE)
_ID = re.compile(r"<([^<>\s]+)>")


def normalised_subject(msg: EmailMessage) -> str:
    """The subject less its Re:/Fwd: prefixes, as Gmail compares it."""
    return " ".join(_PREFIX.sub("", str(msg["Subject"] or "")).split())


def message_id(msg: EmailMessage) -> str:
    found = _ID.findall(str(msg["Message-ID"] or ""))
    return found[0] if found else ""


def parents(msg: EmailMessage) -> list[str]:
    """References, then In-Reply-To's id when it is not the last reference (JWZ step 1)."""
    refs = _ID.findall(str(msg["References"] or ""))
    reply = _ID.findall(str(msg["In-Reply-To"] or ""))
    if reply and (not refs or refs[-1] != reply[0]):
        refs.append(reply[0])
    return refs


def gmail_conversations(messages: Sequence[EmailMessage]) -> list[set[str]]:
    """Gmail's rule: two mails are one conversation when their subjects match (less
    Re:/Fwd:) and one names the other, or they name a common ancestor, in References or
    In-Reply-To. Returns the conversations as sets of Message-IDs."""
    ids = [message_id(m) for m in messages]
    group = {mid: mid for mid in ids}

    def root(mid: str) -> str:
        while group[mid] != mid:
            mid = group[mid]
        return mid

    for i, a in enumerate(messages):
        for j in range(i + 1, len(messages)):
            b = messages[j]
            if normalised_subject(a) != normalised_subject(b):
                continue
            known_a = {ids[i], *parents(a)}
            known_b = {ids[j], *parents(b)}
            if known_a & known_b:
                group[root(ids[j])] = root(ids[i])
    conversations: dict[str, set[str]] = {}
    for mid in ids:
        conversations.setdefault(root(mid), set()).add(mid)
    return list(conversations.values())


def jwz_roots(messages: Sequence[EmailMessage]) -> list[set[str]]:
    """JWZ threading (steps 1–4: containers by Message-ID, parents from References and
    In-Reply-To, the root set, empty containers pruned). Returns each root's tree as a
    set of the present messages' Message-IDs."""
    parent: dict[str, str | None] = {}
    present = [message_id(m) for m in messages]

    def ancestor(child: str, of: str) -> bool:  # is `of` already below `child`?
        node: str | None = of
        while node is not None:
            if node == child:
                return True
            node = parent.get(node)
        return False

    for msg, mid in zip(messages, present, strict=True):
        chain = parents(msg)
        for up, down in zip(chain, chain[1:], strict=False):
            parent.setdefault(up, None)
            if parent.get(down) is None and not ancestor(down, up):
                parent[down] = up
        parent.setdefault(mid, None)
        if chain and not ancestor(mid, chain[-1]):
            parent[mid] = chain[-1]  # the message's own parent always wins (JWZ 1C)
    trees: dict[str, set[str]] = {}
    for mid in present:
        node = mid
        while parent.get(node) is not None:
            node = parent[node]  # type: ignore[assignment]
        trees.setdefault(node, set()).add(mid)
    # Pruning (step 4) drops empty containers but keeps their children together under
    # one root when they share it, which is what grouping by the top container gives.
    return list(trees.values())
