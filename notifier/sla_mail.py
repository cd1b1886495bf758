"""Internal SLA mail: warnings, breaches and escalation tiers, to staff only.

Written as outbox rows in the transaction of the scan that found them, like every other
mail. Who receives them: the assignee, else the team's addresses, else the tier-1
addresses (a breach nobody hears of is the one thing agents must never see); each
escalation tier goes to its configured addresses. Customers never: any address that is
a requester or watcher of the ticket is dropped, and so are our own addresses.
These rows are not counted in the customers' send budget (`automatic=False`): they are
bounded by the once-per-ticket SLA events, and staff mail must not eat into it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from notifier.compose import AUTO_GENERATED, Draft, Mailbox
from notifier.mail import Queued, identify, queue_mail, safely
from notifier.notify import NotifySettings
from notifier.planned import plan_mail
from parsers.thread_keys import subject_tag
from tickets.addresses import is_own
from tickets.facts import ticket_facts
from tickets.models import ParticipantRole, Ticket
from tickets.sla import SlaBreached, SlaChange, SlaEscalated, SlaWarning

log = logging.getLogger("buzon.notify")

CLOCK_LABELS = {
    "es": {"first_response": "primera respuesta", "resolution": "resolución"},
    "en": {"first_response": "first response", "resolution": "resolution"},
}


@dataclass(frozen=True)
class StaffRouting:
    tier1: Sequence[str] = ()  # team leads
    tier2: Sequence[str] = ()  # managers
    teams: Mapping[str, Sequence[str]] = field(default_factory=dict)  # team → addresses
    language: str = "es"
    timezone: str = "UTC"  # due times are shown in the business calendar's zone
    # Our support addresses and aliases. Exact addresses, not `support_domains`: the
    # staff often share the support domain and must still get these mails.
    own_addresses: frozenset[str] = frozenset()

    def is_own(self, email: str) -> bool:
        return is_own(email, self.own_addresses, domains=())


def notify_sla(
    session: Session,
    changes: Sequence[SlaChange],
    settings: NotifySettings,
    routing: StaffRouting,
    now: datetime,
) -> list[Queued]:
    """One internal mail per SLA change; a failure is recorded, never raised."""
    done = []
    for change in changes:
        ticket = session.get(Ticket, change.ticket_id)
        if ticket is None:
            continue
        kind = _kind(change)
        build = partial(_queue, session, ticket, change, kind, settings, routing, now)
        queued = safely(session, ticket, kind, build)
        if queued is not None:
            done.append(queued)
    return done


def _kind(change: SlaChange) -> str:
    if isinstance(change, SlaWarning):
        return "sla_warning"
    if isinstance(change, SlaBreached):
        return "sla_breach"
    return f"sla_tier{change.tier}"


def staff_recipients(ticket: Ticket, change: SlaChange, routing: StaffRouting) -> list[str]:
    """Who hears of this change, before the customer and own-address filter."""
    if isinstance(change, SlaEscalated):
        return list(routing.tier1 if change.tier == 1 else routing.tier2)
    if ticket.assignee:
        return [ticket.assignee]
    team = list(routing.teams.get(ticket.team or "", ()))
    return team or list(routing.tier1)


def _customers(ticket: Ticket) -> set[str]:
    people = {p.email.lower() for p in ticket.participants if p.role != ParticipantRole.AGENT}
    return people | {ticket.requester.lower()}


def _queue(
    session: Session,
    ticket: Ticket,
    change: SlaChange,
    kind: str,
    settings: NotifySettings,
    routing: StaffRouting,
    now: datetime,
) -> Queued:
    customers = _customers(ticket)
    wanted = dict.fromkeys(a.lower() for a in staff_recipients(ticket, change, routing))
    recipients = [a for a in wanted if a not in customers and not routing.is_own(a)]
    refused = tuple((a, "customer_or_own") for a in wanted if a not in recipients)
    if not recipients:
        log.warning("no staff address for ticket=%s kind=%s (configure sla/teams)", ticket.id, kind)
        return Queued(ticket.id, kind, None, (), refused)
    name = "sla_tier" if kind.startswith("sla_tier") else kind
    template = (routing.language, name, _context(ticket, change, settings, routing))
    mail = identify(session, ticket, settings.subject_tag, settings.secret, settings.domain,
                    now)  # fmt: skip
    draft = Draft(
        subject=mail.subject,
        body="",  # rendered at delivery, from the template and its data
        sender=settings.sender,
        to=[Mailbox(a) for a in recipients],
        auto_submitted=AUTO_GENERATED,
        language=routing.language,
        thread_topic=mail.thread_topic,
        thread_index=mail.thread_index,
    )
    return queue_mail(
        session,
        ticket,
        plan_mail(draft, now, template=template),
        kind=kind,
        message_id=mail.message_id,
        mail_from=settings.sender.email,
        recipients=recipients,
        article_id=None,  # staff mail is no article: the customer's thread never shows it
        automatic=False,
        now=now,
        refused=refused,
        internal=True,
    )


def _context(
    ticket: Ticket, change: SlaChange, settings: NotifySettings, routing: StaffRouting
) -> dict[str, Any]:
    clock = getattr(change, "clock", "resolution")
    due: datetime | None = getattr(change, "due_at", None)
    language = routing.language if routing.language in CLOCK_LABELS else "es"
    due_local = (
        due.astimezone(ZoneInfo(routing.timezone)).strftime(f"%Y-%m-%d %H:%M ({routing.timezone})")
        if due
        else "-"
    )
    return ticket_facts(ticket) | {
        "tag": subject_tag(settings.subject_tag, ticket.id),
        "clock": clock,
        "clock_label": CLOCK_LABELS[language].get(clock, clock),
        "due_local": due_local,
        "tier": getattr(change, "tier", 0),
        "from_name": settings.sender.name,
        "automatic": True,
    }
