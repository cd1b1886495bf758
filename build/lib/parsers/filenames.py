"""Attachment names that are safe to write anywhere: a bare, short, printable file name."""

from __future__ import annotations

import mimetypes
import re
import unicodedata

from parsers.charsets import decode_words

MAX_FILENAME_BYTES = 200  # under every common filesystem's 255-byte limit, with room to dedupe
_MAX_EXTENSION = 16
# Characters Windows refuses in names; replaced so a name survives a Samba share or a zip.
_RESERVED = re.compile(r'[<>:"|?*]')
_DOTS = re.compile(r"\.{2,}")
_FALLBACK_EXTENSIONS = {
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "text/rfc822-headers": ".txt",
    "text/plain": ".txt",
}


def sanitise_filename(raw: str | None, content_type: str) -> str:
    """Basename only: no separators, no "..", no control characters, no leading dots."""
    name = unicodedata.normalize("NFC", decode_words(raw or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _RESERVED.sub("_", name)
    name = _DOTS.sub(".", name)
    name = name.strip().lstrip(".").rstrip(". ")
    name = _limit(name)
    return name or default_filename(content_type)


def default_filename(content_type: str) -> str:
    content_type = content_type.lower()
    extension = _FALLBACK_EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type)
    stem = "message" if content_type.startswith("message/") else "attachment"
    return stem + (extension or "")


def _limit(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
    return _truncate_utf8(stem, budget).rstrip(". ") + suffix


def _truncate_utf8(text: str, budget: int) -> str:
    return text.encode("utf-8")[:budget].decode("utf-8", "ignore")
