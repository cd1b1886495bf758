"""The `buzon` console script. The command tree lives in `daemon.cli.root` and is
imported inside `entry`, so that even a failed import is caught when buzón runs as an
MTA's pipe (see `daemon.cli.pipe`)."""

from __future__ import annotations

import os
import sys
from typing import Any


def entry() -> None:
    """The `buzon` console script and `python -m daemon`."""
    # Tickets, attachments and the key are private to the service user, whatever the
    # unit or the shell says (the units set UMask=0077 too).
    os.umask(0o077)
    from daemon.cli.pipe import is_pipe, run_pipe

    argv = sys.argv[1:]
    if is_pipe(argv):
        sys.exit(run_pipe(argv))
    from daemon.cli.root import main

    main.owns_process = True
    main(prog_name="buzon")


def __getattr__(name: str) -> Any:
    # `from daemon.cli import main` keeps working without importing everything eagerly.
    if name == "main":
        from daemon.cli.root import main

        return main
    raise AttributeError(name)
