"""Wiring: builds the engine, the session factory and the domain's policy from Settings.

Everything that needs configuration receives it from here; nothing reads globals.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from daemon.config import Settings
from tickets.db import make_engine, make_session_factory, upgrade
from tickets.ingest import AfterApply
from tickets.policy import MailPolicy


@dataclass
class App:
    settings: Settings

    @property
    def after_apply(self) -> AfterApply | None:
        """What runs inside the ingest transaction once a mail changed a ticket."""
        return None

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.db_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def instance(self) -> str:
        return self.settings.instance_name or f"{socket.gethostname()}:{os.getpid()}"

    @cached_property
    def policy(self) -> MailPolicy:
        s = self.settings
        return MailPolicy(
            own_addresses=s.own_addresses,
            secret=s.secret(),
            attachments_dir=s.attachments_dir,
            support_domains=frozenset(s.support_domains),
            agents=frozenset(s.agents),
            subject_tag=s.subject_tag,
            tag_requires_participant=s.tag_requires_participant,
            honour_reply_to=s.honour_reply_to,
            default_language=s.default_language,
            max_attempts=s.ingest.max_attempts,
            instance=self.instance,
        )

    def prepare(self) -> None:
        """Create the data directory and bring the schema up to date."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(self.engine)
