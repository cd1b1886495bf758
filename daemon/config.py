"""One validated configuration: a TOML file overlaid by BUZON_* environment variables.

Every setting has its home here; the rest of the code receives the sub-model it needs.
A bad value stops start-up with one line naming the key (`ConfigError`).
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, time
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from tickets.actions import DEFAULT_CATEGORIES
from tickets.addresses import is_own
from tickets.priority import DEFAULT_MATRIX, validate_matrix
from tickets.routing import URGENT_WORDS
from tickets.sla import DEFAULT_TARGETS

_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$")


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for ops."""


def _check_email(value: str) -> str:
    value = value.strip().lower()
    if not _EMAIL.match(value):
        raise ValueError(f"not an email address: {value!r}")
    return value


def check_hostport(value: str) -> str:
    match = _HOSTPORT.match(value)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


def split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def usable_cores() -> int:
    """The cores this process may run on (a cpuset or CPUAffinity= narrows them), not
    merely those of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


class IngestConfig(_Section):
    max_attempts: int = Field(3, ge=1, le=100)  # then the message is quarantined
    batch_size: int = Field(50, ge=1, le=10_000)
    # Worker processes that turn stored mail into tickets, beside the main process (which
    # keeps the listeners, pollers, scheduler and HTTP). 0: one per core; 1: no extra
    # process, the worker runs inside the main one.
    processes: int = Field(0, ge=0, le=64)
    poll_interval: float = Field(2.0, gt=0)  # seconds between scans for pending rows
    stale_claim_seconds: int = Field(300, ge=10)  # a claim older than this was a crash
    max_message_size: int = Field(50 * 1024 * 1024, ge=1024)
    # Watchers one mail may add; the other copied addresses are recorded, not added.
    max_new_watchers: int = Field(10, ge=0, le=10_000)
    # A transient failure (disk full, database away) retries after this delay, doubling
    # up to retry_max_seconds; it never uses up max_attempts.
    retry_base_seconds: float = Field(10.0, gt=0)
    retry_max_seconds: float = Field(900.0, gt=0)
    # How much of one mail is parsed; beyond, it stays in the raw message only (a defect
    # on the article says so): a mail of 100,000 parts must not hold the workers.
    max_parts: int = Field(1000, ge=1)
    max_depth: int = Field(40, ge=1, le=200)
    max_decoded_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # Mail written longer ago than this opens its ticket without an acknowledgement.
    acknowledge_max_age_hours: float = Field(168.0, gt=0)

    def worker_processes(self) -> int:
        """How many processes do the ingest work (`processes`, 0 meaning one per core)."""
        return self.processes or usable_cores()


DmarcPolicy = Literal["reject", "quarantine", "none"]
_DMARC_SPAM: tuple[DmarcPolicy, ...] = ("reject", "quarantine")


class SpamConfig(_Section):
    """Which verdicts of the MTA's filters make a mail spam (kept, no ticket, no mail)."""

    enabled: bool = True
    threshold: float | None = None  # a SpamAssassin/Rspamd score that is spam for us too
    header: str | None = None  # one more filter's header, e.g. "X-Barracuda-Spam-Status"
    pattern: str = r"^\s*yes\b"  # what in that header means spam (regular expression)
    dmarc_policies: list[DmarcPolicy] = Field(default_factory=lambda: list(_DMARC_SPAM))

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class DatabaseConfig(_Section):
    """Bounds on every wait for the database (seconds), so that a partition gives errors
    and 451s rather than hung threads; see tickets.db.DbTimeouts for each one's role."""

    connect_timeout: float = Field(10.0, ge=0, le=600)
    keepalives_idle: int = Field(30, ge=1, le=7200)
    keepalives_interval: int = Field(10, ge=1, le=600)
    keepalives_count: int = Field(3, ge=1, le=100)
    tcp_user_timeout: float = Field(30.0, ge=0, le=3600)
    statement_timeout: float = Field(120.0, ge=0, le=86400)
    lock_timeout: float = Field(60.0, ge=0, le=86400)
    idle_in_transaction_timeout: float = Field(120.0, ge=0, le=86400)
    pool_timeout: float = Field(10.0, gt=0, le=600)
    sqlite_busy_timeout: float = Field(30.0, gt=0, le=600)
    # The watchdog and /readyz ask the store `SELECT 1` at most this long.
    health_check_timeout: float = Field(5.0, gt=0, le=300)
    # The ingest worker is "stuck" after this long without progress while work waits.
    worker_stuck_after: float = Field(120.0, gt=0, le=86400)


