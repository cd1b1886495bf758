"""The agents' actions as forms on a ticket's page, one POST each. Every action goes
through the desk with the signed-in agent as its actor (as `buzon tickets …` does), so
the change, its SLA clocks and its mail commit together and the history says who.
A refusal of the domain comes back as a message on the ticket's page."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from functools import partial
from pathlib import PurePath

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from daemon.desk import Acted
from daemon.web.console_refusals import refusal
from daemon.web.console_text import translate
from daemon.web.console_visit import Console, Section, Visit
from notifier.mail import Queued
from tickets import actions, shaping
from tickets.blobstore import BlobStore
from tickets.changes import Change
from tickets.errors import TicketError

MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024  # what most relays accept in one mail

# What the form of each action does: (form, attachments, actor) -> the desk's answer.
Action = Callable[["Form", list[actions.NewAttachment], str], Acted]


class Form:
    """A submitted form's text fields (blank is absent)."""

    def __init__(self, data: FormData) -> None:
        self.data = data

    def get(self, name: str) -> str | None:
        value = self.data.get(name)
        return value.strip() or None if isinstance(value, str) else None

    def text(self, name: str) -> str:
        value = self.data.get(name)
        return value.replace("\r\n", "\n") if isinstance(value, str) else ""


class Forms(Section):
    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.desk = console.parts.desk
        self.catalogue = console.parts.catalogue

    def routes(self) -> list[BaseRoute]:
        return [self.agent_route("/tickets/{number:int}/{action}", self.submit, "POST")]

    async def submit(self, request: Request, visit: Visit) -> Response:
        number = int(request.path_params["number"])
        name = str(request.path_params["action"])
        data = await self.console.form(request, visit)
        action = self._actions(number).get(name)
        page = f"/tickets/{number}"
        t = partial(translate, visit.language)
        if action is None:
            return self.console.redirect(page, ("error", t("not_found")))
        files = await _attachments(data)
        if sum(len(f.payload) for f in files) > MAX_ATTACHMENT_BYTES:
            return self.console.redirect(
                page, ("error", t("too_large", mb=MAX_ATTACHMENT_BYTES // 2**20))
            )
        assert visit.agent is not None  # agent_page lets only agents in
        try:
            done = await run_in_threadpool(action, Form(data), files, visit.agent)
        except TicketError as exc:
            return self.console.redirect(
                page, ("error", t("refused", why=refusal(visit.language, str(exc))))
            )
        if name == "reply" and not _reaches_someone(done.queued):
            who = ", ".join(f"{e} ({r})" for q in done.queued for e, r in q.refused)
            return self.console.redirect(page, ("error", t("unsent", who=who or "-")))
        return self.console.redirect(page, ("ok", t("done", what=t(LABELS[name]))))

    def _actions(self, number: int) -> dict[str, Action]:
        desk, catalogue = self.desk, self.catalogue
        blobs = BlobStore(self.parts.attachments_dir)

        def reply(f: Form, files: list[actions.NewAttachment], actor: str) -> Acted:
            return desk.act(
                number,
                lambda s, t: actions.reply(
                    s, t, actor, f.text("text"), attachments=files, blobs=blobs,
                    status=f.get("status"),
                ),
            )  # fmt: skip

        def note(f: Form, _: list[actions.NewAttachment], actor: str) -> Acted:
            return desk.act(number, lambda s, t: actions.add_note(s, t, actor, f.text("text")))

        def status(f: Form, _: list[actions.NewAttachment], actor: str) -> Acted:
            wanted = (f.get("status") or "").lower()
            return desk.act(
                number, lambda s, t: actions.set_status(s, t, wanted, actor, f.get("note"))
            )

        def assign(f: Form, _: list[actions.NewAttachment], actor: str) -> Acted:
            return desk.act(
                number,
                lambda s, t: actions.assign(
                    s, t, actor, agent=f.get("agent"), team=f.get("team"),
                    catalogue=catalogue, note=f.get("note"),
                ),
            )  # fmt: skip

        def escalate(f: Form, _: list[actions.NewAttachment], actor: str) -> Acted:
            return desk.act(
                number,
                lambda s, t: actions.escalate(
                    s, t, actor, team=f.get("team") or "", reason=f.get("reason") or "",
                    escalation_type=f.get("type") or "", catalogue=catalogue,
                ),
            )  # fmt: skip

        def priority(f: Form, _: list[actions.NewAttachment], actor: str) -> Acted:
            return desk.act(
                number,
                lambda s, t: actions.set_priority(
                    s, t, actor, impact=f.get("impact") or "", urgency=f.get("urgency") or "",
                    matrix=catalogue.matrix,
                ),
            )  # fmt: skip

        def category(f: Form, _: list[actions.NewAttachment], actor: str) -> Acted:
            name = catalogue.category(f.get("category") or "")
            return desk.act(number, lambda s, t: shaping.set_category(s, t, actor, name))

        def on_address(change: Callable[..., list[Change]]) -> Action:
            """CC, un-CC, make requester: one address, typed or picked."""

            def act(f: Form, _: list[actions.NewAttachment], actor: str) -> Acted:
                address = f.get("address") or ""
                return desk.act(number, lambda s, t: change(s, t, actor, address))

            return act

        def merge(f: Form, _: list[actions.NewAttachment], actor: str) -> Acted:
            other = (f.get("other") or "").lstrip("#")
            if not other.isdigit():
                raise TicketError(f"not a ticket number: {other!r}")
            return desk.act(number, lambda s, t: shaping.merge(s, t, actor, int(other)))

        return {
            "reply": reply,
            "note": note,
            "status": status,
            "assign": assign,
            "escalate": escalate,
            "priority": priority,
            "category": category,
            "cc-add": on_address(actions.add_watcher),
            "cc-remove": on_address(actions.remove_watcher),
            "requester": on_address(shaping.set_requester),
            "merge": merge,
        }


# The words of the "done" message, per action (keys of console_text).
LABELS = {
    "reply": "reply",
    "note": "add_note",
    "status": "change_status",
    "assign": "assign",
    "escalate": "escalate",
    "priority": "set_priority",
    "category": "set_category",
    "cc-add": "cc_add",
    "cc-remove": "cc_remove",
    "requester": "set_requester",
    "merge": "merge",
}


async def _attachments(data: FormData) -> list[actions.NewAttachment]:
    files = []
    for value in data.getlist("attach"):
        if isinstance(value, UploadFile) and value.filename:
            name = PurePath(value.filename.replace("\\", "/")).name
            kind = value.content_type or mimetypes.guess_type(name)[0]
            files.append(
                actions.NewAttachment(name, kind or "application/octet-stream", await value.read())
            )
    return files


def _reaches_someone(queued: list[Queued]) -> bool:
    """As `buzon tickets reply`: an answer mailed to nobody is an error to show."""
    return any(q.outbox_id is not None and q.recipients for q in queued)
