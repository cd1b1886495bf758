"""The agents' console, mounted at `/` of the web app: sign-in, pages, forms, a new
ticket, the mail queues, its CSS."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from daemon.web.console_forms import Forms
from daemon.web.console_new import NewTicket
from daemon.web.console_pages import Pages
from daemon.web.console_queues import Queues
from daemon.web.console_signin import SignIn
from daemon.web.console_visit import Console
from daemon.web.parts import WebParts

STATIC = Path(__file__).parent / "static"


def console_routes(parts: WebParts) -> list[BaseRoute]:
    console = Console(parts)
    return [
        *SignIn(console).routes(),
        *Pages(console).routes(),
        *Forms(console).routes(),
        *NewTicket(console).routes(),
        *Queues(console).routes(),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
