"""The IMAP side of the wire-speed benchmark: the same backlog in a private Dovecot
(tests/fixtures/dovecot.py's), fetched bare, by django-helpdesk 2.6.1 `get_email`, and
by `buzon imap` until every mail is a processed ticket with its acknowledgement queued.

django-helpdesk runs from its own virtualenv outside the repository, with the anchors'
minimal project (../shared/anchors/dhproj/) copied into the work directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from bench.wire_common import buzon_process, cpu_seconds, loadavg, stop
from tests.fixtures.dovecot import Dovecot

DH_VERSION = "django-helpdesk==2.6.1"
DH_FOLDER = "wire-dh"
BUZON_FOLDER = "wire-buzon"
BARE_FOLDER = "wire-bare"
# The queue django-helpdesk's get_email reads: the private Dovecot, plain IMAP, loopback.
QUEUE_CODE = """
import os
from helpdesk.models import Queue
Queue.objects.all().delete()
Queue.objects.create(title="Soporte", slug="soporte", email_address="soporte@helpdesk.example.com",
    allow_email_submission=True, email_box_type="imap", email_box_host="127.0.0.1",
    email_box_port=int(os.environ["WIRE_IMAP_PORT"]), email_box_ssl=False,
    email_box_user=os.environ["WIRE_IMAP_USER"], email_box_pass=os.environ["WIRE_IMAP_PASSWORD"],
    email_box_imap_folder=os.environ["DH_FOLDER"], email_box_interval=0, logging_type="none")
"""
COUNT_CODE = """
import json
from helpdesk.models import FollowUp, Ticket
print("COUNTS " + json.dumps({"tickets": Ticket.objects.count(),
                              "followups": FollowUp.objects.count()}))
"""


def load_folder(server: Dovecot, folder: str, raws: list[bytes]) -> None:
    """An empty `folder` holding `raws` (not timed: every contender starts from this)."""
    with server.client() as imap:
        if imap.folder_exists(folder):
            imap.delete_folder(folder)
        imap.create_folder(folder)
        for first in range(0, len(raws), 100):
            imap.multiappend(folder, raws[first : first + 100])


def bare_fetch(server: Dovecot, raws: list[bytes]) -> dict[str, Any]:
    """The baseline: log in, fetch every body (BODY.PEEK[], 50 at a time), store nothing."""
    load_folder(server, BARE_FOLDER, raws)
    load = loadavg()
    start = time.perf_counter()
    with IMAPClient(server.host, server.port, ssl=False, timeout=60) as imap:
        imap.login(server.user, server.password)
        imap.select_folder(BARE_FOLDER, readonly=True)
        uids = imap.search("ALL")
        fetched = 0
        for first in range(0, len(uids), 50):
            fetched += len(imap.fetch(uids[first : first + 50], ["BODY.PEEK[]"]))
    wall = time.perf_counter() - start
    return {"load": load, "mails": fetched, "wall_s": round(wall, 2), "rate": fetched / wall}


def buzon_imap(
    python: str,
    server: Dovecot,
    raws: list[bytes],
    db_url: str | None,
    extra: str,
    timeout: float,
) -> dict[str, Any]:
    """`buzon imap` from an empty store until every mail is processed."""
    mailbox = (
        f'\n[[imap.mailboxes]]\nname = "soporte"\nhost = "127.0.0.1"\nport = {server.port}\n'
        f'security = "none"\nuser = "{server.user}"\npassword = "{server.password}"\n'
        f'folder = "{BUZON_FOLDER}"\n'
    )
    load_folder(server, BUZON_FOLDER, raws)
    with tempfile.TemporaryDirectory(prefix="buzon-wire-imap-") as tmp:
        root = Path(tmp)
        load = loadavg()
        start = time.perf_counter()
        with buzon_process(python, "imap", root, db_url, extra + mailbox) as (proc, store):
            done = store.wait_processed(len(raws), proc, timeout)
            wall = time.perf_counter() - start
            cpu = cpu_seconds(proc.pid)
            counts, states = store.counts(), store.states()
        if not done:
            tail = (root / "buzon.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"buzon imap: not done in {timeout:.0f} s: {states}; {tail}")
    return {
        "load": load,
        "mails": len(raws),
        "wall_s": round(wall, 2),
        "rate": len(raws) / wall,
        "cpu_s": cpu,
        "states": states,
        **counts,
    }


class DjangoHelpdesk:
    """django-helpdesk 2.6.1 in its own virtualenv, a fresh SQLite copy for every run."""

    def __init__(self, venv: Path, dhproj: Path, work: Path, server: Dovecot) -> None:
        self.python = venv / "bin" / "python"
        self.proj = work / "dhproj"
        self.data = work / "dh-data"
        self.server = server
        self.template = self.data / "template.sqlite3"
        shutil.rmtree(self.proj, ignore_errors=True)
        shutil.copytree(dhproj, self.proj)
        self.data.mkdir(parents=True, exist_ok=True)
        self.template.unlink(missing_ok=True)
        self._manage(self.template, "migrate", "--noinput")
        self._manage(self.template, "shell", "-c", QUEUE_CODE)

    @staticmethod
    def create_venv(venv: Path) -> None:
        """The documented set-up step (`--setup-dh`): a virtualenv with only the peer."""
        if not (venv / "bin" / "python").exists():
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", DH_VERSION]
        subprocess.run(pip, check=True)

    def _env(self, db: Path) -> dict[str, str]:
        return dict(
            os.environ,
            DH_DATA=str(self.data),
            DH_DB=str(db),
            DH_MEDIA=str(self.data / "media"),
            DH_FOLDER=DH_FOLDER,
            WIRE_IMAP_PORT=str(self.server.port),
            WIRE_IMAP_USER=self.server.user,
            WIRE_IMAP_PASSWORD=self.server.password,
            PYTHONDONTWRITEBYTECODE="1",
        )

    def _manage(self, db: Path, *args: str) -> str:
        cmd = [str(self.python), "manage.py", *args]
        done = subprocess.run(
            cmd, cwd=self.proj, env=self._env(db), capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0:
            raise RuntimeError(f"django-helpdesk {args[0]}: {done.stderr[-1500:]}")
        return done.stdout

    def get_email(self, raws: list[bytes], timeout: float) -> dict[str, Any]:
        db = self.data / "run.sqlite3"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copy(self.template, db)
        shutil.rmtree(self.data / "media", ignore_errors=True)
        load_folder(self.server, DH_FOLDER, raws)
        load = loadavg()
        start = time.perf_counter()
        cmd = [str(self.python), "manage.py", "get_email", "--quiet"]
        proc = subprocess.Popen(
            cmd, cwd=self.proj, env=self._env(db), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            _, err = proc.communicate(timeout=timeout)
        finally:
            stop(proc)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"get_email exited {proc.returncode}: {err[-1500:]!r}")
        counts = {}
        for line in self._manage(db, "shell", "-c", COUNT_CODE).splitlines():
            if line.startswith("COUNTS "):
                counts = json.loads(line.removeprefix("COUNTS "))
        return {
            "load": load,
            "mails": len(raws),
            "wall_s": round(wall, 2),
            "rate": len(raws) / wall,
            **counts,
        }
