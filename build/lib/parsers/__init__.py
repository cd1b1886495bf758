"""Pure email parsing for buzón: raw bytes in, a typed ParsedMessage out. No I/O."""

from parsers.message import (
    Address,
    Attachment,
    DeliveryFailure,
    MailKind,
    ParsedMessage,
)
from parsers.parse import parse

__all__ = [
    "Address",
    "Attachment",
    "DeliveryFailure",
    "MailKind",
    "ParsedMessage",
    "parse",
]
