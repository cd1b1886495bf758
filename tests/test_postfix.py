"""Issue 18: buzón next to a real Postfix configured exactly as deploy/README.md says
(tests/fixtures/postfix.py reads the snippets from it).

- LMTP: a customer's mail through Postfix becomes a ticket; buzón's acknowledgement
  goes out through that Postfix (`security = "none"`) to the customer's mailbox; the
  customer's answer to the signed plus Reply-To comes back to the same ticket; buzón
  down for a while, then `postqueue -f`: 0 lost, 0 doubled.
- Pipe: `buzon ingest` run by Postfix as an unprivileged user; a broken, then an
  unreadable config defers the mail (no bounce reaches the sender), and once fixed,
  `postqueue -f` delivers it.
"""

from __future__ import annotations

import email
import json
import os
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.fixtures.postfix import DOMAIN, MAILBOX_DOMAIN, MAILBOX_USER, Postfix
from tests.fixtures.service import wait_for
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = f"soporte@{DOMAIN}"
CUSTOMER = f"{MAILBOX_USER}@{MAILBOX_DOMAIN}"  # has a mailbox on the Postfix

pytestmark = [pytest.mark.slow]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}


def _config(path: Path, data_dir: Path, lmtp_port: int, relay_port: int) -> Path:
    path.write_text(
        f'data_dir = "{data_dir}"\n'
        f'support_addresses = ["{SUPPORT}"]\n'
        'secret_key = "test-secret-0123456789"\n'
        "[ingest]\npoll_interval = 0.2\n"
        f'[smtp]\nlmtp = true\nlisten = "127.0.0.1:{lmtp_port}"\nshutdown_grace = 5\n'
        "[http]\nenabled = false\n"
        f'[outbound]\nrelay = "127.0.0.1:{relay_port}"\nsecurity = "none"\n'
    )
    return path


