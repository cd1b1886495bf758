"""What the console adds to the ticket pages, over HTTP against a real `buzon run` whose
mail goes to a real SMTP sink: a ticket for a phone call, a new requester, and the mail
queues (inbound: process again, release from spam; outbox: retry a failed mail;
webhooks: retry the dead deliveries; addresses: clear a bouncing mark), each as the
signed-in agent, with its CSRF token and its words in Spanish (English on request)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from tests.fixtures.console_service import (
    PEDRO,
    ConsoleService,
    csrf_of,
    sign_in_with_password,
)
from tests.fixtures.service import wait_for
from tests.helpers import body, parsed
from tickets.models import Event, OutboxMessage, RawMessage, Ticket


@pytest.fixture
def agent(console: ConsoleService, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """Pedro, signed in (a client address of its own per test: its own rate limit)."""
    ip = f"198.51.100.{100 + len(request.node.name) % 100}"
    with console.client(ip) as client:
        assert sign_in_with_password(client).status_code == 303
        yield client


def flash_after(client: httpx.Client, answer: httpx.Response) -> str:
    """The message the page shows after a form's redirect."""
    assert answer.status_code == 303, answer.text
    page = client.get(answer.headers["location"]).text
    found = re.search(r'class="flash (\w+)"[^>]*>([^<]*)<', page)
    assert found, page[:3000]
    return f"{found.group(1)}: {found.group(2)}"


def test_a_phone_call_becomes_a_ticket_and_the_customer_gets_the_acknowledgement(
    console: ConsoleService, agent: httpx.Client
) -> None:
    form = agent.get("/new")
    assert form.status_code == 200 and "Nuevo ticket" in form.text and "Teléfono" in form.text
    csrf = csrf_of(form.text)
    typed = {"csrf": csrf, "requester": "no-es-correo", "subject": "Llamada: no imprime",
             "text": "Llamó a las 10: la impresora de recepción no imprime.", "source": "phone",
             "language": "es", "acknowledge": "1"}  # fmt: skip
    refused = agent.post("/new", data=typed)
    assert refused.status_code == 422 and "no es una dirección de correo" in refused.text
    assert "la impresora de recepción no imprime" in refused.text  # nothing typed is lost

    before = len(console.sink.messages)
    done = agent.post("/new", data={**typed, "requester": "recepcion@clinica.example"})
    number = int(done.headers["location"].rsplit("/", 1)[1])
    assert flash_after(agent, done) == f"ok: Ticket #{number} abierto."
    mail = parsed(console.mail_to("recepcion@clinica.example", before))
    assert f"#{number}" in str(mail["Subject"]) and body(mail)
    queue = agent.get("/", params={"requester": "recepcion@clinica.example", "due_within": "30d"})
    assert f'href="/tickets/{number}"' in queue.text
    assert "no es una duración" in agent.get("/", params={"due_within": "pronto"}).text
    with console.sessions()() as session:
        ticket = session.get(Ticket, number)
        assert ticket is not None and ticket.subject == "Llamada: no imprime"
        created = session.scalars(
            select(Event).where(Event.ticket_id == number, Event.kind == "created")
        ).one()
        assert created.actor == PEDRO


def test_the_requester_is_changed_from_the_ticket_page(
    console: ConsoleService, agent: httpx.Client
) -> None:
    console.send_mail("Escribo por mi paciente", sender="enfermera@clinica.example")
    number = console.ticket_numbered("Escribo por mi paciente")
    page = agent.get(f"/tickets/{number}").text
    assert f'action="/tickets/{number}/requester"' in page and "Cambiar solicitante" in page
    # The stored names of kinds and roles are shown in the page's language.
    assert "· recibido ·" in page and "<small>solicitante</small>" in page
    assert "· inbound ·" not in page and "<small>requester</small>" not in page
    post = {"csrf": csrf_of(page), "address": "paciente@correo.example"}
    assert flash_after(agent, agent.post(f"/tickets/{number}/requester", data=post)) == (
        "ok: Hecho: Cambiar solicitante."
    )
    again = flash_after(agent, agent.post(f"/tickets/{number}/requester", data=post))
    assert again.startswith("error: No se pudo:") and "ya es el solicitante del ticket" in again
    with console.sessions()() as session:
        ticket = session.get(Ticket, number)
        assert ticket is not None and ticket.requester == "paciente@correo.example"

    # The SLA card says what `buzon sla show` does: targets and, while waiting, the pause.
    waiting = {"csrf": post["csrf"], "status": "waiting_on_customer"}
    assert flash_after(agent, agent.post(f"/tickets/{number}/status", data=waiting)).startswith(
        "ok:"
    )
    sla = agent.get(f"/tickets/{number}").text
    assert "h hábiles)" in sla and "En pausa desde" in sla


