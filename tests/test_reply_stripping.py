"""new_text: quoted history and signatures removed, for the Spanish and English clients we see."""

from __future__ import annotations

from pathlib import Path

import pytest

from parsers import parse
from parsers.reply import (
    _LIBRARY_HEADERS,
    _may_hold_library_header,
    _stripped,
    strip_reply,
)

MAILS = Path(__file__).parent / "mails" / "parsers"

GMAIL_ES = """\
Hola, ya pude descargar la receta.
Mañana llevo los estudios.

El lun, 3 mar 2025 a las 10:00, Ana Soporte <ana@clinica.example> escribió:

> Hola Juan, prueba de nuevo desde el portal.
> Saludos
"""

GMAIL_ES_WRAPPED = """\
Sigue sin funcionar el enlace.

El lun, 3 mar 2025 a las 10:00, Ana López Soporte Clínica (<ana.lopez@clinica.example>)
escribió:

> Prueba reiniciar el navegador.
"""

GMAIL_EN = """\
It works now, thank you.

On Mon, Mar 3, 2025 at 10:00 AM Ana <ana@clinic.example> wrote:

> Please try again from the portal.
"""

OUTLOOK_ES = """\
Adjunto la factura que me pidieron.

________________________________
De: Soporte Clínica <soporte@clinica.example>
Enviado: lunes, 3 de marzo de 2025 10:00
Para: Juan Pérez <juan@correo.example>
Asunto: RE: Factura de febrero

Hola Juan, ¿nos envías la factura?
"""

OUTLOOK_EN = """\
Invoice attached.

From: Clinic Support <support@clinic.example>
Sent: Monday, March 3, 2025 10:00 AM
To: John Smith <john@mail.example>
Subject: RE: February invoice

Hi John, could you send us the invoice?
"""

ORIGINAL_ES = """\
Confirmo la cita del jueves.

-----Mensaje original-----
De: Recepción [mailto:recepcion@clinica.example]
Enviado el: lunes, 3 de marzo de 2025 10:00
Para: Juan
Asunto: Cita

¿Puede confirmar la cita?
"""

ORIGINAL_EN = """\
I confirm Thursday.

-----Original Message-----
From: Front desk
Sent: Monday, March 3, 2025 10:00 AM
Subject: Appointment

Can you confirm?
"""

APPLE_ES = """\
Perfecto, allí estaremos.

Enviado desde mi iPhone

> El 3 mar 2025, a las 10:00, Ana <ana@clinica.example> escribió:
>
> ¿Confirma la cita del jueves?
"""

APPLE_EN = """\
See you then.

Sent from my iPhone

> On 3 Mar 2025, at 10:00, Ana wrote:
>
> Can you confirm Thursday?
"""

SIGNATURE_ES = """\
Buenas tardes, adjunto la captura del error.

--\x20
Juan Pérez
Clínica del Sol · Tel. 555-0100
"""

SIGNATURE_EN = """\
Screenshot attached.

--\x20
John Smith | Sunrise Clinic
"""

QUOTED_LINES = """\
Respondo entre líneas:
> ¿Qué navegador usa?
Chrome, versión 120.
> ¿Le aparece algún mensaje?
Sí, "error 500".
"""

