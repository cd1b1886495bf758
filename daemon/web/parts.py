"""What the web app is built from: handed in by `daemon.wiring` (the web package never
reads configuration files or builds parts itself)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from daemon.config import WebConfig
from daemon.desk import Desk
from notifier.compose import Mailbox
from notifier.render import Renderer
from tickets.actions import Catalogue


@dataclass(frozen=True)
class WebParts:
    sessions: sessionmaker[Session]
    desk: Desk
    catalogue: Catalogue
    config: WebConfig
    agents: Mapping[str, str]  # configured agent address -> display name
    language: str  # default language of the console ("es" or "en")
    base_url: str  # where agents open the console (sign-in links point here)
    attachments_dir: Path  # the blob store: attachments agents send and download
    expire_bouncing: Callable[[datetime], int]  # lifted before an answer is planned
    # The console's own needs: its sign-in mail, times as agents read them.
    renderer: Renderer
    sender: Mailbox  # who the sign-in mail is from
    timezone: str
