"""Person, auto-reply, bounce or list: the loop-prevention verdict (RFC 3834, 3464, 2369).

Rules run in order and the first match wins, so `kind_reason` names the strongest evidence.
Structural evidence (a delivery report) comes first; then explicit self-declarations; then
sender and subject heuristics. Across kinds, bounce beats auto-reply beats list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from functools import cached_property

from parsers import dsn
from parsers.headers import first_value, one_line, raw_values
from parsers.message import MailKind

Verdict = tuple[MailKind, str]

# Software-only senders. postmaster is kept apart: RFC 5321 makes it a mailbox read by a
# person, so it counts only when nothing more explicit (Auto-Submitted) says otherwise.
_DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon", "mailer_daemon", "mailerdaemon", "mdaemon"})
_DAEMON_NAMES = frozenset({"mailer-daemon", "mail delivery system", "mail delivery subsystem"})
_POSTMASTER_LOCAL_PARTS = frozenset({"postmaster", "post_master"})
_BOUNCE_SUBJECT = re.compile(
    r"^\W*(?:undeliver|undelivered|delivery status notification|returned mail|"
    r"mail delivery (?:failed|failure|system|subsystem|warning)|"
    r"(?:permanent |mail )?delivery (?:failure|has failed|problem|notification)|"
    r"failure notice|non-?delivery|nondeliverable|mail (?:could not be delivered|error)|"
    r"warning: could not send|mensaje no entregado|no se (?:ha )?pod(?:ido|ía) entregar|"
    r"notificación de estado de entrega|error de entrega)",
    re.IGNORECASE,
)
_DSN_BODY = re.compile(
    r"could not be delivered|couldn't be delivered|could not deliver|undeliverable|"
    r"delivery (?:has )?failed|failed recipient|permanent (?:fatal )?error|user unknown|"
    r"unknown user|no such user|mailbox (?:unavailable|full|not found|is full)|"
    r"recipient address rejected|was not delivered|did not reach the following recipient|"
    r"invalid (?:user|recipient) address|requested action not taken|did not exactly match|"
    r"original message (?:as received )?(?:is )?(?:as )?follows|"
    r"no (?:se )?(?:ha )?(?:podido|pudo) (?:ser )?entregar|"
    r"n'a pas pu [eê]tre d[ée]livr[ée]",
    re.IGNORECASE,
)
_BODY_SCAN_CHARS = 5000  # the failure explanation is always at the top of a bounce
# Anchored at the start: a person replying "Re: Out of office" is still a person.
_OUT_OF_OFFICE_SUBJECT = re.compile(
    r"^\W*(?:respuesta autom[aá]tica|fuera de (?:la )?oficina|ausente|out of (?:the )?office|"
    r"automatic reply|auto[- ]?reply|auto[- ]?response|vacation|vacaciones|"
    r"automatische antwort|r[ée]ponse automatique|risposta automatica|resposta autom[aá]tica|"
    r"auto:\s)",  # Lotus Notes: "AUTO: Ana López is out of the office (returning 05/03/2025)"
    re.IGNORECASE,
)
# Challenge/response ("confirm you are human") services answer mail with a request to verify
# the sender; answering them back starts a loop. Subjects and the services' own headers.
_CHALLENGE_SUBJECT = re.compile(
    r"(?:sender|e-?mail|message|address) (?:verification|confirmation) (?:required|request|needed)|"
    r"please (?:confirm|verify) (?:your (?:e-?mail|message|address)|you are (?:a )?human)|"
    r"\[(?:spam arrest|ask|tmda)\b|verify your e-?mail to .{0,60}deliver|"
    r"confirme? (?:que )?(?:eres|es) (?:una persona|humano)|verificaci[oó]n de remitente",
    re.IGNORECASE,
)
_CHALLENGE_TEXT = re.compile(
    r"confirm (?:that )?you are (?:a )?(?:human|real person|not a (?:robot|spammer))|"
    r"challenge[- /]response|verify (?:that )?you are (?:a )?human|"
    r"(?:added|add you) to (?:my|the) (?:approved senders|whitelist|guest list)|"
    r"(?:held|pending|awaiting) (?:your |sender )?(?:verification|confirmation)|"
    r"verifica(?:r)? que (?:eres|es) (?:una persona|humano)",
    re.IGNORECASE,
)
_CHALLENGE_HEADERS = ("x-boxbe-verification", "x-spamarrest-verification", "x-challenge")
_CHALLENGE_AGENTS = re.compile(r"tmda|boxbe|spam ?arrest|mailinblack|choicemail", re.IGNORECASE)
_NO_REPLY_LOCAL_PART = re.compile(r"^(?:no-?reply|do-?not-?reply|noresponder|no-?responder)")
_LIST_SENDER = re.compile(r"^owner-|-(?:owner|request|bounces|admin)(?:\+|$)")
_LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "list-subscribe",
    "mailing-list",
    "x-mailing-list",
)
_BOUNCE_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status", "feedback-report"})


@dataclass
class Evidence:
    """What the rules read, each piece computed at most once per message and only when a
    rule asks: most mails are people's, and scanning their text for failure wording is the
    costliest test here."""

    msg: Message
    subject: str
    text: str
    _headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str:
        if name not in self._headers:
            self._headers[name] = one_line(first_value(self.msg, name)).lower()
        return self._headers[name]

    def has(self, name: str) -> bool:
        return bool(raw_values(self.msg, name))

    @cached_property
    def delivery_report(self) -> bool:
        return dsn.is_delivery_report(self.msg)

    @cached_property
    def bounce_subject(self) -> bool:
        return bool(_BOUNCE_SUBJECT.search(self.subject))

    @cached_property
    def failure_text(self) -> bool:
        return bool(_DSN_BODY.search(self.text[:_BODY_SCAN_CHARS]))

    @cached_property
    def dsn_like(self) -> bool:
        """A delivery-failure report, even when it is not a well-formed RFC 3464 one."""
        return (
            self.delivery_report
            or self.has("x-failed-recipients")
            or self.bounce_subject
            or (self.failure_text and dsn.has_original_message(self.msg))
        )

    @cached_property
    def automatic_headers(self) -> bool:
        precedence = self.header("precedence")
        return precedence in ("bulk", "junk", "list") or auto_submitted_token(self) not in (
            "",
            "no",
            "auto-forwarded",
        )

    @property
    def list_header(self) -> str | None:
        return next((name for name in _LIST_HEADERS if self.has(name)), None)


def auto_submitted_token(e: Evidence) -> str:
    """The RFC 3834 keyword without parameters or comments: "auto-replied; x=1" → "auto-replied"."""
    return e.header("auto-submitted").split(";", 1)[0].split("(", 1)[0].strip()


def classify(msg: Message, subject: str, text: str) -> Verdict:
    evidence = Evidence(msg=msg, subject=subject, text=text)
    for rule in _RULES:
        verdict = rule(evidence)
        if verdict is not None:
            return verdict
    return MailKind.PERSON, "no automatic or list markers"


def _challenge(e: Evidence) -> Verdict | None:
    """A "please confirm you are human" request: automatic, and never a delivery failure.

    Some services send it as a DSN with status 5.0.0; the recipient did not bounce, the
    mail waits for the sender's confirmation, so it must not count as a failure.
    """
    agent = " ".join(e.header(name) for name in ("x-delivery-agent", "x-mailer", "from"))
    if any(e.has(name) for name in _CHALLENGE_HEADERS) or _CHALLENGE_AGENTS.search(agent):
        return MailKind.AUTO_REPLY, "challenge/response sender verification (service headers)"
    if _CHALLENGE_SUBJECT.search(e.subject):
        return MailKind.AUTO_REPLY, "challenge/response sender verification (subject)"
    # The headers first: they are cheaper to read than the text is to scan.
    if (
        _machine_sent(e)
        and _CHALLENGE_TEXT.search(e.text[:_BODY_SCAN_CHARS])
        and not _specific_failures(e)
    ):
        return MailKind.AUTO_REPLY, "challenge/response sender verification (text)"
    return None


def _specific_failures(e: Evidence) -> bool:
    """A report that names a real failure (5.1.1, 5.7.1, ...) is a bounce, whatever its text;
    challenge services report the generic 5.0.0 or nothing."""
    return any(f.status not in ("", "5.0.0") for f in dsn.delivery_failures(e.msg))


def _machine_sent(e: Evidence) -> bool:
    null_return_path = e.header("return-path").replace(" ", "") == "<>"
    return null_return_path or e.automatic_headers or e.delivery_report


def _report(e: Evidence) -> Verdict | None:
    if e.msg.get_content_type() == "multipart/report":
        report_type = str(e.msg.get_param("report-type") or "").strip().lower()
        if report_type == "disposition-notification":
            return MailKind.AUTO_REPLY, "read receipt (report-type=disposition-notification)"
        if report_type in _BOUNCE_REPORT_TYPES or not report_type:
            return MailKind.BOUNCE, f"multipart/report; report-type={report_type or 'missing'}"
        return MailKind.AUTO_REPLY, f"multipart/report; report-type={report_type}"
    if e.delivery_report:
        return MailKind.BOUNCE, "message/delivery-status part"
    return None


def _failed_recipients(e: Evidence) -> Verdict | None:
    return (MailKind.BOUNCE, "X-Failed-Recipients") if e.has("x-failed-recipients") else None


def _auto_replied(e: Evidence) -> Verdict | None:
    # An explicit RFC 3834 "this is a reply" outranks guesses from the sender's name.
    if e.header("auto-submitted").startswith("auto-replied"):
        return MailKind.AUTO_REPLY, "Auto-Submitted: auto-replied"
    return None


def _daemon_sender(e: Evidence) -> Verdict | None:
    for name in ("from", "return-path", "sender"):
        local, display = _local_part_and_name(e.header(name))
        if local in _DAEMON_LOCAL_PARTS or (name == "from" and display in _DAEMON_NAMES):
            shown = local if local in _DAEMON_LOCAL_PARTS else display
            return MailKind.BOUNCE, f"{name.title()}: {shown}"
    return None


def _postmaster_sender(e: Evidence) -> Verdict | None:
    """postmaster@ is a person's mailbox (RFC 5321): a bounce only with a failure report."""
    local, display = _local_part_and_name(e.header("from"))
    if local not in _POSTMASTER_LOCAL_PARTS and display not in _POSTMASTER_LOCAL_PARTS:
        return None
    # An empty body is no person's message either (a broken MIME report leaves none).
    if e.dsn_like or e.failure_text or not e.text.strip():
        return MailKind.BOUNCE, f"From: {local or display} with a delivery-failure report"
    return None


