"""Conversation order for mail the IMAP poller hands to parallel workers.

Two worker processes take stored rows in batches side by side: a reply whose original
is still being processed by the other worker would find no ticket and open one of its
own. So a reply to a mail in flight (stored, not yet final, or itself held back) is not
stored yet: the poller forgets its bytes, keeps its UID, and fetches it again once the
mails it answers are final. Only the header block is read here, never the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from parsers.headers import header_thread_ids


def thread_ids(raw: bytes) -> tuple[str, frozenset[str]]:
    """The mail's own Message-ID ("" when it has none) and the ids it answers
    (In-Reply-To, References), lower-cased."""
    own, answers = header_thread_ids(raw)
    return (own or "").lower(), frozenset(i.lower() for i in answers)


@dataclass
class Held:
    size: int
    answers: frozenset[str]


@dataclass
class ConversationOrder:
    """The Message-IDs in flight, and the replies held back until they are final."""

    ids: dict[int, str] = field(default_factory=dict)  # UID → own id, while in flight
    held: dict[int, Held] = field(default_factory=dict)  # UID → what it waits for
    released: set[int] = field(default_factory=set)  # let go by `due`: never held again

    def hold_replies(self, bodies: dict[int, bytes], sizes: dict[int, int]) -> None:
        """Take out of `bodies` (in UID order) each reply to a mail in flight or to an
        earlier one of the same batch; the rest are in flight from now on."""
        busy = set(self.ids.values())
        for uid in sorted(bodies):
            own, answers = thread_ids(bodies[uid])
            if uid in self.released:
                self.released.discard(uid)
            elif answers & busy:
                del bodies[uid]
                self.held[uid] = Held(sizes.get(uid, 0), answers)
            if own:
                self.ids[uid] = own
                busy.add(own)

    def settled(self, uids: list[int]) -> None:
        for uid in uids:
            self.ids.pop(uid, None)

    def due(self) -> dict[int, int]:
        """Held replies whose originals are all final now (UID → size), released; with
        nothing else in flight, the oldest is released whatever it waits for (a loop of
        forged References must not hold mail for ever)."""
        held_ids = {self.ids[uid] for uid in self.held if uid in self.ids}
        busy = {own for uid, own in self.ids.items() if uid not in self.held}
        ready: dict[int, int] = {}
        for uid in sorted(self.held):
            waits = self.held[uid].answers
            if not waits & busy and not waits & (held_ids - {self.ids.get(uid, "")}):
                ready[uid] = self.held[uid].size
        if not ready and self.held and not busy:
            first = min(self.held)
            ready[first] = self.held[first].size
        for uid in ready:
            del self.held[uid]
            self.ids.pop(uid, None)  # in flight again once fetched and stored
        self.released.update(ready)
        return ready

    def clear(self) -> None:
        self.ids.clear()
        self.held.clear()
        self.released.clear()
