"""The JSON API through a real HTTP client against a real `buzon run`: mail in by SMTP,
tickets out by HTTP, an agent's answer with an attachment out to a real SMTP relay, and
every change on the history under the token's agent."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate
from sqlalchemy import select
from starlette.routing import Route

from daemon.config import load_settings
from daemon.web.api import api_routes
from daemon.wiring import App
from tests.fixtures.api import AGENT, OTHER_AGENT, ApiService, api_service
from tests.fixtures.service import send_mail, wait_for
from tests.fixtures.smtp_sink import SmtpSink, running_sink
from tests.helpers import make_app
from tickets import tokens
from tickets.errors import TicketError
from tickets.models import ApiToken

CUSTOMER = "cliente@clinica.example"


@pytest.fixture(scope="module")
def relay() -> Iterator[SmtpSink]:
    with running_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, relay: SmtpSink) -> Iterator[ApiService]:
    """One `buzon run` on SQLite for the module: starting one costs seconds."""
    workdir = tmp_path_factory.mktemp("api")
    with api_service(workdir, f"sqlite:///{workdir / 'buzon.db'}", relay) as running:
        yield running


@pytest.fixture(scope="module")
def token(service: ApiService) -> str:
    return service.new_token()


@pytest.fixture
def api(service: ApiService, token: str) -> Iterator[httpx.Client]:
    with service.client(token) as client:
        yield client


def mailed_ticket(
    service: ApiService, api: httpx.Client, subject: str, sender: str = CUSTOMER
) -> int:
    """Mail `subject` to the listener; the number of the ticket it became."""
    send_mail(service.smtp_port, subject, sender)
    found: list[int] = []

    def listed() -> bool:
        rows = api.get("/tickets", params={"search": subject.split()[-1]}).json()["tickets"]
        found.extend(t["number"] for t in rows if t["subject"] == subject)
        return bool(found)

    wait_for(listed, 20, f"a ticket for {subject!r}")
    return found[0]


def delivered_to(sink: SmtpSink, address: str, subject_part: str) -> list[EmailMessage]:
    return [
        r.message
        for r in sink.messages
        if address in r.rcpt_tos and subject_part in str(r.message["Subject"])
    ]


# --- the whole path ---------------------------------------------------------------------------


def test_a_mailed_ticket_is_listed_shown_and_answered_with_an_attachment(
    service: ApiService, api: httpx.Client, relay: SmtpSink
) -> None:
    number = mailed_ticket(service, api, "La agenda no carga zanahoria")

    shown = api.get(f"/tickets/{number}")
    assert shown.status_code == 200
    ticket = shown.json()
    assert ticket["requester"] == CUSTOMER and ticket["status"] == "new"
    assert ticket["articles"][0]["new_text"].startswith("La agenda no carga")
    assert ticket["created_at"].endswith("Z")  # ISO 8601 UTC
    assert {c["name"] for c in ticket["sla"]["clocks"]} >= {"first_response"}
    assert "similar" in ticket and ticket["participants"]

    answered = api.post(
        f"/tickets/{number}/replies",
        data={"text": "Adjunto las instrucciones.", "status": "waiting_on_customer"},
        files={"attachment": ("pasos.pdf", b"%PDF-1.4 pasos", "application/pdf")},
    )
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["ticket"]["status"] == "waiting_on_customer"
    assert [m["recipients"] for m in body["mail"] if m["outbox_id"]] == [[CUSTOMER]]
    assert "warning" not in body

    def attached() -> list[EmailMessage]:
        return [
            part
            for mail in delivered_to(relay, CUSTOMER, f"#{number}")
            for part in mail.iter_attachments()
            if part.get_filename() == "pasos.pdf"
        ]

    wait_for(attached, 20, "the answer with its attachment at the relay")
    assert attached()[0].get_content() == b"%PDF-1.4 pasos"

    found = api.get("/tickets/search", params={"q": "zanahorias"}).json()["tickets"]
    assert [t["number"] for t in found] == [number]  # any inflection
    history = api.get(f"/tickets/{number}").json()
    replied = [e for e in history["events"] if e["kind"] in ("replied", "status")]
    assert replied and all(e["actor"] == AGENT for e in replied)
    last = history["articles"][-1]
    assert last["author"] == AGENT and last["attachments"][0]["filename"] == "pasos.pdf"


def test_an_attachment_downloads_as_a_file_never_inline(
    service: ApiService, api: httpx.Client
) -> None:
    number = mailed_ticket(service, api, "Adjunto html berenjena")
    note = api.post(
        f"/tickets/{number}/replies",
        files={
            "text": (None, "Vea el archivo."),
            "attachment": ("x.html", b"<script>alert(1)</script>", "text/html"),
        },
    )
    assert note.status_code == 200, note.text
    file = note_file(api, number)
    got = api.get(f"/tickets/{number}/attachments/{file['id']}")
    assert got.status_code == 200 and got.content == b"<script>alert(1)</script>"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    assert api.get(f"/tickets/{number}/attachments/999999").status_code == 404


def test_an_answer_that_reaches_nobody_is_recorded_with_a_warning(
    service: ApiService, api: httpx.Client, relay: SmtpSink
) -> None:
    bouncing = "rebota@clinica.example"
    relay.refuse[bouncing] = "550 5.1.1 no such user"
    number = mailed_ticket(service, api, "Buzón lleno tomate", bouncing)

    def marked() -> bool:  # the acknowledgement bounced at the relay
        failed = api.get("/outbox", params={"state": "failed"}).json()["mails"]
        return any(m["ticket"] == number for m in failed)

    wait_for(marked, 20, "the acknowledgement to fail for good")
    answered = api.post(f"/tickets/{number}/replies", json={"text": "¿Nos oye?"})
    assert answered.status_code == 200, answered.text
    warning = answered.json()["warning"]
    assert "mailed to nobody" in warning and f"{bouncing} (bouncing)" in warning
    assert api.get(f"/tickets/{number}").json()["articles"][-1]["new_text"] == "¿Nos oye?"


def note_file(api: httpx.Client, number: int) -> dict[str, object]:
    articles = api.get(f"/tickets/{number}").json()["articles"]
    return [f for a in articles for f in a["attachments"]][-1]


# --- every action, as the token's agent ---------------------------------------------------------


def test_the_agents_actions_are_recorded_under_the_tokens_agent(
    service: ApiService, api: httpx.Client
) -> None:
    number = mailed_ticket(service, api, "Acciones pepino")
    steps = [
        ("assign", {"agent": "Luisa", "note": "ella sabe"}),
        ("priority", {"impact": "high", "urgency": "high"}),
        ("category", {"category": "billing"}),
        ("cc", {"address": "jefa@clinica.example"}),
        ("notes", {"text": "Llamé y no contestan."}),
        ("escalate", {"team": "facturacion", "reason": "Cobro doble", "type": "billing"}),
        ("status", {"status": "resuelto"}),
    ]
    for path, body in steps:
        done = api.post(f"/tickets/{number}/{path}", json=body)
        assert done.status_code == 200, (path, done.text)
    removed = api.delete(f"/tickets/{number}/cc/jefa@clinica.example")
    assert removed.status_code == 200, removed.text

    ticket = api.get(f"/tickets/{number}").json()
    assert ticket["category"] == "billing"
    assert any(e["new"] == OTHER_AGENT for e in ticket["events"])  # before the escalation
    assert ticket["level"] == 2 and ticket["team"] == "facturacion"
    assert ticket["status"] == "resolved"
    # Every change made through the API is the token's agent's (the rest is buzón's own:
    # the mail it sent, the ticket's creation from the customer's mail).
    events = ticket["events"]
    assert all(e["actor"] in (AGENT, CUSTOMER) or e["actor"].startswith("buzon") for e in events)
    by_agent = {e["kind"] for e in events if e["actor"] == AGENT}
    assert {"assignee", "category", "escalation", "impact"} <= by_agent
    assert {"resolved", "Llamé y no contestan."} <= {
        *(e["new"] for e in events if e["actor"] == AGENT),
        *(a["new_text"] for a in ticket["articles"] if a["author"] == AGENT),
    }


def test_create_and_merge(service: ApiService, api: httpx.Client) -> None:
    made = api.post(
        "/tickets",
        json={"requester": "ana@clinica.example", "subject": "Llamada rábano", "text": "Llamó."},
    )
    assert made.status_code == 201, made.text
    first = made.json()["ticket"]["number"]
    second = api.post(
        "/tickets", json={"requester": "ana@clinica.example", "subject": "Otra llamada"}
    ).json()["ticket"]["number"]
    merged = api.post(f"/tickets/{first}/merge", json={"other": second})
    assert merged.status_code == 200, merged.text
    assert api.get(f"/tickets/{second}").json()["status"] == "closed"
    again = api.post(f"/tickets/{first}/merge", json={"other": second})
    assert again.status_code == 422 and "already merged" in again.json()["error"]


# --- refusals: the CLI's messages, as JSON -------------------------------------------------------


def test_refusals_carry_the_clis_messages(service: ApiService, api: httpx.Client) -> None:
    number = mailed_ticket(service, api, "Rechazos calabaza")
    bad_status = api.post(f"/tickets/{number}/status", json={"status": "perdido"})
    assert bad_status.status_code == 422
    cli = service.cli("tickets", "status", str(number), "perdido")
    assert cli.returncode != 0 and bad_status.json()["error"] in cli.stderr

    assert api.get("/tickets", params={"status": "perdido"}).status_code == 422
    category = api.post(f"/tickets/{number}/category", json={"category": "magia"})
    assert category.status_code == 422 and "unknown type 'magia'" in category.json()["error"]
    agent = api.post(f"/tickets/{number}/assign", json={"agent": "nadie"})
    assert agent.status_code == 422 and "unknown agent" in agent.json()["error"]
    assert api.get("/tickets/999999").json() == {"error": "no ticket #999999"}
    assert api.get("/tickets/999999").status_code == 404

    closed = api.post(f"/tickets/{number}/status", json={"status": "closed"})
    assert closed.status_code == 200, closed.text
    answer = api.post(f"/tickets/{number}/replies", json={"text": "Hola"})
    assert answer.status_code == 409 or answer.status_code == 422
    assert "is closed" in answer.json()["error"]
    assert api.post(f"/tickets/{number}/status", json={"status": "new"}).status_code == 409

    assert api.post(f"/tickets/{number}/notes", content=b"{").status_code == 400
    empty = api.post(f"/tickets/{number}/status", json={})
    assert empty.status_code == 400 and empty.json()["error"] == "status: Field required"
    extra = api.post(f"/tickets/{number}/notes", json={"text": "x", "txet": "y"})
    assert extra.status_code == 400 and "txet" in extra.json()["error"]
    assert api.get("/tickets", params={"limit": "mucho"}).status_code == 400
    window = api.get("/tickets", params={"due_within": "mucho"})
    assert window.status_code == 400 and window.json()["error"].startswith("due_within: ")
    due = api.get("/tickets", params={"due_within": "30d", "status": "abiertos"})
    assert due.status_code == 200 and due.json()["tickets"]  # open tickets have SLA clocks
    assert api.get("/tickets", params={"breached": "true"}).json()["tickets"] == []


def test_tokens_are_checked_and_revocable(service: ApiService) -> None:
    with service.client(None) as anonymous:
        missing = anonymous.get("/tickets")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    with service.client("bzn_not-a-token") as wrong:
        assert wrong.get("/tickets").status_code == 401

    token = service.new_token(OTHER_AGENT, "revoked soon")
    with service.client(token) as client:
        assert client.get("/tickets").status_code == 200
        listed = service.cli("agents", "token", "list", "--json")
        assert token not in listed.stdout  # never shown again
        mine = [line for line in listed.stdout.split("{") if "revoked soon" in line]
        token_id = int(mine[0].split('"id": ')[1].split(",")[0])
        revoked = service.cli("agents", "token", "revoke", str(token_id))
        assert revoked.returncode == 0, revoked.stderr
        refused = client.get("/tickets")
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_a_token_only_for_a_configured_agent(service: ApiService) -> None:
    done = service.cli("agents", "token", "create", "intruso@fuera.example")
    assert done.returncode != 0 and "unknown agent" in done.stderr and not done.stdout


# --- queues -----------------------------------------------------------------------------------


def test_inbound_and_outbox(service: ApiService, api: httpx.Client, relay: SmtpSink) -> None:
    mailed_ticket(service, api, "Colas lechuga")
    inbound = api.get("/inbound", params={"limit": 5}).json()["messages"]
    assert inbound and inbound[0]["state"] == "processed"
    again = api.post("/inbound/reprocess", json={"raw_id": inbound[0]["id"]})
    assert again.status_code == 200 and again.json()["reprocessed"] == 1
    refused = api.post("/inbound/release", json={"raw_ids": [inbound[0]["id"]]})
    assert refused.status_code == 422 and "not kept as spam" in refused.json()["error"]
    assert api.get("/inbound", params={"state": "perdido"}).status_code == 422
    unknown = api.post("/inbound/reprocess", json={"raw_id": 999999})
    assert unknown.status_code == 404 and unknown.json() == {"error": "no raw message 999999"}

    wait_for(lambda: api.get("/outbox", params={"state": "sent"}).json()["mails"], 20, "a mail")
    sent = api.get("/outbox", params={"state": "sent"}).json()["mails"]
    retried = api.post(f"/outbox/{sent[0]['id']}/retry")
    assert retried.status_code == 409 and "already sent" in retried.json()["error"]
    assert api.post("/outbox/999999/retry").status_code == 404


def test_bouncing_addresses_are_listed_and_cleared(
    service: ApiService, api: httpx.Client, relay: SmtpSink
) -> None:
    gone = "buzonlleno@clinica.example"
    relay.refuse[gone] = "552 5.2.2 mailbox full"
    number = mailed_ticket(service, api, "Rebote pimiento", gone)

    def marked() -> bool:
        rows = api.get("/addresses", params={"bouncing": "true"}).json()["addresses"]
        return any(a["email"] == gone for a in rows)

    wait_for(marked, 20, "the address to be marked bouncing")
    row = next(a for a in api.get("/addresses").json()["addresses"] if a["email"] == gone)
    assert row["bouncing"] is True and "mailbox full" in row["reason"]

    del relay.refuse[gone]
    cleared = api.post("/addresses/clear", json={"addresses": [gone.upper(), "nadie@x.example"]})
    assert cleared.json() == {"cleared": [gone], "not_bouncing": ["nadie@x.example"]}
    rows = api.get("/addresses", params={"bouncing": "true"}).json()["addresses"]
    assert gone not in {a["email"] for a in rows}
    answered = api.post(f"/tickets/{number}/replies", json={"text": "Ya llega"})
    assert "warning" not in answered.json() or answered.json()["warning"] is None
    assert api.post("/addresses/clear", json={"addresses": []}).status_code == 400


def test_a_tickets_sla_report(service: ApiService, api: httpx.Client) -> None:
    created = api.post("/tickets", json={"requester": CUSTOMER, "subject": "Plazos"}).json()
    number = created["ticket"]["number"]
    report = api.get(f"/tickets/{number}/sla").json()
    assert report["number"] == number
    assert {c["name"] for c in report["clocks"]} == {"first_response", "resolution"}
    assert api.get("/tickets/999999/sla").status_code == 404


def test_every_dead_webhook_delivery_is_retried_at_once(api: httpx.Client) -> None:
    assert api.post("/webhooks/deliveries/retry-dead").json() == {"retried": 0}


def test_paging(service: ApiService, api: httpx.Client) -> None:
    for n in range(3):
        api.post("/tickets", json={"requester": f"p{n}@clinica.example", "subject": f"Pag {n}"})
    first = api.get("/tickets", params={"limit": 2}).json()
    assert len(first["tickets"]) == 2 and first["next_offset"] == 2
    second = api.get("/tickets", params={"limit": 2, "offset": 2}).json()
    assert not {t["number"] for t in first["tickets"]} & {t["number"] for t in second["tickets"]}


# --- the OpenAPI document ---------------------------------------------------------------------


def test_the_openapi_document_is_valid_and_matches_the_routes(
    service: ApiService, tmp_path: Path
) -> None:
    with service.client(None) as anonymous:
        spec = anonymous.get("/openapi.json").json()
    validate(spec)
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    names = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(names) == len(set(names))

    settings = load_settings(None, data_dir=tmp_path, database_url="sqlite://")
    mounted = set()
    for r in api_routes(App(settings).web_parts):
        assert isinstance(r, Route)
        if r.path.endswith("/openapi.json"):
            continue
        path = r.path.replace(":int}", "}").replace(":str}", "}")
        mounted |= {(m, path) for m in r.methods or () if m != "HEAD"}
    assert documented == mounted


# --- PostgreSQL ---------------------------------------------------------------------------------


def test_on_postgresql(tmp_path: Path, pg_url: str, sink: SmtpSink) -> None:
    with api_service(tmp_path, pg_url, sink) as pg, pg.client(pg.new_token()) as client:
        number = mailed_ticket(pg, client, "Sobre postgres alcachofa")
        done = client.post(f"/tickets/{number}/notes", json={"text": "visto"})
        assert done.status_code == 200, done.text
        events = client.get(f"/tickets/{number}").json()["events"]
        assert events[-1]["actor"] == AGENT


# --- tokens, in the domain ----------------------------------------------------------------------


def test_a_token_is_kept_hashed_verified_touched_once_a_minute_and_revoked(
    sqlite_app: App,
) -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    with sqlite_app.sessions.begin() as session:
        made = tokens.create(session, sqlite_app.catalogue, "Agente", "crm", now)
    assert made.token.startswith(tokens.PREFIX) and made.agent == AGENT
    with sqlite_app.sessions() as session:
        stored = session.scalars(select(ApiToken)).one()
        assert stored.token_hash == hashlib.sha256(made.token.encode()).hexdigest()

    def verify(at: datetime, token: str = made.token) -> str | None:
        with sqlite_app.sessions.begin() as session:
            return tokens.verify(session, token, at)

    def last_used() -> datetime | None:
        with sqlite_app.sessions() as session:
            return tokens.list_tokens(session)[0]["last_used_at"]

    assert verify(now) == AGENT and last_used() == now
    assert verify(now + timedelta(seconds=30)) == AGENT and last_used() == now
    later = now + timedelta(seconds=61)
    assert verify(later) == AGENT and last_used() == later
    assert verify(now, made.token + "x") is None

    with sqlite_app.sessions.begin() as session:
        assert tokens.revoke(session, made.id, later) == AGENT
    assert verify(later) is None
    with pytest.raises(TicketError, match="already revoked"), sqlite_app.sessions.begin() as s:
        tokens.revoke(s, made.id, later)
    with pytest.raises(TicketError, match="unknown agent"), sqlite_app.sessions.begin() as s:
        tokens.create(s, sqlite_app.catalogue, "nadie@fuera.example", "", now)


def test_no_token_without_configured_agents(tmp_path: Path) -> None:
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'b.db'}")
    with pytest.raises(TicketError, match="no agents are configured"), app.sessions.begin() as s:
        tokens.create(s, app.catalogue, "maria", "", datetime.now(UTC))
    app.engine.dispose()
