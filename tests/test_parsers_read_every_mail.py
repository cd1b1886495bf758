"""Issue 14, "Read every mail right": one real-looking mail per rule, bytes in, verdict out."""

from __future__ import annotations

import base64

import pytest

from parsers import Address, MailKind, parse

CRLF = "\r\n"


def mail(*headers: str, body: str = "Hola, no puedo entrar al portal.", ctype: str = "") -> bytes:
    """A person's mail from Outlook/Gmail, headers as "Name: value" strings."""
    lines = [
        "Received: from mx.correo.example by mx.clinica.example; Mon, 3 Mar 2025 10:00:01 +0000",
        "Message-ID: <CAF123abc@mail.correo.example>",
        "Date: Mon, 3 Mar 2025 10:00:00 +0000",
        "To: Soporte <soporte@clinica.example>",
        "MIME-Version: 1.0",
        *headers,
        ctype or "Content-Type: text/plain; charset=utf-8",
        "",
        body,
    ]
    return CRLF.join(lines).encode("utf-8")


PERSON_FROM = "From: Juan Pérez <juan@correo.example>"


# --- a person's mail is never automatic ----------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        # Exchange and some webmails stamp replies with Precedence; no list headers at all.
        [PERSON_FROM, "Subject: RE: [#12] Receta", "Precedence: bulk"],
        [PERSON_FROM, "Subject: Re: cita", "Precedence: list", "In-Reply-To: <a@b>"],
        # RFC 5436: a Sieve/Exchange forward of a customer's mail is that customer's mail.
        [PERSON_FROM, "Subject: Fwd: factura", "Auto-Submitted: auto-forwarded"],
        # The mail admin of a clinic writing to support is a person.
        ["From: Postmaster <postmaster@clinica-norte.example>", "Subject: Alta de usuarios"],
    ],
    ids=["precedence-bulk", "precedence-list", "auto-forwarded", "postmaster-person"],
)
def test_people_are_not_classified_automatic(headers: list[str]) -> None:
    parsed = parse(mail(*headers, body="Hola, necesito ayuda con el alta de dos médicos."))
    assert parsed.kind is MailKind.PERSON, parsed.kind_reason
    assert parsed.from_addr is not None


def test_precedence_bulk_with_list_headers_is_still_a_list() -> None:
    raw = mail(PERSON_FROM, "Subject: Boletín", "Precedence: bulk", "List-Id: <news.example>")
    assert parse(raw).kind is MailKind.LIST


def test_postmaster_bounce_is_still_a_bounce() -> None:
    raw = mail(
        "From: postmaster@clinica.example",
        "Subject: Returned mail: see transcript",
        body="The following recipient could not be delivered: ana@x.example (user unknown)",
    )
    assert parse(raw).kind is MailKind.BOUNCE


# --- usable senders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected", "source"),
    [
        (
            ['From: "Mark" <>', "Reply-To: Mark Evans <mark.evans@correo.example>"],
            Address("mark.evans@correo.example", "Mark Evans"),
            "Reply-To",
        ),
        (["From: Ana <ana.lopez@yahoo.com.>"], Address("ana.lopez@yahoo.com", "Ana"), "repaired"),
        (["Sender: Recepción <recepcion@clinica-sur.example>"], None, "Sender"),
        (['From: "Mark" <>', "Return-Path: <mark@correo.example>"], None, "Return-Path"),
    ],
    ids=["named-null-from", "trailing-dot", "missing-from-sender", "envelope-sender"],
)
def test_sender_falls_back_to_a_usable_mailbox(
    headers: list[str], expected: Address | None, source: str
) -> None:
    parsed = parse(mail(*headers, "Subject: Consulta"))
    assert parsed.from_addr is not None
    if expected is not None:
        assert parsed.from_addr == expected
    assert any(source in defect for defect in parsed.defects), parsed.defects
    assert parsed.kind is MailKind.PERSON, parsed.kind_reason


