"""Builds realistic test mails the way common clients write them (headers and quoting)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

_clock = itertools.count()
# Recent: mail written long ago opens its ticket without an acknowledgement.
_START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)

CLIENT_HEADERS = {
    "gmail": {},
    "outlook": {"X-Mailer": "Microsoft Outlook 16.0", "Thread-Index": "AdmXyz0123456789=="},
    "apple": {"X-Mailer": "Apple Mail (2.3731.700.6)"},
}


def quote(client: str, author: str, address: str, text: str, subject: str = "") -> str:
    """The quoted history a client puts under a reply."""
    if client == "outlook":
        return (
            "\n\n________________________________\n"
            f"De: {author} <{address}>\n"
            "Enviado: lunes, 3 de marzo de 2025 10:00\n"
            "Para: soporte@soporte.example\n"
            f"Asunto: {subject}\n\n{text}\n"
        )
    if client == "apple":
        header = f"El 3 mar 2025, a las 10:00, {author} <{address}> escribió:"
    else:
        header = f"El lun, 3 mar 2025 a las 10:00, {author} <{address}> escribió:"
    quoted = "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
    return f"\n\n{header}\n\n{quoted}\n"


def mail(
    frm: str,
    subject: str,
    body: str,
    *,
    to: str = "Soporte <soporte@soporte.example>",
    cc: str | None = None,
    msgid: str | None = None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    client: str = "gmail",
    headers: dict[str, str] | None = None,
    attachments: list[tuple[str, str, bytes]] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    when = _START + timedelta(minutes=next(_clock))
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = msgid or make_msgid(domain="mail.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in {**CLIENT_HEADERS[client], **(headers or {})}.items():
        msg[name] = value
    msg.set_content(body)
    for filename, ctype, payload in attachments or []:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def message_id(raw: bytes) -> str:
    for line in raw.split(b"\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise ValueError("no Message-ID")


def big_mail(attachment_bytes: int = 18_000_000, seed: int = 25) -> bytes:
    """A scanned contract: Spanish text (8-bit, as clients send it) and one PDF-like
    attachment of `attachment_bytes` random bytes, base64-encoded (~25 MB for 18 MB)."""
    import random
    from email.policy import SMTP

    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Lucía Sánchez <lucia.sanchez@example.es>"
    msg["To"] = "Soporte <soporte@soporte.example>"
    msg["Subject"] = "Contrato firmado escaneado (adjunto grande)"
    msg["Message-ID"] = make_msgid(domain="example.es")
    msg["Date"] = format_datetime(_START)
    msg.set_content("Buenos días,\n\nLes adjunto el contrato escaneado.\n\nUn saludo,\nLucía\n")
    payload = b"%PDF-1.4\n" + random.Random(seed).randbytes(attachment_bytes - 9)
    msg.add_attachment(
        payload, maintype="application", subtype="pdf", filename="contrato_escaneado.pdf"
    )
    return msg.as_bytes()
