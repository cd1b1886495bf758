"""parsers.parse on our own test mails (tests/mails/parsers) and on small inline messages."""

from __future__ import annotations

import hashlib
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from parsers import Address, MailKind, ParsedMessage, parse
from parsers.charsets import decode_bytes, decode_words
from parsers.filenames import MAX_FILENAME_BYTES, sanitise_filename
from parsers.language import guess_language

MAILS = Path(__file__).parent / "mails" / "parsers"


def parse_file(name: str) -> ParsedMessage:
    return parse((MAILS / name).read_bytes())


def mail(*headers: str, body: str = "Hola, una consulta.", ctype: str = "text/plain") -> bytes:
    """A small message; headers given as "Name: value" strings."""
    lines = [
        "From: Juan <juan@correo.example>",
        "To: soporte@clinica.example",
        "Date: Mon, 3 Mar 2025 10:00:00 +0000",
        *headers,
        f"Content-Type: {ctype}; charset=utf-8",
        "",
        body,
    ]
    return "\r\n".join(lines).encode("utf-8")


# --- never raises -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \x80\x81",
        b"Subject: only a header",
        b"\r\n\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary parameter at all",
        b"Subject: =?utf-8?b?!!!?= =?x?q?=ZZ?=\r\nFrom: <<<>>>@@\r\n"
        b"Date: 99 Foo 99999 99:99\r\n\r\n",
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n",
        b"Content-Type: text/plain; charset=\xff\xfe\r\n\r\n\xe9",
        b"Content-Type: text/html\r\n\r\n" + b"<p>" * 5000,
    ],
    ids=lambda raw: repr(raw[:24]),
)
def test_parse_never_raises_on_hostile_input(raw: bytes) -> None:
    parsed = parse(raw)
    assert len(parsed.content_digest) == 64
    assert isinstance(parsed.defects, tuple)