class SmtpConfig(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:2525"
    lmtp: bool = False
    hostname: str | None = None  # announced in the greeting; the machine's name if unset
    max_message_size: int = Field(25 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(50, ge=1)
    max_messages_per_connection: int = Field(1000, ge=1)
    max_errors_per_connection: int = Field(10, ge=1)
    # Longest silence of a client (no byte read), in commands and inside DATA alike.
    idle_timeout: float = Field(300.0, gt=0)
    # Total time one DATA may take from 354 to the final dot: 30 min is 14 KB/s for 25 MB.
    data_timeout: float = Field(1800.0, gt=0)
    # Sessions open at once, in all and per client IP; the excess hears 421 4.7.0.
    max_sessions: int = Field(200, ge=1)
    max_sessions_per_ip: int = Field(20, ge=1)
    # DATA above large_message_size bytes needs one of max_large_in_flight slots; without
    # one the session stops being read until a slot frees (memory stays bounded).
    large_message_size: int = Field(4 * 1024 * 1024, ge=64 * 1024)
    max_large_in_flight: int = Field(2, ge=1)
    shutdown_grace: float = Field(20.0, ge=0)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_tls: bool = False
    auth_users: dict[str, str] = Field(default_factory=dict)  # user -> password
    auth_required: bool = False
    # How long one accept may wait for a locked or slow store before answering 451
    # (SQLite busy timeout, PostgreSQL lock/statement timeout of the intake's connections).
    store_timeout: float = Field(30.0, gt=0, le=600)

    _listen = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))

    @model_validator(mode="after")
    def _tls_pair(self) -> SmtpConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        # AUTH is only offered inside TLS, so users without a certificate could never log in.
        if (self.auth_users or self.require_tls) and self.tls_cert is None:
            raise ValueError("auth_users and require_tls need tls_cert and tls_key")
        if self.auth_required and not self.auth_users:
            raise ValueError("auth_required needs auth_users")
        return self


class ImapMailbox(_Section):
    name: str
    host: str
    port: int = Field(993, gt=0, lt=65536)
    security: Literal["tls", "starttls", "none"] = "tls"
    user: str
    password: str | None = None
    password_file: Path | None = None
    oauth2_token_command: str | None = None
    oauth2_token_file: Path | None = None
    folder: str = "INBOX"
    after_ingest: Literal["seen", "move", "delete"] = "seen"
    processed_folder: str = "Processed"
    error_folder: str = "Errors"
    poll_interval: float = Field(60.0, gt=0)
    idle: bool = True
    idle_renew_seconds: float = Field(25 * 60, gt=0, le=29 * 60)
    batch_size: int = Field(50, ge=1, le=1000)
    max_message_size: int = Field(25 * 1024 * 1024, ge=1024)
    oversize_policy: Literal["skip", "error_folder"] = "error_folder"
    ca_file: Path | None = None
    # Bodies fetched at once stay under this many bytes: the poller's memory bound.
    fetch_batch_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024)
    timeout: float = Field(60.0, gt=0)  # socket connect/read timeout, seconds
    # How long a token from oauth2_token_command is reused when it states no expires_in.
    oauth2_token_lifetime: int = Field(3000, ge=60)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", value):
            raise ValueError("use letters, digits, '.', '_' or '-' (it names files and leases)")
        return value

    @model_validator(mode="after")
    def _folders(self) -> ImapMailbox:
        if self.after_ingest == "move" and not self.processed_folder:
            raise ValueError("after_ingest = 'move' needs processed_folder")
        if self.processed_folder == self.folder or self.error_folder == self.folder:
            raise ValueError("processed_folder and error_folder must differ from folder")
        return self

    @model_validator(mode="after")
    def _one_secret(self) -> ImapMailbox:
        secrets_given = [
            self.password,
            self.password_file,
            self.oauth2_token_command,
            self.oauth2_token_file,
        ]
        if sum(s is not None for s in secrets_given) != 1:
            raise ValueError(
                "set exactly one of password, password_file, oauth2_token_command, "
                "oauth2_token_file"
            )
        return self


