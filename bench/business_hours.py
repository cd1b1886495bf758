"""Business-hours arithmetic per call: businesstimedelta (before) vs the closed form (now).

Both run in the same process on the same instants: the SLA defaults (Mexico City, MX
holidays, 09:00-18:00 Monday to Friday) and the four additions one SLA refresh makes
(first response and resolution, due and warning) plus the pause difference.

    .venv/bin/python bench/business_hours.py [--calls 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore", category=DeprecationWarning)

from tests.businesstimedelta_reference import (  # noqa: E402
    reference,
    reference_add,
    reference_between,
)
from tickets.calendar import BusinessCalendar  # noqa: E402

CONFIG = {
    "workdays": [0, 1, 2, 3, 4],
    "start": datetime(2000, 1, 1, 9).time(),
    "end": datetime(2000, 1, 1, 18).time(),
    "country": "MX",
    "extra_holidays": [],
}
ZONE = "America/Mexico_City"
TARGETS = [h * 3600.0 for h in (1, 4, 8, 16, 8, 24, 45, 90)]  # DEFAULT_TARGETS hours


def cases(count: int) -> list[tuple[datetime, float, datetime]]:
    rnd = random.Random(15)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for _ in range(count):
        at = start + timedelta(seconds=rnd.randint(0, 2 * 365 * 86400))
        out.append((at, rnd.choice(TARGETS), at + timedelta(hours=rnd.randint(1, 200))))
    return out


def per_call_us(call: Callable[[datetime, float, datetime], object], work: list) -> float:  # type: ignore[type-arg]
    began = time.perf_counter()
    for at, seconds, later in work:
        call(at, seconds, later)
    return (time.perf_counter() - began) / len(work) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = cases(args.calls)
    old = reference(ZONE, **CONFIG)
    new = BusinessCalendar(ZONE, **CONFIG)  # type: ignore[arg-type]
    began = time.perf_counter()
    new.add(work[0][0], 1.0)  # the first call in a year builds it: once per year and process
    print(f"building one year: {(time.perf_counter() - began) * 1e3:.1f} ms (new, once)")
    for at, seconds, later in work:  # the other years the instants touch, for both
        new.add(at, seconds), new.between(at, later), reference_add(old, at, seconds)
    runs: dict[str, list[float]] = {
        name: [] for name in ("old add", "new add", "old between", "new between")
    }
    for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
        runs["old add"].append(per_call_us(lambda a, s, _b: reference_add(old, a, s), work))
        runs["new add"].append(per_call_us(lambda a, s, _b: new.add(a, s), work))
        runs["old between"].append(per_call_us(lambda a, _s, b: reference_between(old, a, b), work))
        runs["new between"].append(per_call_us(lambda a, _s, b: new.between(a, b), work))
    for name, values in runs.items():
        low, high = min(values), max(values)
        print(f"{name:12} {statistics.median(values):9.1f} µs/call  (range {low:.1f}-{high:.1f})")
    for kind in ("add", "between"):
        ratio = statistics.median(runs[f"old {kind}"]) / statistics.median(runs[f"new {kind}"])
        print(f"{kind}: closed form {ratio:.0f}x faster")


if __name__ == "__main__":
    main()
