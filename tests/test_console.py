"""The console's sign-in and forms over HTTP, against a real `buzon run` whose mail goes
to a real SMTP sink: the link arrives by mail and works once, expires, is not offered
to a stranger (and the page does not tell), CSRF, the rate limit, the cookies, and an
action recorded as the signed-in agent."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.fixtures.console_service import (
    LUCIA,
    PASSWORD,
    PEDRO,
    ConsoleService,
    console_service,
    csrf_of,
    link_in,
    sign_in_with_password,
)
from tests.helpers import body, buzon, parsed
from tickets.console_auth import create_link
from tickets.models import Event, Ticket, utcnow


def _ask_link(console: ConsoleService, address: str, client_ip: str) -> str:
    with console.client(client_ip) as client:
        page = client.get("/signin")
        answer = client.post("/signin", data={"csrf": csrf_of(page.text), "address": address})
        assert answer.status_code == 200
        return answer.text


def _redeem(console: ConsoleService, link: str, client_ip: str) -> tuple[int, dict[str, str]]:
    """Open the link and press its button, as a browser would; status and cookies."""
    with console.client(client_ip) as client:
        page = client.get(link.removeprefix(console.url))
        assert page.status_code == 200
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert token
        answer = client.post(
            "/signin/link", data={"csrf": csrf_of(page.text), "token": token.group(1)}
        )
        return answer.status_code, dict(client.cookies)


def test_a_sign_in_link_arrives_by_mail_in_spanish_and_works_once(
    console: ConsoleService,
) -> None:
    before = len(console.sink.messages)
    page = _ask_link(console, LUCIA.upper(), "198.51.100.1")
    assert "Revisa tu correo" in page

    mail = parsed(console.mail_to(LUCIA, before))
    assert mail["Subject"] == "Tu enlace para entrar a la consola de soporte"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert "caduca en 15 minutos" in body(mail)
    link = link_in(body(mail))

    status, cookies = _redeem(console, link, "198.51.100.1")
    assert status == 303 and "buzon_session" in cookies
    with console.client() as client:
        client.cookies.set("buzon_session", cookies["buzon_session"])
        queue = client.get("/")
    assert queue.status_code == 200 and "Lucía Romero" in queue.text

    assert _redeem(console, link, "198.51.100.1")[0] == 400  # used up


def test_the_page_answers_the_same_for_a_stranger_and_mails_nobody(
    console: ConsoleService,
) -> None:
    before = len(console.sink.messages)
    for_agent = _ask_link(console, LUCIA, "198.51.100.2")
    for_stranger = _ask_link(console, "nadie@clinica.example", "198.51.100.2")
    without_token = re.compile(r'name="csrf" value="[^"]+"')
    assert without_token.sub("", for_agent) == without_token.sub("", for_stranger)

    console.mail_to(LUCIA, before)
    assert not any("nadie@clinica.example" in m.rcpt_tos for m in console.sink.messages)


def test_an_expired_link_does_not_sign_in(console: ConsoleService) -> None:
    with console.sessions().begin() as session:
        token = create_link(session, LUCIA, 15, utcnow() - timedelta(minutes=16))
    status, cookies = _redeem(console, f"/signin/link?token={token}", "198.51.100.3")
    assert status == 400 and "buzon_session" not in cookies


def test_a_link_printed_by_ops_signs_in(console: ConsoleService) -> None:
    env = console.env
    printed = buzon(["console", "link", "Lucía Romero"], console.workdir, **env)
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    assert link.startswith(console.url + "/signin/link?token=")
    assert _redeem(console, link, "198.51.100.4")[0] == 303

    stranger = buzon(["console", "link", "nadie@clinica.example"], console.workdir, **env)
    assert stranger.returncode != 0 and "nadie@clinica.example" in stranger.stderr


def test_a_password_signs_in_and_a_wrong_one_does_not(console: ConsoleService) -> None:
    with console.client("198.51.100.5") as client:
        page = client.get("/signin")
        wrong = client.post(
            "/signin",
            data={"csrf": csrf_of(page.text), "address": PEDRO, "password": "otra-clave-9999"},
        )
        assert wrong.status_code == 401 and "incorrectas" in wrong.text
        assert "buzon_session" not in client.cookies
        assert sign_in_with_password(client).status_code == 303
        assert "Pedro Sanz" in client.get("/").text


def test_forms_without_their_csrf_token_are_refused(console: ConsoleService) -> None:
    with console.client("198.51.100.6") as client:
        assert client.post("/signin", data={"address": LUCIA}).status_code == 403
        client.get("/signin")  # now with the form cookie, but a made-up token
        forged = client.post("/signin", data={"address": LUCIA, "csrf": "x" * 43})
        assert forged.status_code == 403

        console.send_mail("La agenda no carga (csrf)")
        number = console.ticket_numbered("La agenda no carga (csrf)")
        assert client.post(f"/tickets/{number}/note", data={"text": "hola"}).status_code == 403
        assert sign_in_with_password(client).status_code == 303
        refused = client.post(f"/tickets/{number}/note", data={"text": "sin token"})
        assert refused.status_code == 403
        wrong = client.post(f"/tickets/{number}/note", data={"text": "otro", "csrf": "y" * 43})
        assert wrong.status_code == 403
    with console.sessions()() as session:
        notes = session.scalars(select(Event).where(Event.ticket_id == number))
        assert not any(e.kind == "note" for e in notes)


def test_sign_in_attempts_past_the_limit_get_429(console: ConsoleService) -> None:
    with console.client("203.0.113.7") as client:
        page = client.get("/signin")
        form = {"csrf": csrf_of(page.text), "address": PEDRO, "password": "adivinando-1"}
        answers = [client.post("/signin", data=form).status_code for _ in range(11)]
        assert answers == [401] * 10 + [429]
        limited = client.post("/signin", data=form)
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "60"
        assert "Demasiados intentos" in limited.text
    with console.client("203.0.113.8") as other:
        assert sign_in_with_password(other).status_code == 303  # another client's own limit


def test_cookies_are_httponly_samesite_and_not_secure_by_default(
    console: ConsoleService,
) -> None:
    with console.client("198.51.100.9") as client:
        answer = sign_in_with_password(client)
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "buzon_session" in c)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie


def test_cookies_are_secure_when_the_console_is_behind_tls(tmp_path: Path) -> None:
    with (
        console_service(tmp_path, secure_cookies="true") as secure,
        secure.client("198.51.100.12") as client,
    ):
        page = client.get("/signin")
        # Over plain HTTP a client keeps a Secure cookie to itself: hand it back by hand.
        client.cookies.set("buzon_form", page.cookies["buzon_form"])
        form = {"csrf": csrf_of(page.text), "address": PEDRO, "password": PASSWORD}
        answer = client.post("/signin", data=form)
    cookies = page.headers.get_list("set-cookie") + answer.headers.get_list("set-cookie")
    assert any(c.startswith("buzon_session=") for c in cookies)
    assert all("; Secure" in c and "HttpOnly" in c and "SameSite=lax" in c for c in cookies)


def test_signing_out_revokes_the_session(console: ConsoleService) -> None:
    with console.client("198.51.100.10") as client:
        sign_in_with_password(client)
        token = client.cookies["buzon_session"]
        queue = client.get("/")
        assert client.post("/signout", data={"csrf": csrf_of(queue.text)}).status_code == 303
    with console.client() as stale:
        stale.cookies.set("buzon_session", token)
        answer = stale.get("/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")


def test_an_action_is_recorded_as_the_signed_in_agent(console: ConsoleService) -> None:
    console.send_mail("No llegan los recordatorios")
    number = console.ticket_numbered("No llegan los recordatorios")
    with console.client("198.51.100.11") as client:
        sign_in_with_password(client)
        page = client.get(f"/tickets/{number}")
        assert page.status_code == 200 and "No llegan los recordatorios" in page.text
        csrf = csrf_of(page.text)
        done = client.post(f"/tickets/{number}/note", data={"csrf": csrf, "text": "Revisando."})
        assert done.status_code == 303
        assert "Hecho" in client.get(done.headers["location"]).text
        refused = client.post(f"/tickets/{number}/category", data={"csrf": csrf, "category": "x"})
        shown = client.get(refused.headers["location"]).text
        # The domain's refusal in the console's language: Spanish by default.
        assert "No se pudo: tipo desconocido" in shown
        assert "unknown type" not in shown
        # The history in a person's words, not the stored names.
        assert "acuse de recibo enviado a cliente@clinica.example" in page.text
        assert "→ acknowledgement" not in page.text and "notified" not in page.text
        client.get("/language/en?next=/")
        english = client.get(f"/tickets/{number}").text
        assert "Could not do it" not in english  # shown once
        assert "acknowledgement sent to cliente@clinica.example" in english
        assert "internal note added" in english
        refused = client.post(f"/tickets/{number}/category", data={"csrf": csrf, "category": "x"})
        assert "Could not do it: unknown type" in client.get(refused.headers["location"]).text
        queue = client.get("/", params={"status": "new", "q": "recordatorios"})
        assert f"/tickets/{number}" in queue.text and "Queue" in queue.text
        assert "unknown type" in client.get("/", params={"category": "nada"}).text
    with console.sessions()() as session:
        notes = session.scalars(
            select(Event).where(Event.ticket_id == number, Event.kind == "note")
        ).all()
    assert [e.actor for e in notes] == [PEDRO]


def test_every_action_form_goes_through_the_desk_as_the_agent(console: ConsoleService) -> None:
    console.send_mail("Factura duplicada", sender="facturas@clinica.example")
    console.send_mail("Factura duplicada otra vez", sender="facturas@clinica.example")
    number = console.ticket_numbered("Factura duplicada")
    other = console.ticket_numbered("Factura duplicada otra vez")
    start = utcnow()
    with console.client("198.51.100.13") as client:
        sign_in_with_password(client)
        csrf = csrf_of(client.get(f"/tickets/{number}").text)

        def post(action: str, files: Any = None, **fields: str) -> str:
            answer = client.post(
                f"/tickets/{number}/{action}", data={"csrf": csrf, **fields}, files=files
            )
            assert answer.status_code == 303, answer.text
            flash = client.get(answer.headers["location"]).text
            assert "Hecho" in flash, re.findall(r'class="flash[^>]*>([^<]*)', flash)
            return flash

        post("status", status="in_progress")
        post("assign", agent=LUCIA, team="Facturación")
        post("priority", impact="high", urgency="high")
        post("category", category="billing")
        post("cc-add", address="colega@clinica.example")
        post("cc-remove", address="colega@clinica.example")
        post("merge", other=f"#{other}")
        before = len(console.sink.messages)
        files = [("attach", ("detalle.csv", b"fecha;importe\n2026-11-30;42\n", "text/csv"))]
        page = post(
            "reply", files=files, text="Anulamos la duplicada.", status="waiting_on_customer"
        )
        attachment = re.search(rf'href="(/tickets/{number}/attachments/\d+)"', page)
        assert attachment
        download = client.get(attachment.group(1))
        post("escalate", team="Facturación", reason="Revisar el cobro", type="billing")

    assert download.content == b"fecha;importe\n2026-11-30;42\n"
    assert download.headers["content-disposition"].startswith("attachment;")
    mail = parsed(console.mail_to("facturas@clinica.example", before, containing=b"detalle.csv"))
    assert "Anulamos la duplicada." in body(mail)
    assert [p.get_filename() for p in mail.iter_attachments()] == ["detalle.csv"]
    with console.sessions()() as session:
        ticket = session.get(Ticket, number)
        merged = session.get(Ticket, other)
        assert ticket is not None and merged is not None
        assert (ticket.priority, ticket.category) == ("P1", "billing")
        assert (ticket.level, ticket.team, ticket.status) == (2, "Facturación", "new")
        assert merged.merged_into_id == number
        events = session.scalars(
            select(Event).where(Event.ticket_id == number, Event.created_at >= start)
        ).all()
        assert {e.actor for e in events} - {"buzon-notifier"} == {PEDRO}
        assert LUCIA in {e.new_value for e in events if e.field == "assignee"}