# --- machine mail is caught ----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        ["From: soporte@proveedor.example", "Subject: Re: Consulta", "X-Loop: soporte@proveedor"],
        ["From: helpdesk@proveedor.example", "Subject: Ticket recibido", "X-No-Loop: yes"],
        [
            "From: Ana Ruiz <aruiz@hospital.example>",
            "Subject: AUTO: Ana Ruiz is out of the office (returning 10/03/2025)",
        ],
    ],
    ids=["x-loop", "x-no-loop", "lotus-auto"],
)
def test_machine_mail_is_automatic(headers: list[str]) -> None:
    parsed = parse(mail(*headers, body="Your message was received."))
    assert parsed.kind is MailKind.AUTO_REPLY, parsed.kind_reason


CHALLENGE_PLAIN = mail(
    "From: Carlos Díaz <carlos@correo.example>",
    "Subject: Please confirm your message to carlos@correo.example",
    body="Hi, I protect my inbox with a sender verification service. To deliver your message,"
    " please click the link below to confirm you are a human:\r\nhttps://verify.example/c/abc",
)

CHALLENGE_DSN = b"""\
Return-Path: <>
From: Mail Delivery System <noreply@verify.example>
To: soporte@clinica.example
Subject: Your message is awaiting verification
Date: Mon, 3 Mar 2025 10:00:00 +0000
Message-ID: <cr-1@verify.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain; charset=us-ascii

Your message to carlos@correo.example is held pending sender verification.
Please confirm that you are a human by visiting https://verify.example/c/xyz

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; verify.example

Final-Recipient: rfc822; carlos@correo.example
Action: failed
Status: 5.0.0
Diagnostic-Code: smtp; 550 5.0.0 held for challenge/response verification

--b1--
""".replace(b"\n", b"\r\n")


def test_challenge_response_request_is_automatic() -> None:
    parsed = parse(CHALLENGE_PLAIN)
    assert parsed.kind is MailKind.AUTO_REPLY and "challenge" in parsed.kind_reason


def test_challenge_response_5_0_0_notice_is_not_a_delivery_failure() -> None:
    parsed = parse(CHALLENGE_DSN)
    assert parsed.kind is MailKind.AUTO_REPLY, parsed.kind_reason
    assert parsed.delivery_failures == ()


# --- charsets ------------------------------------------------------------------------------


def test_iso_2022_jp_body_without_charset_is_decoded() -> None:
    text = "お世話になっております。予約の変更をお願いします。"
    raw = mail(PERSON_FROM, "Subject: test", body="")[:-2] + b"\r\n" + text.encode("iso2022_jp")
    raw = raw.replace(b"charset=utf-8", b"charset=us-ascii")
    assert text in parse(raw).text


def test_gb2312_text_labelled_utf8_is_decoded() -> None:
    text = "您好，我的预约没有收到确认邮件，请帮我查一下。谢谢！"
    head = mail(PERSON_FROM, "Subject: yuyue", body="").decode()
    parsed = parse(head.encode() + text.encode("gb2312"))
    assert text in parsed.text


def test_shift_jis_labelled_iso_2022_jp_is_decoded() -> None:
    text = "明日の予約をキャンセルしたいです。よろしくお願いいたします。"
    head = mail(
        PERSON_FROM,
        "Subject: yoyaku",
        body="",
        ctype="Content-Type: text/plain; charset=iso-2022-jp",
    ).decode()
    assert text in parse(head.encode() + text.encode("shift_jis")).text


def test_raw_8bit_gb2312_subject_and_filename_use_the_message_charset() -> None:
    subject = "关于发票的问题"
    filename = "发票.pdf"
    raw = (
        b"From: =?gb2312?b?"
        + base64.b64encode("王伟".encode("gb2312"))
        + b"?= <wang@qq.example>\r\n"
        b"To: soporte@clinica.example\r\nSubject: " + subject.encode("gb2312") + b"\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
        b"Content-Type: text/plain; charset=gb2312\r\n\r\n"
        + "请查收附件。".encode("gb2312")
        + b"\r\n--zz\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
        b'filename="' + filename.encode("gb2312") + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--zz--\r\n"
    )
    parsed = parse(raw)
    assert parsed.subject == subject
    assert [a.filename for a in parsed.attachments] == [filename]
    assert parsed.from_addr == Address("wang@qq.example", "王伟")


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("=?unicode-1-1-utf-7?Q?Consulta +AOk-xito?=", "Consulta éxito"),
        ("=?UTF-8?Q? Personal=C3=A4nderung?=", "Personaländerung"),
        ("=?us-ascii?Q?Cita del jueves?=", "Cita del jueves"),
        ("=?iso-8859-1?q?Confirmaci=F3?= =?utf-8?q?n_de_cita?=", "Confirmación de cita"),
        ("=?utf-8?b?UmVjZXRh?=\r\n =?utf-8?b?IG3DqWRpY2E=?=", "Receta médica"),
    ],
    ids=["utf-7", "space-inside", "us-ascii", "adjacent-mixed-charsets", "adjacent-folded"],
)
def test_encoded_word_subjects(encoded: str, decoded: str) -> None:
    assert parse(mail(PERSON_FROM, f"Subject: {encoded}")).subject == decoded


