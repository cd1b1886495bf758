"""What the web app is built from: handed in by `daemon.wiring` (the web package never
reads configuration files or builds parts itself)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from daemon.config import WebConfig
from daemon.desk import Desk
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