CASES = {
    "gmail_es": (GMAIL_ES, "Hola, ya pude descargar la receta.\nMañana llevo los estudios."),
    "gmail_es_wrapped": (GMAIL_ES_WRAPPED, "Sigue sin funcionar el enlace."),
    "gmail_en": (GMAIL_EN, "It works now, thank you."),
    "outlook_es": (OUTLOOK_ES, "Adjunto la factura que me pidieron."),
    "outlook_en": (OUTLOOK_EN, "Invoice attached."),
    "mensaje_original": (ORIGINAL_ES, "Confirmo la cita del jueves."),
    "original_message": (ORIGINAL_EN, "I confirm Thursday."),
    "apple_es": (APPLE_ES, "Perfecto, allí estaremos."),
    "apple_en": (APPLE_EN, "See you then."),
    "signature_es": (SIGNATURE_ES, "Buenas tardes, adjunto la captura del error."),
    "signature_en": (SIGNATURE_EN, "Screenshot attached."),
    "quoted_lines": (
        QUOTED_LINES,
        'Respondo entre líneas:\nChrome, versión 120.\nSí, "error 500".',
    ),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_client_styles_are_stripped_to_the_new_text(text: str, expected: str) -> None:
    assert strip_reply(text) == expected


@pytest.mark.parametrize(
    "text", [GMAIL_ES, OUTLOOK_ES, APPLE_ES], ids=["gmail", "outlook", "apple"]
)
def test_crlf_bodies_strip_like_lf_bodies(text: str) -> None:
    assert strip_reply(text.replace("\n", "\r\n")) == strip_reply(text)


def test_bottom_posted_answer_is_kept() -> None:
    text = (
        "On Mon, Mar 3, 2025 at 10:00 AM Ana <ana@clinic.example> wrote:\n"
        "> Did restarting help?\n\nNo, it is still broken.\n"
    )
    assert strip_reply(text) == "No, it is still broken."


def test_interleaved_answers_under_an_attribution_are_kept() -> None:
    text = (
        "Hola,\nEl lun, 3 mar 2025 a las 10:00, Ana <ana@x.example> escribió:\n"
        "> ¿Qué navegador?\n\nFirefox.\n\n> ¿Versión?\n\nLa 124.\n"
    )
    assert strip_reply(text) == "Hola,\n\nFirefox.\n\nLa 124."


def test_body_lines_that_look_like_outlook_labels_are_not_a_reply_header() -> None:
    # A patient's own data block: no "De:"/"From:" line, so nothing below it is history.
    text = "Necesito mover la cita:\nPaciente: Juan\nFecha: 3 de marzo\nPara: Dr. López\n\nGracias"
    assert strip_reply(text) == text


def test_hyphen_lists_and_farewells_are_not_signatures() -> None:
    text = "Problemas:\n- no carga la agenda\n- el PDF sale en blanco\n\nGracias, espero respuesta."
    assert strip_reply(text) == text


def test_signature_dashes_inside_a_sentence_do_not_cut() -> None:
    text = "El total -- según la factura -- es 50 euros."
    assert strip_reply(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "> only a quote\n> nothing new\n",
        "El lun, 3 mar 2025 a las 10:00, Ana <ana@x.example> escribió:\n> hola\n",
    ],
    ids=["only_quote", "only_attribution"],
)
def test_stripping_to_nothing_falls_back_to_the_full_text(text: str) -> None:
    assert strip_reply(text) == text.strip()


def test_a_signature_marker_on_the_first_line_cuts_nothing() -> None:
    assert strip_reply("-- \nJuan Pérez\n").endswith("Juan Pérez")


def test_parse_fills_new_text_for_a_gmail_reply() -> None:
    parsed = parse((MAILS / "reply_gmail_es.eml").read_bytes())
    assert parsed.new_text == "Hola, ya pude descargar la receta. ¡Muchas gracias!"
    assert "escribió" in parsed.text
    assert parsed.language == "es"


def test_html_outlook_reply_is_stripped_after_conversion() -> None:
    html = (
        "<div>Va el archivo.</div><hr><div><b>De:</b> Soporte &lt;soporte@clinica.example&gt;<br>"
        "<b>Enviado:</b> lunes, 3 de marzo de 2025 10:00<br><b>Para:</b> Juan<br>"
        "<b>Asunto:</b> RE: archivo</div><div>¿Nos envías el archivo?</div>"
    )
    raw = (
        b"From: juan@correo.example\r\nSubject: RE: archivo\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html.encode()
    )
    parsed = parse(raw)
    assert parsed.new_text == "Va el archivo."
    assert "¿Nos envías el archivo?" in parsed.text


# --- issue 14: what the reply-parser suites showed ----------------------------------------

PORTUGUESE_INTRO = """\
Segue o comprovante.

Em seg., 3 de mar. de 2025 às 10:00, Ana <ana@clinica.example> escreveu:

> Pode enviar o comprovante?
"""