def _null_sender(e: Evidence) -> Verdict | None:
    null_return_path = e.header("return-path").replace(" ", "") == "<>"
    # Only a bare "From: <>": '"Mark" <>' is a person whose client lost the address.
    null_from = e.header("from").replace(" ", "") == "<>"
    if not (null_return_path or null_from):
        return None
    marker = "Return-Path: <>" if null_return_path else "From: <>"
    if e.dsn_like:
        return MailKind.BOUNCE, f"{marker} and a delivery-failure report"
    return MailKind.AUTO_REPLY, marker


def _failure_subject(e: Evidence) -> Verdict | None:
    """Home-made bounces: a failure subject, confirmed by headers, attachment or text."""
    if not e.bounce_subject:
        return None
    if e.automatic_headers or dsn.has_original_message(e.msg) or e.failure_text:
        return MailKind.BOUNCE, "delivery-failure subject and report"
    return None


def _auto_submitted(e: Evidence) -> Verdict | None:
    token = auto_submitted_token(e)
    # RFC 5436 auto-forwarded: a person's mail passed on by a rule, not an automatic reply.
    if not e.has("auto-submitted") or token in ("no", "auto-forwarded"):
        return None
    if token == "auto-generated" and e.dsn_like:
        return MailKind.BOUNCE, "Auto-Submitted: auto-generated delivery report"
    return MailKind.AUTO_REPLY, f"Auto-Submitted: {token or 'present'}"