# --- parts ---------------------------------------------------------------------------------

FORWARD = b"""\
From: Juan <juan@correo.example>
To: soporte@clinica.example
Subject: Fwd: two mails
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="m"

--m
Content-Type: text/plain; charset=utf-8

Les reenvio los dos correos.
--m
Content-Type: message/rfc822

From: a@b.example
Subject: =?utf-8?q?Resultados_de_an=C3=A1lisis?=

Uno.
--m
Content-Type: message/rfc822

From: a@b.example
Subject: Turno

Dos.
--m
Content-Type: image/jpeg; name="=?utf-8?q?radiograf=C3=ADa.jpg?="
Content-Transfer-Encoding: base64
Content-ID: <img1@x>

/9j/4AAQSkZJRgABAQ==
--m
Content-Type: application/pdf
Content-Disposition: attachment;
 filename*0*=utf-8''informe%20de%20;
 filename*1*=laboratorio%C3%B3.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQKMQ==
--m
Content-Type: application/pdf; name="scan.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKMg==
--m
Content-Type: application/pdf; name="scan.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKMw==
--m--
""".replace(b"\n", b"\r\n")


def test_attachment_names_from_subject_content_type_rfc2231_and_unique() -> None:
    names = [attachment.filename for attachment in parse(FORWARD).attachments]
    assert names == [
        "Resultados de análisis.eml",
        "Turno.eml",
        "radiografía.jpg",
        "informe de laboratorioó.pdf",
        "scan.pdf",
        "scan (2).pdf",
    ]


NEWSLETTER = b"""\
From: Laboratorio Central <info@lab.example>
To: soporte@clinica.example
Subject: Resultados disponibles
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="a"

--a
Content-Type: text/plain; charset=utf-8

Para ver este correo, abra la version web en su navegador.
--a
Content-Type: text/html; charset=utf-8

<html><body><h1>Resultados disponibles</h1><p>Estimado paciente, sus resultados de
laboratorio del 3 de marzo ya pueden consultarse en el portal. Si tiene dudas sobre los
valores, responda a este correo y un profesional le contestara.</p></body></html>
--a--
""".replace(b"\n", b"\r\n")


def test_html_is_preferred_when_text_plain_is_a_stub() -> None:
    parsed = parse(NEWSLETTER)
    assert "sus resultados de" in parsed.text and "navegador" not in parsed.text


def test_real_text_plain_alternative_is_kept() -> None:
    raw = NEWSLETTER.replace(
        b"Para ver este correo, abra la version web en su navegador.",
        b"Estimado paciente, sus resultados ya pueden consultarse en el portal web.",
    )
    assert parse(raw).text.startswith("Estimado paciente, sus resultados ya")


def _cp50220(text: str) -> bytes:
    """ISO-2022-JP as Outlook and Japanese webmail write it: cp932 characters in JIS rows."""
    out, mode = bytearray(), b"\x1b(B"
    for char in text:
        encoded = char.encode("cp932")
        if len(encoded) == 2:
            first, second = encoded
            row_offset = 0x70 if first < 0xA0 else 0xB0
            low = second < 0x9F
            jis = (
                ((first - row_offset) << 1) - low,
                second - ((0x1F + (second > 0x7F)) if low else 0x7E),
            )
            want, chunk = b"\x1b$B", bytes(jis)
        else:
            want, chunk = b"\x1b(B", encoded
        if want != mode:
            out += want
            mode = want
        out += chunk
    return bytes(out + (b"\x1b(B" if mode != b"\x1b(B" else b""))


