"""An agent's mail to a ticket: who may act, and what the mail does (DESIGN invariant 9).

Agent power is bound to an agent reply address, never to a From header alone: every mail
buzón sends an agent carries a plus-address `soporte+a<N>.<key>.<sig>@…` whose signature
(HMAC with our secret) names the ticket and the address it was sent to. A mail acts as
an agent only when it reaches such an address, its From is a configured agent, and the
address was made for that agent (or for a team address the agent belongs to); with
`agent_mail.require_authentication` it must also carry a DKIM or DMARC pass for the
From's domain from a trusted `authserv-id`. Anything else (a customer who forges an
agent's From on the customer's reply address, a forwarded notification) is not an
agent's mail and takes the customer's path.

What an agent's mail does goes through `tickets.actions`, exactly as `buzon tickets …`:
the text (quoted history and signature already removed by the parser, command lines
removed here) becomes a public reply with the mail's attachments; `#commands` become the
matching actions; `#nota` makes the whole mail an internal note. All of it applies in
one savepoint, or none of it: an unknown or refused command sends the agent one error
mail (`AgentMailRefused`) and nothing to the customer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email import policy as email_policy
from email.parser import BytesHeaderParser
from typing import Any

import authres
from sqlalchemy.orm import Session

from parsers import Address, ParsedMessage
from tickets import actions
from tickets.agent_commands import AgentText, Command, CommandError, split, split_assignee
from tickets.blobstore import BlobStore
from tickets.changes import AgentMailRefused, AgentReplied, Change, NoteAdded
from tickets.errors import TicketError
from tickets.lifecycle import Status
from tickets.models import Article, ArticleKind, RawMessage, RawState, Ticket
from tickets.policy import MailPolicy

log = logging.getLogger("buzon.agent_mail")

_TOKEN = re.compile(r"^a(\d{1,12})\.([0-9a-f]{8})\.([0-9a-f]{12})$")
_PASS_METHODS = ("dkim", "dmarc")


# --- agent reply addresses ------------------------------------------------------------------


def _sign(secret: bytes, text: str, length: int) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()[:length]


def agent_token(secret: bytes, ticket_id: int, bound_to: str) -> str:
    """`a<N>.<key>.<sig>`: the key says which address it was made for, the signature binds
    ticket and address together."""
    bound_to = bound_to.lower()
    key = _sign(secret, f"agent-key.{bound_to}", 8)
    return f"a{ticket_id}.{key}.{_sign(secret, f'agent.{ticket_id}.{bound_to}', 12)}"


def agent_reply_address(support: str, secret: bytes, ticket_id: int, bound_to: str) -> str:
    local, _, domain = support.partition("@")
    return f"{local}+{agent_token(secret, ticket_id, bound_to)}@{domain}"


def token_ticket(secret: bytes, address: str, bound_to: str) -> int | None:
    """The ticket an agent reply address names, if it was made for `bound_to`."""
    local = address.partition("@")[0].lower()
    match = _TOKEN.match(local.partition("+")[2])
    if match is None:
        return None
    ticket = int(match.group(1))
    expected = agent_token(secret, ticket, bound_to)
    return ticket if hmac.compare_digest(match.group(0), expected) else None


def looks_like_agent_token(address: str) -> bool:
    return _TOKEN.match(address.partition("@")[0].lower().partition("+")[2]) is not None


# --- who may act ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentBinding:
    ticket_id: int
    agent: str  # the configured agent who wrote the mail (its From)
    bound_to: str  # the address the reply address was made for


def bind(
    policy: MailPolicy,
    raw: Callable[[], bytes],
    msg: ParsedMessage,
    sender: Address,
    rcpts: Iterable[str],
) -> AgentBinding | None:
    """The agent binding of this mail, or None: it then is no agent's mail. `raw` loads
    the stored bytes, read only for an agent's signed reply address (a 25 MB mail's
    bytes are not loaded again for every mail)."""
    agent = sender.email.lower()
    if not policy.is_agent(agent):
        return None
    teams = policy.agent_mail.team_members
    allowed = [agent, *(team for team, members in teams.items() if agent in members)]
    for address in rcpts:
        if not (policy.is_own(address) and looks_like_agent_token(address)):
            continue
        for bound_to in allowed:
            number = token_ticket(policy.secret, address, bound_to)
            if number is not None:
                return _authenticated(policy, raw(), AgentBinding(number, agent, bound_to))
        log.info("agent reply address not made for %s: no agent power", agent)
    return None


def _authenticated(policy: MailPolicy, raw: bytes, binding: AgentBinding) -> AgentBinding | None:
    rules = policy.agent_mail
    if not rules.require_authentication:
        return binding
    domain = binding.agent.partition("@")[2]
    headers = BytesHeaderParser(policy=email_policy.compat32).parsebytes(raw)
    for value in headers.get_all("Authentication-Results") or []:
        if _passes(str(value), domain, rules.trusted_authserv_ids):
            return binding
    log.warning("agent mail from %s without a trusted DKIM/DMARC pass: no agent power", domain)
    return None


def _passes(value: str, domain: str, trusted: frozenset[str]) -> bool:
    """A DKIM (header.d) or DMARC (header.from) pass for `domain`, stamped by a trusted
    server. Parsed by `authres` (RFC 8601), not by hand."""
    try:
        header: Any = authres.AuthenticationResultsHeader.parse(
            "Authentication-Results: " + " ".join(value.split())
        )
    except Exception:  # noqa: BLE001 - a malformed header is simply no pass
        return False
    if str(header.authserv_id).lower() not in trusted:
        return False
    for result in header.results:
        if str(result.method).lower() in _PASS_METHODS and str(result.result).lower() == "pass":
            names = {str(p.value).lower().lstrip("@") for p in result.properties}
            if domain in names or any(n.endswith("@" + domain) for n in names):
                return True
    return False


# --- what the mail does --------------------------------------------------------------------


@dataclass(frozen=True)
class AgentOutcome:
    state: str
    ticket_id: int | None
    article_id: int | None
    reason: str | None
    changes: tuple[Change, ...] = ()


def apply(
    session: Session,
    policy: MailPolicy,
    row: RawMessage,
    msg: ParsedMessage,
    binding: AgentBinding,
    dedupe_key: str,
) -> AgentOutcome:
    """Apply an agent's mail to its ticket: all of it, or nothing and an error mail."""
    ticket = session.get(Ticket, binding.ticket_id, with_for_update=True)
    if ticket is None:
        return AgentOutcome(RawState.IGNORED, None, None, "agent mail for a missing ticket")
    try:
        parsed = split(msg.new_text or msg.text or "")
    except CommandError as exc:
        return _refuse(session, ticket, row, msg, binding, dedupe_key, str(exc))
    try:
        with session.begin_nested():
            changes, article = _run(session, policy, ticket, msg, binding, parsed)
    except TicketError as exc:
        session.expire(ticket)  # the savepoint rolled back what the commands had set
        return _refuse(session, ticket, row, msg, binding, dedupe_key, str(exc))
    if article is None:  # commands only: the mail is kept as a note saying what it did
        lines = "\n".join(c.line for c in parsed.commands)
        article = _note(session, ticket, binding.agent, f"Por correo:\n{lines}")
    _mark(article, row, msg, dedupe_key)
    return AgentOutcome(
        RawState.PROCESSED, ticket.id, article.id, "agent mail", changes=tuple(changes)
    )


