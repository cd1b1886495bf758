"""Routing rules, pure: first match wins, `proceed` lets later rules fill the gaps, words
match whole and without accents, addresses with or without their plus-detail."""

from __future__ import annotations

import re

from tickets.routing import Actions, Incoming, Rule, compile_words, route, urgent_rule

BILLING = Rule(
    "facturacion",
    Actions(team="facturacion", category="billing", acknowledge=True),
    to=frozenset({"facturacion@clinica.example"}),
)
PARTNERS = Rule(
    "socios", Actions(team="socios", priority="P2"), senders=frozenset({"@hospital.example"})
)


def incoming(text: str = "Hola", *, to: str = "soporte@clinica.example", **kw: str) -> Incoming:
    return Incoming(
        recipients=(to,),
        source=kw.get("source", "smtp"),
        sender=kw.get("sender", "ana@correo.example"),
        subject=kw.get("subject", "Consulta"),
        text=text,
    )


def test_first_matching_rule_decides() -> None:
    routed = route([BILLING, PARTNERS], incoming(to="Facturacion+marzo@clinica.example"))
    assert routed.rules == ("facturacion",)
    assert routed.actions.team == "facturacion" and routed.actions.category == "billing"
    assert route([BILLING, PARTNERS], incoming()).rules == ()


def test_sender_domain_and_source() -> None:
    assert route([PARTNERS], incoming(sender="dra.ruiz@hospital.example")).rules == ("socios",)
    imap_only = Rule("buzon", Actions(team="x"), sources=frozenset({"imap:ventas"}))
    assert route([imap_only], incoming(source="imap:ventas")).rules == ("buzon",)
    assert route([imap_only], incoming(source="smtp")).rules == ()


def test_urgent_words_match_without_accents_or_case_and_whole_only() -> None:
    urgent = urgent_rule()
    assert route([urgent], incoming("Mi hija tiene un SANGRÁDO en la encía")).rules == (
        "urgent_emergency",
    )
    assert route([urgent], incoming("tengo   dolor\nintenso desde ayer")).rules == (
        "urgent_emergency",
    )
    assert route([urgent], incoming("Consulta sobre la sangría del texto")).rules == ()


def test_proceed_lets_a_later_rule_add_what_the_first_left_unset() -> None:
    routed = route(
        [urgent_rule(), BILLING],
        incoming("Me cobraron dos veces y tengo un sangrado", to="facturacion@clinica.example"),
    )
    assert routed.rules == ("urgent_emergency", "facturacion")
    assert routed.actions.category == "urgent_emergency"  # the first rule's value stands
    assert routed.actions.priority == "P1" and routed.actions.team == "facturacion"
    assert routed.actions.tags == ("urgente",)


def test_regex_and_configured_words() -> None:
    rule = Rule(
        "citas",
        Actions(category="appointment"),
        words=compile_words(["Cita médica", "reagendar"]),
        regex=re.compile(r"turno\s+\d+"),
    )
    assert route([rule], incoming("Necesito reagendar, es el turno 42")).rules == ("citas",)
    assert route([rule], incoming("Necesito reagendar")).rules == ()  # the regex must hold too
