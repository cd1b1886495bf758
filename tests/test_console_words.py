"""The console's own wording of what the domain says: its refusals in Spanish (the
console's default) from the domain's real English texts, and English as the domain
words it. The refusals are made by the domain's own code, so a changed English text
that the console no longer recognises fails here rather than showing in English."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from daemon.web.console_history import history_line
from daemon.web.console_refusals import refusal
from tickets.actions import Catalogue
from tickets.errors import TicketError
from tickets.lifecycle import check_transition, status_named
from tickets.listing import parse_duration
from tickets.priority import PriorityMatrix

CATALOGUE = Catalogue(
    categories=("billing", "access"),
    teams=("Facturación",),
    agents={"lucia@clinica.example": "Lucía Romero"},
)


def _refused(call: Callable[[], object]) -> str:
    with pytest.raises((TicketError, ValueError)) as raised:
        call()
    return str(raised.value)


@pytest.mark.parametrize(
    ("call", "spanish"),
    [
        (lambda: CATALOGUE.category("magia"), "tipo desconocido 'magia'; uno de: billing, access"),
        (lambda: CATALOGUE.team("Ventas"), "equipo desconocido 'Ventas'; uno de: Facturación"),
        (lambda: CATALOGUE.agent("pepe"), "agente desconocido 'pepe'; uno de: "),
        (lambda: check_transition("closed", "new"), "de Cerrado a Nuevo; se puede a: ninguno"),
        (lambda: check_transition("resolved", "on_hold"), "se puede a: Cerrado, En curso"),
        (lambda: status_named("hecho"), "estado desconocido 'hecho'; uno de: "),
        (lambda: PriorityMatrix().priority("enorme", "high"), "impacto desconocido 'enorme'"),
        (lambda: PriorityMatrix().priority("high", "ya"), "urgencia desconocida 'ya'"),
        (lambda: parse_duration("pronto"), "'pronto' no es una duración como 30m, 2h o 1d"),
    ],
)
def test_a_domain_refusal_reads_in_spanish_and_stays_english_in_english(
    call: Callable[[], object], spanish: str
) -> None:
    english = _refused(call)
    assert spanish in refusal("es", english)
    assert refusal("en", english) == english


def test_a_refusal_the_console_does_not_know_shows_as_the_domain_words_it() -> None:
    assert refusal("es", "something new went wrong") == "something new went wrong"


@pytest.mark.parametrize(
    ("event", "spanish", "english"),
    [
        (
            {"kind": "notified", "field": "mail", "old": None, "new": "sla_breach",
             "data": {"recipients": ["lucia@clinica.example"]}},
            "aviso de SLA vencido enviado a lucia@clinica.example",
            "SLA breach notice sent to lucia@clinica.example",
        ),
        (
            {"kind": "notify_refused", "field": "mail", "old": None, "new": "reply",
             "data": {"recipient": "ana@clinica.example", "reason": "bouncing"}},
            "respuesta no enviada a ana@clinica.example",
            "reply not sent to ana@clinica.example",
        ),
        (
            {"kind": "status", "field": "status", "old": "new", "new": "in_progress", "data": {}},
            "Estado: Nuevo → En curso",
            "Status: New → In progress",
        ),
        (
            {"kind": "sla", "field": "warning:first_response", "old": None, "new": None,
             "data": {}},
            "SLA de primera respuesta: aviso",
            "first response SLA: warning",
        ),
        (
            {"kind": "participant", "field": "watcher", "old": "ana@clinica.example",
             "new": None, "data": {}},
            "en copia quitado: ana@clinica.example",
            "CC removed: ana@clinica.example",
        ),
        (
            {"kind": "something_new", "field": "x", "old": "a", "new": "b", "data": {}},
            "something_new: a → b",
            "something_new: a → b",
        ),
    ],
)  # fmt: skip
def test_a_history_event_reads_as_a_sentence_in_the_console_language(
    event: dict[str, object], spanish: str, english: str
) -> None:
    assert history_line("es", event) == spanish
    assert history_line("en", event) == english
