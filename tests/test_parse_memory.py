"""Big mails in bounded memory: long base64 runs kept out of the stdlib parser
(parsers.runs) give the same parse as before, and a 25 MB mail is ingested in a bounded
amount of memory above the idle process."""

from __future__ import annotations

import base64
import json
import os
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest

from parsers import parse
from parsers.dsn import delivery_failures
from parsers.headers import charset_hint
from parsers.mime import walk
from parsers.runs import MIN_RUN, message_factory, shrink
from tests.helpers import buzon, python_child
from tests.mailbuilder import big_mail, mail

BLOB = os.urandom(MIN_RUN)  # encodes to ~1.3 runs' worth of base64
B64 = base64.encodebytes(BLOB)  # 76-character lines, "\n"


def _b64(eol: bytes = b"\r\n") -> bytes:
    return B64.replace(b"\n", eol)


def _multipart(body_part: bytes, eol: bytes = b"\r\n", epilogue: bytes = b"") -> bytes:
    head = (
        b"From: Ana <ana@cliente.example>\nTo: soporte@soporte.example\nSubject: Adjunto\n"
        b"Message-ID: <big@cliente.example>\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\n\n--XYZ\n'
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        + "Buenos días, les adjunto el fichero.\n".encode()
        + b"--XYZ\n"
    )
    return (
        (head + body_part + b"\n--XYZ--\n" + epilogue).replace(b"\n", eol).replace(b"\r\r", b"\r")
    )


def _pdf(payload: bytes, cte: bytes = b"base64", ctype: bytes = b"application/pdf") -> bytes:
    return (
        b"Content-Type: " + ctype + b'; name="contrato.pdf"\n'
        b"Content-Transfer-Encoding: " + cte + b"\n"
        b'Content-Disposition: attachment; filename="contrato.pdf"\n\n' + payload
    )


def _forwarded(inner: bytes) -> bytes:
    return b"Content-Type: message/rfc822\n\n" + inner


CASES = {
    "crlf": _multipart(_pdf(B64)),
    "lf": _multipart(_pdf(B64), eol=b"\n"),
    "missing padding": _multipart(_pdf(B64.rstrip(b"=\n") + b"\n")),
    "padding inside": _multipart(_pdf(B64[:400] + b"=" + B64[400:])),
    "junk character": _multipart(_pdf(B64[:400] + b"!" + B64[400:])),
    "blank line inside": _multipart(_pdf(B64[:7700] + b"\n" + B64[7700:])),
    "7bit text that looks like base64": _multipart(_pdf(B64, b"7bit", b"text/plain")),
    "forwarded mail": _multipart(_forwarded(_multipart(_pdf(B64)))),
    "forwarded 8-bit mail": _multipart(
        _forwarded(_multipart(_pdf(B64)).replace(b"Subject: Adjunto", "Subject: Año".encode()))
    ),
    "run at the end, no closing boundary": _multipart(_pdf(B64)).rpartition(b"--XYZ--")[0],
    "run in the header block": b"Subject: junk\n" + B64 + b"From: ana@cliente.example\n\nHola\n",
    "single part": b"From: ana@cliente.example\nContent-Transfer-Encoding: base64\n"
    b"Content-Type: application/octet-stream\n\n" + B64,
}


def _stdlib(raw: bytes) -> Message:
    return BytesParser(policy=compat32).parsebytes(raw)


def _lean(raw: bytes) -> Message:
    shrunk, runs = shrink(raw)
    assert runs is not None and len(shrunk) < len(raw) - MIN_RUN  # the run left the parser
    return BytesParser(message_factory(runs), policy=compat32).parsebytes(shrunk)


@pytest.mark.parametrize("case", list(CASES))
def test_a_long_base64_run_parses_as_the_stdlib_parses_the_whole_mail(case: str) -> None:
    raw = CASES[case]
    plain, lean = walk(_stdlib(raw)), walk(_lean(raw))
    assert lean.plain == plain.plain
    assert lean.html == plain.html
    assert lean.attachments == plain.attachments
    assert lean.defects == plain.defects
    assert charset_hint(_lean(raw)) == charset_hint(_stdlib(raw))
    assert delivery_failures(_lean(raw)) == delivery_failures(_stdlib(raw))


def test_the_attachment_of_a_big_mail_is_its_bytes() -> None:
    blob = os.urandom(3 * MIN_RUN)
    raw = mail(
        "Ana <ana@cliente.example>",
        "Contrato",
        "Buenos días, adjunto el contrato.",
        attachments=[("contrato.pdf", "application/pdf", blob)],
    )
    parsed = parse(raw)
    assert [(a.filename, a.payload) for a in parsed.attachments] == [("contrato.pdf", blob)]
    assert parsed.text.startswith("Buenos días") and not parsed.defects


def test_a_small_mail_is_not_touched() -> None:
    raw = _multipart(_pdf(B64[:5000]))
    assert shrink(raw) == (raw, None)


# The child: one `buzon ingest` of a small mail (every module imported, the schema current),
# then one of the big mail, in one process; VmHWM before and after.
_CHILD = """
import json, sys
from pathlib import Path
from daemon.cli.root import main

def vmhwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

def ingest(path):
    try:
        main(["ingest", path], prog_name="buzon", standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, exc.code

ingest(sys.argv[1])
idle = vmhwm()
ingest(sys.argv[2])
print(json.dumps({"idle": idle, "peak": vmhwm()}))
"""


def test_a_25_mb_mail_is_ingested_within_4_times_its_size_above_idle(tmp_path: Path) -> None:
    small, big = tmp_path / "small.eml", tmp_path / "big.eml"
    small.write_bytes(mail("Ana <ana@cliente.example>", "Consulta", "Buenos días."))
    big.write_bytes(big_mail())
    (tmp_path / "data").mkdir()
    first = buzon(["ingest", str(small)], tmp_path)  # creates the schema
    assert first.returncode == 0, first.stderr
    child = python_child(_CHILD, [str(small), str(big)], tmp_path)
    assert child.returncode == 0, child.stderr[-2000:]
    usage = json.loads(child.stdout.strip().splitlines()[-1])
    above = usage["peak"] - usage["idle"]
    assert above < 4 * big.stat().st_size, f"{above / 2**20:.0f} MB above idle"
    tickets = buzon(["tickets", "list", "--json"], tmp_path)
    assert tickets.returncode == 0 and "Contrato firmado" in tickets.stdout
