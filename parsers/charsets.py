"""Bytes → str without ever guessing silently: declared charset, then detection, then cp1252."""

from __future__ import annotations

import codecs
import re

import charset_normalizer

# Labels that name no real codec but mean "8-bit, charset not said"; treat them as undeclared.
_NOT_A_CHARSET = frozenset(
    {"unknown-8bit", "x-unknown", "unknown", "default", "8bit", "x-user-defined"}
)

# Labels Python does not know, or knows only as a subset of what senders really mean. WHATWG
# (what browsers and most mail clients do): decode legacy CJK labels as their superset.
_ALIASES = {
    "unicode-1-1-utf-7": "utf-7",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "utf8mb4": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "iso-8859-8-i": "iso8859-8",
    "big5": "big5hkscs",
}

# Codecs to try, in order, when text does not decode as its declared charset.
_FAMILIES = {
    # EUC-JP first: Shift_JIS lead bytes 0x81-0x9f are invalid in EUC, while EUC text
    # often passes as cp932 half-width katakana.
    "iso2022_jp": ("euc_jis_2004", "cp932"),
    "euc_jp": ("cp932",),
    "cp932": ("euc_jis_2004",),
    "iso2022_kr": ("cp949",),
    "gb18030": ("big5hkscs",),
    "big5": ("gb18030",),
}

