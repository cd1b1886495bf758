"""Bytes → str without ever guessing silently: declared charset, then detection, then cp1252."""

from __future__ import annotations

import codecs
import re

import charset_normalizer

# Labels that name no real codec but mean "8-bit, charset not said"; treat them as undeclared.
_NOT_A_CHARSET = frozenset(
    {"unknown-8bit", "x-unknown", "unknown", "default", "8bit", "x-user-defined"}
)

# WHATWG: browsers (and most mail clients) decode these labels as windows-1252, because
# senders routinely put cp1252 quotes and dashes (0x80-0x9f) into "iso-8859-1" text.
_LATIN1_LABELS = frozenset({"iso8859-1", "ascii"})

# Below this size detection is a coin toss; undeclared short text falls back to cp1252.
_MIN_DETECTION_BYTES = 24

_ENCODED_WORD = re.compile(
    r"=\?(?P<charset>[^?*\s]+)(?:\*[^?\s]*)?\?(?P<enc>[QqBb])\?(?P<text>[^?\s]*)\?="
)


def codec_name(label: str | None) -> str | None:
    """The Python codec for a charset label, or None when the label is missing or unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    if label in _NOT_A_CHARSET:
        return None
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
    if data.isascii():
        return data.decode("ascii"), defects
    return _detect(data), defects


def _try_declared(data: bytes, codec: str) -> str | None:
    if codec in _LATIN1_LABELS:
        if data.isascii():
            return data.decode("ascii")
        if codec == "ascii":
            return None  # 8-bit bytes in "us-ascii": the label is wrong, detect instead
        return _strict(data, "cp1252") or data.decode("latin-1")
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


def header_text(value: str) -> str:
    """Turn a raw header value (8-bit bytes carried as surrogates) into real text."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    if raw.isascii():
        return value
    return _strict(raw, "utf-8") or _strict(raw, "cp1252") or raw.decode("latin-1")


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
        same_run = pending and not between.strip() and match["charset"].lower() == charset
        if not same_run:
            _flush(pieces, pending, charset, sink)
            pieces.append(between)
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
            return codecs.decode(payload + b"=" * (-len(payload) % 4), "base64")
        return codecs.decode(payload.replace(b"_", b" "), "quopri")
    except (ValueError, TypeError):
        defects.append("undecodable RFC 2047 encoded word")
        return match.group().encode("ascii", "surrogateescape")
