"""Does a customer's answer to a resolved ticket confirm the resolution? Pure (seed 004:
"the ticket is closed after the user confirms the resolution").

Confirmation is read conservatively, because a wrong "yes" closes a ticket whose
problem is still there: the new text must be short, ask nothing, carry no attachment,
contain one of the phrases below and none of the negations. Anything else reopens
the ticket, as any other reply to a resolved ticket does.
"""

from __future__ import annotations

import re
import unicodedata

MAX_WORDS = 20  # "¡Gracias, ya funciona! Saludos, Ana" — not a new description of a problem

# Lower case, without accents; matched as whole words (the README lists them).
CONFIRMATIONS = (
    "si",
    "ya funciona",
    "funciona",
    "ya quedo",
    "quedo",
    "resuelto",
    "solucionado",
    "listo",
    "todo bien",
    "perfecto",
    "confirmo",
    "de acuerdo",
    "gracias",
    "yes",
    "it works",
    "works",
    "working",
    "fixed",
    "solved",
    "resolved",
    "all good",
    "confirmed",
    "thanks",
    "thank you",
    "ok",
)
NEGATIONS = (
    "no",
    "aun",
    "todavia",
    "sigue",
    "siguen",
    "persiste",
    "falla",
    "error",
    "pero",
    "otra vez",
    "nada",
    "not",
    "still",
    "doesn",
    "didn",
    "isn",
    "don",
    "fails",
    "broken",
    "again",
    "but",
)


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w?]+", " ", kept).split())


def _has(text: str, phrases: tuple[str, ...]) -> bool:
    return any(re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text) for p in phrases)


def confirms(text: str, *, attachments: int = 0) -> bool:
    """True when `text` (the new part of the reply) confirms that the problem is solved."""
    plain = _plain(text)
    if not plain or attachments or "?" in plain or len(plain.split()) > MAX_WORDS:
        return False
    return _has(plain, CONFIRMATIONS) and not _has(plain, NEGATIONS)