def test_parse_never_raises_on_random_bytes_or_truncated_mime() -> None:
    generator = random.Random(20250303)
    samples = [bytes(generator.randrange(256) for _ in range(400)) for _ in range(30)]
    full = (MAILS / "attachments.eml").read_bytes()
    samples += [full[:cut] for cut in range(0, len(full), max(1, len(full) // 40))]
    for raw in samples:
        assert len(parse(raw).content_digest) == 64


def test_unclosed_html_tags_do_not_make_parsing_quadratic() -> None:
    # 140 KB of "<tag" without ">" took 18 s in the stdlib HTML parser before escaping.
    raw = b"Content-Type: text/html\r\n\r\n" + b"<Content-Type: x\r\n" * 8000
    started = time.perf_counter()
    parsed = parse(raw)
    assert time.perf_counter() - started < 5
    assert parsed.text.startswith("<Content-Type: x")


def test_deep_nesting_is_cut_with_a_defect() -> None:
    depth = 200
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    parsed = parse(head + b"Content-Type: text/plain\r\n\r\ndeep\r\n")
    assert any("too deep" in defect for defect in parsed.defects)


def test_empty_input_reports_a_defect() -> None:
    parsed = parse_file("empty.eml")
    assert parsed.text == "" and parsed.new_text == "" and parsed.message_id is None
    assert "empty input" in parsed.defects
    assert parsed.kind is MailKind.PERSON


# --- charsets -----------------------------------------------------------------------------

CHARSET_CASES = {
    "charset_iso8859_1.eml": "el niño tiene fiebre. ¿Podríamos cambiarla al jueves por la mañana?",
    "charset_windows_1252.eml": "dice “consulta general” y cuesta 50 € — ¿es correcto?",
    "charset_latin1_with_cp1252_quotes.eml": "dice “consulta general” y cuesta 50 €",
    "charset_utf8_undeclared.eml": "Hola, José: la reunión del miércoles sigue en pie.",
    "charset_koi8_r.eml": "Здравствуйте! Я не могу записаться на приём к врачу",
    "charset_shift_jis.eml": "こんにちは。来週の予約を確認させてください。",
    "charset_x_unknown.eml": "el niño tiene fiebre. ¿Podríamos cambiarla al jueves por la mañana?",
    "charset_usascii_with_utf8.eml": "Hola, José: la reunión del miércoles sigue en pie.",
}


@pytest.mark.parametrize(("name", "expected"), CHARSET_CASES.items(), ids=CHARSET_CASES.keys())
def test_body_charsets_decode_to_the_real_text(name: str, expected: str) -> None:
    text = parse_file(name).text
    assert expected in text
    assert "\ufffd" not in text and "?" not in text.replace("¿", "").replace("?", "", 2)


def test_wrong_or_unknown_charsets_are_reported() -> None:
    assert "unknown charset 'x-unknown'" in parse_file("charset_x_unknown.eml").defects
    assert any("ascii" in defect for defect in parse_file("charset_usascii_with_utf8.eml").defects)


def test_encoded_subjects_in_legacy_charsets() -> None:
    assert parse_file("charset_koi8_r.eml").subject == "Запись к врачу"
    assert parse_file("charset_shift_jis.eml").subject == "予約の確認"
    assert parse_file("charset_x_unknown.eml").subject == "Información"


RUSSIAN = "Здравствуйте! Я не могу записаться на приём к врачу через сайт, пожалуйста помогите."


@pytest.mark.parametrize(
    ("data", "declared", "expected"),
    [
        ("año €".encode("cp1252"), "iso-8859-1", "año €"),
        (RUSSIAN.encode("koi8-r"), None, RUSSIAN),  # detection needs a sentence or two
        (b"caf\xc3\xa9", "us-ascii", "café"),
        (b"caf\xe9", None, "café"),
        (b"caf\xe9", "no-such-charset", "café"),
    ],
    ids=[
        "latin1-label-cp1252-bytes",
        "koi8-r-undeclared",
        "ascii-label-utf8",
        "short-8bit",
        "bogus",
    ],
)
def test_decode_bytes(data: bytes, declared: str | None, expected: str) -> None:
    assert decode_bytes(data, declared)[0] == expected


def test_decode_words_joins_a_character_split_across_encoded_words() -> None:
    # "ñ" is two UTF-8 bytes; the sender put one in each encoded word.
    assert decode_words("=?utf-8?b?c2XD?= =?utf-8?b?sWFs?=") == "señal"


# --- headers ------------------------------------------------------------------------------


def test_rfc2047_subject_and_address_normalisation() -> None:
    parsed = parse_file("subject_rfc2047.eml")
    assert parsed.subject == "Consulta urgente: señal perdida (mañana)"
    assert parsed.from_addr == Address(email="maria.pena@correo.example", name="María Peña")
    assert parsed.reply_to == (Address(email="recepcion@clinica.example", name="Recepción"),)
    assert [a.email for a in parsed.to] == ["soporte@clinica.example", "ruiz@clinica.example"]
    assert parsed.to[1].name == "Dr. Ruiz"
    assert parsed.cc == (Address(email="ana@clinica.example"),)
    assert parsed.delivered_to == ("soporte@clinica.example", "soporte+123@clinica.example")
    assert "invalid address dropped from to" in parsed.defects


def test_message_ids_lose_their_brackets() -> None:
    parsed = parse_file("subject_rfc2047.eml")
    assert parsed.message_id == "subject-2047@correo.example"
    assert parsed.in_reply_to == ("a1@clinica.example", "a2@clinica.example")
    assert parsed.references == ("root@clinica.example", "a1@clinica.example")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Message-ID: <a@b.example>", "a@b.example"),
        ("Message-ID: a@b.example", "a@b.example"),
        ("Message-ID:   < a@b.example >  (comment)", "a@b.example"),
        ("Message-ID: <first@x> <second@x>", "first@x"),
        ("Message-ID:", None),
    ],
)
def test_message_id_tolerates_garbage(header: str, expected: str | None) -> None:
    assert parse(mail(header)).message_id == expected


def test_subject_whitespace_and_line_breaks_are_collapsed() -> None:
    parsed = parse(mail("Subject: Consulta\r\n   sobre\t\tla   cita "))
    assert parsed.subject == "Consulta sobre la cita"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 3 Mar 2025 10:00:00 -0300", datetime(2025, 3, 3, 13, 0, tzinfo=UTC)),
        ("3 Mar 2025 10:00 GMT", datetime(2025, 3, 3, 10, 0, tzinfo=UTC)),
        ("Mon, 3 Mar 2025 10:00:00 -0000", datetime(2025, 3, 3, 10, 0, tzinfo=UTC)),
        ("Tue, 3 Mar 2025 10:00:00 +0100", datetime(2025, 3, 3, 9, 0, tzinfo=UTC)),  # wrong weekday
        ("yesterday", None),
    ],
)
def test_dates_become_aware_utc(value: str, expected: datetime | None) -> None:
    raw = mail().replace(b"Mon, 3 Mar 2025 10:00:00 +0000", value.encode())
    parsed = parse(raw)
    assert parsed.date == expected
    if expected is not None:
        assert parsed.date is not None and parsed.date.utcoffset().total_seconds() == 0