def test_iso_2022_jp_with_nec_extension_characters_is_decoded() -> None:
    subject = "予約番号①の件、№12"
    word = base64.b64encode(_cp50220(subject)).decode()
    parsed = parse(mail(PERSON_FROM, f"Subject: =?ISO-2022-JP?B?{word}?="))
    assert parsed.subject == subject


@pytest.mark.parametrize(
    ("label", "codec", "text"),
    [
        ("iso-8859-2", "iso8859_2", "Dzień dobry, proszę o wizytę w środę."),
        ("koi8-r", "koi8_r", "Здравствуйте, прошу перенести приём."),
        ("windows-1251", "cp1251", "Здравствуйте, прошу перенести приём."),
        ("big5", "big5", "您好，請幫我更改預約時間。"),
        ("euc-kr", "euc_kr", "안녕하세요, 예약을 변경하고 싶습니다."),
        ("ks_c_5601-1987", "cp949", "안녕하세요, 예약을 변경하고 싶습니다."),
        ("gb2312", "gb18030", "您好，我想更改预约时间。"),
        ("euc-jp", "euc_jp", "予約の変更をお願いします。"),
        ("iso-8859-7", "iso8859_7", "Καλημέρα, θα ήθελα να αλλάξω το ραντεβού."),
        ("tis-620", "tis_620", "สวัสดีครับ ขอเลื่อนนัดหมาย"),
        ("windows-1256", "cp1256", "مرحبا، أريد تغيير الموعد."),
        ("iso-8859-8-i", "iso8859_8", "שלום, אני רוצה לשנות את התור."),
        ("utf-16", "utf-16", "Hola, quiero cambiar el turno."),
    ],
)
def test_declared_charsets_decode_to_readable_text(label: str, codec: str, text: str) -> None:
    head = mail(
        PERSON_FROM, "Subject: t", body="", ctype=f"Content-Type: text/plain; charset={label}"
    )
    assert parse(head + text.encode(codec)).text.strip() == text


def test_majordomo_list_mail_is_a_list_even_with_x_loop() -> None:
    raw = mail(
        PERSON_FROM,
        "Subject: Re: Limiting CPU",
        "Sender: owner-isp@lists.example.org",
        "Precedence: bulk",
        "X-Loop: lists.example.org",
    )
    parsed = parse(raw)
    assert parsed.kind is MailKind.LIST and parsed.kind_reason == "Sender: owner-isp"


def test_multipart_without_its_boundary_is_text_not_an_attachment() -> None:
    raw = mail(
        PERSON_FROM,
        "Subject: Consulta",
        body="Hola, adjunto no encuentro la factura de marzo.",
        ctype='Content-Type: multipart/alternative; boundary="--PART.BOUNDARY.0001"',
    )
    parsed = parse(raw)
    assert parsed.attachments == ()
    assert parsed.text == "Hola, adjunto no encuentro la factura de marzo."


def test_utf8_text_labelled_latin1_is_read_as_utf8() -> None:
    head = mail(
        PERSON_FROM, "Subject: t", body="", ctype="Content-Type: text/plain; charset=iso-8859-1"
    )
    assert (
        parse(head + "Información médica, año 2025".encode()).text == "Información médica, año 2025"
    )
    latin1 = parse(head + "Información médica".encode("latin-1")).text
    assert latin1 == "Información médica"


def test_a_real_bounce_that_mentions_verification_stays_a_bounce() -> None:
    raw = CHALLENGE_DSN.replace(b"Status: 5.0.0", b"Status: 5.1.1").replace(
        b"Subject: Your message is awaiting verification", b"Subject: Undelivered Mail"
    )
    parsed = parse(raw)
    assert parsed.kind is MailKind.BOUNCE, parsed.kind_reason
    assert [failure.status for failure in parsed.delivery_failures] == ["5.1.1"]


@pytest.mark.parametrize(
    ("label", "codec", "text"),
    [
        ("iso-2022-jp", "shift_jis", "予約変更"),
        ("iso-2022-jp", "euc_jp", "予約の変更"),
        ("euc-jp", "shift_jis", "至急確認"),
    ],
)
def test_short_japanese_text_under_the_wrong_japanese_label(
    label: str, codec: str, text: str
) -> None:
    head = mail(
        PERSON_FROM, "Subject: t", body="", ctype=f"Content-Type: text/plain; charset={label}"
    )
    assert parse(head + text.encode(codec)).text == text
