"""Person, auto-reply, bounce or list: the loop-prevention verdict (RFC 3834, 3464, 2369).

Rules run in order and the first match wins, so `kind_reason` names the strongest evidence.
Structural evidence (a delivery report) comes first; then explicit self-declarations; then
sender and subject heuristics. Across kinds, bounce beats auto-reply beats list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message

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
    r"recipient address rejected|was not delivered|"
    r"no (?:se )?(?:ha )?(?:podido|pudo) (?:ser )?entregar|"
    r"n'a pas pu [eê]tre d[ée]livr[ée]",
    re.IGNORECASE,
)
_BODY_SCAN_CHARS = 5000  # the failure explanation is always at the top of a bounce
# Anchored at the start: a person replying "Re: Out of office" is still a person.
_OUT_OF_OFFICE_SUBJECT = re.compile(
    r"^\W*(?:respuesta autom[aá]tica|fuera de (?:la )?oficina|ausente|out of (?:the )?office|"
    r"automatic reply|auto[- ]?reply|auto[- ]?response|vacation|vacaciones)\b",
    re.IGNORECASE,
)
_BOUNCE_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status", "feedback-report"})


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the rules read, computed once per message."""

    msg: Message
    subject: str
    text: str

    def header(self, name: str) -> str:
        return one_line(first_value(self.msg, name)).lower()

    def has(self, name: str) -> bool:
        return bool(raw_values(self.msg, name))

    @property
    def bounce_subject(self) -> bool:
        return bool(_BOUNCE_SUBJECT.search(self.subject))

    @property
    def failure_text(self) -> bool:
        return bool(_DSN_BODY.search(self.text[:_BODY_SCAN_CHARS]))

    @property
    def dsn_like(self) -> bool:
        """A delivery-failure report, even when it is not a well-formed RFC 3464 one."""
        return (
            dsn.is_delivery_report(self.msg)
            or self.has("x-failed-recipients")
            or self.bounce_subject
            or (self.failure_text and dsn.has_original_message(self.msg))
        )

    @property
    def automatic_headers(self) -> bool:
        precedence = self.header("precedence")
        auto_submitted = self.header("auto-submitted")
        return precedence in ("bulk", "junk", "list") or auto_submitted not in ("", "no")


def classify(msg: Message, subject: str, text: str) -> Verdict:
    evidence = Evidence(msg=msg, subject=subject, text=text)
    for rule in _RULES:
        verdict = rule(evidence)
        if verdict is not None:
            return verdict
    return MailKind.PERSON, "no automatic or list markers"


def _report(e: Evidence) -> Verdict | None:
    if e.msg.get_content_type() == "multipart/report":
        report_type = str(e.msg.get_param("report-type") or "").strip().lower()
        if report_type == "disposition-notification":
            return MailKind.AUTO_REPLY, "read receipt (report-type=disposition-notification)"
        if report_type in _BOUNCE_REPORT_TYPES or not report_type:
            return MailKind.BOUNCE, f"multipart/report; report-type={report_type or 'missing'}"
        return MailKind.AUTO_REPLY, f"multipart/report; report-type={report_type}"
    if dsn.is_delivery_report(e.msg):
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
    local, display = _local_part_and_name(e.header("from"))
    if local in _POSTMASTER_LOCAL_PARTS or display in _POSTMASTER_LOCAL_PARTS:
        return MailKind.BOUNCE, f"From: {local or display}"
    return None


def _null_sender(e: Evidence) -> Verdict | None:
    null_return_path = e.header("return-path").replace(" ", "") == "<>"
    null_from = e.header("from").replace(" ", "").endswith("<>")
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
    value = e.header("auto-submitted")
    token = value.split(";", 1)[0].split("(", 1)[0].strip()
    if not e.has("auto-submitted") or token == "no":
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


def _precedence_bulk(e: Evidence) -> Verdict | None:
    value = e.header("precedence")
    if value in ("bulk", "list"):
        return MailKind.LIST, f"Precedence: {value}"
    return None


def _list_headers(e: Evidence) -> Verdict | None:
    for name in ("list-id", "list-unsubscribe"):
        if e.has(name):
            return MailKind.LIST, name.title()
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
    _precedence_bulk,
    _list_headers,
)