def _run(
    session: Session,
    policy: MailPolicy,
    ticket: Ticket,
    msg: ParsedMessage,
    binding: AgentBinding,
    parsed: AgentText,
) -> tuple[list[Change], Article | None]:
    """The commands first (so that a new watcher gets the reply, an assignment and the
    reply make one mail), then the text: a public reply (with the status, as `tickets
    reply --status`), an internal note (#nota), or the status alone."""
    catalogue = policy.agent_mail.catalogue
    agent = binding.agent
    status = next((c.value for c in parsed.commands if c.name == "status"), None)
    note = any(c.name == "note" for c in parsed.commands)
    changes: list[Change] = []
    for command in parsed.commands:
        changes += _command(session, ticket, agent, command, catalogue)
    if note:
        if not parsed.text.strip():
            raise TicketError("#nota: the note is empty")
        changes += actions.add_note(session, ticket, agent, parsed.text)
    elif parsed.text.strip():
        changes += _take_if_unassigned(session, ticket, agent, parsed, catalogue)
        changes += actions.reply(
            session, ticket, agent, parsed.text, attachments=_attachments(msg),
            blobs=BlobStore(policy.attachments_dir), status=status,
        )  # fmt: skip
        return changes, _article(session, changes)
    elif not parsed.commands:
        raise TicketError("the mail is empty: no text and no #command")
    if status is not None:
        changes += actions.set_status(session, ticket, status, agent)
    return changes, _article(session, changes) if note else None


