"""Routing rules: which queue, team, category and priority a new ticket gets.

Rules are tried in order; the first that matches decides, unless it says `proceed`
(then later rules may add what it left unset). A rule matches when every condition it
names holds: the recipient address (envelope or To/Cc, plus-detail ignored unless the
rule names one), the intake it came through, the sender's address or domain, words or a
regular expression in the subject and the new text. Words match accent- and
case-insensitively as whole words or phrases, so `sangrado` finds "SANGRADO" and
"sangrádo".

Matching is pure; `apply_route` sets the result on a ticket that ingest is opening.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache

from sqlalchemy.orm import Session

from tickets.addresses import base_address
from tickets.lifecycle import record
from tickets.models import Ticket
from tickets.priority import PriorityMatrix

# Seed 001: an urgent emergency is "pain and/or bleeding", and must not wait in the
# general queue. Spanish first, English too; inflections written out.
URGENT_WORDS = (
    "sangrado",
    "sangrando",
    "sangra",
    "hemorragia",
    "dolor intenso",
    "dolor fuerte",
    "mucho dolor",
    "emergencia",
    "urgencia medica",
    "bleeding",
    "severe pain",
    "emergency",
)


@dataclass(frozen=True)
class Actions:
    """What a matching rule sets on the new ticket (None: leave as is)."""

    team: str | None = None
    category: str | None = None
    priority: str | None = None
    impact: str | None = None
    urgency: str | None = None
    level: int | None = None
    assignee: str | None = None
    language: str | None = None
    tags: tuple[str, ...] = ()
    acknowledge: bool | None = None  # False: no acknowledgement to the customer

    def under(self, earlier: Actions) -> Actions:
        """These actions where `earlier` (a rule that matched first) left a value unset."""
        merged = {
            f.name: getattr(earlier, f.name)
            if getattr(earlier, f.name) not in (None, ())
            else getattr(self, f.name)
            for f in fields(self)
        }
        merged["tags"] = tuple(dict.fromkeys((*earlier.tags, *self.tags)))
        return replace(self, **merged)


@dataclass(frozen=True)
class Rule:
    name: str
    actions: Actions
    to: frozenset[str] = frozenset()  # addresses; a plus-detail only when given
    sources: frozenset[str] = frozenset()  # "smtp", "lmtp", "imap:<mailbox>", "pipe", …
    senders: frozenset[str] = frozenset()  # addresses, or "@domain"
    words: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None
    proceed: bool = False  # let later rules fill what this one leaves unset

    def matches(self, mail: Incoming) -> bool:
        return (
            (not self.to or _addressed_to(self.to, mail.recipients))
            and (not self.sources or mail.source in self.sources)
            and (not self.senders or _sent_by(self.senders, mail.sender))
            and (not self.words or _has_words(self.words, mail.searchable))
            and (self.regex is None or bool(self.regex.search(mail.searchable)))
        )


@dataclass(frozen=True)
class Incoming:
    """What the rules look at in one mail."""

    recipients: tuple[str, ...]
    source: str
    sender: str
    subject: str
    text: str
    searchable: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "searchable", fold(f"{self.subject}\n{self.text}"))


@dataclass(frozen=True)
class Routed:
    actions: Actions
    rules: tuple[str, ...]  # the names of the rules that matched, in order


def route(rules: Sequence[Rule], mail: Incoming) -> Routed:
    actions = Actions()
    matched: list[str] = []
    for rule in rules:
        if not rule.matches(mail):
            continue
        actions = rule.actions.under(actions) if matched else rule.actions
        matched.append(rule.name)
        if not rule.proceed:
            break
    return Routed(actions, tuple(matched))


def urgent_rule() -> Rule:
    """The shipped rule for seed 001's urgent emergencies."""
    return Rule(
        name="urgent_emergency",
        actions=Actions(category="urgent_emergency", priority="P1", tags=("urgente",)),
        words=URGENT_WORDS,
        proceed=True,  # an address rule below still picks the queue
    )


class _Combining(dict[int, int | None]):
    """A `str.translate` table that drops combining marks, filled as characters are met:
    the text is walked in C, not one Python call per character."""

    def __missing__(self, code: int) -> int | None:
        kept = None if unicodedata.combining(chr(code)) else code
        self[code] = kept
        return kept


_STRIP_MARKS = _Combining()


def fold(text: str) -> str:
    """Lower case without accents: "Sangrádo" → "sangrado"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return decomposed if decomposed.isascii() else decomposed.translate(_STRIP_MARKS)


def compile_words(words: Iterable[str]) -> tuple[str, ...]:
    return tuple(" ".join(fold(w).split()) for w in words if w.strip())


def _has_words(words: tuple[str, ...], searchable: str) -> bool:
    return any(
        first in searchable and pattern.search(searchable) for first, pattern in _patterns(words)
    )


@lru_cache(maxsize=256)
def _patterns(words: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Each word's pattern, compiled once, after its first word: a plain substring test
    (in C) rules out most of them before a pattern is tried."""
    return tuple(((w.split() or [""])[0], re.compile(_phrase(w))) for w in words)


def _phrase(word: str) -> str:
    """A whole word or phrase; any run of spaces between its words."""
    spaced = r"\s+".join(re.escape(part) for part in word.split())
    return rf"(?<!\w){spaced}(?!\w)"


def _addressed_to(wanted: frozenset[str], recipients: tuple[str, ...]) -> bool:
    for address in recipients:
        email = address.strip().lower()
        if email in wanted or base_address(email) in wanted:
            return True
    return False


def _sent_by(wanted: frozenset[str], sender: str) -> bool:
    email = sender.strip().lower()
    return email in wanted or f"@{email.partition('@')[2]}" in wanted


def apply_route(
    session: Session, ticket: Ticket, routed: Routed, matrix: PriorityMatrix, actor: str
) -> None:
    """Set what the matching rules decided on a ticket being opened, with one history
    event naming the rules (so an agent sees why a ticket sits where it does)."""
    if not routed.rules:
        return
    a = routed.actions
    if a.impact and a.urgency and not a.priority:
        ticket.impact, ticket.urgency, ticket.priority = matrix.priority(a.impact, a.urgency)
    for name in ("team", "category", "priority", "level", "assignee", "language"):
        value = getattr(a, name)
        if value is not None:
            setattr(ticket, name, value)
    ticket.tags = list(dict.fromkeys([*(ticket.tags or []), *a.tags]))
    record(
        session,
        ticket,
        "routed",
        actor,
        rules=list(routed.rules),
        tags=list(a.tags),
        acknowledge=a.acknowledge is not False,
    )
