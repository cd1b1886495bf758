"""The listener reads MAIL FROM / RCPT TO paths exactly as aiosmtpd does: its fast path
for plain `<local@domain>` gives aiosmtpd's own answer, whatever the client sends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import SmtpConfig
from daemon.intake.smtp_server import SmtpListener

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
PIECES = [*ATEXT, ".", "@", "<", ">", " ", '"', "\\", "(", ")", "[", "]", ",", ":", "é", "=", "\t"]
SAMPLES = [
    "<soporte@soporte.example>",
    "<ana.garcia@clinica.example> SIZE=3000 BODY=8BITMIME",
    "<>",
    " <a@b.c>",
    "<a..b@c.d>",
    "<.a@b.c>",
    "<a@b..c>",
    "<a@-b.c>",
    "<a@b.c>>",
    "<a@b.c>  SIZE=1",
    "<a@b.c> (comment) SIZE=1",
    "<a@b.c>\tSIZE=1",
    "<a@b.c>   ",
    '<"quoted local"@example.es>',
    "<a@[192.0.2.1]>",
    "<josé@ejemplo.es> SMTPUTF8",
    "a@b.c",
    "<@relay.example:a@b.c>",
    "<" + "x" * 65 + "@b.c>",
    "<" + "x" * 64 + "@b.c>",
]


def _both(args: list[str]) -> list[tuple[Any, Any]]:
    """(ours, aiosmtpd's) for each argument, on a real listener protocol."""

    async def compare() -> list[tuple[Any, Any]]:
        listener = SmtpListener(
            SmtpConfig(hostname="mx.test"), is_ours=lambda _: True, store=_never_called
        )
        proto = listener._factory()
        assert isinstance(proto, SMTP)
        return [
            (_outcome(proto._getaddr, arg), _outcome(partial(SMTP._getaddr, proto), arg))
            for arg in args
        ]

    return asyncio.run(compare())


def _outcome(read: Callable[[str], Any], arg: str) -> Any:
    """What reading `arg` gives, or the error it raises (aiosmtpd's parser raises on some
    malformed paths, e.g. a lone '"'; the session then answers 451)."""
    try:
        return read(arg)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return type(exc)


async def _never_called(raw: bytearray, envelope: dict[str, Any]) -> int:
    raise AssertionError("no mail is stored here")


def test_known_paths_are_read_as_aiosmtpd_reads_them() -> None:
    results = _both(SAMPLES)
    assert results[0][0] == ("soporte@soporte.example", "")
    assert results[1][0] == ("ana.garcia@clinica.example", "SIZE=3000 BODY=8BITMIME")
    for arg, (ours, theirs) in zip(SAMPLES, results, strict=True):
        assert ours == theirs, arg


ANYTHING = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
NEAR_PLAIN = st.tuples(
    st.text(alphabet=ATEXT + ".é", max_size=8),
    st.text(alphabet="ab0-.[]", max_size=8),
    st.sampled_from(["", " ", "  X=1", " X=1 Y", "(c)", " (c) X=1", "\tX=1", ">"]),
).map(lambda parts: "<{}@{}>{}".format(*parts))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(ANYTHING, NEAR_PLAIN), max_size=20))
def test_any_path_is_read_as_aiosmtpd_reads_it(args: list[str]) -> None:
    for arg, (ours, theirs) in zip(args, _both(args), strict=True):
        assert ours == theirs, arg