def test_addresses_are_lower_cased_and_deduplicated() -> None:
    parsed = parse(
        mail("Cc: A <Ana@X.Example>, ana@x.example, =?utf-8?q?Jos=C3=A9?= <JOSE@x.example>")
    )
    assert parsed.cc == (Address("ana@x.example", "A"), Address("jose@x.example", "José"))


# --- bodies and attachments ---------------------------------------------------------------


def test_attachments_inline_regular_and_nested() -> None:
    parsed = parse_file("attachments.eml")
    by_type = {attachment.content_type: attachment for attachment in parsed.attachments}
    image = by_type["image/png"]
    assert image.inline and image.content_id == "captura@correo.example"
    assert image.payload.startswith(b"\x89PNG")
    pdf = by_type["application/pdf"]
    assert pdf.filename == "passwd informe mañana.pdf" and not pdf.inline
    assert pdf.payload.startswith(b"%PDF-1.4")
    assert by_type["application/octet-stream"].filename == "bashrc"
    nested = by_type["message/rfc822"]
    assert nested.filename == "Resultados.eml"  # named from its subject, as mail clients do
    assert b"TEXTO DEL CORREO REENVIADO" in nested.payload


def test_nested_message_text_is_not_merged_into_the_body() -> None:
    parsed = parse_file("attachments.eml")
    assert parsed.text == "Adjunto el informe. Captura:"
    assert "REENVIADO" not in parsed.text
    assert parsed.html is not None and "cid:captura@correo.example" in parsed.html


def test_html_only_mail_is_converted_with_html2text() -> None:
    parsed = parse_file("html_only.eml")
    assert parsed.html is not None and "<b>descargar</b>" in parsed.html
    assert "No puedo descargar la receta & el informe." in parsed.text
    assert "https://portal.example/receta" in parsed.text
    assert "<p>" not in parsed.text


def test_plain_text_is_preferred_over_html() -> None:
    raw = (
        b'Content-Type: multipart/alternative; boundary="A"\r\n\r\n'
        b"--A\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nversion texto\r\n"
        b"--A\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>version html</p>\r\n--A--\r\n"
    )
    parsed = parse(raw)
    assert parsed.text == "version texto"
    assert parsed.html == "<p>version html</p>"


def test_malformed_mime_keeps_what_it_can_read() -> None:
    parsed = parse_file("malformed_mime.eml")
    assert parsed.subject == "Mensaje roto"
    assert parsed.message_id == "sin-corchetes@correo.example"
    assert parsed.in_reply_to == ("orig@clinica.example",)
    assert parsed.date is None
    assert parsed.text == "El cuerpo sigue aquí aunque falte el final."
    assert [attachment.filename for attachment in parsed.attachments] == ["truncado.pdf"]
    for defect in (
        "malformed header line dropped",
        "CloseBoundaryNotFoundDefect",
        "unparseable Date header",
    ):
        assert defect in parsed.defects


@pytest.mark.parametrize(
    ("raw_name", "content_type", "expected"),
    [
        ("../../etc/passwd", "application/octet-stream", "passwd"),
        ("..\\..\\windows\\win.ini", "text/plain", "win.ini"),
        ("/abs/path/informe.pdf", "application/pdf", "informe.pdf"),
        ("...hidden", "text/plain", "hidden"),
        ("a..b.pdf", "application/pdf", "a.b.pdf"),
        ("mal\x00di\x07to\r\n.txt", "text/plain", "maldito.txt"),
        ('qué?<>:"|*.png', "image/png", "qué_______.png"),
        ("=?utf-8?q?inf=C3=B3rme.pdf?=", "application/pdf", "infórme.pdf"),
        ("", "application/pdf", "attachment.pdf"),
        (None, "image/png", "attachment.png"),
        ("..", "message/rfc822", "message.eml"),
        ("../", "application/x-unknown-thing", "attachment"),
    ],
)
def test_filenames_are_sanitised(raw_name: str | None, content_type: str, expected: str) -> None:
    assert sanitise_filename(raw_name, content_type) == expected


def test_long_filenames_are_cut_keeping_the_extension() -> None:
    name = sanitise_filename("ñ" * 400 + ".pdf", "application/pdf")
    assert name.endswith(".pdf") and len(name.encode("utf-8")) <= MAX_FILENAME_BYTES


