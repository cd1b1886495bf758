"""What the web app is built from: handed in by `daemon.wiring` (the web package never
reads configuration files or builds parts itself)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
    # The console's own needs: its sign-in mail, reply attachments, times as agents read them.
    renderer: Renderer
    sender: Mailbox  # who the sign-in mail is from
    attachments_dir: Path
    timezone: str
