"""Logging, configured once at start: one line per event, JSON on request.

Mail bodies, passwords and tokens never reach a log call; the formatter also drops
any field whose name suggests a secret, as a second line of defence.

Our messages name their values in the format string (`"outbox=%s deferred: %s"`). The
JSON formatter turns each `key=%s` of the *format string* into a field `key` with its
argument, so a log shipper can filter on `ticket`, `outbox`, `job`… without parsing
text. Only the format string is read for keys: the text of a mail or a server reply
passed as an argument can never invent a field.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_SECRET_WORDS = ("password", "passwd", "token", "secret", "body")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# One printf conversion (or a literal %%), optionally preceded by `key=`.
_CONVERSION = re.compile(
    r"(?:(?<![\w.])([a-z_][a-z0-9_]*)=)?%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.\d+)?([a-zA-Z%])"
)


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def message_fields(record: logging.LogRecord) -> dict[str, Any]:
    """`key=%s` placeholders of the record's format string, with their arguments."""
    if not isinstance(record.msg, str) or not isinstance(record.args, tuple):
        return {}
    fields: dict[str, Any] = {}
    index = 0
    for match in _CONVERSION.finditer(record.msg):
        key, kind = match.group(1), match.group(2)
        if kind == "%":
            continue
        if index >= len(record.args):
            break
        value = record.args[index]
        index += 1
        if key and not _is_secret(key) and not isinstance(value, bytes):
            fields[key] = value if isinstance(value, int | float | bool) else str(value)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in message_fields(record).items():
            entry.setdefault(key, value)
        for key, value in record.__dict__.items():
            # bytes are mail content (a raw message, a part): never logged
            if key not in _STANDARD and not _is_secret(key) and not isinstance(value, bytes):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(entry, default=str, ensure_ascii=False)


class LineFormatter(logging.Formatter):
    """Plain text, still one line per event: a traceback's lines are joined, so that a
    log shipper never splits one event into many."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def configure(level: str = "INFO", json_format: bool = False, *, one_shot: bool = False) -> None:
    """`one_shot` (agents' and ops' commands): the default INFO becomes WARNING, so that
    a command's own output and progress bar are not buried in the service's log lines;
    an explicit DEBUG or a quieter level is kept."""
    if one_shot and level == "INFO":
        level = "WARNING"
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("mail-parser", "mailparser", "apscheduler", "alembic", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
