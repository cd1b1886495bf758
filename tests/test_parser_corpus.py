"""parsers.parse over the shared corpus of real mails written by other projects.

Parametrized per folder, not per file: a failure lists the offending file names.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from parsers import MailKind, ParsedMessage, parse
from parsers.charsets import decode_bytes
from parsers.htmltext import html_to_text
from parsers.reply import strip_reply

TOP_FOLDERS = [
    "alfonsrv-mail-parser-reply",
    "cpython-test_email",
    "django-helpdesk",
    "enmime",
    "flufl-bounce",
    "github-email_reply_parser",
    "imap_tools",
    "mailgun-talon",
    "mimekit",
    "nodemailer-mailparser",
    "notmuch",
    "php-mime-mail-parser",
    "request-tracker",
    "ruby-mail",
    "sisimai-set-of-emails",
    "spamscope-mail-parser",
    "zapier-email-reply-parser",
]

# Measured 2025: 102 of 103 flufl-bounce files are bounces (99.0 %). The exception is a
# French/English "non remis" notice sent as "RE: …" from an ordinary mailbox with no
# automatic header at all; we would rather let it through than classify replies by body.
FLUFL_NOT_BOUNCES = {"simple_20.txt"}
FLUFL_MIN_RATE = 0.98

# Measured: bsd 610/629 (97.0 %), dos 78/80 and mac 78/80 (97.5 %). Every exception is named
# with the reason it is not a delivery failure for us (or cannot be told from one).
SISIMAI_NOT_BOUNCES = {
    # RFC 3834 vacation replies: correctly AUTO_REPLY, not bounces.
    "rfc3834-01.eml",
    "rfc3834-02.eml",
    "rfc3834-03.eml",
    "rfc3834-04.eml",
    "rfc3834-05.eml",
    "rfc3834-06.eml",
    # Abuse complaints sent as multipart/mixed by a person-like mailbox; arf-26 is an
    # auto-replied "unsubscribe" request (AUTO_REPLY).
    "arf-22.eml",
    "arf-23.eml",
    "arf-24.eml",
    "arf-26.eml",
    # Amazon SNS notifications: JSON in a plain mail from no-reply@sns.amazonaws.com.
    "lhost-amazonses-09.eml",
    "lhost-amazonses-10.eml",
    "lhost-amazonses-11.eml",
    "lhost-amazonses-12.eml",
    "lhost-amazonses-13.eml",
    # fml mailing-list manager errors ("not member", "Loop Alert") from the list admin.
    "lhost-fml-02.eml",
    "lhost-fml-03.eml",
    # Japanese-only subject and text; only the attached original hints at a bounce.
    "lhost-kddi-01.eml",
    # A person forwarding a bounce ("Fwd: Returned mail"): a person's mail, rightly.
    "lhost-sendmail-14.eml",
}
SISIMAI_MIN_RATE = 0.95

REPLY_BODY_FOLDERS = [
    "alfonsrv-mail-parser-reply",
    "github-email_reply_parser",
    "zapier-email-reply-parser",
    "mailgun-talon",
]


def files_in(folder: Path, *, recursive: bool = True) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in found if path.is_file() and path.name != "README.md")


@functools.cache
def parse_folder(corpus: Path, name: str) -> dict[Path, ParsedMessage]:
    folder = corpus / name
    if not folder.is_dir():
        pytest.fail(f"corpus folder {name} is missing from {corpus}")
    return {path: parse(path.read_bytes()) for path in files_in(folder)}


@pytest.mark.parametrize("folder", TOP_FOLDERS)
def test_every_corpus_mail_parses_without_crashing(corpus: Path, folder: str) -> None:
    failures = []
    for path in files_in(corpus / folder):
        try:
            parsed = parse(path.read_bytes())
        except Exception as exc:  # the point of the test: name every file that raises
            failures.append(f"{path.relative_to(corpus)}: raised {exc!r}")
            continue
        if not re.fullmatch(r"[0-9a-f]{64}", parsed.content_digest):
            failures.append(f"{path.relative_to(corpus)}: no content digest")
        if any(defect.startswith("parser failure") for defect in parsed.defects):
            failures.append(f"{path.relative_to(corpus)}: fell back to raw text {parsed.defects}")
    assert files_in(corpus / folder), f"{folder} is empty"
    assert not failures, "\n".join(failures)


def test_flufl_bounce_folder_is_classified_as_bounces(corpus: Path) -> None:
    parsed = parse_folder(corpus, "flufl-bounce")
    missed = {path.name for path, p in parsed.items() if p.kind is not MailKind.BOUNCE}
    rate = 1 - len(missed) / len(parsed)
    assert missed <= FLUFL_NOT_BOUNCES, f"new non-bounces: {sorted(missed - FLUFL_NOT_BOUNCES)}"
    assert rate >= FLUFL_MIN_RATE, f"bounce rate {rate:.3f}"


@pytest.mark.parametrize("folder", ["bsd", "dos", "mac"])
def test_sisimai_bounce_folders_are_classified_as_bounces(corpus: Path, folder: str) -> None:
    parsed = parse_folder(corpus, f"sisimai-set-of-emails/maildir/{folder}")
    missed = {path.name for path, p in parsed.items() if p.kind is not MailKind.BOUNCE}
    rate = 1 - len(missed) / len(parsed)
    assert missed <= SISIMAI_NOT_BOUNCES, f"new non-bounces: {sorted(missed - SISIMAI_NOT_BOUNCES)}"
    assert rate >= SISIMAI_MIN_RATE, f"bounce rate {rate:.3f}"


def test_sisimai_vacation_replies_are_auto_replies(corpus: Path) -> None:
    parsed = parse_folder(corpus, "sisimai-set-of-emails/maildir/bsd")
    vacation = {path.name: p.kind for path, p in parsed.items() if path.name.startswith("rfc3834")}
    assert vacation and set(vacation.values()) == {MailKind.AUTO_REPLY}, vacation


def test_sisimai_not_folder_has_no_bounces(corpus: Path) -> None:
    parsed = parse_folder(corpus, "sisimai-set-of-emails/maildir/not")
    bounces = [
        f"{path.name}: {p.kind_reason}" for path, p in parsed.items() if p.kind is MailKind.BOUNCE
    ]
    assert parsed and not bounces, bounces


def test_bounces_report_failures_or_original_message(corpus: Path) -> None:
    """Standard DSNs must yield the failed recipients and the id of the mail that bounced."""
    parsed = parse_folder(corpus, "ruby-mail/emails/multipart_report_emails")
    bounce = parsed[corpus / "ruby-mail/emails/multipart_report_emails/multi_address_bounce1.eml"]
    assert bounce.kind is MailKind.BOUNCE
    assert bounce.dsn_original_message_id == "118707422.15521266992174819.JavaMail.root@lvmail01"
    assert len(bounce.delivery_failures) == 5
    assert all(
        failure.permanent and failure.status.startswith("5") for failure in bounce.delivery_failures
    )


def _reply_text(path: Path) -> str:
    """The full text a reply parser sees: whole mails are parsed, bare bodies decoded."""
    raw = path.read_bytes()
    if path.suffix == ".eml":
        return parse(raw).text
    text, _ = decode_bytes(raw)
    return html_to_text(text) if path.suffix == ".html" else text


@pytest.mark.parametrize("folder", REPLY_BODY_FOLDERS)
def test_reply_corpus_new_text_is_a_non_empty_part_of_the_text(corpus: Path, folder: str) -> None:
    failures = []
    checked = 0
    for path in files_in(corpus / folder):
        text = _reply_text(path)
        if not text.strip():
            continue
        new_text = strip_reply(text)
        checked += 1
        if not new_text.strip() or len(new_text) > len(text):
            failures.append(f"{path.name}: new={len(new_text)} full={len(text)}")
    assert checked, f"no reply bodies in {folder}"
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("folder", REPLY_BODY_FOLDERS)
def test_reply_corpus_strips_something_from_most_quoted_mails(corpus: Path, folder: str) -> None:
    """Bodies that quote with "> " must lose the quote in new_text."""
    unstripped = []
    for path in files_in(corpus / folder):
        text = _reply_text(path)
        quoted = [line for line in text.splitlines() if line.startswith("> ") and len(line) > 12]
        if quoted and any(line in strip_reply(text).splitlines() for line in quoted):
            unstripped.append(path.name)
    assert not unstripped, unstripped
