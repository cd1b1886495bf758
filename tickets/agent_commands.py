"""The `#commands` at the top of an agent's mail, in Spanish or English. Pure functions.

    #estado resuelto            #status resolved
    #asignar ana@x [nota]       #assign ana@x [note]
    #tomar                      #take
    #equipo nutricion           #team nutrition
    #escalar equipo=PX tipo=facturación motivo=revisar un pago pendiente
    #prioridad impacto=alto urgencia=alta
    #nota                       #note        (the whole mail is an internal note)
    #cc+ x@y   #cc- x@y

Commands are the lines that start with `#` before the first line of text (blank lines
may come between them). They are removed from what the customer reads. An unknown
command, or one missing what it needs, is a `CommandError`: the caller applies nothing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from tickets.errors import TicketError
from tickets.lifecycle import Status


class CommandError(TicketError):
    """A command we cannot read; the message is for the agent."""


@dataclass(frozen=True)
class Command:
    name: str  # status / assign / take / team / escalate / priority / note / cc_add / cc_remove
    line: str  # as the agent wrote it, for messages
    value: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentText:
    commands: tuple[Command, ...]
    text: str  # what is left once the command lines are removed


_NAMES = {
    "estado": "status",
    "status": "status",
    "asignar": "assign",
    "assign": "assign",
    "tomar": "take",
    "take": "take",
    "equipo": "team",
    "team": "team",
    "escalar": "escalate",
    "escalate": "escalate",
    "prioridad": "priority",
    "priority": "priority",
    "nota": "note",
    "note": "note",
    "cc+": "cc_add",
    "cc-": "cc_remove",
}

# Customer-facing and code names of the statuses, Spanish and English (lower case,
# without accents); the labels of seed 002 included.
_STATUSES = {
    "nuevo": Status.NEW,
    "enviado": Status.NEW,
    "new": Status.NEW,
    "en curso": Status.IN_PROGRESS,
    "en progreso": Status.IN_PROGRESS,
    "abierto": Status.IN_PROGRESS,
    "in progress": Status.IN_PROGRESS,
    "open": Status.IN_PROGRESS,
    "a la espera": Status.WAITING_ON_CUSTOMER,
    "a la espera de tu respuesta": Status.WAITING_ON_CUSTOMER,
    "en espera": Status.WAITING_ON_CUSTOMER,
    "esperando": Status.WAITING_ON_CUSTOMER,
    "esperando al cliente": Status.WAITING_ON_CUSTOMER,
    "waiting": Status.WAITING_ON_CUSTOMER,
    "waiting on customer": Status.WAITING_ON_CUSTOMER,
    "pending": Status.WAITING_ON_CUSTOMER,
    "suspendido": Status.ON_HOLD,
    "en pausa": Status.ON_HOLD,
    "on hold": Status.ON_HOLD,
    "hold": Status.ON_HOLD,
    "resuelto": Status.RESOLVED,
    "resuelta": Status.RESOLVED,
    "resolved": Status.RESOLVED,
    "solved": Status.RESOLVED,
    "cerrado": Status.CLOSED,
    "cerrada": Status.CLOSED,
    "closed": Status.CLOSED,
}
_KEYS = {
    "equipo": "team",
    "team": "team",
    "tipo": "type",
    "type": "type",
    "motivo": "reason",
    "razon": "reason",
    "reason": "reason",
    "impacto": "impact",
    "impact": "impact",
    "urgencia": "urgency",
    "urgency": "urgency",
}
_REQUIRED = {"escalate": ("team", "type", "reason"), "priority": ("impact", "urgency")}
_NEEDS_VALUE = {"status", "assign", "team", "cc_add", "cc_remove"}
_COMMAND = re.compile(r"^#\s*(cc\s*[+-]|[^\W\d_]+)(?:\s+(.*))?$", re.IGNORECASE)
_OPTION = re.compile(r"(?:^|\s)([^\W\d_]+)\s*=\s*", re.UNICODE)
_MAX_COMMANDS = 20  # a list this long is not a set of commands but a pasted text


def plain(text: str) -> str:
    """Lower case, no accents, single spaces: "A la Espera" → "a la espera"."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def split(text: str) -> AgentText:
    """The commands at the top of `text` and the text without them."""
    lines = (text or "").replace("\r\n", "\n").split("\n")
    commands: list[Command] = []
    index = 0
    while index < len(lines) and len(commands) <= _MAX_COMMANDS:
        line = lines[index].strip()
        if line and not line.startswith("#"):
            break
        if line:
            commands.append(parse_line(line))
        index += 1
    return AgentText(tuple(commands), "\n".join(lines[index:]).strip("\n"))


def parse_line(line: str) -> Command:
    match = _COMMAND.match(line)
    word = plain(match.group(1)).replace(" ", "") if match else ""
    name = _NAMES.get(word)
    if match is None or name is None:
        raise CommandError(f"unknown command {line!r} (known: {', '.join(sorted(_NAMES))})")
    rest = " ".join((match.group(2) or "").split())
    if name in _NEEDS_VALUE and not rest:
        raise CommandError(f"{line!r}: what? (e.g. #{word} …)")
    if name == "status":
        return Command(name, line, status_name(rest, line))
    if name in _REQUIRED:
        return Command(name, line, options=_options(name, rest, line))
    return Command(name, line, rest)


def status_name(value: str, line: str) -> str:
    status = _STATUSES.get(plain(value).strip(" .!«»\"'"))
    if status is None:
        known = "resuelto, en curso, a la espera, suspendido, cerrado / resolved, …"
        raise CommandError(f"{line!r}: unknown status {value!r} (one of: {known})")
    return status.value


def _options(name: str, rest: str, line: str) -> dict[str, str]:
    """`equipo=PX tipo=billing motivo=revisar un pago`: a value runs to the next key."""
    found = list(_OPTION.finditer(rest))
    options: dict[str, str] = {}
    for i, match in enumerate(found):
        key = _KEYS.get(plain(match.group(1)))
        if key is None:
            raise CommandError(f"{line!r}: unknown option {match.group(1)!r}")
        end = found[i + 1].start() if i + 1 < len(found) else len(rest)
        options[key] = rest[match.end() : end].strip().strip("\"'«»").strip()
    missing = [k for k in _REQUIRED[name] if not options.get(k)]
    if missing:
        raise CommandError(f"{line!r}: missing {', '.join(missing)}")
    return options


def split_assignee(value: str) -> tuple[str, str]:
    """`ana@x porque sabe de pagos` → ("ana@x", "porque sabe de pagos")."""
    first, _, note = value.partition(" ")
    return first.strip("<>,;"), note.strip()
