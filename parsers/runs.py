"""Long base64 bodies kept out of the stdlib parser, and read back from the raw bytes.

The stdlib parser holds about nine copies of what it reads (the whole mail as a str, a
UCS-4 buffer of it, one str per line, the joined payload, that payload as bytes, its
lines again...): a 25 MB mail took 400 MB. So before parsing, every long run of
base64-alphabet lines is replaced by a short token. A run never holds a MIME boundary
(those begin with "--"), a header line (no colon) or a blank line (runs are cut there),
so the parser sees the same structure; a part whose payload holds a token reads the run
back from the raw bytes only when asked, decoding base64 slice by slice.

Mails without such a run (all but big attachments) are parsed exactly as before.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.policy import Policy, compat32
from typing import Any

MIN_RUN = 256 * 1024  # a shorter run costs less to parse than to track
_CHUNK = 1 << 20  # base64 decoded this many encoded bytes at a time
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_CLASS = rb"[A-Za-z0-9+/=\r\n]"
# Starts only where the previous byte is outside the class: no quadratic rescans.
_SPAN = re.compile(rb"(?<!%s)%s{%d,}" % (_CLASS, _CLASS, MIN_RUN))
# Two line endings in a row always hold one of these ("\r\n" alone is one ending).
_BLANK_LINE_PAIRS = (b"\n\n", b"\r\r", b"\n\r")
_EOL = b"\r\n"


@dataclass
class Runs:
    """The raw bytes and where each token's run lies in them."""

    raw: bytes
    prefix: str
    spans: list[tuple[int, int]] = field(default_factory=list)

    def token(self, index: int) -> str:
        return f"{self.prefix}{index}Z"

    def pieces(self, payload: str) -> Iterator[str | tuple[int, int]]:
        """The payload cut at its tokens: text, and (start, end) of each run."""
        for index, piece in enumerate(self._pattern().split(payload)):
            if index % 2 and piece.isdigit() and int(piece) < len(self.spans):
                yield self.spans[int(piece)]
            elif index % 2:
                yield self.token(int(piece))  # not ours (cannot happen): left as it was
            elif piece:
                yield piece

    def restore(self, payload: str) -> str:
        """The payload as the stdlib parser would have made it from the raw bytes."""
        return "".join(
            piece if isinstance(piece, str) else self.raw[piece[0] : piece[1]].decode("ascii")
            for piece in self.pieces(payload)
        )

    def expand(self, serialised: bytes) -> bytes:
        """Tokens in generator output replaced by their runs, with the line endings the
        generator writes ("\\n")."""

        def run(match: re.Match[bytes]) -> bytes:
            index = int(match[1])
            if index >= len(self.spans):
                return match[0]
            start, end = self.spans[index]
            return _normalise_eol(self.raw[start:end])

        return re.sub(rb"%s(\d+)Z" % self.prefix.encode(), run, serialised)

    def decode_base64(self, payload: str) -> bytes | None:
        """The base64 payload decoded from the raw bytes, slice by slice; None unless it is
        well-formed (then the stdlib's own decoding decides, defects included)."""
        decoded = []
        carry = b""
        padded = False
        for encoded in self._encoded(payload):
            data = carry + encoded
            cut = len(data) - len(data) % 4
            body, carry = data[:cut], data[cut:]
            if not body:
                continue
            if padded:  # data after the padding
                return None
            junk = body.translate(None, _ALPHABET)
            if junk:
                if junk not in (b"=", b"==") or not body.endswith(junk):
                    return None
                padded = True
            decoded.append(binascii.a2b_base64(body))
        return None if carry else b"".join(decoded)

    def _encoded(self, payload: str) -> Iterator[bytes]:
        """The payload's base64 text without line endings, at most ~_CHUNK at a time."""
        for piece in self.pieces(payload):
            if isinstance(piece, str):
                yield piece.encode("ascii", "surrogateescape").translate(None, _EOL)
                continue
            at, end = piece
            while at < end:
                cut = min(at + _CHUNK, end)
                yield self.raw[at:cut].translate(None, _EOL)
                at = cut

    def _pattern(self) -> re.Pattern[str]:
        return re.compile(rf"{self.prefix}(\d+)Z")


