"""Which replies the IMAP poller holds back while the mail they answer is in flight."""

from __future__ import annotations

from daemon.intake.imap_order import ConversationOrder, thread_ids
from tests.mailbuilder import mail


def one(n: int, answers: str | None = None) -> bytes:
    return mail(f"C{n} <c{n}@clinica.example>", f"Asunto {n}", "Hola",
                msgid=f"<m{n}@Clinica.example>", in_reply_to=answers)  # fmt: skip


def test_thread_ids_come_from_the_header_block_only() -> None:
    raw = one(2, "<m1@clinica.example>") + b"In-Reply-To: <not-a-header@x>\r\n"
    assert thread_ids(raw) == ("m2@clinica.example", frozenset({"m1@clinica.example"}))
    assert thread_ids(b"Subject: sin id\r\n\r\ncuerpo") == ("", frozenset())


def test_a_reply_waits_for_its_original_and_a_chain_goes_in_order() -> None:
    order = ConversationOrder()
    bodies = {1: one(1), 2: one(2, "<m1@clinica.example>"), 3: one(3, "<m2@clinica.example>"),
              4: one(4)}  # fmt: skip
    order.hold_replies(bodies, dict.fromkeys(bodies, 100))
    assert sorted(bodies) == [1, 4] and sorted(order.held) == [2, 3]
    assert order.due() == {}  # 1 is still in flight
    order.settled([1, 4])
    assert order.due() == {2: 100}  # 3 answers 2, which is held: not yet
    order.hold_replies({2: one(2, "<m1@clinica.example>")}, {2: 100})
    assert order.due() == {}
    order.settled([2])
    assert order.due() == {3: 100} and not order.held


def test_a_loop_of_forged_references_does_not_hold_mail_for_ever() -> None:
    order = ConversationOrder()
    bodies = {1: one(1), 2: one(2, "<m1@clinica.example> <m3@clinica.example>"),
              3: one(3, "<m2@clinica.example>")}  # fmt: skip
    bodies_2 = bodies[2]
    order.hold_replies(bodies, dict.fromkeys(bodies, 1))
    order.settled([1])
    assert order.due() == {2: 1}  # nothing else in flight: the oldest goes
    again = {2: bodies_2}
    order.hold_replies(again, {2: 1})
    assert list(again) == [2] and sorted(order.held) == [3]  # not held a second time