def _autoreply_headers(e: Evidence) -> Verdict | None:
    for name in ("x-autoreply", "x-autorespond"):
        if e.has(name) and e.header(name) not in ("no", "false", "0", "off"):
            return MailKind.AUTO_REPLY, name.title()
    return None


def _precedence_junk(e: Evidence) -> Verdict | None:
    if e.header("precedence") == "junk":
        return MailKind.AUTO_REPLY, "Precedence: junk"
    return None


def _out_of_office_subject(e: Evidence) -> Verdict | None:
    if _OUT_OF_OFFICE_SUBJECT.search(e.subject):
        return MailKind.AUTO_REPLY, "out-of-office subject"
    return None


def _list_headers(e: Evidence) -> Verdict | None:
    name = e.list_header
    return (MailKind.LIST, name.title()) if name is not None else None


def _list_sender(e: Evidence) -> Verdict | None:
    """Majordomo and Mailman resend as "Sender: owner-<list>@" or "<list>-bounces@"."""
    local, _ = _local_part_and_name(e.header("sender"))
    if _LIST_SENDER.search(local):
        return MailKind.LIST, f"Sender: {local}"
    return None


def _precedence_bulk(e: Evidence) -> Verdict | None:
    """Precedence: bulk/list alone is not enough: people's clients and servers set it on
    replies. Without list headers it counts only from a no-reply sender."""
    value = e.header("precedence")
    local, _ = _local_part_and_name(e.header("from"))
    if value in ("bulk", "list") and _NO_REPLY_LOCAL_PART.match(local):
        return MailKind.LIST, f"Precedence: {value} from a no-reply sender"
    return None


def _loop_headers(e: Evidence) -> Verdict | None:
    """X-Loop / X-No-Loop: set by autoresponders, procmail and ticket systems on their mail."""
    for name in ("x-loop", "x-no-loop"):
        if e.has(name):
            return MailKind.AUTO_REPLY, name.title()
    return None


def _local_part_and_name(header: str) -> tuple[str, str]:
    """("mailer-daemon", "mail delivery system") from a raw, possibly invalid, address header.

    Works on the raw text: "MAILER-DAEMON (Mail Delivery System)" has no domain and never
    survives address normalisation, yet it is the clearest bounce marker there is.
    """
    match = re.search(r"<\s*([^<>]*)>", header)
    address = match[1] if match else header.split("(", 1)[0]
    display = header[: match.start()] if match else ""
    local = address.split("@", 1)[0].replace("\\", "").strip().strip('"')
    return local.lower(), display.strip().strip('"').strip().lower()


_RULES: tuple[Callable[[Evidence], Verdict | None], ...] = (
    _challenge,
    _report,
    _failed_recipients,
    _daemon_sender,
    _auto_replied,
    _postmaster_sender,
    _null_sender,
    _failure_subject,
    _auto_submitted,
    _autoreply_headers,
    _precedence_junk,
    _out_of_office_subject,
    _list_headers,
    _list_sender,
    _precedence_bulk,
    _loop_headers,
)
