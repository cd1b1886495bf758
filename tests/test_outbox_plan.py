"""Mail planned in the transaction, rendered and serialised at delivery (issue 15).

The plan must give the very bytes the message built in the transaction gave; a template
that fails at delivery fails its row loudly and `outbox retry` sends it after the fix;
rows written whole (before migration 0005) still deliver.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, select, text

from notifier import outbox
from notifier.compose import AUTO_GENERATED, Draft, Mailbox, Part, compose
from notifier.planned import Materializer, plan_mail, serialise
from notifier.render import Renderer
from tests.fixtures.smtp_sink import SmtpSink
from tests.helpers import AGENT, ANA, body, deliver, ingest, outbox_bytes, parsed, relay_app
from tests.mailbuilder import mail
from tickets.blobstore import BlobStore
from tickets.db import alembic_config, make_engine
from tickets.models import OutboxMessage

NOW = datetime(2026, 3, 29, 1, 30, 5, tzinfo=UTC)
MID = "20260329013005.abc@soporte.example"


def draft(**overrides: object) -> Draft:
    values: dict[str, object] = {
        "subject": "Re: [#7] No carga la agenda «urgente» — señal débil",
        "body": "Hola Ana:\n\nYa quedó. Año nuevo, 20 €.\n",
        "sender": Mailbox("soporte@soporte.example", "Lucía Romero (Soporte)"),
        "to": [Mailbox("ana@clínica.example", "Ana Pérez")],
        "cc": [Mailbox("luis@clinica.example", "Luis, «el jefe»")],
        "reply_to": Mailbox("soporte+7.x@soporte.example", "Soporte"),
        "in_reply_to": "a1@clinica.example",
        "references": ["a0@clinica.example", "a1@clinica.example"],
        "auto_submitted": AUTO_GENERATED,
        "language": "es",
        "thread_topic": "[#7] No carga la agenda",
        "thread_index": "AdqFbW5vdGFyZWFsdGhyZWFkaWQ=",
    }
    values.update(overrides)
    return Draft(**values)  # type: ignore[arg-type]


def test_a_plan_gives_the_bytes_the_message_built_at_once_gave(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    payload = b"%PDF-1.4 comprobante"
    sha256 = blobs.put(payload)
    recipients = ["ana@clínica.example", "luis@clinica.example"]
    made = Materializer(Renderer(), tmp_path / "blobs")
    whole = draft(attachments=[Part("comprobante.pdf", "application/pdf", payload)])
    plan = plan_mail(whole, NOW, attachments=[("comprobante.pdf", "application/pdf", sha256)])
    expected = serialise(compose(whole, MID, NOW), recipients)
    assert made.raw(plan, MID, recipients) == expected
    assert "clínica".encode() in expected  # RFC 6532 headers, for an SMTPUTF8 relay

    context = {"number": 7, "tag": "[#7]", "subject": "No carga", "status": "in_progress",
               "event": "new", "requester": "ana@clinica.example", "text": "Hola",
               "priority": "P3", "level": 1, "team": None, "assignee_display": "",
               "author_display": "Ana", "actor_display": "", "attachments": [], "note": "",
               "escalation_type": "", "similar": {"same_requester": [3], "related": []},
               "unbound": False, "errors": [], "support_address": "soporte@soporte.example",
               "agent_address": AGENT, "reply_address": "x@soporte.example",
               "from_name": "Soporte", "automatic": True}  # fmt: skip
    rendered = Renderer().render("es", "staff_notice", context).body
    ascii_only = draft(to=[Mailbox(AGENT)], cc=[])
    planned = plan_mail(ascii_only, NOW, template=("es", "staff_notice", context))
    built = compose(draft(to=[Mailbox(AGENT)], cc=[], body=rendered), MID, NOW)
    assert made.raw(planned, MID, [AGENT]) == serialise(built, [AGENT])


def test_a_template_failing_at_delivery_fails_the_row_until_fixed_and_retried(
    tmp_path: Path, db_url: str, sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = tmp_path / "plantillas"
    (overrides / "es").mkdir(parents=True)
    broken = overrides / "es" / "staff_notice.body.txt"
    broken.write_text("Caso {{ tag }} {{ no_such_value }}\n", encoding="utf-8")
    app = relay_app(
        tmp_path,
        db_url,
        sink,
        outbound={"templates_dir": str(overrides)},
        agent_mail={"notify": True},
    )
    outcome = ingest(app, mail(ANA, "No carga la agenda", "Hola, no carga."))
    assert outcome.ticket_id is not None
    with caplog.at_level(logging.ERROR, logger="buzon.delivery"):
        counts = deliver(app)
    assert counts == {"sent": 1, "failed": 1}  # the acknowledgement went; the notice waits
    [line] = [r.getMessage() for r in caplog.records if r.name == "buzon.delivery"]
    assert "no_such_value" in line and "buzon outbox retry" in line
    with app.sessions() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.state == "failed"))
        assert row is not None and row.plan is not None and row.raw is None
        assert "rendering failed" in (row.last_error or "")
        failed_id = row.id

    broken.write_text("Caso {{ tag }}: {{ subject }}\n", encoding="utf-8")
    later = os.stat(broken).st_mtime + 5  # the template cache sees a newer file
    os.utime(broken, (later, later))
    with app.sessions.begin() as session:
        outbox.retry(session, failed_id, datetime.now(UTC))
    assert deliver(app, datetime.now(UTC) + timedelta(seconds=1)) == {"sent": 1}
    notice = parsed(sink.messages[-1])
    assert body(notice) == f"Caso [#{outcome.ticket_id}]: No carga la agenda\n"
    app.engine.dispose()


def test_a_row_with_bytes_and_no_plan_still_delivers(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    app = relay_app(tmp_path, db_url, sink)
    outcome = ingest(app, mail(ANA, "No carga la agenda", "Hola, no carga."))
    message = compose(draft(to=[Mailbox("ana@clinica.example")], cc=[]), MID, NOW)
    with app.sessions.begin() as session:
        row_id = outbox.enqueue(
            session, message, message_id=MID, kind="reply", mail_from="soporte@soporte.example",
            recipients=["ana@clinica.example"], ticket_id=outcome.ticket_id, article_id=None,
            automatic=False, now=NOW,
        )  # fmt: skip
        row = session.get_one(OutboxMessage, row_id)
        assert row.plan is None and row.raw is not None
        assert outbox_bytes(app, row) == row.raw
    assert deliver(app, datetime.now(UTC)) == {"sent": 2}
    assert f"<{MID}>" in {m.message["Message-ID"] for m in sink.messages}
    app.engine.dispose()


def migrate(engine: Engine, target: str, *, down: bool = False) -> None:
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, target)


def test_migration_0005_keeps_the_rows_written_before_it_deliverable(
    tmp_path: Path, db_url: str, sink: SmtpSink
) -> None:
    engine = make_engine(db_url)
    migrate(engine, "0004")
    message = compose(draft(to=[Mailbox("ana@clinica.example")], cc=[]), MID, NOW)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbox (kind, message_id, mail_from, recipients, raw, state,"
                " attempts, next_attempt_at, created_at)"
                " VALUES ('reply', :mid, 'soporte@soporte.example', :rcpts, :raw, 'pending',"
                " 0, :at, :at)"
            ),
            {"mid": MID, "rcpts": '["ana@clinica.example"]', "raw": message.as_bytes(),
             "at": NOW.replace(tzinfo=None)},
        )  # fmt: skip
        conn.execute(  # a budget row refers to it: the SQLite rebuild must keep the link
            text(
                "INSERT INTO outbox_recipients (outbox_id, email, created_at)"
                " SELECT id, 'ana@clinica.example', created_at FROM outbox"
            )
        )
    engine.dispose()
    app = relay_app(tmp_path, db_url, sink)  # upgrades to the newest schema
    ingest(app, mail(ANA, "No carga la agenda", "Hola, no carga."))  # a planned row
    assert deliver(app, datetime.now(UTC)) == {"sent": 2}
    assert sink.messages[0].data.replace(b"\r\n", b"\n") == message.as_bytes().replace(
        b"\r\n", b"\n"
    )
    migrate(app.engine, "0004", down=True)  # sent planned rows go back as history
    migrate(app.engine, "heads")
    app.engine.dispose()
