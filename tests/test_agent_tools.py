"""Agents shape tickets from the command line, as a person would: open one for a phone
call, set its category, CC a colleague, change the requester, save an attachment."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import buzon
from tests.mailbuilder import mail


def show(tmp_path: Path, number: int) -> dict[str, object]:
    result = buzon(["tickets", "show", str(number), "--json"], tmp_path)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def test_a_phone_call_becomes_a_ticket_with_or_without_acknowledgement(tmp_path: Path) -> None:
    called = buzon(
        ["tickets", "create", "--requester", "Ana@Clinica.example", "--subject",
         "Llamó: no puede imprimir recetas", "--text", "Desde ayer.", "--cc",
         "jefa@clinica.example"],
        tmp_path,
    )  # fmt: skip
    assert called.returncode == 0, called.stderr
    assert called.stdout.startswith("ticket #1: opened (phone); acknowledgement mail queued for 2")
    quiet = buzon(
        ["tickets", "create", "--requester", "luis@correo.example", "--subject", "Chat",
         "--source", "chat", "--no-ack"],
        tmp_path,
    )  # fmt: skip
    assert quiet.returncode == 0 and "acknowledgement" not in quiet.stdout
    data = show(tmp_path, 1)
    assert data["requester"] == "ana@clinica.example" and data["status"] == "new"
    roles = {p["email"]: p["role"] for p in data["participants"]}  # type: ignore[attr-defined]
    assert roles == {"ana@clinica.example": "requester", "jefa@clinica.example": "watcher"}
    bad = buzon(["tickets", "create", "--requester", "nadie", "--subject", "x"], tmp_path)
    assert bad.returncode == 65 and "not an email address" in bad.stderr


def test_category_cc_requester_and_attachment(tmp_path: Path) -> None:
    raw = mail(
        "Ana <ana@clinica.example>",
        "Receta",
        "Adjunto la receta.",
        attachments=[("receta.pdf", "application/pdf", b"%PDF-1.4 receta")],
    )
    assert buzon(["ingest"], tmp_path, stdin=raw.decode()).returncode == 0
    assert buzon(["tickets", "category", "1", "citas"], tmp_path).returncode == 65
    assert buzon(["tickets", "category", "1", "appointment"], tmp_path).returncode == 0
    assert buzon(["tickets", "cc", "add", "1", "jefa@clinica.example"], tmp_path).returncode == 0
    again = buzon(["tickets", "cc", "add", "1", "JEFA@clinica.example"], tmp_path)
    assert again.returncode == 65 and "already on ticket #1" in again.stderr
    assert buzon(["tickets", "requester", "1", "paciente@correo.example"], tmp_path).returncode == 0
    assert buzon(["tickets", "cc", "remove", "1", "jefa@clinica.example"], tmp_path).returncode == 0
    data = show(tmp_path, 1)
    assert data["category"] == "appointment" and data["requester"] == "paciente@correo.example"
    roles = {p["email"]: p["role"] for p in data["participants"]}  # type: ignore[attr-defined]
    assert roles == {"ana@clinica.example": "watcher", "paciente@correo.example": "requester"}
    inbound = [a for a in data["articles"] if a["kind"] == "inbound"]  # type: ignore[attr-defined]
    [attached] = inbound[0]["attachments"]
    out = tmp_path / "guardado.pdf"
    saved = buzon(["tickets", "attachment", "1", str(attached["id"]), "-o", str(out)], tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert out.read_bytes() == b"%PDF-1.4 receta"
    missing = buzon(["tickets", "attachment", "1", "999"], tmp_path)
    assert missing.returncode == 65 and "no attachment 999" in missing.stderr
