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
_BLOCK_LABELS = 3
_ATTRIBUTION_MAX_LINES = 3  # clients wrap long "On … wrote:" lines, at most twice in practice

_LIBRARY_HEADERS = EmailMessage(text="", languages=list(LANGUAGES)).HEADER_REGEX
# What each of its patterns (languages "es" and "en") must contain, lower-cased: an
# attribution's closing word, a header label with its colon, or the separator's words.
_LIBRARY_NEEDLES = (
    *("wrote:", "original message"),
    *("de:", "enviado:", "para:", "asunto:", "fecha:", "cc:", "organización:"),
    *("from:", "sent:", "to:", "subject:", "date:", "organization:"),
)
_FOLD_SPECIAL = "ıİſ"  # all there are (checked over every code point)
_ATTRIBUTION = re.compile(r"^(?:on|el)\s.{4,}?[\s>](?:wrote|escribi[oó])\s*:$", re.IGNORECASE)
_ATTRIBUTION_START = re.compile(r"(?:on|el)\s", re.IGNORECASE)
# "-----Original Message-----" in the languages of the clients that write it.
_SEPARATOR = re.compile(
    r"^-{2,}\s*(?:original message|mensaje original|message d'origine|mensagem original|"
    r"messaggio originale|urspr[üu]ngliche nachricht|original-nachricht|oprindelig meddelelse|"
    r"oorspronkelijk bericht|ursprungligt meddelande|opprinnelig melding|"
    r"oryginalna wiadomo[śs][ćc]|исходное сообщение)\s*-{2,}$",
    re.IGNORECASE,
)
# Outlook's quoted header block, in the languages Outlook writes it in.
_FROM_LABEL = re.compile(r"^[*\s]*(?:from|de|von|van|od|fra|från|da|от)\s*:", re.IGNORECASE)
_OTHER_LABEL = re.compile(
    r"^[*\s]*(?:sent|date|to|subject|cc|enviado|enviada|fecha|para|asunto|assunto|"
    r"gesendet|an|betreff|envoy[ée]|[àa]|objet|inviato|oggetto|verzonden|aan|onderwerp|"
    r"wys[łl]ano|do|temat|sendt|til|emne|skickat|till|[äa]mne|отправлено|кому|тема|дата)"
    r"\s*:",
    re.IGNORECASE,
)
# Device and app signatures: "Sent from my iPhone", not "Sent from my desk, is much easier…".
_SIGNATURE_START = re.compile(
    r"^(?:--|"
    r"(?:sent from(?: my)?|enviado desde(?: mi)?|get outlook for|obtener outlook para|"
    r"descargar outlook para)(?:\s+[\w.\-]+){1,4})$",
    re.IGNORECASE,
)
# Closings that end a mail, alone on their line, in the languages of the fixtures we see.
_FAREWELL = re.compile(
    r"^(?:(?:best |kind |warm )?regards|best|cheers|thanks|thank you|saludos|un saludo|"
    r"saludos cordiales|atentamente|cordialmente|muchas gracias|gracias|abrazos?|"
    r"pozdrawiam|z powa[żz]aniem|(?:med )?venlig hilsen|hilsen|mvh|kh|"
    r"med v[äa]nlig h[äa]lsning|v[äa]nliga h[äa]lsningar|mit freundlichen gr[üu](?:ß|ss)en|"
    r"viele gr[üu](?:ß|ss)e|cordialement|atenciosamente|cumprimentos|saluti|"
    r"met vriendelijke groet|groeten)[,.!]?$",
    re.IGNORECASE,
)
_DASH_NAME = re.compile(r"^[-/]\s?[^\W\d_][\w.'’ -]{0,40}$")
_NAME_MAX_WORDS = 4
_SIGN_OFF_MIN_LINES = 3  # a greeting or a sentence, then the closing and a name
# A Mailman footer: a rule of underscores over "<list> mailing list".
_LIST_FOOTER_RULE = re.compile(r"^_{10,}$")
_LIST_FOOTER_TEXT = re.compile(r"\bmailing list\b|\blista de correo\b", re.IGNORECASE)
# Any "<date>, <name> <address> wrote:" line, in any language: ends with a colon, carries an
# address or a time, and has quoted lines right below it (checked by the caller).
_QUOTE_INTRO = re.compile(r"^(?=.{8,300}$).*:$")
_INTRO_FIRST_LINE = re.compile(r"@|\d{1,2}[:.]\d{2}")
_RULE_LINE = re.compile(r"^[_\-=*\s]*$")


