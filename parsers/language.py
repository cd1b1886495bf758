"""A cheap language guess: the Content-Language header, else clear Spanish/English markers."""

from __future__ import annotations

import re

# Each word list is led by a look-ahead for the words' first letters: the engine then
# rejects most positions at one character class instead of trying every word there.
_SPANISH = re.compile(
    r"[¿¡ñ]|(?=[abceghnpqst])\b(?:hola|gracias|por favor|buenos d[ií]as|buenas tardes|"
    r"buenas noches|saludos|estimad[oa]s?|atentamente|adjunto|quisiera|necesito|tengo|"
    r"problema|cita)\b",
    re.IGNORECASE,
)
_ENGLISH = re.compile(
    r"(?=[acdhiprtw])\b(?:hello|hi|thanks|thank you|please|regards|dear|the|and|would|could|"
    r"attached|problem|appointment|i am|i'm)\b",
    re.IGNORECASE,
)
_SAMPLE_CHARS = 4000
_MIN_MARGIN = 2  # one stray "the" in a Spanish mail must not flip the verdict


def guess_language(content_language: str, text: str) -> str | None:
    declared = _primary_tag(content_language)
    if declared:
        return declared
    sample = text[:_SAMPLE_CHARS]
    spanish = len(_SPANISH.findall(sample))
    english = len(_ENGLISH.findall(sample))
    if spanish >= english + _MIN_MARGIN or (spanish and not english):
        return "es"
    if english >= spanish + _MIN_MARGIN or (english and not spanish):
        return "en"
    return None


def _primary_tag(header: str) -> str | None:
    """ "es-ES, en" → "es"."""
    first = header.split(",", 1)[0].strip().split("-", 1)[0].split("_", 1)[0].lower()
    return first if first.isalpha() and 2 <= len(first) <= 3 else None