GERMAN_OUTLOOK = """\
Anbei die Rechnung.

Von: Soporte <soporte@clinica.example>
Gesendet: Montag, 3. März 2025 10:00
An: Hans Müller
Betreff: Rechnung

Können Sie uns die Rechnung schicken?
"""

DATE_FIRST_BLOCK = """\
It works now.

Date: Mon, 3 Mar 2025 10:00:00 +0000
Subject: Portal
From: soporte@clinica.example
To: juan@correo.example

Please try again.
"""

SIGN_OFF = """\
Hola, adjunto la receta escaneada.

Saludos,
Juan Pérez
"""

MAILMAN_FOOTER = """\
Confirmo la cita.

_______________________________________________
pacientes mailing list
pacientes@lists.clinica.example
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (PORTUGUESE_INTRO, "Segue o comprovante."),
        (GERMAN_OUTLOOK, "Anbei die Rechnung."),
        (DATE_FIRST_BLOCK, "It works now."),
        (SIGN_OFF, "Hola, adjunto la receta escaneada."),
        (MAILMAN_FOOTER, "Confirmo la cita."),
        ("Here it is.\n\nSent from my Verizon Wireless BlackBerry\n", "Here it is."),
    ],
    ids=[
        "any-language-intro",
        "german-outlook",
        "date-first-block",
        "sign-off",
        "mailman",
        "device",
    ],
)
def test_more_reply_styles_are_stripped(text: str, expected: str) -> None:
    assert strip_reply(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Here is another email\n\nSent from my desk, is much easier than my mobile phone.",
        "Necesito el turno del jueves.\n\nGracias",
        "Gracias,\nespero respuesta pronto porque el dolor no para.",
        "Horarios posibles a las 10:30 o 12:00:\n- jueves\n- viernes",
    ],
    ids=["sent-from-sentence", "lone-thanks", "thanks-sentence", "colon-line-without-quote"],
)
def test_text_that_only_looks_like_a_signature_or_header_is_kept(text: str) -> None:
    assert strip_reply(text) == text


def test_forwarded_header_block_at_the_top_is_not_history() -> None:
    text = (
        "De: Recepción <recepcion@clinica.example>\nEnviado: lunes\nPara: Juan\n"
        "Asunto: Turno\n\nSu turno es el jueves.\n"
    )
    assert "Su turno es el jueves." in strip_reply(text)


@pytest.mark.parametrize(
    "text",
    [
        "Ok.\n\nON MONDAY, BOB <bob@example.com> WROTE:\n> hi",
        "Vale.\n\nDe: Ana\nPara: soporte\nAsunto: cita",
        "Ok.\n\nFROM: Bob\nSENT: Monday\nTO: support",
        "Ok.\n\n-----ORIGINAL MESSAGE-----\nold",
        # Letters that case-insensitive matching folds onto "s" and "i"
        "Ok.\n\nſent: Monday\nſubject: hi",
        "Ok.\n\n-----ORİGİNAL MESSAGE-----\nold",
        # Quoted twice: one ">" survives the stripping, and only then its Spanish pattern
        "Vale.\n\n> > El lun, 3 mar 2025, Ana <ana@example.es>  escribió:",
        "Vale.\n\n> > El lun, 3 mar 2025, Ana <ana@example.es>  ESCRIBIÓ:",
        "Ok.\n\n-----Orıgınal Message-----\nold",
    ],
)
def test_the_quick_check_never_skips_text_the_library_patterns_match(text: str) -> None:
    stripped = _stripped(text.split("\n"))
    assert _LIBRARY_HEADERS.search("\n".join(stripped))
    assert _may_hold_library_header("\n".join(stripped))


@pytest.mark.parametrize(
    "text",
    [
        "Hola, necesito cambiar la cita del jueves.\nGracias, Ana",
        "Vale.\n\nEl lun, 3 mar 2025, Ana <ana@example.es>  escribió:\nhola",
    ],
)
def test_the_quick_check_skips_text_the_library_patterns_cannot_match(text: str) -> None:
    stripped = "\n".join(_stripped(text.split("\n")))
    assert not _LIBRARY_HEADERS.search(stripped)
    assert not _may_hold_library_header(stripped)
