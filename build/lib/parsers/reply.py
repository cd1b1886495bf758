"""The new part of a reply: quoted history, reply headers and signatures removed.

mail-parser-reply finds candidate reply headers; our own detectors add what it misses
(its Spanish "escribió:" pattern never matches, nor does "-----Mensaje original-----", nor an
attribution wrapped over several lines) and veto its weak matches: "Para:"/"Fecha:" lines a
patient writes in the body are not an Outlook header block. Signatures are cut only at
unambiguous markers: a farewell such as "Gracias," often starts a real sentence, so it stays.
"""

from __future__ import annotations

import re

from mailparser_reply.parser import EmailMessage

LANGUAGES = ["es", "en"]
_MAX_SCAN_CHARS = 200_000  # reply headers live near the top; never regex a huge body whole
_BLOCK_WINDOW = 6  # an Outlook header block: From/De and its companions within six lines
_ATTRIBUTION_MAX_LINES = 3  # clients wrap long "On … wrote:" lines, at most twice in practice

_LIBRARY_HEADERS = EmailMessage(text="", languages=list(LANGUAGES)).HEADER_REGEX
_ATTRIBUTION = re.compile(r"^(?:on|el)\s.{4,}?[\s>](?:wrote|escribi[oó])\s*:$", re.IGNORECASE)
_ATTRIBUTION_START = re.compile(r"(?:on|el)\s", re.IGNORECASE)
_SEPARATOR = re.compile(
    r"^-{2,}\s*(?:original message|mensaje original|message d'origine)\s*-{2,}$", re.IGNORECASE
)
_FROM_LABEL = re.compile(r"^[*\s]*(?:from|de)\s*:", re.IGNORECASE)
_OTHER_LABEL = re.compile(
    r"^[*\s]*(?:sent|date|to|subject|cc|enviado|fecha|para|asunto)\s*:", re.IGNORECASE
)
_SIGNATURE_START = re.compile(
    r"^(?:--|"
    r"(?:sent from|enviado desde|get outlook for|obtener outlook para|descargar outlook para)"
    r"\b.{0,60})$",
    re.IGNORECASE,
)
_RULE_LINE = re.compile(r"^[_\-=*\s]*$")


def strip_reply(text: str) -> str:
    """The newly written part of `text`; the whole text when nothing would be left."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return _clean(_new_lines(lines)) or text.strip()


def _new_lines(lines: list[str]) -> list[str]:
    header = reply_header_line(lines)
    if header is None:
        return lines
    span = _attribution_span(_stripped(lines), header)
    if not span or not _quote_follows(lines, header + span):
        return lines[:header]  # Outlook block or separator: everything below is history
    # "On … wrote:" over ">" lines: unquoted text below is an interleaved or bottom answer.
    below = [line for line in lines[header + span :] if not _quoted(line)]
    return [*lines[:header], "", *below[: reply_header_line(below)]]


def reply_header_line(lines: list[str]) -> int | None:
    """Index of the first line that starts quoted history, or None."""
    stripped = _stripped(lines)
    candidates = [
        index for index in (_library_header(stripped), _own_header(stripped)) if index is not None
    ]
    return min(candidates, default=None)


def _stripped(lines: list[str]) -> list[str]:
    return [line.strip().lstrip(">").strip() for line in lines]


def _library_header(stripped: list[str]) -> int | None:
    scanned = "\n".join(stripped)[:_MAX_SCAN_CHARS]
    for match in _LIBRARY_HEADERS.finditer(scanned):
        start = match.start() + len(match.group()) - len(match.group().lstrip("\n"))
        index = scanned.count("\n", 0, start)
        if _is_header(stripped, index):
            return index
    return None


def _own_header(stripped: list[str]) -> int | None:
    return next((index for index in range(len(stripped)) if _is_header(stripped, index)), None)


def _is_header(stripped: list[str], index: int) -> bool:
    return bool(
        _attribution_span(stripped, index)
        or _SEPARATOR.match(stripped[index])
        or _is_header_block(stripped, index)
    )


def _attribution_span(stripped: list[str], index: int) -> int:
    """How many lines the attribution starting at `index` takes (0: none)."""
    if not _ATTRIBUTION_START.match(stripped[index]):
        return 0
    for span in range(1, _ATTRIBUTION_MAX_LINES + 1):
        joined = " ".join(stripped[index : index + span])
        if _ATTRIBUTION.match(joined):
            return span
    return 0


def _is_header_block(stripped: list[str], index: int) -> bool:
    if not _FROM_LABEL.match(stripped[index]):
        return False
    window = stripped[index + 1 : index + 1 + _BLOCK_WINDOW]
    return sum(1 for line in window if _OTHER_LABEL.match(line)) >= 2


def _quote_follows(lines: list[str], start: int) -> bool:
    following = next((line for line in lines[start:] if line.strip()), "")
    return _quoted(following)


def _clean(lines: list[str]) -> str:
    kept = [line.rstrip() for line in lines if not _quoted(line)]
    # Removing quotes leaves gaps; one blank line is all a paragraph break needs.
    kept = [line for i, line in enumerate(kept) if line or i == 0 or kept[i - 1]]
    kept = _without_signature(kept)
    while kept and _RULE_LINE.match(kept[-1]):
        kept.pop()
    return "\n".join(kept).strip()


def _without_signature(lines: list[str]) -> list[str]:
    for index, line in enumerate(lines):
        if _SIGNATURE_START.match(line.strip()) and _has_text(lines[:index]):
            return lines[:index]
    return lines


def _has_text(lines: list[str]) -> bool:
    return any(line.strip() for line in lines)


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")