def strip_reply(text: str) -> str:
    """The newly written part of `text`; the whole text when nothing would be left."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return _clean(_new_lines(lines)) or text.strip()


def _new_lines(lines: list[str]) -> list[str]:
    header = reply_header_line(lines)
    if header is None:
        return lines
    stripped = _stripped(lines)
    span = _attribution_span(stripped, header) or _intro_span(lines, stripped, header)
    if not span or not _quote_follows(lines, header + span):
        return lines[:header]  # Outlook block or separator: everything below is history
    # "On … wrote:" over ">" lines: unquoted text below is an interleaved or bottom answer.
    below = [line for line in lines[header + span :] if not _quoted(line)]
    return [*lines[:header], "", *below[: reply_header_line(below)]]


def reply_header_line(lines: list[str]) -> int | None:
    """Index of the first line that starts quoted history, or None.

    A header with nothing written above it (a forwarded header block at the very top) does
    not start the history: the text below it is what the person sent.
    """
    stripped = _stripped(lines)
    found = (_library_header(stripped), _own_header(stripped), _quote_intro(lines, stripped))
    candidates = [index for index in found if index is not None]
    return min(candidates, default=None)


def _stripped(lines: list[str]) -> list[str]:
    return [line.strip().lstrip(">").strip() for line in lines]


def _library_header(stripped: list[str]) -> int | None:
    scanned = "\n".join(stripped)[:_MAX_SCAN_CHARS]
    if not _may_hold_library_header(scanned):
        return None
    for match in _LIBRARY_HEADERS.finditer(scanned):
        start = match.start() + len(match.group()) - len(match.group().lstrip("\n"))
        index = scanned.count("\n", 0, start)
        if _is_header(stripped, index) and _starts_history(stripped, index):
            return index
    return None


def _may_hold_library_header(text: str) -> bool:
    """False only when no pattern of mail-parser-reply can match: each needs one of
    `_LIBRARY_NEEDLES`. Searching for them costs a tenth of running its patterns, and most
    mails have none. Letters that case-insensitive matching folds onto ASCII ones ("ſ" to
    "s") or that lower-case to two letters ("İ") defeat `str.lower`: the patterns run."""
    if any(letter in text for letter in _FOLD_SPECIAL):
        return True
    lowered = text.lower()
    # Its Spanish attribution forbids, by a look-ahead, the very line it would match
    # unless that line starts with ">": without such a line it needs no running.
    quote_line = lowered.startswith(">") or "\n>" in lowered
    spanish = quote_line and "escribió:" in lowered
    return spanish or any(needle in lowered for needle in _LIBRARY_NEEDLES)


def _own_header(stripped: list[str]) -> int | None:
    return next(
        (
            index
            for index in range(len(stripped))
            if _is_header(stripped, index) and _starts_history(stripped, index)
        ),
        None,
    )


def _starts_history(stripped: list[str], index: int) -> bool:
    """An attribution can open a bottom-posted reply; a header block needs text above it."""
    return _has_text(stripped[:index]) or bool(_attribution_span(stripped, index))


def _quote_intro(lines: list[str], stripped: list[str]) -> int | None:
    if not any(_quoted(line) for line in lines):
        return None  # an introduction is followed by quoted lines: most mails have none
    return next(
        (
            index
            for index in range(len(lines))
            if not _quoted(lines[index]) and _intro_span(lines, stripped, index)
        ),
        None,
    )


def _intro_span(lines: list[str], stripped: list[str], index: int) -> int:
    """Lines taken by a quote introduction at `index` followed by quoted lines (0: none)."""
    if _quoted(lines[index]) or not _INTRO_FIRST_LINE.search(stripped[index]):
        return 0
    for span in range(1, _ATTRIBUTION_MAX_LINES + 1):
        if not stripped[index + span - 1 : index + span] or not stripped[index + span - 1]:
            return 0  # an introduction is one paragraph: a blank line ends the search
        joined = " ".join(stripped[index : index + span])
        if _QUOTE_INTRO.match(joined) and _quote_follows(lines, index + span):
            return span
    return 0


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
    """From/Date/To/Subject lines together, in any order (Hotmail starts with "Date:")."""
    if not _is_label(stripped[index]):
        return False
    labels = [line for line in stripped[index : index + 1 + _BLOCK_WINDOW] if _is_label(line)]
    return len(labels) >= _BLOCK_LABELS and any(_FROM_LABEL.match(line) for line in labels)


def _is_label(line: str) -> bool:
    return bool(_FROM_LABEL.match(line) or _OTHER_LABEL.match(line))


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
    for index in range(len(lines)):
        if _signature_starts(lines, index) and _has_text(lines[:index]):
            return _without_sign_off(lines[:index])
    return _without_sign_off(lines)


def _without_sign_off(lines: list[str]) -> list[str]:
    """A closing at the very end: "Saludos,\nJuan Pérez" or a lone "-Juan" after a blank line.

    Only when a farewell stands alone on its line and nothing but one or two short name
    lines follow it: "Gracias, espero respuesta." and a closing "Gracias" are kept.
    """
    filled = [index for index, line in enumerate(lines) if line.strip()]
    if len(filled) < _SIGN_OFF_MIN_LINES:
        return lines
    last = filled[-1]
    if _DASH_NAME.match(lines[last].strip()) and not lines[last - 1].strip():
        return lines[:last]
    for farewell in filled[-3:-1]:
        names = [lines[index].strip() for index in filled if index > farewell]
        if _FAREWELL.match(lines[farewell].strip()) and all(map(_is_name_line, names)):
            return lines[:farewell]
    return lines


def _is_name_line(line: str) -> bool:
    return len(line.split()) <= _NAME_MAX_WORDS and not line.endswith((".", "?", "!", ":"))


def _signature_starts(lines: list[str], index: int) -> bool:
    line = lines[index].strip()
    if _SIGNATURE_START.match(line):
        return True
    if not _LIST_FOOTER_RULE.match(line):
        return False
    following = next((later for later in lines[index + 1 :] if later.strip()), "")
    return bool(_LIST_FOOTER_TEXT.search(following))


def _has_text(lines: list[str]) -> bool:
    return any(line.strip() for line in lines)


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")