def _mail(subject: str, body: str, *, to: str = SUPPORT, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Ana <{CUSTOMER}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = email.utils.make_msgid(domain=MAILBOX_DOMAIN)
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def _submit(postfix: Postfix, msg: EmailMessage) -> None:
    """Hands the mail to Postfix's smtpd, as the customer's server would."""
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
        client.send_message(msg)


def _queue_empty(postfix: Postfix) -> bool:
    return not postfix.queue()


class BuzonLmtp:
    """`buzon smtp` with `lmtp = true`, stopped and started at will (the outage)."""

    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.config, self.log, self.port = config, log, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "daemon", "smtp", "--config", str(self.config)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out, env=_env())
        wait_for(self._greets, 30, "buzon smtp (LMTP) to greet")

    def _greets(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            with smtplib.LMTP("127.0.0.1", self.port, timeout=2) as client:
                return client.noop()[0] == 250
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(30) == 0, self.log.read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "daemon", *args, "--config", str(self.config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert done.returncode == 0, done.stderr
        return done

    def tickets(self) -> list[dict[str, object]]:
        return list(json.loads(self.cli("tickets", "list", "--json").stdout))

    def ticket(self, number: int) -> dict[str, object]:
        return dict(json.loads(self.cli("tickets", "show", str(number), "--json").stdout))

    def raw(self) -> list[dict[str, object]]:
        return list(json.loads(self.cli("inbound", "list", "--json", "--limit", "1000").stdout))


@pytest.fixture
def lmtp_setup(
    tmp_path: Path, postfix_factory: Callable[[str, dict[str, str]], Postfix]
) -> Iterator[tuple[Postfix, BuzonLmtp]]:
    lmtp_port = free_port()
    postfix = postfix_factory(
        "lmtp", {"example.com": DOMAIN, "127.0.0.1:2525": f"127.0.0.1:{lmtp_port}"}
    )
    config = _config(tmp_path / "buzon.toml", tmp_path / "data", lmtp_port, postfix.port)
    buzon = BuzonLmtp(config, tmp_path / "buzon.log", lmtp_port)
    buzon.start()
    try:
        yield postfix, buzon
    finally:
        buzon.stop()


def _inbound_articles(ticket: dict[str, object]) -> list[dict[str, object]]:
    articles = ticket["articles"]
    assert isinstance(articles, list)
    return [a for a in articles if a["kind"] == "inbound"]


def test_lmtp_round_trip_through_postfix_with_the_plus_address_reply(
    lmtp_setup: tuple[Postfix, BuzonLmtp],
) -> None:
    postfix, buzon = lmtp_setup
    _submit(postfix, _mail("No carga la agenda", "Hola, no carga desde esta mañana."))
    wait_for(lambda: len(buzon.tickets()) == 1, 30, "the ticket from Postfix")
    wait_for(lambda: _queue_empty(postfix), 30, "Postfix's queue to empty")

    # buzón's acknowledgement relayed by the same Postfix to the customer's mailbox.
    assert "1 sent" in buzon.cli("outbox", "deliver").stdout
    wait_for(lambda: len(postfix.mailbox()) == 1, 30, "the acknowledgement in the mailbox")
    ack = email.message_from_bytes(postfix.mailbox()[0], policy=policy.default)
    plus = ack["Reply-To"].addresses[0].addr_spec
    assert plus.startswith("soporte+") and plus.endswith(f"@{DOMAIN}")

    # The customer answers the signed plus address (no In-Reply-To: only the address).
    _submit(postfix, _mail("otra cosa", "Adjunto más datos.", to=plus))
    wait_for(lambda: len(_inbound_articles(buzon.ticket(1))) == 2, 30, "the reply on ticket #1")
    assert len(buzon.tickets()) == 1


def test_buzon_down_then_postqueue_flush_loses_and_doubles_nothing(
    lmtp_setup: tuple[Postfix, BuzonLmtp],
) -> None:
    postfix, buzon = lmtp_setup
    buzon.stop()
    sent = [_mail(f"Caso {n}", f"Mensaje número {n}.") for n in range(5)]
    for msg in sent:
        _submit(postfix, msg)
    wait_for(
        lambda: (
            len(postfix.delay_reasons()) == 5
            and all("refused" in r for r in postfix.delay_reasons())
        ),
        30,
        "five deferred mails in Postfix's queue",
    )
    time.sleep(1)
    buzon.start()
    postfix.flush()  # what deploy/README says to do after a restart
    wait_for(lambda: _queue_empty(postfix), 60, "the queue to drain after postqueue -f")
    wait_for(lambda: len(buzon.tickets()) == 5, 30, "five tickets")
    raw = buzon.raw()
    assert len(raw) == 5  # 0 doubled
    subjects = sorted(str(t["subject"]) for t in buzon.tickets())
    assert subjects == sorted(str(m["Subject"]) for m in sent)  # 0 lost


# --- the pipe ----------------------------------------------------------------------------------


@pytest.fixture
def pipe_setup(
    tmp_path: Path,
    postfix_factory: Callable[[str, dict[str, str]], Postfix],
    pipe_venv: Path,
) -> Iterator[tuple[Postfix, Callable[..., subprocess.CompletedProcess[str]], Path]]:
    """Postfix's pipe as the README says, the service user being `nobody` here."""
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(prefix="buzon-pipe-"))
    home.chmod(0o755)
    data = home / "data"
    data.mkdir(mode=0o700)
    os.chown(data, nobody.pw_uid, nobody.pw_gid)
    config = home / "buzon.toml"
    _config(config, data, free_port(), 9)  # no relay needed: nothing is delivered here
    config.chmod(0o644)

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "runuser",
                "-u",
                "nobody",
                "--",
                str(pipe_venv / "bin/buzon"),
                *args,
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
            cwd=home,
        )

    assert as_nobody("db", "upgrade").returncode == 0
    postfix = postfix_factory(
        "pipe",
        {
            "example.com": DOMAIN,
            "user=buzon": "user=nobody",
            "/opt/buzon/.venv/bin/buzon": str(pipe_venv / "bin/buzon"),
            "/etc/buzon/buzon.toml": str(config),
        },
    )
    try:
        yield postfix, as_nobody, config
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _tickets(as_nobody: Callable[..., subprocess.CompletedProcess[str]]) -> list[dict[str, object]]:
    done = as_nobody("tickets", "list", "--json")
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.mark.timeout(600)
def test_the_pipe_stores_mail_and_defers_on_a_broken_or_unreadable_config(
    pipe_setup: tuple[Postfix, Callable[..., subprocess.CompletedProcess[str]], Path],
) -> None:
    postfix, as_nobody, config = pipe_setup
    _submit(postfix, _mail("Por el pipe", "Hola."))
    wait_for(lambda: _queue_empty(postfix), 30, "the pipe delivery")
    assert [t["subject"] for t in _tickets(as_nobody)] == ["Por el pipe"]

    good = config.read_text()
    for breakage, expected in (
        (lambda: config.write_text(good + "\nnot toml at all\n"), "configuration error"),
        (lambda: config.chmod(0o600), "configuration error"),  # root's, unreadable by nobody
    ):
        breakage()
        _submit(postfix, _mail("Durante la avería", "Hola otra vez."))
        wait_for(lambda: any(postfix.delay_reasons()), 30, "the mail to be deferred")
        reason = postfix.delay_reasons()[0]
        assert expected in reason and str(config) not in reason, reason
        assert postfix.mailbox() == []  # no bounce reached the customer
        config.write_text(good)
        config.chmod(0o644)
        postfix.flush()
        # Postfix retries a deferred pipe delivery on its own schedule after the flush; on
        # a loaded machine that took over a minute once: a bound, not a timing.
        wait_for(lambda: _queue_empty(postfix), 180, "the deferred mail after the fix")
    subjects = sorted(str(t["subject"]) for t in _tickets(as_nobody))
    assert subjects == ["Durante la avería", "Durante la avería", "Por el pipe"]
    assert "status=bounced" not in postfix.log_text()
