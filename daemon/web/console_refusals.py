"""The domain's refusals in the console's language.

The domain words its refusals (`TicketError`, `OutboxError`) once, in English, for the
CLI, the API and the logs, which tests and scripts read. The console speaks Spanish by
default, so it words the refusals an agent can meet there again: each pattern below
matches one refusal's English text and gives its Spanish form, with the names and
numbers it carries. English is the domain's own text. A refusal with no pattern (a new
one) shows in English rather than not at all.
"""

from __future__ import annotations

import re

from daemon.web.console_text import STATUS_NAMES, translate

# (the English text, as a full-match pattern; the Spanish form)
_SPANISH: tuple[tuple[str, str], ...] = (
    # tickets and people
    (r"no ticket #(?P<n>\d+)", "no existe el ticket #{n}"),
    (r"ticket #(?P<n>\d+) has no attachment (?P<a>\d+)", "el ticket #{n} no tiene el adjunto {a}"),
    (r"a ticket needs a subject", "un ticket necesita un asunto"),
    (r"unknown source (?P<v>.+); one of: (?P<known>.+)", "vía desconocida {v}; una de: {known}"),
    (r"not an email address: (?P<v>.+)", "no es una dirección de correo: {v}"),
    (r"(?P<e>.+) is already the requester of ticket #(?P<n>\d+)",
     "{e} ya es el solicitante del ticket #{n}"),
    (r"(?P<e>.+) is the requester of ticket #(?P<n>\d+); cannot remove",
     "{e} es el solicitante del ticket #{n}; no se puede quitar"),
    (r"(?P<e>.+) is already on ticket #(?P<n>\d+)", "{e} ya está en el ticket #{n}"),
    (r"(?P<e>.+) is not on ticket #(?P<n>\d+)", "{e} no está en el ticket #{n}"),
    # the catalogue
    (r"an agent is needed", "falta el agente"),
    (r"a team name is needed", "falta el equipo"),
    (r"unknown agent (?P<v>.+); one of: (?P<known>.+)", "agente desconocido {v}; uno de: {known}"),
    (r"unknown type (?P<v>.+); one of: (?P<known>.+)", "tipo desconocido {v}; uno de: {known}"),
    (r"unknown team (?P<v>.+); one of: (?P<known>.+)", "equipo desconocido {v}; uno de: {known}"),
    (r"unknown impact (?P<v>.+); one of: (?P<known>.+)",
     "impacto desconocido {v}; uno de: {known}"),
    (r"unknown urgency (?P<v>.+); one of: (?P<known>.+)",
     "urgencia desconocida {v}; una de: {known}"),
    (r"ticket #(?P<n>\d+) is already in category (?P<c>.+)",
     "el ticket #{n} ya está en la categoría {c}"),
    # actions
    (r"give an agent, a team or both", "indica un agente, un equipo o ambos"),
    (r"ticket #(?P<n>\d+) is already assigned so", "el ticket #{n} ya está asignado así"),
    (r"ticket #(?P<n>\d+) is assigned to (?P<who>.+): reassigning needs a note saying why",
     "el ticket #{n} está asignado a {who}: para reasignarlo hace falta una nota que diga por qué"),
    (r"an escalation needs a reason \(--reason\)", "un escalado necesita un motivo"),
    (r"the note is empty", "la nota está vacía"),
    (r"the reply is empty", "la respuesta está vacía"),
    (r"ticket #(?P<n>\d+) is closed; it cannot be answered",
     "el ticket #{n} está cerrado; no se puede responder"),
    (r"cannot assign ticket #(?P<n>\d+): it is resolved \(move it to in_progress first\)",
     "no se puede asignar el ticket #{n}: está resuelto (pásalo antes a En curso)"),
    (r"cannot escalate ticket #(?P<n>\d+): it is resolved \(move it to in_progress first\)",
     "no se puede escalar el ticket #{n}: está resuelto (pásalo antes a En curso)"),
    (r"cannot assign ticket #(?P<n>\d+): it is closed",
     "no se puede asignar el ticket #{n}: está cerrado"),
    (r"cannot escalate ticket #(?P<n>\d+): it is closed",
     "no se puede escalar el ticket #{n}: está cerrado"),
    (r"a ticket cannot be merged into itself", "un ticket no se puede fusionar consigo mismo"),
    (r"ticket #(?P<n>\d+) was already merged into #(?P<m>\d+)",
     "el ticket #{n} ya se fusionó en el #{m}"),
    (r"not a ticket number: (?P<v>.+)", "no es un número de ticket: {v}"),
    # statuses
    (r"unknown status (?P<v>.+); one of: (?P<known>.+)", "estado desconocido {v}; uno de: {known}"),
    (r"cannot move from (?P<old>\w+) to (?P<new>\w+); allowed: (?P<allowed>.+)",
     "no se puede pasar de {old} a {new}; se puede a: {allowed}"),
    (r"ticket #(?P<n>\d+) is already (?P<s>\w+)", "el ticket #{n} ya está en el estado {s}"),
    # the queue's filters
    (r"(?P<v>.+) is not a duration like 30m, 2h or 1d", "{v} no es una duración como 30m, 2h o 1d"),
    # the mail queues
    (r"no raw message (?P<id>\d+)", "no existe el mensaje {id}"),
    (r"not kept as spam: (?P<ids>.+) \(see `buzon inbound list --state spam`\)",
     "no están guardados como spam: {ids}"),
    (r"no outbox message (?P<id>\d+)", "no existe el correo saliente {id}"),
    (r"outbox message (?P<id>\d+) was already sent at (?P<at>.+)",
     "el correo saliente {id} ya se envió ({at})"),
    (r"no webhook delivery (?P<id>\d+)", "no existe el envío de webhook {id}"),
    (r"webhook delivery (?P<id>\d+) was already sent at (?P<at>.+)",
     "el envío de webhook {id} ya se entregó ({at})"),
    (r"webhook delivery (?P<id>\d+) is being sent right now",
     "el envío de webhook {id} se está enviando ahora mismo"),
)  # fmt: skip

_PATTERNS = tuple((re.compile(english), spanish) for english, spanish in _SPANISH)

# Values that are status names, shown as the console names them ("En curso").
_STATUSES = {"old", "new", "s"}


def refusal(language: str, message: str) -> str:
    """`message` (a domain refusal's English text) in `language`."""
    if language == "en":
        return message
    for pattern, spanish in _PATTERNS:
        found = pattern.fullmatch(message)
        if found is not None:
            values = {
                k: _status(language, v) if k in _STATUSES else v
                for k, v in found.groupdict().items()
            }
            if "allowed" in values:
                values["allowed"] = _allowed(language, values["allowed"])
            return spanish.format(**values)
    return message


def _status(language: str, name: str) -> str:
    return translate(language, name) if name in STATUS_NAMES else name


def _allowed(language: str, names: str) -> str:
    if names.startswith("none"):  # "none (closed is final)"
        return "ninguno (Cerrado es definitivo)"
    return ", ".join(_status(language, name) for name in names.split(", "))