class ImapConfig(_Section):
    lease_seconds: int = Field(60, ge=2)  # a dead poller's mailbox is free after this
    reconnect_min_seconds: float = Field(1.0, gt=0)  # backoff after an outage starts here
    reconnect_max_seconds: float = Field(300.0, gt=0)  # ... and doubles up to this
    mailboxes: list[ImapMailbox] = Field(default_factory=list)

    @field_validator("mailboxes")
    @classmethod
    def _unique_names(cls, values: list[ImapMailbox]) -> list[ImapMailbox]:
        names = [m.name for m in values]
        if len(set(names)) != len(names):
            raise ValueError("mailbox names must be unique")
        return values


class OutboundConfig(_Section):
    relay: str | None = None  # HOST:PORT; unset → write to the local maildir
    security: Literal["starttls", "tls", "none"] = "starttls"
    user: str | None = None
    password: str | None = None
    timeout: float = Field(30.0, gt=0)
    maildir: Path | None = None  # default: <data_dir>/outbox-maildir
    from_name: str = "Soporte"
    max_attempts: int = Field(10, ge=1)
    retry_base_seconds: float = Field(60.0, gt=0)
    budget_per_recipient: int = Field(20, ge=1)  # automatic mails per recipient per window
    budget_per_ticket: int = Field(30, ge=1)
    budget_window_seconds: int = Field(3600, ge=60)
    # An address that never wrote to us gets automatic mail about at most this many
    # tickets per stranger_window_seconds (backscatter of forged CCs).
    stranger_tickets_per_window: int = Field(3, ge=0)
    stranger_window_seconds: int = Field(86400, ge=60)
    retry_max_seconds: float = Field(6 * 3600, gt=0)  # the backoff doubles up to this
    ca_file: Path | None = None  # trust for a relay with a private certificate
    templates_dir: Path | None = None  # <dir>/<es|en>/<name> overrides the built-in templates
    batch_size: int = Field(50, ge=1, le=1000)  # mails claimed per delivery pass
    # An address marked bouncing (a 5xx or a bounce notice) is mailed again after this
    # many days; a mail from it or a delivery to it lifts the mark at once.
    bouncing_days: float = Field(30.0, gt=0)
    # A claimed mail is another job's after this long: well above timeout, so that a
    # slow send is never taken over (and doubled) by a second job.
    claim_seconds: int = Field(600, ge=30)

    @field_validator("relay")
    @classmethod
    def _relay(cls, value: str | None) -> str | None:
        return None if value in (None, "") else check_hostport(value)

    @model_validator(mode="after")
    def _auth_pair(self) -> OutboundConfig:
        if (self.user is None) != (self.password is None):
            raise ValueError("user and password must be set together")
        if self.claim_seconds <= self.timeout * 4:
            raise ValueError("claim_seconds must exceed four times timeout")
        return self


class TeamConfig(_Section):
    """A team agents may name, and the addresses that hear of its tickets."""

    name: str
    addresses: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        name = " ".join(value.split())
        if not name:
            raise ValueError("a team needs a name")
        return name

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [_check_email(v) for v in values]


class AgentConfig(_Section):
    """An agent: the address they write from, the name customers see, their teams."""

    address: str
    name: str = ""
    teams: list[str] = Field(default_factory=list)

    _address = field_validator("address")(classmethod(lambda cls, v: _check_email(v)))


def _agent_entry(value: Any) -> Any:
    """`"ana@x"`, `"Ana Ruiz <ana@x>"` or a table: the old list-of-addresses form still reads."""
    if isinstance(value, str):
        name, address = parseaddr(value)
        return {"address": address or value, "name": name}
    return value


