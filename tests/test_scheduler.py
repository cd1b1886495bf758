"""The scheduler's jobs with an injected clock (no sleeps), on SQLite and PostgreSQL.

Tickets are made "now" by the real code paths; the scheduler is then run at moments
days later, which is what time passing looks like to it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from daemon.wiring import App
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import (
    AGENT,
    ANA,
    act,
    body,
    buzon,
    ingest,
    make_app,
    new_ticket,
    parsed,
    relay_app,
)
from tests.mailbuilder import mail
from tickets import actions
from tickets.models import Job, OutboxMessage, Ticket, utcnow
from tickets.sla import refresh

LEAD = "lider@soporte.example"
BOSS = "gerente@soporte.example"
TEAM = "salud@soporte.example"
CUSTOMER = "ana@clinica.example"


@pytest.fixture
def sapp(tmp_path: Path, db_url: str, sink: SmtpSink) -> Iterator[App]:
    application = relay_app(
        tmp_path,
        db_url,
        sink,
        sla={"tier1_addresses": [LEAD], "tier2_addresses": [BOSS]},
        tickets={"team_addresses": {"salud": [TEAM]}},
    )
    yield application
    application.engine.dispose()


def outbox(app: App, number: int, kind: str) -> list[OutboxMessage]:
    with app.sessions() as session:
        return list(
            session.scalars(
                select(OutboxMessage).where(
                    OutboxMessage.ticket_id == number, OutboxMessage.kind == kind
                )
            )
        )


def ticket(app: App, number: int) -> Ticket:
    with app.sessions() as session:
        found = session.get(Ticket, number)
        assert found is not None
        return found


def received_by(sink: SmtpSink, address: str) -> list[str]:
    """Subject and body of the mails the relay got for `address` (every mail about a
    ticket has the ticket's subject: what it is about is in the body)."""
    return [
        f"{parsed(r)['Subject']}\n{body(parsed(r))}" for r in sink.received if address in r.rcpt_tos
    ]


def resolve(app: App, number: int) -> None:
    act(app, number, lambda s, t: actions.set_status(s, t, "resolved", AGENT))


def wait_on_customer(app: App, number: int) -> None:
    act(app, number, lambda s, t: actions.set_status(s, t, "waiting_on_customer", AGENT))


# --- auto-close ------------------------------------------------------------------------------


def test_auto_close_after_the_configured_days_not_before_and_mailed_once(
    sapp: App, sink: SmtpSink
) -> None:
    number, _ = new_ticket(sapp)
    resolve(sapp, number)
    start = utcnow()
    scheduler = sapp.scheduler()
    assert all(scheduler.run_all_once(start + timedelta(days=6, hours=23)).values())
    assert ticket(sapp, number).status == "resolved"
    later = start + timedelta(days=7, minutes=1)  # sla.auto_close_after_days = 7
    assert all(scheduler.run_all_once(later).values())
    closed = ticket(sapp, number)
    assert closed.status == "closed" and closed.closed_at == later
    scheduler.run_all_once(later + timedelta(days=1))
    [survey] = outbox(sapp, number, "survey")  # the closing mail asks for a rating
    assert survey.state == "sent" and survey.recipients == [CUSTOMER]
    assert len([s for s in received_by(sink, CUSTOMER) if "Cerrado" in s]) == 1


# --- reminders -------------------------------------------------------------------------------


def test_reminder_once_per_waiting_period(sapp: App, sink: SmtpSink) -> None:
    number, raw = new_ticket(sapp)
    wait_on_customer(sapp, number)
    start = utcnow()
    scheduler = sapp.scheduler()
    scheduler.run_all_once(start + timedelta(days=2))
    assert outbox(sapp, number, "reminder") == []
    scheduler.run_all_once(start + timedelta(days=3, minutes=1))  # reminder_after_days = 3
    scheduler.run_all_once(start + timedelta(days=4))
    [reminder] = outbox(sapp, number, "reminder")
    assert reminder.recipients == [CUSTOMER] and reminder.state == "sent"
    assert [s for s in received_by(sink, CUSTOMER) if "sigue «A la espera de tu respuesta»" in s]

    # The customer answers, the agent asks again: a new waiting period, a new reminder.
    answer = mail(ANA, f"Re: [#{number}] x", "Aquí va la captura.", in_reply_to=reminder.message_id)
    assert ingest(sapp, answer).ticket_id == number
    wait_on_customer(sapp, number)
    period_start = start + timedelta(days=5)  # as if the agent asked on day 5
    with sapp.sessions.begin() as session:
        waiting = session.get(Ticket, number)
        assert waiting is not None and waiting.status == "waiting_on_customer"
        waiting.sla_paused_at = period_start
    scheduler.run_all_once(period_start + timedelta(days=3, minutes=1))
    scheduler.run_all_once(period_start + timedelta(days=3, minutes=2))
    assert len(outbox(sapp, number, "reminder")) == 2


# --- SLA mail --------------------------------------------------------------------------------


def test_level_two_breach_mails_tier_one_once_then_tier_two_once_never_the_customer(
    sapp: App, sink: SmtpSink
) -> None:
    number, _ = new_ticket(sapp)
    act(
        sapp,
        number,
        lambda s, t: actions.escalate(
            s, t, AGENT, team="salud", reason="needs a specialist", escalation_type="general"
        ),
    )
    due = ticket(sapp, number).first_response_due_at
    assert due is not None
    scheduler = sapp.scheduler()
    breach_time = due + timedelta(minutes=1)
    assert all(scheduler.run_all_once(breach_time).values())
    [tier1] = outbox(sapp, number, "sla_tier1")
    assert tier1.recipients == [LEAD] and tier1.state == "sent"
    [breach] = outbox(sapp, number, "sla_breach")
    assert breach.recipients == [TEAM]  # unassigned: the team's addresses
    assert outbox(sapp, number, "sla_tier2") == []

    tier2_time = sapp.sla_policy.calendar.add(breach_time, 4 * 3600) + timedelta(minutes=1)
    scheduler.run_all_once(tier2_time)
    scheduler.run_all_once(tier2_time + timedelta(days=30))
    [tier2] = outbox(sapp, number, "sla_tier2")
    assert tier2.recipients == [BOSS] and tier2.state == "sent"
    assert len(outbox(sapp, number, "sla_tier1")) == 1

    lead_mail = [r for r in sink.received if LEAD in r.rcpt_tos]
    assert len([r for r in lead_mail if "(escalón 1)" in body(parsed(r))]) == 1
    assert parsed(lead_mail[0])["Auto-Submitted"] == "auto-generated"
    # Staff mail keeps the ticket's one subject too: one conversation per ticket.
    assert {str(parsed(r)["Subject"]) for r in lead_mail} == {f"[#{number}] No puedo agendar citas"}
    assert len([s for s in received_by(sink, BOSS) if "(escalón 2)" in s]) == 1
    assert not [s for s in received_by(sink, CUSTOMER) if "SLA" in s]  # internal only


def test_warning_goes_to_the_assignee(sapp: App) -> None:
    number, _ = new_ticket(sapp)
    act(sapp, number, lambda s, t: actions.assign(s, t, AGENT, agent="agente@soporte.example"))
    warn_at = ticket(sapp, number).first_response_warn_at
    assert warn_at is not None
    sapp.scheduler().run_all_once(warn_at + timedelta(seconds=1))
    [warning] = outbox(sapp, number, "sla_warning")
    assert warning.recipients == ["agente@soporte.example"]


# --- several schedulers ----------------------------------------------------------------------


def test_two_schedulers_racing_send_each_mail_once(sapp: App, sink: SmtpSink) -> None:
    numbers = [new_ticket(sapp)[0] for _ in range(6)]
    for number in numbers[:2]:
        resolve(sapp, number)
    for number in numbers[2:4]:
        wait_on_customer(sapp, number)
    for number in numbers[4:]:
        act(
            sapp,
            number,
            lambda s, t: actions.escalate(
                s, t, AGENT, team="salud", reason="x", escalation_type="general"
            ),
        )
    now = utcnow() + timedelta(days=30)
    results: list[dict[str, bool]] = []
    errors: list[BaseException] = []

    def one_scheduler() -> None:
        try:
            results.append(sapp.scheduler().run_all_once(now))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one_scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 2
    assert all(ok for result in results for ok in result.values())
    sapp.scheduler().run_all_once(now)  # whatever one pass skipped as locked is sent now
    for number in numbers[:2]:
        assert len(outbox(sapp, number, "survey")) == 1
    for number in numbers[2:4]:
        assert len(outbox(sapp, number, "reminder")) == 1
    for number in numbers[4:]:
        assert len(outbox(sapp, number, "sla_tier1")) == 1
    with sapp.sessions() as session:
        rows = list(session.scalars(select(OutboxMessage)))
    assert all(row.state == "sent" for row in rows)
    sent_ids = [str(parsed(r)["Message-ID"]) for r in sink.received]
    assert len(sent_ids) == len(set(sent_ids)) == len(rows)


def test_a_failing_job_is_recorded_and_the_others_still_run(sapp: App) -> None:
    def broken() -> object:
        raise ConnectionRefusedError("relay down")

    scheduler = sapp.scheduler(transport=broken)  # type: ignore[arg-type]
    now = utcnow()
    results = scheduler.run_all_once(now)
    assert results == {
        "sla_scan": True,
        "auto_close": True,
        "reminders": True,
        "outbox": False,
        "webhooks": True,
    }
    with sapp.sessions() as session:
        job = session.get(Job, "outbox")
        assert job is not None and job.last_ok_at is None
        assert job.last_error == "ConnectionRefusedError: relay down"
        scan = session.get(Job, "sla_scan")
        assert scan is not None and scan.last_ok_at == now and scan.last_error is None


def test_jobs_are_registered_with_stable_ids(sapp: App) -> None:
    scheduler = sapp.scheduler().build()
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {"sla_scan", "auto_close", "reminders", "outbox", "webhooks"}
    assert all(job.max_instances == 1 and job.coalesce for job in jobs.values())
    assert jobs["outbox"].trigger.interval == timedelta(seconds=15)


# --- commands --------------------------------------------------------------------------------


def test_scheduler_once_as_a_command(tmp_path: Path) -> None:
    raw = mail(ANA, "No puedo agendar", "Hola").decode()
    assert buzon(["ingest"], tmp_path, stdin=raw).returncode == 0
    result = buzon(["scheduler", "--once"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "sla_scan:",
        "ok",
        "auto_close:",
        "ok",
        "reminders:",
        "ok",
        "outbox:",
        "ok",
        "webhooks:",
        "ok",
    ]
    # No relay configured: the acknowledgement went to the local Maildir.
    assert list((tmp_path / "data" / "outbox-maildir" / "new").iterdir())


def test_breached_ticket_shows_in_sla_show_and_the_breached_list(tmp_path: Path) -> None:
    raw = mail(ANA, "No puedo agendar", "Hola").decode()
    assert buzon(["ingest"], tmp_path, stdin=raw).returncode == 0
    app = make_app(tmp_path, f"sqlite:///{(tmp_path / 'data' / 'buzon.db').resolve()}")
    with app.sessions.begin() as session:
        old = session.get(Ticket, 1)
        assert old is not None
        old.created_at = utcnow() - timedelta(days=30)  # as if it came a month ago
        refresh(old, app.sla_policy, utcnow())
    app.engine.dispose()
    assert buzon(["scheduler", "--once"], tmp_path).returncode == 0
    show = buzon(["sla", "show", "1", "--json"], tmp_path)
    assert show.returncode == 0, show.stderr
    data = json.loads(show.stdout)
    assert {c["state"] for c in data["clocks"]} == {"breached"}
    assert "sla:first_response:breach" in data["fired"]
    listed = buzon(["tickets", "list", "--breached"], tmp_path)
    assert listed.returncode == 0 and listed.stdout.startswith("#1 ")


def test_the_component_is_part_of_buzon_run_and_stops_cleanly(sapp: App) -> None:
    assert "scheduler" in sapp.runners("run")

    async def start_and_stop() -> None:
        stop = asyncio.Event()
        stop.set()  # asked to stop at once: a pass may start, and is let finish
        await sapp.scheduler().run(stop)

    asyncio.run(start_and_stop())


def test_staff_mail_never_reaches_the_customer_or_our_own_address(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    app = relay_app(
        tmp_path,
        db_url,
        sink,
        support_domains=["soporte.example"],  # staff share the support domain
        sla={"tier1_addresses": [CUSTOMER, "soporte+x@soporte.example", LEAD]},
    )
    try:
        number, _ = new_ticket(app)
        act(
            app,
            number,
            lambda s, t: actions.escalate(
                s, t, AGENT, team="salud", reason="x", escalation_type="general"
            ),
        )
        app.scheduler().run_all_once(utcnow() + timedelta(days=30))
        [tier1] = outbox(app, number, "sla_tier1")
        assert tier1.recipients == [LEAD]
    finally:
        app.engine.dispose()