# --- classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        (["Auto-Submitted: auto-replied"], MailKind.AUTO_REPLY),
        (["Auto-Submitted: auto-generated"], MailKind.AUTO_REPLY),
        (["Auto-Submitted: auto-notified"], MailKind.AUTO_REPLY),
        (["Auto-Submitted: no"], MailKind.PERSON),
        (["Auto-Submitted: auto-generated", "X-Failed-Recipients: x@y.example"], MailKind.BOUNCE),
        (["X-Autoreply: yes"], MailKind.AUTO_REPLY),
        (["X-Autorespond: Vacation"], MailKind.AUTO_REPLY),
        (["X-Auto-Response-Suppress: All"], MailKind.PERSON),
        # Issue 14: Precedence alone is set on people's replies too; it needs list headers.
        (["Precedence: bulk"], MailKind.PERSON),
        (["Precedence: list"], MailKind.PERSON),
        (["Precedence: bulk", "List-Post: <mailto:l@x.example>"], MailKind.LIST),
        (["Precedence: junk"], MailKind.AUTO_REPLY),
        (["List-Id: Pacientes <pacientes.clinica.example>"], MailKind.LIST),
        (["List-Unsubscribe: <mailto:baja@clinica.example>"], MailKind.LIST),
        (["Return-Path: <>"], MailKind.AUTO_REPLY),
        (["Return-Path: <>", "Subject: Undelivered Mail Returned to Sender"], MailKind.BOUNCE),
        (["X-Failed-Recipients: nadie@correo.example"], MailKind.BOUNCE),
        (["Subject: Respuesta automática: Consulta"], MailKind.AUTO_REPLY),
        (["Subject: Fuera de la oficina"], MailKind.AUTO_REPLY),
        (["Subject: Ausente: Re: Cita"], MailKind.AUTO_REPLY),
        (["Subject: Out of Office: Appointment"], MailKind.AUTO_REPLY),
        (["Subject: Automatic reply: Appointment"], MailKind.AUTO_REPLY),
        (["Subject: Autoreply: hello"], MailKind.AUTO_REPLY),
        (["Subject: Vacation notice"], MailKind.AUTO_REPLY),
        (["Subject: Re: Out of Office: Appointment"], MailKind.PERSON),
        (["Subject: Paciente ausente en la cita"], MailKind.PERSON),
        # Precedence across kinds: bounce > auto-reply > list.
        (["Auto-Submitted: auto-replied", "List-Id: <l.example>"], MailKind.AUTO_REPLY),
        (["Subject: Out of office", "Precedence: bulk"], MailKind.AUTO_REPLY),
        (["Auto-Submitted: auto-replied", "X-Failed-Recipients: a@b.example"], MailKind.BOUNCE),
    ],
)
def test_classification_rules(headers: list[str], kind: MailKind) -> None:
    parsed = parse(mail(*headers))
    assert parsed.kind is kind, parsed.kind_reason
    assert parsed.kind_reason


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example",
        "Mail Delivery System <MAILER-DAEMON@mx.example>",
        "MAILER-DAEMON (Mail Delivery System)",
        "postmaster@clinica.example",
        "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
    ],
)
def test_daemon_senders_are_bounces(sender: str) -> None:
    raw = mail(body="Delivery failed.").replace(b"Juan <juan@correo.example>", sender.encode())
    assert parse(raw).kind is MailKind.BOUNCE


def test_mailer_daemon_beats_auto_replied() -> None:
    # Exim sends its bounces with "Auto-Submitted: auto-replied".
    raw = mail("Auto-Submitted: auto-replied").replace(
        b"Juan <juan@correo.example>", b"Mail Delivery System <Mailer-Daemon@mx.example>"
    )
    assert parse(raw).kind is MailKind.BOUNCE


def test_out_of_office_in_spanish() -> None:
    parsed = parse_file("out_of_office_es.eml")
    assert parsed.kind is MailKind.AUTO_REPLY
    assert parsed.kind_reason == "out-of-office subject"
    assert parsed.is_automatic


def test_auto_submitted_no_is_a_person() -> None:
    parsed = parse_file("auto_submitted_no.eml")
    assert parsed.kind is MailKind.PERSON
    assert not parsed.is_automatic


def test_read_receipts_are_auto_replies() -> None:
    parsed = parse(
        mail(ctype='multipart/report; report-type=disposition-notification; boundary="R"')
    )
    assert parsed.kind is MailKind.AUTO_REPLY


# --- delivery status ----------------------------------------------------------------------


