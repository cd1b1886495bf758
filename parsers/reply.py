"""The new part of a reply: quoted history, reply headers and signatures removed.

mail-parser-reply finds candidate reply headers; our own detectors add what it misses
(Spanish "escribió:" lines, wrapped Gmail attribution lines, Outlook blocks after html2text)
and veto its weak matches ("Para:"/"Fecha:" lines a patient writes in the body are not a
reply header). Signatures are cut only at unambiguous markers: a farewell such as
"Gracias," often starts a real sentence, so it is kept.
"""

from __future__ import annotations

import re

from mailparser_reply.parser import EmailMessage

LANGUAGES = ["es", "en"]
_MAX_SCAN_CHARS = 200_000  # reply headers live near the top; never regex a huge body whole
_BLOCK_WINDOW = 6  # an Outlook header block: From/De and its companions within six lines

_LIBRARY_HEADERS = EmailMessage(text="", languages=list(LANGUAGES)).HEADER_REGEX
_ATTRIBUTION = re.compile(
    r"^(?:on|el|am|le)\s.{4,}?\s(?:wrote|escribi[oó]|schrieb|a [ée]crit)\s*:$", re.IGNORECASE
)
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
    header = reply_header_line(lines)
    if header is None:
        return _clean(lines) or text.strip()
    new = _clean(lines[:header]) or _bottom_posted(lines, header)
    return new or text.strip()


def reply_header_line(lines: list[str]) -> int | None:
    """Index of the first line that starts quoted history, or None."""
    stripped = [line.strip().lstrip(">").strip() for line in lines]
    candidates = [
        index
        for index in (_library_header(stripped), _own_header(stripped))
        if index is not None
    ]
    return min(candidates, default=None)


def _library_header(stripped: list[str]) -> int | None:
    scanned = "\n".join(stripped)[:_MAX_SCAN_CHARS]
    for match in _LIBRARY_HEADERS.finditer(scanned):
        start = match.start() + len(match.group()) - len(match.group().lstrip("\n"))
        index = scanned.count("\n", 0, start)
        if _is_attribution(stripped, index) or _SEPARATOR.match(stripped[index]):
            return index
        if _is_header_block(stripped, index):
            return index
    return None


def _own_header(stripped: list[str]) -> int | None:
    for index in range(len(stripped)):
        if (
            _is_attribution(stripped, index)
            or _SEPARATOR.match(stripped[index])
            or _is_header_block(stripped, index)
        ):
            return index
    return None


def _is_attribution(stripped: list[str], index: int) -> bool:
    line = stripped[index]
    if _ATTRIBUTION.match(line):
        return True
    # Gmail wraps long attribution lines: "El lun, 3 mar 2025 a las 10:00, Ana (<a@x>)\nescribió:"
    following = stripped[index + 1] if index + 1 < len(stripped) else ""
    return bool(following) and bool(_ATTRIBUTION.match(f"{line} {following}"))


def _is_header_block(stripped: list[str], index: int) -> bool:
    if not _FROM_LABEL.match(stripped[index]):
        return False
    window = stripped[index + 1 : index + 1 + _BLOCK_WINDOW]
    return sum(1 for line in window if _OTHER_LABEL.match(line)) >= 2


def _bottom_posted(lines: list[str], header: int) -> str:
    """Text written below the quote it answers ("On … wrote:\\n> …\\n\\nMy answer")."""
    below = [line for line in lines[header + 1 :] if not _quoted(line)]
    return _clean(below[: reply_header_line(below)])


def _clean(lines: list[str]) -> str:
    kept = [line.rstrip() for line in lines if not _quoted(line)]
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
