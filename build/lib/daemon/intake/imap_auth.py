"""How the IMAP poller logs in: a password (inline or from a file) or an OAuth2 token.

A token from `oauth2_token_command` is cached in `<data_dir>/imap-tokens/<mailbox>.json`
(written to a temp file, fsynced and renamed, mode 0600) and reused until shortly
before it expires, so a restart does not ask the identity provider again. A refused
login drops the cached token so the next attempt fetches a fresh one.

Nothing here logs a password or a token.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from imapclient import IMAPClient

from daemon.config import ImapMailbox
from tickets.models import utcnow

Clock = Callable[[], datetime]

# A token this close to its expiry is refreshed first: a login must not race the expiry.
EXPIRY_MARGIN = timedelta(seconds=60)
COMMAND_TIMEOUT = 60.0


class TokenError(Exception):
    """No usable OAuth2 token could be obtained (the command failed, the file is empty)."""


class Credentials(Protocol):
    @property
    def refreshed_at(self) -> datetime | None:
        """When the secret in use was last obtained (tokens); None for passwords."""

    def login(self, client: IMAPClient) -> None: ...

    def invalidate(self) -> None:
        """The server refused the secret: do not reuse it."""


@dataclass
class PasswordLogin:
    user: str
    password: str | None = None
    password_file: Path | None = None

    @property
    def refreshed_at(self) -> datetime | None:
        return None

    def login(self, client: IMAPClient) -> None:
        client.login(self.user, self._password())

    def invalidate(self) -> None:
        pass  # the file is read at every login, so a rotated password is picked up anyway

    def _password(self) -> str:
        if self.password is not None:
            return self.password
        assert self.password_file is not None
        try:
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise TokenError(f"password_file unreadable: {exc.strerror}") from None


@dataclass
class _Token:
    value: str
    expires_at: datetime
    refreshed_at: datetime


@dataclass
class OAuth2Login:
    """XOAUTH2 with a token from a command (cached) or from a file kept fresh by others."""

    user: str
    token_command: str | None = None
    token_file: Path | None = None
    cache_path: Path | None = None
    default_lifetime: int = 3000
    clock: Clock = utcnow
    _token: _Token | None = field(default=None, init=False, repr=False)

    @property
    def refreshed_at(self) -> datetime | None:
        return self._token.refreshed_at if self._token else None

    def login(self, client: IMAPClient) -> None:
        client.oauth2_login(self.user, self.token())

    def invalidate(self) -> None:
        self._token = None
        if self.cache_path is not None:
            self.cache_path.unlink(missing_ok=True)

    def token(self) -> str:
        """A token valid for at least EXPIRY_MARGIN; runs the command only when needed."""
        if self.token_file is not None:
            self._token = self._read_token_file(self.token_file)
            return self._token.value
        now = self.clock()
        token = self._token or self._load_cache()
        if token is None or token.expires_at - EXPIRY_MARGIN <= now:
            token = self._run_command(now)
            self._store_cache(token)
        self._token = token
        return token.value

    def _read_token_file(self, path: Path) -> _Token:
        try:
            value = path.read_text(encoding="utf-8").strip()
            changed = datetime.fromtimestamp(path.stat().st_mtime, self.clock().tzinfo)
        except OSError as exc:
            raise TokenError(f"oauth2_token_file unreadable: {exc.strerror}") from None
        if not value:
            raise TokenError("oauth2_token_file is empty")
        return _Token(value, changed + timedelta(days=3650), changed)

    def _run_command(self, now: datetime) -> _Token:
        assert self.token_command is not None
        try:
            done = subprocess.run(
                shlex.split(self.token_command),
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TokenError(f"oauth2_token_command could not run: {type(exc).__name__}") from None
        if done.returncode != 0:
            # stderr is not quoted: a failing helper may well print secrets there.
            raise TokenError(f"oauth2_token_command exited with status {done.returncode}")
        return self._parse_output(done.stdout.decode("utf-8", "replace").strip(), now)

    def _parse_output(self, output: str, now: datetime) -> _Token:
        """Either the bare token, or JSON with access_token and expires_in (as IdPs answer)."""
        lifetime: float = self.default_lifetime
        value = output
        if output.startswith("{"):
            try:
                data = json.loads(output)
                value = str(data["access_token"])
                lifetime = float(data.get("expires_in") or lifetime)
            except (ValueError, KeyError, TypeError):
                raise TokenError("oauth2_token_command printed JSON without access_token") from None
        if not value or any(c.isspace() for c in value):
            raise TokenError("oauth2_token_command printed no single token")
        return _Token(value, now + timedelta(seconds=lifetime), now)

    def _load_cache(self) -> _Token | None:
        if self.cache_path is None or not self.cache_path.exists():
            return None
        try:
            data = json.loads(self.cache_path.read_text(encoding="utf-8"))
            return _Token(
                data["access_token"],
                datetime.fromisoformat(data["expires_at"]),
                datetime.fromisoformat(data["refreshed_at"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged cache only costs one refresh

    def _store_cache(self, token: _Token) -> None:
        if self.cache_path is None:
            return
        data = {
            "access_token": token.value,
            "expires_at": token.expires_at.isoformat(),
            "refreshed_at": token.refreshed_at.isoformat(),
        }
        write_atomically(self.cache_path, json.dumps(data).encode())


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file + fsync + rename (+ fsync of the directory): old or new, never half."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def credentials_for(mailbox: ImapMailbox, data_dir: Path) -> Credentials:
    """The login method the mailbox's config asks for (config validation allows one)."""
    if mailbox.oauth2_token_command or mailbox.oauth2_token_file:
        return OAuth2Login(
            mailbox.user,
            token_command=mailbox.oauth2_token_command,
            token_file=mailbox.oauth2_token_file,
            cache_path=data_dir / "imap-tokens" / f"{mailbox.name}.json",
            default_lifetime=mailbox.oauth2_token_lifetime,
        )
    return PasswordLogin(mailbox.user, mailbox.password, mailbox.password_file)