class TicketsConfig(_Section):
    """The names agents choose from: categories (= escalation types), teams, priority."""

    # Seed 001's escalation types; also the ticket categories.
    categories: list[str] = Field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    # Names (the old form) or tables {name, addresses}; empty: any team name is accepted.
    teams: list[TeamConfig] = Field(default_factory=list)
    # team → staff addresses (the old form; merged with teams[].addresses).
    team_addresses: dict[str, list[str]] = Field(default_factory=dict)
    # Who hears of a new ticket that no team has yet; empty: every configured agent.
    triage_addresses: list[str] = Field(default_factory=list)
    # priority_matrix[impact][urgency] = P1…P4 (seed 003); default: the usual ITIL grid.
    priority_matrix: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {i: dict(row) for i, row in DEFAULT_MATRIX.items()}
    )

    @field_validator("categories")
    @classmethod
    def _categories(cls, values: list[str]) -> list[str]:
        names = [v.strip().lower() for v in values]
        if not names or any(not re.match(r"^[a-z0-9_]{1,64}$", n) for n in names):
            raise ValueError("categories are names of letters, digits and '_' (at least one)")
        return names

    @field_validator("team_addresses")
    @classmethod
    def _team_addresses(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {team: [_check_email(a) for a in addresses] for team, addresses in value.items()}

    @field_validator("teams", mode="before")
    @classmethod
    def _team_names(cls, values: Any) -> Any:
        if not isinstance(values, list):
            return values
        return [{"name": v} if isinstance(v, str) else v for v in values]

    @field_validator("triage_addresses")
    @classmethod
    def _triage(cls, values: list[str]) -> list[str]:
        return [_check_email(v) for v in values]

    @property
    def team_names(self) -> list[str]:
        return [t.name for t in self.teams]

    def addresses_by_team(self) -> dict[str, list[str]]:
        """Every team's addresses, from both forms, each address once."""
        merged: dict[str, list[str]] = {}
        for team in self.teams:
            merged.setdefault(team.name, []).extend(team.addresses)
        for name, addresses in self.team_addresses.items():
            merged.setdefault(name, []).extend(addresses)
        return {name: list(dict.fromkeys(a)) for name, a in merged.items()}

    @field_validator("priority_matrix")
    @classmethod
    def _matrix(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        value = {i.lower(): {u.lower(): p.upper() for u, p in r.items()} for i, r in value.items()}
        validate_matrix(value)
        return value


class RoutingRuleConfig(_Section):
    """One routing rule: conditions (all that are given must hold) and actions."""

    name: str
    to: list[str] = Field(default_factory=list)  # recipient addresses (envelope, To, Cc)
    sources: list[str] = Field(default_factory=list)  # smtp, lmtp, imap:<mailbox>, pipe
    senders: list[str] = Field(default_factory=list)  # addresses or "@domain"
    words: list[str] = Field(default_factory=list)  # in subject or new text, any accents
    regex: str | None = None  # in subject or new text (accents removed, lower case)
    team: str | None = None
    category: str | None = None
    priority: Literal["P1", "P2", "P3", "P4"] | None = None
    impact: str | None = None
    urgency: str | None = None
    level: Literal[1, 2] | None = None
    assignee: str | None = None
    language: Literal["es", "en"] | None = None
    tags: list[str] = Field(default_factory=list)
    acknowledge: bool | None = None  # false: no acknowledgement to the customer
    proceed: bool = False  # true: later rules may set what this one leaves unset

    @field_validator("to", "senders")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [v.strip().lower() for v in values]

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class QueueConfig(_Section):
    """A support address that is a queue of its own: mail about its tickets is sent from
    it, under this name and signature."""

    from_name: str | None = None  # default: outbound.from_name
    signature: str | None = None  # replaces the name under the "-- " line


class RoutingConfig(_Section):
    """Ordered rules, first match wins (unless it says proceed); see tickets/routing.py."""

    urgent_rule: bool = True  # seed 001: pain or bleeding → urgent_emergency, P1
    urgent_words: list[str] = Field(default_factory=lambda: list(URGENT_WORDS))
    rules: list[RoutingRuleConfig] = Field(default_factory=list)
    # support address → its own From name and signature (the address must be ours)
    queues: dict[str, QueueConfig] = Field(default_factory=dict)

    @field_validator("queues")
    @classmethod
    def _queue_addresses(cls, value: dict[str, QueueConfig]) -> dict[str, QueueConfig]:
        return {_check_email(address): queue for address, queue in value.items()}


class HttpConfig(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:8025"

    _listen = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))


class WebConfig(_Section):
    """The HTTP API and the agents' console (issue 16): a listener of its own, apart
    from health and metrics, so it can face the team's network while /metrics stays
    local."""

    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    # The address agents open (sign-in links in mail point here); default: http://listen.
    base_url: str | None = None
    # Set when the console is served over HTTPS (a reverse proxy): cookies get Secure.
    secure_cookies: bool = False
    session_hours: float = Field(12.0, gt=0)
    sign_in_link_minutes: float = Field(15.0, gt=0)
    sign_in_attempts_per_minute: int = Field(10, ge=1)

    _listen = field_validator("listen")(classmethod(lambda cls, v: check_hostport(v)))


class WebhookConfig(_Section):
    """One receiver of ticket events, signed with HMAC-SHA256 under its own secret."""

    name: str = Field(min_length=1, max_length=100)
    url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=16)
    # Which events it gets; empty: every event.
    events: list[str] = Field(default_factory=list)


