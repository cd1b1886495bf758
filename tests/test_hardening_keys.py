"""The signing key and the files buzón keeps: created atomically, never empty, private.

Real processes race on a fresh data dir (as supervisord or systemd start the listener
and the scheduler together), a real tmpfs runs full, and the CLI is driven as ops would.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import ConfigError
from daemon.secret_key import MIN_LENGTH, load_or_create
from tests.helpers import buzon, missing_server
from tests.mailbuilder import mail

RACER = """
import sys, time
from pathlib import Path
from daemon.secret_key import load_or_create
start = float(sys.argv[2])
while time.time() < start:
    pass
print(load_or_create(Path(sys.argv[1])).decode())
"""


def _race(path: Path) -> list[subprocess.CompletedProcess[str]]:
    import time

    start = str(time.time() + 0.6)  # both processes are up by then: they start together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_two_processes_starting_together_share_one_complete_key(tmp_path: Path) -> None:
    for n in range(12):
        key_file = tmp_path / f"data{n}" / "secret.key"
        first, second = _race(key_file)
        assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
        assert first.stdout == second.stdout == key_file.read_text()
        assert len(first.stdout.strip()) == 64
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert [p.name for p in key_file.parent.iterdir()] == ["secret.key"]  # no temp left


def test_an_empty_or_short_key_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "secret.key"
    key_file.parent.mkdir()
    for content in ("", "short"):
        key_file.write_text(content)
        with pytest.raises(ConfigError, match=f"at least {MIN_LENGTH} needed"):
            load_or_create(key_file)
        result = buzon(["db", "upgrade"], tmp_path, BUZON_SECRET_KEY="")
        assert result.returncode == 78, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "secret key" in line and "characters" in line


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 KiB tmpfs, filled up: the first start of a data dir on a full disk."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        reason = done.stderr.decode().strip() or "mount refused"
        missing_server("tmpfs", f"mount -t tmpfs needs root: {reason}")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        with pytest.raises(OSError, match="No space left"):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_at_first_start_leaves_no_key_and_says_so(full_disk: Path) -> None:
    key_file = full_disk / "data" / "secret.key"
    with pytest.raises(ConfigError, match="cannot create"):
        load_or_create(key_file)
    assert not key_file.exists()  # next start, with space, makes a whole key


def test_data_dir_database_key_and_attachments_are_private(tmp_path: Path) -> None:
    raw = mail("ana@clinica.example", "Factura", "Adjunto la factura.", attachments=[
        ("factura.pdf", "application/pdf", b"%PDF-1.4 factura"),
    ])  # fmt: skip
    result = buzon(["ingest"], tmp_path, stdin=raw.decode(), BUZON_SECRET_KEY="")
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"buzon.db", "secret.key"}
    assert any("attachments" in p.parts for p in files)
    loose = {str(p.relative_to(data)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert all(mode == "0o600" for mode in loose.values()), loose
