"""`buzon ingest` as an MTA's pipe: until the mail is committed, every failure is
"try again later" (75, EX_TEMPFAIL), never a bounce.

Postfix's pipe(8) bounces the customer's mail on any exit status other than 0 and the
sysexits it treats as temporary, and quotes the command's output in the bounce. So a
broken or unreadable config (78, 1), a usage error (2), a crash or a failed import
all become 75 here, and the one line on stderr names the kind of trouble without paths
or exception text; the detail goes to syslog (facility mail, next to Postfix's own
lines) for ops.
"""

from __future__ import annotations

import contextlib
import io
import sys
import syslog
import traceback

EX_TEMPFAIL = 75
_USAGE, _CONFIG, _STORE = 2, 78, 75

# Options of the root group that take a value (`buzon --config F ingest`).
_ROOT_VALUE_OPTIONS = ("--config",)
_BACKFILL = ("--maildir", "--mbox")


def is_pipe(argv: list[str]) -> bool:
    """`buzon [--config F] ingest [FILE|-] [--config F]`, not a backfill or --help."""
    args = iter(argv)
    for arg in args:
        if arg in _ROOT_VALUE_OPTIONS:
            next(args, None)
        elif arg.startswith("-"):
            continue
        else:
            rest = list(args)
            return (
                arg == "ingest"
                and not any(a.split("=", 1)[0] in _BACKFILL for a in rest)
                and not any(a in ("--help", "-h") for a in rest)
            )
    return False


def run_pipe(argv: list[str]) -> int:
    """Runs the command with its output held back; 0 or 75, whatever happened."""
    out, err = io.StringIO(), io.StringIO()
    code: int
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            from daemon.cli.root import main

            main(args=argv, prog_name="buzon")
            code = 0
        except SystemExit as exc:
            code = _code(exc.code)
        except BaseException:  # a crash before the commit must not bounce the mail
            traceback.print_exc()
            code = 1
    if code == 0:
        sys.stdout.write(out.getvalue())
        sys.stderr.write(err.getvalue())
        return 0
    _to_syslog(err.getvalue() or out.getvalue())
    sys.stderr.write(f"buzon: {_kind(code)}; mail not accepted, the MTA will retry\n")
    return EX_TEMPFAIL


def _code(value: object) -> int:
    if value is None:
        return 0
    return value if isinstance(value, int) else 1


def _kind(code: int) -> str:
    if code == _USAGE:
        return "usage error (check the pipe's command line in master.cf)"
    if code == _CONFIG:
        return "configuration error (run `buzon config check`)"
    if code == _STORE:
        return "could not store the message (run `buzon doctor`)"
    return f"internal error (status {code})"


def _to_syslog(detail: str) -> None:
    lines = [line for line in detail.strip().splitlines() if line.strip()]
    if not lines:
        return
    syslog.openlog("buzon", syslog.LOG_PID, syslog.LOG_MAIL)
    # The last lines carry the reason (a traceback's exception, click's error line).
    syslog.syslog(syslog.LOG_WARNING, "ingest deferred: " + " | ".join(lines[-3:])[:900])
