"""A ticket's history as agents read it: one sentence per stored event, in the console's
language ("acuse de recibo enviado a ana@example.com"), never the stored names
("notified mail: - → acknowledgement").

The events are those `tickets.lifecycle.record` writes (tickets/, notifier/); an event
kind with no sentence here shows as its `event_` term with its field and values, so a
new kind is still readable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from daemon.web.console_text import STATUS_NAMES, term, translate

# key -> (Spanish, English); {new}, {old}, {who} and the like are filled from the event.
SENTENCES: dict[str, tuple[str, str]] = {
    "created": ("ticket abierto ({source})", "ticket opened ({source})"),
    "notified": ("{mail} enviado a {who}", "{mail} sent to {who}"),
    "notified_f": ("{mail} enviada a {who}", "{mail} sent to {who}"),
    "notify_error": ("{mail} no se pudo preparar", "{mail} could not be prepared"),
    "notify_refused": ("{mail} no enviado a {who}", "{mail} not sent to {who}"),
    "notify_refused_f": ("{mail} no enviada a {who}", "{mail} not sent to {who}"),
    "watcher_refused": ("{who} no se añadió en copia", "{who} not added as CC"),
    "delivery_failed": ("el correo {new} no se pudo entregar", "mail {new} could not be delivered"),
    "watchers_not_added": (
        "{new} direcciones más no añadidas en copia",
        "{new} more addresses not added as CC",
    ),  # fmt: skip
    "changed": ("{what}: {old} → {new}", "{what}: {old} → {new}"),
    "added": ("{role} añadido: {new}", "{role} added: {new}"),
    "removed": ("{role} quitado: {old}", "{role} removed: {old}"),
    "article": ("mensaje recibido", "message received"),
    "reply": ("respuesta enviada al cliente", "reply sent to the customer"),
    "note": ("nota interna añadida", "internal note added"),
    "merged": ("el ticket #{new} se fusionó en este", "ticket #{new} was merged into this one"),
    "merged_into": ("fusionado en el ticket #{new}", "merged into ticket #{new}"),
    "parent": ("seguimiento del ticket cerrado #{new}", "follow-up of closed ticket #{new}"),
    "follow_up": ("seguimiento en el ticket #{new}", "followed up in ticket #{new}"),
    "escalation": ("escalado al equipo {team}", "escalated to team {team}"),
    "routed": ("clasificado por las reglas {rules}", "routed by rules {rules}"),
    "routed_none": ("clasificado (ninguna regla aplicó)", "routed (no rule applied)"),
    "bounce": ("rebote de {who}", "bounce from {who}"),
    "survey": ("valoración del cliente: {new}", "customer's rating: {new}"),
    "reminder": ("recordatorio al cliente", "reminder to the customer"),
    "sla_warning": ("SLA de {clock}: aviso", "{clock} SLA: warning"),
    "sla_breach": ("SLA de {clock}: vencido", "{clock} SLA: breached"),
    "sla_tier": ("SLA: escalado al nivel {tier}", "SLA: escalated to tier {tier}"),
    "nobody": ("nadie", "nobody"),
}

# Mail kinds whose Spanish name is feminine ("respuesta enviada", "acuse enviado").
_FEMININE = {"reply", "survey"}

# Fields whose values are stored names the console words (a status, impact, urgency).
_WORDED = {"status", "impact", "urgency"}


# Field names the console's table has a label for (the ticket page's own words).
_LABELS = {"status", "priority", "category", "team", "assignee", "level", "requester",
           "impact", "urgency"}  # fmt: skip


def history_line(language: str, event: Mapping[str, Any]) -> str:
    """The sentence of one history event (`tickets.queries.ticket_detail`'s `events`)."""
    say = _sayer(language)
    kind, field = event["kind"], event.get("field")
    data: Mapping[str, Any] = event.get("data") or {}
    old, new = event.get("old"), event.get("new")
    mail = _mail(say, language, event)
    if mail is not None:
        return mail
    match kind:
        case "created":
            return say("created", source=term(language, "source", str(data.get("source", "-"))))
        case "participant":
            role = term(language, "role", str(field))
            return say("added" if new else "removed", role=role, old=old, new=new)
        case "article" | "linked" | "merged":
            return say(field if field in SENTENCES else kind, new=new)
        case "note" | "reminder":
            return say(kind)
        case "escalation":
            return say("escalation", team=data.get("team") or "-")
        case "routed":
            rules = ", ".join(data.get("rules") or [])
            return say("routed", rules=rules) if rules else say("routed_none")
        case "survey":
            return say("survey", new=new)
        case "sla":
            return _sla(say, language, str(field or ""))
    if field:
        what = translate(language, field) if field in _LABELS else term(language, "event", kind)
        return say("changed", what=what, old=_value(language, field, old),
                   new=_value(language, field, new))  # fmt: skip
    return term(language, "event", kind)


def _mail(say: Callable[..., str], language: str, event: Mapping[str, Any]) -> str | None:
    """The sentence of an event about mail going out (or coming back); None for others."""
    kind, field, new = event["kind"], event.get("field"), event.get("new")
    data: Mapping[str, Any] = event.get("data") or {}
    match kind:
        case "notified":
            who = ", ".join(data.get("recipients") or []) or say("nobody")
            key = "notified_f" if new in _FEMININE else "notified"
            return say(key, mail=term(language, "mail", str(new)), who=who)
        case "notify_error":
            return say("notify_error", mail=term(language, "mail", str(new)))
        case "notify_refused" if field == "mail":
            key = "notify_refused_f" if new in _FEMININE else "notify_refused"
            return say(key, mail=term(language, "mail", str(new)), who=data.get("recipient") or "-")
        case "notify_refused":  # a copied address the ticket did not take as a watcher
            return say("watcher_refused", who=data.get("recipient") or new)
        case "delivery_failed" | "watchers_not_added":
            return say(kind, new=new)
        case "bounce":
            return say("bounce", who=", ".join(data.get("recipients") or []) or "-")
    return None


def _value(language: str, field: str, value: object) -> str:
    if value in (None, ""):
        return "-"
    text = str(value)
    if field == "status" and text in STATUS_NAMES:
        return translate(language, text)
    if field in _WORDED and text in ("high", "medium", "low"):
        return translate(language, text)
    return text


def _sla(say: Callable[..., str], language: str, step: str) -> str:
    """An SLA step's field: `warning:<clock>`, `breach:<clock>` or `tier:<n>`."""
    name, _, detail = step.partition(":")
    if name == "tier":
        return say("sla_tier", tier=detail)
    if name in ("warning", "breach"):
        clock = translate(language, f"clock_{detail}").lower()
        return say(f"sla_{name}", clock=clock)
    return term(language, "event", "sla")


def _sayer(language: str) -> Callable[..., str]:
    def say(key: str, **values: object) -> str:
        spanish, english = SENTENCES[key]
        text = english if language == "en" else spanish
        return text.format(**{k: "-" if v is None else v for k, v in values.items()})

    return say
