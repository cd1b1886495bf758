"""Per notification: what the transaction spends on the mail, before and after plans.

Before, the transaction composed the EmailMessage and serialised it into `outbox.raw`;
now it writes the plan (JSON) and the delivery pass composes and serialises it. Measured
in one process, interleaved, on an acknowledgement with Spanish text; CPU time, so that
other load on the machine counts less.

    .venv/bin/python bench/outbox_plan.py [--calls 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from notifier.compose import AUTO_REPLIED, Draft, Mailbox, compose  # noqa: E402
from notifier.planned import Materializer, plan_mail, serialise  # noqa: E402
from notifier.render import Renderer  # noqa: E402

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
MID = "buzon.7.0519aa1992ec9cb5.70012b407ee98fa21535@soporte.example"
RECIPIENTS = ["ana@clinica.example", "luis@clinica.example"]
CONTEXT = {
    "number": 7, "tag": "[#7]", "subject": "No carga la agenda «urgente»", "status": "new",
    "status_changed": False, "old_status": "", "requester_name": "Ana Pérez",
    "to_requester": True, "requester_display": "Ana Pérez", "colleague_names": "Luis",
    "by_customer": False, "actor_display": "", "assignee": "", "team": None,
    "from_name": "Soporte", "automatic": True, "reply_text": "", "attachments": [],
    "merged_from": None,
}  # fmt: skip


def per_call_ms(call: Callable[[], object], calls: int) -> float:
    began = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - began) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    renderer = Renderer()
    draft = Draft(
        subject="Re: [#7] No carga la agenda «urgente»",
        body=renderer.render("es", "acknowledgement", CONTEXT).body,
        sender=Mailbox("soporte@soporte.example", "Soporte Clínica"),
        to=[Mailbox("ana@clinica.example", "Ana Pérez")],
        cc=[Mailbox("luis@clinica.example", "Luis")],
        reply_to=Mailbox("soporte+7.abc@soporte.example", "Soporte"),
        in_reply_to="a1@clinica.example",
        references=["a1@clinica.example"],
        auto_submitted=AUTO_REPLIED,
        thread_topic="[#7] No carga la agenda",
        thread_index="AdqFbW5vdGFyZWFsdGhyZWFkaWQ=",
    )
    made = Materializer(renderer, None)
    stored = json.dumps(plan_mail(draft, NOW))
    before = serialise(compose(draft, MID, NOW), RECIPIENTS)
    assert made.raw(json.loads(stored), MID, RECIPIENTS) == before, "not the same bytes"
    runs: dict[str, tuple[Callable[[], object], list[float]]] = {
        "before: compose + serialise, in the transaction": (
            lambda: serialise(compose(draft, MID, NOW), RECIPIENTS),
            [],
        ),
        "now: plan as JSON, in the transaction": (
            lambda: json.dumps(plan_mail(draft, NOW)),
            [],
        ),
        "now: compose + serialise, at delivery": (
            lambda: made.raw(json.loads(stored), MID, RECIPIENTS),
            [],
        ),
    }
    for _ in range(args.repeat):
        for call, values in runs.values():
            values.append(per_call_ms(call, args.calls))
    for name, (_, values) in runs.items():
        low, high = min(values), max(values)
        print(f"{name:50} {statistics.median(values):7.3f} CPU ms  ({low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
