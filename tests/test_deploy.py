"""Issue 18, deploying as ops do: deploy/install.sh in a scratch root gives units that
`systemd-analyze verify` accepts and a config with absolute paths; the supervisord
include (program sections only) loaded by a host-style supervisord leaves its
`supervisorctl` working; the split programs all start, each on its own HTTP port."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.dovecot import Dovecot
from tests.fixtures.service import http_get, send_mail, wait_for, write_config
from tests.helpers import free_port, missing_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SUPERVISORD, SUPERVISORCTL = BIN / "supervisord", BIN / "supervisorctl"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
UNITS = ["buzon", "buzon-smtp", "buzon-imap", "buzon-scheduler"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BUZON_")}


# --- install.sh --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/install.sh --prefix: the whole installation under a scratch root."""
    prefix = tmp_path_factory.mktemp("root")
    done = subprocess.run(
        ["bash", ROOT / "deploy" / "install.sh", "--prefix", prefix],
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return prefix


@pytest.mark.slow
@pytest.mark.timeout(600)  # the fixture builds a virtualenv and installs buzón into it
def test_install_sh_lays_out_what_the_units_expect(installed: Path) -> None:
    buzon = installed / "opt/buzon/.venv/bin/buzon"
    assert os.access(buzon, os.X_OK)
    data = installed / "var/lib/buzon"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    config = installed / "etc/buzon/buzon.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert re.search(r'^data_dir = "/var/lib/buzon"$', config.read_text(), re.M)
    check = subprocess.run(
        [buzon, "config", "check", config], capture_output=True, text=True, env=_clean_env()
    )
    assert check.returncode == 0, check.stderr
    for unit in UNITS:
        text = (installed / f"etc/systemd/system/{unit}.service").read_text()
        assert "ExecStart=/opt/buzon/.venv/bin/buzon " in text
        assert "--config /etc/buzon/buzon.toml" in text
        assert "ReadWritePaths=/var/lib/buzon" in text


@pytest.mark.slow
def test_the_installed_units_pass_systemd_analyze_verify(installed: Path) -> None:
    if SYSTEMD_ANALYZE is None:
        missing_server("systemd-analyze", "not on PATH (Debian package systemd)")
    # The scratch root needs the system's own units (sysinit.target…) to resolve
    # the default dependencies; the buzón units and /opt/buzon are the installed ones.
    system = installed / "usr/lib/systemd/system"
    if not system.exists():
        shutil.copytree("/lib/systemd/system", system, symlinks=True)
    for unit in UNITS:
        done = subprocess.run(
            [
                SYSTEMD_ANALYZE,
                "verify",
                "--man=no",
                f"--root={installed}",
                installed / f"etc/systemd/system/{unit}.service",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and not done.stderr.strip(), f"{unit}: {done.stderr}"


@pytest.mark.slow
def test_install_sh_again_keeps_the_config_and_adds_the_supervisor_include(
    installed: Path,
) -> None:
    config = installed / "etc/buzon/buzon.toml"
    config.write_text(config.read_text() + "\n# edited by ops\n")
    done = subprocess.run(
        ["bash", ROOT / "deploy/install.sh", "--prefix", installed, "--init", "supervisor"],
        capture_output=True,
        text=True,
        timeout=600,
        env=_clean_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "# edited by ops" in config.read_text()
    include = installed / "etc/supervisor/conf.d/buzon.conf"
    assert include.read_text() == (ROOT / "deploy/supervisor/buzon.conf").read_text()


def test_split_units_each_have_their_own_http_port() -> None:
    ports = []
    for unit in UNITS[1:]:
        text = (ROOT / f"deploy/systemd/{unit}.service").read_text()
        found = re.search(r"^ExecStart=.* --http 127\.0\.0\.1:(\d+)$", text, re.M)
        assert found, unit
        ports.append(found.group(1))
    split = (ROOT / "deploy/supervisor/buzon-split.conf").read_text()
    supervisor_ports = re.findall(r"^command=.* --http 127\.0\.0\.1:(\d+)$", split, re.M)
    assert len(set(ports)) == 3 and "8025" not in ports
    assert len(set(supervisor_ports)) == 3 and "8025" not in supervisor_ports


# --- supervisord: the include file in a host's supervisord --------------------------------------


def test_the_include_files_carry_program_sections_only() -> None:
    for name in ("buzon.conf", "buzon-split.conf"):
        conf = configparser.RawConfigParser(inline_comment_prefixes=(";",))
        conf.read(ROOT / "deploy/supervisor" / name)
        assert all(s.startswith(("program:", "group:")) for s in conf.sections()), name


class HostSupervisor:
    """A host-style supervisord: its own main sections and `[include] conf.d/*.conf`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf_d = root / "conf.d"
        self.conf_d.mkdir()
        sock = root / "supervisor.sock"
        self.conf = root / "supervisord.conf"
        self.conf.write_text(
            "[unix_http_server]\n"
            f"file={sock}\n"
            "[supervisord]\n"
            f"logfile={root / 'supervisord.log'}\npidfile={root / 'supervisord.pid'}\n"
            f"childlogdir={root}\nnodaemon=true\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            "[supervisorctl]\n"
            f"serverurl=unix://{sock}\n"
            "[program:hostapp]\ncommand=sleep 600\n"
            "[include]\n"
            f"files={self.conf_d}/*.conf\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SUPERVISORD, "-c", self.conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SUPERVISORCTL, "-c", self.conf, *args], capture_output=True, text=True, timeout=60
        )

    def states(self) -> dict[str, str]:
        lines = self.ctl("status").stdout.splitlines()
        return {line.split()[0]: line.split()[1] for line in lines if len(line.split()) > 1}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def _adapt(source: Path, target: Path, root: Path, config: Path, ports: list[int]) -> None:
    """The shipped include with the paths of this test (binary, config, logs, no user)
    and free HTTP ports in place of the shipped ones."""
    conf = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    conf.read(source)
    free = iter(ports)
    for section in conf.sections():
        if not section.startswith("program:"):
            continue
        program = conf[section]
        command = program["command"].replace("/opt/buzon/.venv/bin/buzon", str(BIN / "buzon"))
        command = command.replace("/etc/buzon/buzon.toml", str(config))
        if "--http" in command:
            command = re.sub(r"--http 127\.0\.0\.1:\d+", f"--http 127.0.0.1:{next(free)}", command)
        program["command"] = command
        program["directory"] = str(root)
        program.pop("user", None)  # the test runs as whoever runs it
        program["stdout_logfile"] = str(root / f"{section.split(':')[1]}.log")
    with target.open("w") as out:
        conf.write(out)


@pytest.fixture
def host_supervisor(tmp_path: Path) -> Iterator[HostSupervisor]:
    if not SUPERVISORD.exists():
        missing_server("supervisord", f"{SUPERVISORD} absent (pip install -e '.[test]')")
    host = HostSupervisor(tmp_path)
    try:
        yield host
    finally:
        host.stop()


@pytest.mark.slow
def test_the_include_joins_a_host_supervisord_and_supervisorctl_still_works(
    tmp_path: Path, host_supervisor: HostSupervisor
) -> None:
    smtp_port, http_port = free_port(), free_port()
    config = write_config(
        tmp_path / "buzon.toml",
        tmp_path / "data",
        f"sqlite:///{tmp_path / 'b.db'}",
        smtp_port,
        extra=f'[http]\nlisten = "127.0.0.1:{http_port}"\n',
    )
    _adapt(
        ROOT / "deploy/supervisor/buzon.conf",
        host_supervisor.conf_d / "buzon.conf",
        tmp_path,
        config,
        [],
    )
    host_supervisor.start()
    wait_for(lambda: host_supervisor.states().get("buzon") == "RUNNING", 30, "buzon RUNNING")
    assert host_supervisor.states().get("hostapp") == "RUNNING"  # the host's own program
    assert host_supervisor.ctl("status").returncode == 0
    wait_for(lambda: http_get(http_port, "/readyz")[0] == 200, 30, "buzon ready")
    send_mail(smtp_port, "Mail through the included program")
    assert "stopped" in host_supervisor.ctl("stop", "buzon").stdout
    assert host_supervisor.states()["buzon"] == "STOPPED"


@pytest.mark.slow
@pytest.mark.dovecot
def test_the_split_programs_all_start_each_on_its_own_port(
    tmp_path: Path, host_supervisor: HostSupervisor, dovecot: Dovecot
) -> None:
    smtp_port = free_port()
    imap = (
        f'[[imap.mailboxes]]\nname = "soporte"\nhost = "{dovecot.host}"\nport = {dovecot.port}\n'
        f'security = "none"\nuser = "{dovecot.user}"\npassword = "{dovecot.password}"\n'
    )
    config = write_config(
        tmp_path / "buzon.toml", tmp_path / "data", f"sqlite:///{tmp_path / 'b.db'}", smtp_port
    )
    config.write_text(config.read_text() + imap)
    ports = [free_port(), free_port(), free_port()]
    _adapt(
        ROOT / "deploy/supervisor/buzon-split.conf",
        host_supervisor.conf_d / "buzon.conf",
        tmp_path,
        config,
        ports,
    )
    host_supervisor.start()
    names = ["buzon:buzon-smtp", "buzon:buzon-imap", "buzon:buzon-scheduler"]
    wait_for(
        lambda: all(host_supervisor.states().get(n) == "RUNNING" for n in names),
        40,
        f"split programs RUNNING ({host_supervisor.ctl('status').stdout})",
    )
    for port in ports:
        wait_for(lambda p=port: http_get(p, "/healthz")[0] == 200, 30, f"/healthz on {port}")
    # All three stay up (none exits 78 on a busy port a moment later).
    assert all(host_supervisor.states()[n] == "RUNNING" for n in names)