# ISO-2022 text is 7-bit: it passes as ASCII unless its escape sequences are looked for.
_ISO2022_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(J", b"\x1b(I", b"\x1b$(D", b"\x1b$(Q")
_ISO2022_KR_ESCAPE = b"\x1b$)C"
_JIS_MODES = {b"\x1b$@": "jis", b"\x1b$B": "jis", b"\x1b(I": "kana"}

# WHATWG: browsers (and most mail clients) decode these labels as windows-1252, because
# senders routinely put cp1252 quotes and dashes (0x80-0x9f) into "iso-8859-1" text.
_LATIN1_LABELS = frozenset({"iso8859-1", "ascii"})

# Below this size detection is a coin toss; undeclared short text falls back to cp1252.
_MIN_DETECTION_BYTES = 24
# 8-bit header bytes with no charset hint: detection only trusted for multi-byte CJK text.
_MIN_HEADER_BYTES = 6

_ENCODED_WORD = re.compile(
    r"=\?(?P<charset>[^?*\s]+)(?:\*[^?\s]*)?\?(?P<enc>[QqBb])\?(?P<text>[^?]*?)\?="
)


def codec_name(label: str | None) -> str | None:
    """The Python codec for a charset label, or None when the label is missing or unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    if label in _NOT_A_CHARSET:
        return None
    label = _ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def decode_bytes(data: bytes, declared: str | None = None) -> tuple[str, list[str]]:
    """Decode `data`, returning the text and defects; never loses text to U+FFFD."""
    defects: list[str] = []
    codec = codec_name(declared)
    if declared and codec is None:
        defects.append(f"unknown charset {declared.strip()[:40]!r}")
    if codec is not None:
        text = _try_declared(data, codec)
        if text is not None:
            return text, defects
        defects.append(f"text does not decode as declared charset {codec}")
        text = None if data.isascii() else _same_script(data, codec)
        if text is not None:
            return text, defects
    if data.isascii():
        return _seven_bit(data), defects
    return _detect(data), defects


def _same_script(data: bytes, codec: str) -> str | None:
    """A wrong label usually still names the right language: Shift_JIS sent as
    "iso-2022-jp", EUC-KR as "ks_c_5601"; short text defeats detection, the family does not."""
    family = next((names for key, names in _FAMILIES.items() if key in codec), ())
    return next((text for name in family if (text := _strict(data, name)) is not None), None)


def _seven_bit(data: bytes) -> str:
    """ASCII, unless escape sequences show ISO-2022-JP/KR text sent undeclared or as ASCII."""
    if b"\x1b" in data:
        codec = "iso2022_kr" if _ISO2022_KR_ESCAPE in data else "iso2022_jp_ext"
        if codec == "iso2022_kr" or any(escape in data for escape in _ISO2022_ESCAPES):
            text = _strict(data, codec) or _strict(data, "iso2022_jp_2") or _jis_via_cp932(data)
            if text is not None:
                return text
    return data.decode("ascii")


def _jis_via_cp932(data: bytes) -> str | None:
    """ISO-2022-JP as Japanese mail clients really send it (CP50220: NEC and IBM extension
    characters such as ①, №, Cyrillic forms), which Python's strict codecs reject.

    The JIS X 0208 rows map arithmetically onto Shift_JIS; cp932 then has every extension.
    """
    out = bytearray()
    mode = "ascii"
    for chunk in re.split(rb"(\x1b[$(][@BJI])", data):
        if chunk.startswith(b"\x1b"):
            mode = _JIS_MODES.get(chunk, "ascii")
        elif mode == "jis":
            if len(chunk) % 2 or not all(0x21 <= byte <= 0x7E for byte in chunk):
                return None
            out += _jis_to_sjis(chunk)
        else:
            out += bytes(byte | 0x80 for byte in chunk) if mode == "kana" else chunk
    return _strict(bytes(out), "cp932")


def _jis_to_sjis(chunk: bytes) -> bytes:
    out = bytearray()
    for first, second in zip(chunk[::2], chunk[1::2], strict=True):
        lead = ((first + 1) >> 1) + (0x70 if first <= 0x5E else 0xB0)
        odd_row = second + 0x1F + (1 if second >= 0x60 else 0)
        out += bytes((lead, odd_row if first % 2 else second + 0x7E))
    return bytes(out)


def _try_declared(data: bytes, codec: str) -> str | None:
    if codec in _LATIN1_LABELS:
        if data.isascii():
            return _seven_bit(data)
        if codec == "ascii":
            return None  # 8-bit bytes in "us-ascii": the label is wrong, detect instead
        # UTF-8 labelled Latin-1 is the commonest mislabel, and multi-byte UTF-8 almost
        # never validates by accident in real Latin-1 text ("Ã©" is not Spanish).
        return _strict(data, "utf-8") or _strict(data, "cp1252") or data.decode("latin-1")
    return _strict(data, codec)


def _detect(data: bytes) -> str:
    # UTF-8 first: it validates itself, so a clean decode is almost never a coincidence.
    text = _strict(data, "utf-8")
    if text is not None:
        return text
    if len(data) >= _MIN_DETECTION_BYTES:
        best = charset_normalizer.from_bytes(data).best()
        if best is not None and best.encoding:
            return str(best)
    return _strict(data, "cp1252") or data.decode("latin-1")


def _strict(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def header_text(value: str, hint: str | None = None) -> str:
    """Turn a raw header value (8-bit bytes carried as surrogates) into real text.

    Raw 8-bit header bytes carry no charset: UTF-8 first, then the charset the message
    declares for its text (`hint`: a Chinese mail's subject is in its body's GB2312), then
    detection, then cp1252.
    """
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    if raw.isascii():
        return value
    return _strict(raw, "utf-8") or _undeclared_8bit(raw, codec_name(hint))


def _undeclared_8bit(raw: bytes, hint: str | None) -> str:
    if hint is not None and hint not in _LATIN1_LABELS and hint != "utf-8":
        text = _strict(raw, hint)
        if text is not None:
            return text
    best = charset_normalizer.from_bytes(raw).best() if len(raw) >= _MIN_HEADER_BYTES else None
    if best is not None and best.encoding and _is_cjk(best.encoding):
        return str(best)
    return _strict(raw, "cp1252") or raw.decode("latin-1")


def _is_cjk(encoding: str) -> bool:
    return any(tag in encoding for tag in ("gb", "big5", "jis", "cp932", "euc", "cp949", "2022"))


def decode_words(value: str, defects: list[str] | None = None) -> str:
    """Decode RFC 2047 encoded words, tolerating wrong and unknown charsets.

    The stdlib decoder re-encodes the text around encoded words with raw-unicode-escape and
    gives up on unknown charsets; here the bytes go through `decode_bytes` instead. Adjacent
    words in one charset are joined before decoding, because senders split multi-byte
    characters across words.
    """
    if "=?" not in value:
        return value
    sink = defects if defects is not None else []
    pieces: list[str] = []
    pending: list[bytes] = []
    charset = ""
    position = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        adjacent = bool(pending) and not between.strip()
        if not (adjacent and match["charset"].lower() == charset):
            _flush(pieces, pending, charset, sink)
            # RFC 2047 6.2: white space between adjacent encoded words is not displayed.
            pieces.append("" if adjacent else between)
        pending.append(_word_bytes(match, sink))
        charset = match["charset"].lower()
        position = match.end()
    _flush(pieces, pending, charset, sink)
    pieces.append(value[position:])
    return "".join(pieces)


def _flush(pieces: list[str], pending: list[bytes], charset: str, defects: list[str]) -> None:
    if pending:
        text, word_defects = decode_bytes(b"".join(pending), charset)
        defects.extend(word_defects)
        pieces.append(text)
        pending.clear()


def _word_bytes(match: re.Match[str], defects: list[str]) -> bytes:
    payload = match["text"].encode("ascii", "surrogateescape")
    try:
        if match["enc"] in "Bb":
            payload = b"".join(payload.split())
            return codecs.decode(payload + b"=" * (-len(payload) % 4), "base64")
        return codecs.decode(payload.replace(b"_", b" "), "quopri")
    except (ValueError, TypeError):
        defects.append("undecodable RFC 2047 encoded word")
        return match.group().encode("ascii", "surrogateescape")