def test_inbound_messages_are_listed_processed_again_and_released_from_spam(
    console: ConsoleService, agent: httpx.Client
) -> None:
    console.send_mail("Entrada remolacha")
    number = console.ticket_numbered("Entrada remolacha")
    console.send_spam("Oferta increíble")

    def spam_id() -> int | None:
        with console.sessions()() as session:
            return session.scalar(select(RawMessage.id).where(RawMessage.state == "spam"))

    wait_for(spam_id, 30, "the spam to be kept")
    page = agent.get("/inbound").text
    assert f'href="/tickets/{number}"' in page and "procesado" in page and "spam" in page
    csrf = csrf_of(page)
    with console.sessions()() as session:
        raw = session.scalars(select(RawMessage).where(RawMessage.ticket_id == number)).first()
        assert raw is not None
    again = agent.post("/inbound/reprocess", data={"csrf": csrf, "id": raw.id, "back": "/inbound"})
    # Processed again, the mail makes no second ticket: it is known (and only a failed,
    # quarantined or ignored one has the button).
    assert flash_after(agent, again) == "ok: Procesados de nuevo: 1 (1 ignorado)."
    not_spam = agent.post("/inbound/release", data={"csrf": csrf, "id": raw.id})
    assert f"no están guardados como spam: {raw.id}" in flash_after(agent, not_spam)

    spam = agent.get("/inbound", params={"state": "spam"}).text
    assert "Oferta increíble" not in spam  # the list never shows a mail's content
    kept = spam_id()
    released = flash_after(agent, agent.post("/inbound/release", data={"csrf": csrf, "id": kept}))
    found = re.fullmatch(rf"ok: Mensaje {kept} liberado: ticket #(\d+)\.", released)
    assert found, released
    assert console.ticket_numbered("Oferta increíble") == int(found.group(1))


def test_a_bouncing_address_is_cleared_and_its_failed_mail_retried(
    console: ConsoleService, agent: httpx.Client
) -> None:
    gone = "lleno@clinica.example"
    console.sink.refuse[gone] = "552 5.2.2 mailbox full"
    console.send_mail("Salida calabaza", sender=gone)
    number = console.ticket_numbered("Salida calabaza")

    def failed() -> int | None:
        with console.sessions()() as session:
            return session.scalar(
                select(OutboxMessage.id).where(
                    OutboxMessage.ticket_id == number, OutboxMessage.state == "failed"
                )
            )

    wait_for(failed, 60, "the acknowledgement to fail")
    outbox_id = failed()
    page = agent.get("/outbox", params={"state": "failed"}).text
    assert f'href="/tickets/{number}"' in page and "mailbox full" in page and "fallido" in page
    del console.sink.refuse[gone]
    csrf = csrf_of(page)
    marks = agent.get("/addresses", params={"state": "bouncing"}).text
    assert gone in marks and "rebota" in marks and "mailbox full" in marks
    clear = {"csrf": csrf, "address": gone}
    cleared = flash_after(agent, agent.post("/addresses/clear", data=clear))
    assert cleared == f"ok: {gone}: marca quitada; vuelve a recibir correo."
    again = flash_after(agent, agent.post("/addresses/clear", data=clear))
    assert again == f"error: {gone} no estaba marcada como que rebota."
    assert gone not in agent.get("/addresses", params={"state": "bouncing"}).text

    before = len(console.sink.messages)
    retried = agent.post("/outbox/retry", data={"csrf": csrf, "id": outbox_id})
    assert flash_after(agent, retried) == f"ok: {outbox_id}: vuelve a la cola; se enviará en breve."
    console.mail_to(gone, before)
    wait_for(lambda: failed() is None, 30, "the mail to leave the failed state")
    sent = flash_after(agent, agent.post("/outbox/retry", data={"csrf": csrf, "id": outbox_id}))
    assert sent.startswith("error: No se pudo:") and "ya se envió" in sent


def test_webhook_deliveries_page_and_its_retries(
    console: ConsoleService, agent: httpx.Client
) -> None:
    page = agent.get("/webhooks").text
    assert "No hay nada aquí." in page
    csrf = csrf_of(page)
    every = agent.post("/webhooks/retry", data={"csrf": csrf, "every": "dead"})
    assert flash_after(agent, every) == "ok: 0 entregas vuelven a la cola."
    unknown = agent.post("/webhooks/retry", data={"csrf": csrf, "id": "999999"})
    assert "no existe el envío de webhook 999999" in flash_after(agent, unknown)


def test_the_new_pages_are_for_signed_in_agents_with_their_token_and_in_english_too(
    console: ConsoleService, agent: httpx.Client
) -> None:
    with console.client("198.51.100.99") as stranger:
        assert stranger.get("/outbox").status_code == 303
        assert stranger.post("/outbox/retry", data={"id": "1"}).status_code == 403
    assert agent.post("/inbound/reprocess", data={"every": "failed"}).status_code == 403
    agent.get("/language/en?next=/")
    for path, words in [("/new", "Open ticket"), ("/inbound", "Process the failed ones again"),
                        ("/outbox", "Outbox"), ("/webhooks", "Retry the dead ones"),
                        ("/addresses", "Last bounce")]:  # fmt: skip
        page = agent.get(path).text
        assert words in page, path
        for spanish in ("Entrada", "Salida", "Reintentar", "Nuevo ticket", "Cola", "Direcciones"):
            assert spanish not in page, (path, spanish)