class RunMessage(Message):
    """A compat32 message part that reads its tokens' runs back when its payload is read."""

    runs: Runs | None = None

    # Message.get_payload is overloaded on `decode`; this one keeps its behaviour.
    def get_payload(self, i: Any = None, decode: bool = False) -> Any:
        runs = self.runs
        payload = getattr(self, "_payload", None)
        if runs is None or not isinstance(payload, str) or runs.prefix not in payload:
            return super().get_payload(i, decode)  # type: ignore[call-overload]
        cte = str(self.get("content-transfer-encoding", "")).lower()
        if decode and i is None and cte == "base64":
            decoded = runs.decode_base64(payload)
            if decoded is not None:
                return decoded
        self.set_payload(runs.restore(payload))  # the exact stdlib path, memory and all
        return super().get_payload(i, decode)  # type: ignore[call-overload]


def shrink(raw: bytes) -> tuple[bytes, Runs | None]:
    """`raw` with its long base64 runs replaced by tokens, and the runs; unchanged (and
    None) when it has none."""
    if len(raw) < MIN_RUN:
        return raw, None
    spans = [run for span in _SPAN.finditer(raw) for run in _runs(raw, *span.span())]
    if not spans:
        return raw, None
    prefix = f"BUZONRUN{secrets.token_hex(8)}N"
    if prefix.encode() in raw:  # never: 64 random bits
        return raw, None
    runs = Runs(raw, prefix, spans)
    view = memoryview(raw)
    pieces: list[bytes | memoryview] = []
    at = 0
    for index, (start, end) in enumerate(spans):
        pieces += [view[at:start], runs.token(index).encode()]
        at = end
    pieces.append(view[at:])
    return b"".join(pieces), runs


def message_factory(runs: Runs | None) -> Any:
    """The parser's `_class`: every part (nested mails too) knows the runs."""

    def factory(policy: Policy = compat32) -> RunMessage:
        part = RunMessage(policy)
        part.runs = runs
        return part

    return factory


def _runs(raw: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
    """The runs of whole non-empty lines inside one span of base64-alphabet bytes."""
    ends = [i for i in (raw.find(b"\n", start, end), raw.find(b"\r", start, end)) if i >= 0]
    if not ends:
        return
    start = min(ends)  # the span's first line began before it (or is a header's tail)
    if end < len(raw):  # the last line goes on past the span: leave it to the parser
        end = max(raw.rfind(b"\n", start, end), raw.rfind(b"\r", start, end)) + 1
    at = start
    for blank in _blank_lines(raw, start, end):
        yield from _trimmed(raw, at, blank)
        at = blank + 2
    yield from _trimmed(raw, at, end)


def _blank_lines(raw: bytes, start: int, end: int) -> Iterator[int]:
    """Where blank lines lie in [start, end), in order. bytes.find, not a regex: a regex
    alternation tries every position (5 s for 25 MB); each pair is searched for again
    only once passed, so this stays linear."""
    nxt = {pair: raw.find(pair, start, end) for pair in _BLANK_LINE_PAIRS}
    while True:
        found = [at for at in nxt.values() if at >= 0]
        if not found:
            return
        at = min(found)
        yield at
        for pair, where in nxt.items():
            if 0 <= where < at + 2:
                nxt[pair] = raw.find(pair, at + 2, end)


def _trimmed(raw: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
    """[start, end) without line endings at either side, when still long enough. The
    line ending after a run stays: the parser gives it to a following boundary."""
    while start < end and raw[start] in _EOL:
        start += 1
    while end > start and raw[end - 1] in _EOL:
        end -= 1
    if end - start >= MIN_RUN:
        yield start, end


def _normalise_eol(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