def test_dsn_with_permanent_failure() -> None:
    parsed = parse_file("dsn_permanent.eml")
    assert parsed.kind is MailKind.BOUNCE
    assert parsed.kind_reason == "multipart/report; report-type=delivery-status"
    assert parsed.dsn_original_message_id == "ticket-123.1@clinica.example"
    (failure,) = parsed.delivery_failures  # the "delayed" recipient is not a failure
    assert failure.recipient == "nadie@correo.example"
    assert failure.status == "5.1.1" and failure.permanent
    assert failure.diagnostic.startswith("550 5.1.1")
    assert "User unknown" in failure.diagnostic


def test_temporary_failure_is_not_permanent() -> None:
    raw = (MAILS / "dsn_permanent.eml").read_bytes().replace(b"Status: 5.1.1", b"Status: 4.2.2")
    (failure,) = parse(raw).delivery_failures
    assert failure.status == "4.2.2" and not failure.permanent


def test_x_failed_recipients_is_the_fallback_failure_list() -> None:
    parsed = parse(mail("X-Failed-Recipients: Uno@X.example, dos@x.example"))
    assert [(f.recipient, f.permanent) for f in parsed.delivery_failures] == [
        ("uno@x.example", True),
        ("dos@x.example", True),
    ]


def test_non_standard_bounce_finds_the_message_id_in_its_text() -> None:
    body = (
        "Your message could not be delivered.\r\n\r\n> Message-ID: <ticket-9.1@clinica.example>\r\n"
    )
    raw = mail(body=body).replace(b"Juan <juan@correo.example>", b"MAILER-DAEMON@mx.example")
    assert parse(raw).dsn_original_message_id == "ticket-9.1@clinica.example"


def test_people_get_no_dsn_fields() -> None:
    parsed = parse(mail(body="Message-ID: <x@y.example> copied by a person"))
    assert parsed.dsn_original_message_id is None and parsed.delivery_failures == ()


# --- language -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (["Content-Language: en-US"], "Hola, gracias por todo.", "en"),
        ([], "Hola, buenos días. ¿Me ayudan por favor?", "es"),
        ([], "Hello, could you please check the attached invoice? Thanks.", "en"),
        ([], "12345 ok", None),
    ],
)
def test_language(headers: list[str], body: str, expected: str | None) -> None:
    assert parse(mail(*headers, body=body)).language == expected


# --- content digest -----------------------------------------------------------------------


def test_digest_ignores_transport_headers_and_line_endings() -> None:
    imap = (MAILS / "attachments.eml").read_bytes()
    smtp = (
        b"Return-Path: <paciente@correo.example>\r\n"
        b"Delivered-To: soporte@clinica.example\r\n"
        b"Received: from mx.correo.example by mx.clinica.example;\r\n"
        b"\tMon, 3 Mar 2025 10:00:01 +0000\r\n" + imap
    )
    unix_endings = imap.replace(b"\r\n", b"\n")
    digests = {parse(raw).content_digest for raw in (imap, smtp, unix_endings)}
    assert len(digests) == 1


def test_digest_differs_for_different_mails_with_the_same_message_id() -> None:
    first = parse(mail("Message-ID: <same@x.example>", body="Primera consulta"))
    second = parse(mail("Message-ID: <same@x.example>", body="Otra consulta distinta"))
    assert first.message_id == second.message_id
    assert first.content_digest != second.content_digest


def test_digest_covers_attachment_bytes() -> None:
    original = (MAILS / "attachments.eml").read_bytes()
    changed = original.replace(b"JVBERi0xLjQK", b"JVBERi0xLjUK")  # %PDF-1.4 → %PDF-1.5
    assert original != changed
    assert parse(original).content_digest != parse(changed).content_digest


def test_digest_is_sha256_hex() -> None:
    digest = parse(mail()).content_digest
    assert len(digest) == len(hashlib.sha256().hexdigest()) and int(digest, 16) >= 0


_SPANISH_MARKERS = "hola gracias saludos estimada atentamente adjunto quisiera necesito tengo"
_ENGLISH_MARKERS = "hello hi thanks please regards dear the and would could attached appointment"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        *((word.upper(), "es") for word in [*_SPANISH_MARKERS.split(), "problema", "cita"]),
        *(("Por favor", "es"), ("Buenos días", "es"), ("Buenas tardes", "es"), ("¿Y?", "es")),
        *((word.title(), "en") for word in [*_ENGLISH_MARKERS.split(), "problem"]),
        *(("Thank you", "en"), ("I am", "en"), ("I'm", "en")),
    ],
)
def test_every_marker_word_counts_in_any_case(text: str, language: str) -> None:
    assert guess_language("", f"{text}.") == language
