"""The closed-form business-hours arithmetic gives businesstimedelta's answers.

businesstimedelta (with pytz) is what buzón computed due times with before; it stays a
test dependency only, as the reference. Zones are ones with daylight saving (and one
without any); instants span three years so that clock changes and public holidays fall
inside the intervals. America/Havana is left out on purpose: its future rules differ
between pytz's bundled database and the system's tzdata, which is not arithmetic.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.businesstimedelta_reference import reference, reference_add, reference_between
from tickets.calendar import BusinessCalendar

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:businesstimedelta.*")

ZONES = [
    "America/Mexico_City",
    "Europe/Madrid",
    "America/New_York",
    "America/Santiago",
    "Australia/Sydney",
    "Asia/Kolkata",
    "UTC",
]
START = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 3 * 365 * 86400


calendars = st.fixed_dictionaries(
    {
        "timezone": st.sampled_from(ZONES),
        "workdays": st.sets(st.integers(0, 6), min_size=1).map(sorted),
        "start": st.builds(time, st.integers(5, 11), st.sampled_from([0, 15, 30])),
        "end": st.builds(time, st.integers(13, 22), st.sampled_from([0, 30, 45])),
        "country": st.sampled_from([None, "MX", "ES", "US"]),
        "extra_holidays": st.lists(st.dates(date(2024, 1, 1), date(2027, 6, 30)), max_size=6),
    }
)
instants = st.builds(
    lambda s, us: START + timedelta(seconds=s, microseconds=us),
    st.integers(0, SPAN_SECONDS),
    st.sampled_from([0, 1, 499_999, 500_000, 999_999]) | st.integers(0, 999_999),
)
durations = st.sampled_from([0.0, 0.3, 0.5, 1.5, 3600.0, 8 * 3600.0]) | st.floats(
    -10, 400 * 3600, allow_nan=False
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=calendars,
    cases=st.lists(
        st.tuples(instants, durations, st.integers(-1000, 60 * 86400)), min_size=50, max_size=50
    ),
)
def test_add_and_between_match_businesstimedelta(
    config: dict[str, Any], cases: list[tuple[datetime, float, int]]
) -> None:
    # 40 calendars × 50 instants, each an addition and a difference: 4,000 comparisons.
    timezone = config.pop("timezone")
    ours = BusinessCalendar(timezone, **config)
    theirs = reference(timezone, **config)
    for start, seconds, later in cases:
        end = start + timedelta(seconds=later, microseconds=start.microsecond // 3)
        assert ours.add(start, seconds) == reference_add(theirs, start, seconds), (start, seconds)
        assert ours.between(start, end) == reference_between(theirs, start, end), (start, end)


def test_an_hour_across_the_spring_forward_night_is_an_hour() -> None:
    # Madrid, Friday 28 and Monday 31 March 2025: the clocks went forward on Sunday 30.
    calendar = BusinessCalendar("Europe/Madrid", start=time(9), end=time(18))
    friday_end = datetime(2025, 3, 28, 17, 30, tzinfo=UTC)  # 18:30 CET, after hours
    monday_open = datetime(2025, 3, 31, 7, tzinfo=UTC)  # 09:00 CEST
    assert calendar.add(friday_end, 3600) == monday_open + timedelta(hours=1)
    assert calendar.between(datetime(2025, 3, 28, 8, tzinfo=UTC), monday_open) == 9 * 3600


def test_a_moment_at_closing_time_stays_there() -> None:
    calendar = BusinessCalendar("UTC")
    nine = datetime(2025, 3, 3, 9, tzinfo=UTC)
    assert calendar.add(nine, 9 * 3600) == datetime(2025, 3, 3, 18, tzinfo=UTC)
    assert calendar.add(nine, 9 * 3600 + 1) == datetime(2025, 3, 4, 9, 0, 1, tzinfo=UTC)


def test_targets_longer_than_a_year_cross_into_the_next() -> None:
    calendar = BusinessCalendar("America/Mexico_City", country="MX")
    start = datetime(2025, 6, 2, 15, 30, tzinfo=UTC)  # Monday 09:30
    year = calendar.between(start, start.replace(year=2026))
    assert calendar.add(start, year) == start.replace(year=2026)
    assert calendar.between(start, calendar.add(start, 3 * year)) == 3 * year
