"""SLA clocks and the scan, with an injected clock (no test sleeps)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import func, select

from daemon.wiring import App
from tickets.calendar import BusinessCalendar
from tickets.models import Event, Ticket
from tickets.sla import SlaEscalated, SlaPolicy, clocks_of, fired_keys, refresh, scan

MX = "America/Mexico_City"  # UTC-6, no daylight saving since 2022


def local(y: int, m: int, d: int, h: int, mi: int = 0) -> datetime:
    return (
        datetime(y, m, d, h + 6, mi, tzinfo=UTC)
        if h + 6 < 24
        else datetime(y, m, d, h + 6 - 24, mi, tzinfo=UTC) + timedelta(days=1)
    )


@pytest.fixture
def policy() -> SlaPolicy:
    calendar = BusinessCalendar(MX, start=time(9), end=time(18), country="MX")
    return SlaPolicy(calendar=calendar, tier2_after_hours=4)


def make_ticket(created: datetime, priority: str = "P3", level: int = 1) -> Ticket:
    return Ticket(
        subject="t",
        requester="ana@clinica.example",
        status="new",
        priority=priority,
        level=level,
        created_at=created,
        updated_at=created,
        sla_paused_seconds=0,
        category="general",
    )


def test_first_response_target_runs_over_the_weekend(policy: SlaPolicy) -> None:
    ticket = make_ticket(local(2025, 12, 19, 16), priority="P2")  # Friday 16:00, 4 h target
    refresh(ticket, policy, ticket.created_at)
    assert ticket.first_response_due_at == local(2025, 12, 22, 11)  # Monday 11:00


def test_target_skips_a_public_holiday(policy: SlaPolicy) -> None:
    ticket = make_ticket(local(2025, 12, 24, 17))  # Wed 17:00; 25 Dec is a holiday; 8 h
    refresh(ticket, policy, ticket.created_at)
    assert ticket.first_response_due_at == local(2025, 12, 26, 16)
    no_holidays = SlaPolicy(calendar=BusinessCalendar(MX))
    refresh(ticket, no_holidays, ticket.created_at)
    assert ticket.first_response_due_at == local(2025, 12, 25, 16)


def test_configured_extra_holiday_counts(policy: SlaPolicy) -> None:
    calendar = BusinessCalendar(MX, extra_holidays=[date(2025, 3, 4)])
    ticket = make_ticket(local(2025, 3, 3, 17))  # Monday 17:00, Tuesday off
    refresh(ticket, SlaPolicy(calendar=calendar), ticket.created_at)
    assert ticket.first_response_due_at == local(2025, 3, 5, 16)


def test_pause_while_waiting_on_customer_and_resume(policy: SlaPolicy) -> None:
    ticket = make_ticket(local(2025, 3, 3, 9), priority="P1")  # Monday 09:00, 8 h resolution
    refresh(ticket, policy, ticket.created_at)
    assert ticket.resolution_due_at == local(2025, 3, 3, 17)
    ticket.status = "waiting_on_customer"
    refresh(ticket, policy, local(2025, 3, 3, 10))
    assert ticket.resolution_due_at is None and ticket.sla_next_check_at is None
    ticket.status = "in_progress"
    refresh(ticket, policy, local(2025, 3, 4, 10))  # 9 business hours paused
    assert ticket.sla_paused_seconds == 9 * 3600
    assert ticket.resolution_due_at == local(2025, 3, 4, 17)


def test_first_public_reply_stops_the_first_response_clock(policy: SlaPolicy) -> None:
    ticket = make_ticket(local(2025, 3, 3, 9))
    refresh(ticket, policy, ticket.created_at)
    assert ticket.first_response_due_at is not None
    ticket.first_response_at = local(2025, 3, 3, 11)
    refresh(ticket, policy, ticket.first_response_at)
    assert ticket.first_response_due_at is None
    assert ticket.resolution_due_at is not None
    first = next(c for c in clocks_of(ticket, policy) if c.name == "first_response")
    assert first.stopped_at == local(2025, 3, 3, 11)


def _stored(app: App, ticket: Ticket, policy: SlaPolicy) -> int:
    with app.sessions.begin() as session:
        session.add(ticket)
        session.flush()
        refresh(ticket, policy, ticket.created_at)
        return ticket.id


def _scan(app: App, policy: SlaPolicy, now: datetime) -> list[object]:
    with app.sessions.begin() as session:
        return scan(session, policy, now).changes


def test_breach_escalates_a_level_two_ticket_once_then_the_next_tier_once(
    app: App, policy: SlaPolicy
) -> None:
    number = _stored(app, make_ticket(local(2025, 3, 3, 9), "P3", level=2), policy)
    assert _scan(app, policy, local(2025, 3, 3, 12)) == []  # nothing due yet
    warned = _scan(app, policy, local(2025, 3, 3, 16, 30))  # 75% of 8 h first response
    assert [type(c).__name__ for c in warned] == ["SlaWarning"]
    breach_time = local(2025, 3, 3, 17, 1)
    changes = _scan(app, policy, breach_time)
    assert [type(c).__name__ for c in changes] == ["SlaBreached", "SlaEscalated"]
    assert _scan(app, policy, breach_time + timedelta(minutes=5)) == []
    with app.sessions() as session:
        ticket = session.get(Ticket, number)
        assert ticket is not None and ticket.priority == "P2"  # raised one step
        assert {"sla:first_response:breach", "sla:tier:1"} <= set(fired_keys(session, number))
    tier2_time = local(2025, 3, 4, 12, 2)  # 4 business hours after tier 1 (1 h Mon + 3 h Tue)
    tier2 = [c for c in _scan(app, policy, tier2_time) if isinstance(c, SlaEscalated)]
    assert tier2 == [SlaEscalated(number, 2)]
    later = _scan(app, policy, local(2025, 3, 20, 12))
    assert not [c for c in later if isinstance(c, SlaEscalated)]
    with app.sessions() as session:
        tiers = session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.ticket_id == number, Event.once_key.like("sla:tier:%"))
        )
    assert tiers == 2


def test_level_one_breach_notifies_and_moves_to_level_two_when_configured(app: App) -> None:
    calendar = BusinessCalendar(MX)
    policy = SlaPolicy(calendar=calendar, level1_breach_to_level2=True, level1_breach_team="salud")
    number = _stored(app, make_ticket(local(2025, 3, 3, 9), "P1"), policy)
    changes = _scan(app, policy, local(2025, 3, 3, 10, 1))
    assert "SlaBreached" in [type(c).__name__ for c in changes]
    with app.sessions() as session:
        ticket = session.get(Ticket, number)
        assert ticket is not None and (ticket.level, ticket.team) == (2, "salud")


def test_two_schedulers_racing_escalate_once(app: App, policy: SlaPolicy) -> None:
    numbers = [
        _stored(app, make_ticket(local(2025, 3, 3, 9), "P3", level=2), policy) for _ in range(20)
    ]
    now = local(2025, 3, 5, 12)
    results: list[list[object]] = []
    errors: list[BaseException] = []

    def one_scheduler() -> None:
        try:
            results.append(_scan(app, policy, now))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one_scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    tier1 = [c for r in results for c in r if isinstance(c, SlaEscalated) and c.tier == 1]
    assert sorted(c.ticket_id for c in tier1) == sorted(numbers)
