"""The wire-speed summary: median (range) of each measurement over the repetitions, and
the ratios taken inside each repetition (the machine is shared: only same-run ratios
compare), each against its aim from issue 15. Markdown, readable as plain text."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

Record = dict[str, Any]


def spread(values: list[float], fmt: str = "{:,.1f}") -> str:
    """median (min–max), or the one value, or '-'."""
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(lo)}–{fmt.format(hi)})"


def pick(records: list[Record], part: str, variant: str) -> dict[int, Record]:
    """The successful records of one measurement, by repetition."""
    return {
        r["rep"]: r
        for r in records
        if r["part"] == part and r["variant"] == variant and "error" not in r
    }


def values(records: list[Record], part: str, variant: str, get: Callable[[Record], Any]) -> list:
    return [get(r) for r in pick(records, part, variant).values()]


def ratios(
    records: list[Record],
    part: str,
    num: tuple[str, Callable[[Record], float]],
    den: tuple[str, Callable[[Record], float]],
) -> list[float]:
    """num/den inside each repetition where both were measured."""
    tops, bottoms = pick(records, part, num[0]), pick(records, part, den[0])
    return [num[1](tops[k]) / den[1](bottoms[k]) for k in sorted(tops.keys() & bottoms.keys())]


def verdict(found: list[float], aim: float | None, higher: bool = True) -> str:
    if not found:
        return "not measured"
    if aim is None:
        return "(context)"
    mid = statistics.median(found)
    met = mid >= aim if higher else mid <= aim
    return "met" if met else f"missed ({mid / aim:.2f}× the aim)"


def rate(r: Record) -> float:
    return float(r["rate"])


def report(records: list[Record], header: str) -> str:
    lines = [f"_{header}_", ""]
    lines += _measurements(records)
    lines += [
        "",
        "| ratio, inside each repetition | per repetition | median (range) | aim | |",
        "|---|---|---|---|---|",
    ]
    for label, found, aim, higher in _ratio_rows(records):
        per_rep = ", ".join(f"{v:.2f}" for v in found) or "-"
        goal = "-" if aim is None else f"{'≥' if higher else '≤'} {aim:g}"
        lines.append(
            f"| {label} | {per_rep} | {spread(found, '{:.2f}')} | {goal} | "
            f"{verdict(found, aim, higher)} |"
        )
    errors = [r for r in records if "error" in r]
    lines += [""] + [
        f"- error, {r['part']} {r['variant']} rep {r['rep']}: {r['error'][:300]}" for r in errors
    ]
    return "\n".join(lines).rstrip() + "\n"


def _measurements(records: list[Record]) -> list[str]:
    rows = ["| measurement | median (range) | load (1 min) |", "|---|---:|---|"]
    spec = [
        ("imap", "bare_fetch", "bare imapclient fetch, msg/s", rate),
        ("imap", "helpdesk", "django-helpdesk `get_email` (SQLite), msg/s", rate),
        ("imap", "buzon_sqlite", "`buzon imap`, SQLite, all processed, msg/s", rate),
        ("imap", "buzon_pg", "`buzon imap`, PostgreSQL, all processed, msg/s", rate),
        ("smtp", "bare", "bare aiosmtpd, msg/s", rate),
        ("smtp", "acceptance", "`buzon smtp` acceptance alone (no worker), msg/s", rate),
        (
            "smtp",
            "deployed",
            "`buzon smtp` as deployed: accepted, msg/s",
            lambda r: r["accept_rate"],
        ),
        ("smtp", "deployed", "`buzon smtp` as deployed: all processed, msg/s", rate),
        ("desk", "desk_sqlite", "desk, ms per mail (all)", lambda r: r["all"]["wall_ms"]),
        ("desk", "desk_sqlite", "desk, CPU ms per mail (all)", lambda r: r["all"]["cpu_ms"]),
        ("desk", "desk_sqlite", "desk, ms per new-ticket mail", lambda r: r["new"]["wall_ms"]),
        ("desk", "desk_sqlite", "desk, ms per reply", lambda r: r["reply"]["wall_ms"]),
        (
            "desk",
            "desk_sqlite",
            "desk, SQL statements per new-ticket mail",
            lambda r: r["new"]["statements"],
        ),
        (
            "desk",
            "desk_sqlite",
            "desk, SQL statements per reply",
            lambda r: r["reply"]["statements"],
        ),
        ("desk", "desk_sqlite", "desk, commits per mail", lambda r: r["all"]["commits"]),
        (
            "desk",
            "floor_sqlite",
            "floor: mail-parser + Core insert, ms per mail",
            lambda r: r["floor_ms"],
        ),
        ("memory", "smtp_25mb", "`buzon smtp` RSS idle, MB", lambda r: r["idle_mb"]),
        (
            "memory",
            "smtp_25mb",
            "`buzon smtp` peak RSS with a 25 MB mail, MB",
            lambda r: r["peak_mb"],
        ),
    ]
    for part, variant, label, get in spec:
        found = values(records, part, variant, get)
        if found:
            loads = values(records, part, variant, lambda r: r["load"])
            fmt = "{:,.2f}" if part == "desk" else "{:,.1f}"
            rows.append(f"| {label} | {spread(found, fmt)} | {spread(loads, '{:.1f}')} |")
    return rows


Row = tuple[str, list[float], float | None, bool]


def _ratio_rows(records: list[Record]) -> list[Row]:
    """(label, values, aim or None for context, whether higher is better)."""

    def imap(num: str, den: str) -> list[float]:
        return ratios(records, "imap", (num, rate), (den, rate))

    def smtp(num: tuple[str, Callable[[Record], float]]) -> list[float]:
        return ratios(records, "smtp", num, ("bare", rate))

    desk = ("desk_sqlite", lambda r: r["all"]["wall_ms"])
    floor = ("floor_sqlite", lambda r: r["floor_ms"])
    statements = values(records, "desk", "desk_sqlite", lambda r: r["new"]["statements"])
    memory = values(records, "memory", "smtp_25mb", lambda r: r["above_idle_x"])
    return [
        ("IMAP: buzón SQLite / django-helpdesk", imap("buzon_sqlite", "helpdesk"), 10, True),
        ("IMAP: buzón PostgreSQL / django-helpdesk", imap("buzon_pg", "helpdesk"), 6, True),
        ("IMAP: django-helpdesk / bare fetch", imap("helpdesk", "bare_fetch"), None, True),
        ("IMAP: buzón SQLite / bare fetch", imap("buzon_sqlite", "bare_fetch"), None, True),
        ("SMTP acceptance alone / bare aiosmtpd", smtp(("acceptance", rate)), None, True),
        ("SMTP as deployed, all processed / bare", smtp(("deployed", rate)), 0.25, True),
        ("SMTP accepted while processing / bare",
         smtp(("deployed", lambda r: r["accept_rate"])), 0.4, True),
        ("SQL statements per new-ticket mail", statements, 8, False),
        ("desk ms per mail / single-core floor", ratios(records, "desk", desk, floor), 2, False),
        ("25 MB mail: (peak − idle RSS) / mail size", memory, 4, False),
    ]  # fmt: skip