def _command(
    session: Session,
    ticket: Ticket,
    agent: str,
    command: Command,
    catalogue: actions.Catalogue,
) -> list[Change]:
    """One command as the matching action (status and note are handled by the caller)."""
    if command.name == "assign":
        who, note = _assignee(command.value, catalogue)
        return actions.assign(session, ticket, agent, agent=who, catalogue=catalogue, note=note)
    if command.name == "take":
        note = command.value or None
        return actions.assign(session, ticket, agent, agent=agent, catalogue=catalogue, note=note)
    if command.name == "team":
        return actions.assign(session, ticket, agent, team=command.value, catalogue=catalogue)
    if command.name == "escalate":
        o = command.options
        return actions.escalate(
            session, ticket, agent, team=o["team"], reason=o["reason"],
            escalation_type=o["type"], catalogue=catalogue,
        )  # fmt: skip
    if command.name == "priority":
        o = command.options
        return actions.set_priority(
            session, ticket, agent, impact=o["impact"], urgency=o["urgency"],
            matrix=catalogue.matrix,
        )  # fmt: skip
    if command.name == "cc_add":
        return actions.add_watcher(session, ticket, agent, command.value)
    if command.name == "cc_remove":
        return actions.remove_watcher(session, ticket, agent, command.value)
    return []


def _take_if_unassigned(
    session: Session,
    ticket: Ticket,
    agent: str,
    parsed: AgentText,
    catalogue: actions.Catalogue,
) -> list[Change]:
    """The agent who answers an unassigned ticket takes it (as help desks do): from then
    on the customer's replies reach them. Not when the mail says who handles it."""
    routed = {"assign", "take", "escalate"} & {c.name for c in parsed.commands}
    if ticket.assignee is not None or routed or ticket.status == Status.RESOLVED:
        return []
    return actions.assign(session, ticket, agent, agent=agent, catalogue=catalogue)


def _assignee(value: str, catalogue: actions.Catalogue) -> tuple[str, str | None]:
    """An agent's address, or a configured agent's name (several words), then the note."""
    lowered = value.lower()
    for name in sorted(catalogue.agents.values(), key=len, reverse=True):
        if name and lowered.startswith(name.lower()):
            return name, value[len(name) :].strip(" :,;-") or None
    who, note = split_assignee(value)
    return who, note or None


def _attachments(msg: ParsedMessage) -> list[actions.NewAttachment]:
    """The files the agent attached; inline images (a signature's logo) stay behind."""
    return [
        actions.NewAttachment(a.filename, a.content_type, a.payload)
        for a in msg.attachments
        if not (a.inline and a.content_id)
    ]


def _article(session: Session, changes: list[Change]) -> Article | None:
    """The article a reply or a note just wrote."""
    ids = [c.article_id for c in changes if isinstance(c, AgentReplied | NoteAdded)]
    return session.get(Article, ids[-1]) if ids else None


def _note(session: Session, ticket: Ticket, actor: str, text: str) -> Article:
    article = _article(session, actions.add_note(session, ticket, actor, text))
    assert article is not None
    return article


def _refuse(
    session: Session,
    ticket: Ticket,
    row: RawMessage,
    msg: ParsedMessage,
    binding: AgentBinding,
    dedupe_key: str,
    error: str,
) -> AgentOutcome:
    """Nothing applied: the mail is kept as an internal note saying why, and the agent
    (only) is told."""
    log.info("agent mail refused ticket=%s agent=%s: %s", ticket.id, binding.agent, error)
    text = f"Correo del agente no aplicado: {error}\n\n{msg.new_text or msg.text or ''}"
    article = _note(session, ticket, binding.agent, text.strip())
    _mark(article, row, msg, dedupe_key)
    refused = AgentMailRefused(ticket.id, binding.agent, (error,), row.id)
    return AgentOutcome(
        RawState.PROCESSED, ticket.id, article.id, f"agent mail refused: {error}"[:500],
        changes=(refused,),
    )  # fmt: skip


def _mark(article: Article, row: RawMessage, msg: ParsedMessage, dedupe_key: str) -> None:
    """Tie the article to the agent's mail: the same mail arriving again is a duplicate."""
    article.dedupe_key = dedupe_key[:1100]
    article.raw_message_id = row.id
    article.content_digest = msg.content_digest
    if article.kind == ArticleKind.NOTE:
        article.message_id = (msg.message_id or "")[:998] or None
