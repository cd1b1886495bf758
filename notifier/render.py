"""Jinja2 templates per language (es, en); operators may override any file from a folder.

A mail's text is one template, `<lang>/<name>.body.txt`. The subject is no template: every
mail about a ticket carries the ticket's one subject (`notifier.conversation`), so that
every client shows one conversation; what the mail is about is said in the body. The
text is plain (no autoescape): what a template prints is what the customer reads; the
composer, not the template, keeps headers safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
)

LANGUAGES = ("es", "en")
DEFAULT_LANGUAGE = "es"
NAMES = (
    "acknowledgement",
    "status",
    "assigned",
    "reply",
    "survey",
    "reminder",
    "merged",
    # Internal mail to staff (never to customers): SLA warning, breach, escalation tier.
    "sla_warning",
    "sla_breach",
    "sla_tier",
    # Internal mail to agents: what happened on a ticket, and a refused agent mail.
    "staff_notice",
    "agent_refused",
    # Internal mail to an agent: a one-time sign-in link to the console.
    "sign_in_link",
)

# Customer-facing names of the statuses (seed 002), used in subjects and bodies.
STATUS_LABELS: dict[str, dict[str, str]] = {
    "es": {
        "new": "Enviado",
        "in_progress": "En curso",
        "waiting_on_customer": "A la espera de tu respuesta",
        "on_hold": "Suspendido",
        "resolved": "Resuelto",
        "closed": "Cerrado",
    },
    "en": {
        "new": "Submitted",
        "in_progress": "In progress",
        "waiting_on_customer": "Waiting for your reply",
        "on_hold": "On hold",
        "resolved": "Resolved",
        "closed": "Closed",
    },
}


@dataclass(frozen=True)
class Rendered:
    body: str


class Renderer:
    def __init__(self, override_dir: Path | None = None) -> None:
        loaders: list[BaseLoader] = []
        if override_dir is not None:
            loaders.append(FileSystemLoader(str(override_dir)))
        loaders.append(PackageLoader("notifier", "templates"))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            undefined=StrictUndefined,  # a typo in an override fails loudly, not blank
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def render(self, language: str, name: str, context: dict[str, Any]) -> Rendered:
        language = language if language in LANGUAGES else DEFAULT_LANGUAGE
        labels = STATUS_LABELS[language]
        values = {
            **context,
            "language": language,
            "status_label": labels.get(context.get("status", ""), context.get("status", "")),
        }
        body = self._template(language, f"{name}.body.txt").render(values)
        # Optional blocks that rendered empty leave runs of blank lines: fold them.
        body = re.sub(r"\n{3,}", "\n\n", body).rstrip() + "\n"
        return Rendered(body)

    def check(self) -> None:
        """Compile every template (built-in and overridden): a bad override stops start-up."""
        for language in LANGUAGES:
            for name in NAMES:
                self._template(language, f"{name}.body.txt")

    def _template(self, language: str, filename: str) -> Any:
        return self.env.select_template(
            [f"{language}/{filename}", f"{DEFAULT_LANGUAGE}/{filename}"]
        )
