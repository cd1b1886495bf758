"""The key that signs our Message-IDs and reply tokens, generated once per data dir.

Several processes may start together on a fresh data dir (supervisord or systemd
starting the listener and the scheduler): the key is written to a private temporary
file, fsynced, then linked into place, so that exactly one key wins and nobody ever reads
a half-written or empty one. A key file that is too short (a full disk at first start,
someone's `: > secret.key`) stops the process: an empty key would let anyone forge a
reply token and join any ticket.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from daemon.config import ConfigError

MIN_LENGTH = 32  # characters; a generated key has 64 hex characters (256 bits)


def load_or_create(path: Path) -> bytes:
    """The key in `path`, created atomically when there is none."""
    if not path.exists():
        _create(path)
    return _read(path)


def _read(path: Path) -> bytes:
    try:
        key = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"secret key {path}: cannot read: {exc}") from None
    if len(key) < MIN_LENGTH:
        raise ConfigError(
            f"secret key {path}: {len(key)} characters, at least {MIN_LENGTH} needed "
            "(move the file away to have a new one generated, or set secret_key)"
        )
    return key.encode()


def _create(path: Path) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            # link() fails if the name exists: the first complete key wins, never a part.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    except OSError as exc:
        raise ConfigError(f"secret key {path}: cannot create: {exc.strerror or exc}") from None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