class WebhooksConfig(_Section):
    hooks: list[WebhookConfig] = Field(default_factory=list)
    timeout: float = Field(10.0, gt=0)
    max_attempts: int = Field(10, ge=1)
    retry_base_seconds: float = Field(5.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)
    interval_seconds: float = Field(2.0, gt=0)


class SlaTargetConfig(_Section):
    first_response_hours: float = Field(gt=0)
    resolution_hours: float = Field(gt=0)


class SlaConfig(_Section):
    """Business calendar, targets per priority (business hours) and the escalation ladder."""

    timezone: str = "America/Mexico_City"
    workdays: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])  # 0 = Monday
    day_start: time = time(9)
    day_end: time = time(18)
    holidays_country: str | None = "MX"  # ISO code for the holidays library; None = none
    holidays_subdivision: str | None = None
    extra_holidays: list[date] = Field(default_factory=list)
    targets: dict[str, SlaTargetConfig] = Field(
        default_factory=lambda: {
            p: SlaTargetConfig(
                first_response_hours=t.first_response_hours, resolution_hours=t.resolution_hours
            )
            for p, t in DEFAULT_TARGETS.items()
        }
    )
    category_targets: dict[str, dict[str, SlaTargetConfig]] = Field(default_factory=dict)
    warn_share: float = Field(0.75, gt=0, lt=1)
    tier1_addresses: list[str] = Field(default_factory=list)  # team leads
    tier2_addresses: list[str] = Field(default_factory=list)  # managers
    tier2_after_hours: float = Field(4.0, gt=0)
    level1_breach_to_level2: bool = False
    level1_breach_team: str | None = None
    scan_interval_seconds: float = Field(60.0, gt=0)
    outbox_interval_seconds: float = Field(15.0, gt=0)
    auto_close_after_days: float = Field(7.0, gt=0)
    reminder_after_days: float = Field(3.0, gt=0)
    survey: bool = True

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("holidays_country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        import holidays

        if value and value.upper() not in holidays.list_supported_countries():
            raise ValueError(f"the holidays library does not know country {value!r}")
        return value.upper() if value else None

    @field_validator("workdays")
    @classmethod
    def _days(cls, value: list[int]) -> list[int]:
        if not value or any(d not in range(7) for d in value):
            raise ValueError("workdays are numbers 0 (Monday) to 6 (Sunday)")
        return value

    @field_validator("tier1_addresses", "tier2_addresses")
    @classmethod
    def _emails(cls, values: list[str]) -> list[str]:
        return [_check_email(v) for v in values]

    @model_validator(mode="after")
    def _hours(self) -> SlaConfig:
        if self.day_end <= self.day_start:
            raise ValueError("day_end must be after day_start")
        missing = {"P1", "P2", "P3", "P4"} - set(self.targets)
        if missing:
            raise ValueError(f"targets missing for {', '.join(sorted(missing))}")
        return self


class AgentMailConfig(_Section):
    """Agents working tickets by mail (DESIGN invariant 9)."""

    # Notify agents of new tickets, customer replies, assignments and escalations.
    notify: bool = True
    # Agent mail must also carry Authentication-Results from one of these servers with
    # DKIM or DMARC pass; without it the mail is treated as a customer's.
    require_authentication: bool = False
    trusted_authserv_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _trusted(self) -> AgentMailConfig:
        if self.require_authentication and not self.trusted_authserv_ids:
            raise ValueError("require_authentication needs trusted_authserv_ids")
        return self


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_format: bool = Field(False, alias="json")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BUZON_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    data_dir: Path = Path("buzon-data")
    database_url: str | None = None  # default: SQLite file under data_dir
    support_addresses: list[str] = Field(default_factory=lambda: ["soporte@localhost"])
    support_domains: list[str] = Field(default_factory=list)  # accept any address there
    aliases: list[str] = Field(default_factory=list)  # more of our own addresses
    agents: list[AgentConfig] = Field(default_factory=list)  # addresses, or tables
    # Default: generated once into data_dir/secret.key. Shared by every instance.
    secret_key: str | None = Field(None, min_length=16)
    subject_tag: str = "[#{number}]"
    tag_requires_participant: bool = True
    # A known Message-ID that is not ours threads only a participant's or agent's mail.
    message_id_requires_participant: bool = True
    honour_reply_to: bool = False
    default_language: Literal["es", "en"] = "es"
    instance_name: str | None = None  # distinguishes instances sharing one database
    ingest: IngestConfig = IngestConfig()
    spam: SpamConfig = SpamConfig()
    database: DatabaseConfig = DatabaseConfig()
    smtp: SmtpConfig = SmtpConfig()
    imap: ImapConfig = ImapConfig()
    outbound: OutboundConfig = OutboundConfig()
    tickets: TicketsConfig = TicketsConfig()
    routing: RoutingConfig = RoutingConfig()
    http: HttpConfig = HttpConfig()
    web: WebConfig = WebConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    sla: SlaConfig = SlaConfig()
    agent_mail: AgentMailConfig = AgentMailConfig()
    log: LogConfig = LogConfig()

    @field_validator("support_addresses", "aliases")
    @classmethod
    def _emails(cls, values: list[str]) -> list[str]:
        return [_check_email(v) for v in values]

    @model_validator(mode="after")
    def _routing_categories(self) -> Settings:
        for address in self.routing.queues:
            if address not in self.support_addresses:
                raise ValueError(f"routing.queues: {address} is not one of support_addresses")
        known = set(self.tickets.categories)
        for rule in self.routing.rules:
            if rule.category is not None and rule.category not in known:
                raise ValueError(
                    f"routing rule {rule.name!r}: unknown category {rule.category!r}; "
                    f"one of: {', '.join(self.tickets.categories)}"
                )
        return self

    @field_validator("agents", mode="before")
    @classmethod
    def _agents(cls, values: Any) -> Any:
        return [_agent_entry(v) for v in values] if isinstance(values, list) else values

    @model_validator(mode="after")
    def _agent_teams(self) -> Settings:
        known = {t.lower() for t in self.tickets.team_names}
        for agent in self.agents:
            unknown = [t for t in agent.teams if known and t.lower() not in known]
            if unknown:
                raise ValueError(f"agent {agent.address}: unknown team {unknown[0]!r}")
        return self

    @field_validator("support_domains")
    @classmethod
    def _domains(cls, values: list[str]) -> list[str]:
        return [v.strip().lower().lstrip("@") for v in values]

    @field_validator("support_addresses")
    @classmethod
    def _not_empty(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("at least one support address is needed")
        return values

    @field_validator("subject_tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if value.count("{number}") != 1:
            raise ValueError("must contain {number} exactly once")
        return value

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", value):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which arrives as init keywords.
        return (env_settings, init_settings)

    # Derived values, so that nobody recomputes them differently.

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'buzon.db').resolve()}"

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"

    @property
    def outbox_maildir(self) -> Path:
        return self.outbound.maildir or self.data_dir / "outbox-maildir"

    @property
    def own_addresses(self) -> frozenset[str]:
        return frozenset(self.support_addresses) | frozenset(self.aliases)

    @property
    def agent_addresses(self) -> frozenset[str]:
        return frozenset(a.address for a in self.agents)

    @property
    def agent_names(self) -> dict[str, str]:
        """address → the name customers see (the address's local part when none is set)."""
        return {a.address: a.name or a.address.partition("@")[0] for a in self.agents}

    @property
    def primary_address(self) -> str:
        return self.support_addresses[0]

    def is_own_address(self, email: str) -> bool:
        return is_own(email, self.own_addresses, self.support_domains)


def _format_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
        parts.append(f"{key}: {message}")
    return "; ".join(parts)


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), overlay BUZON_* variables, validate everything."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except OSError as exc:  # unreadable: permissions, a directory, an I/O error
            raise ConfigError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    data.update(overrides)
    where = f"config {path}" if path else "config"
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_format_error(exc)}") from None
    except SettingsError as exc:  # a BUZON_* variable that is not valid JSON for its section
        raise ConfigError(f"{where}: {exc}") from None
