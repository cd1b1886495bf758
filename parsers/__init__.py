"""Pure email parsing for buzón: raw bytes in, a typed ParsedMessage out. No I/O."""

from parsers.message import (
    Address,
    Attachment,
    DeliveryFailure,
    Limits,
    MailKind,
    ParsedMessage,
)
from parsers.parse import parse
from parsers.verdicts import SpamRules

__all__ = [
    "Address",
    "Attachment",
    "DeliveryFailure",
    "Limits",
    "MailKind",
    "ParsedMessage",
    "SpamRules",
    "parse",
]
