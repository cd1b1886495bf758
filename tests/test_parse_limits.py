"""The parser reads a hostile mail only up to its limits: parts, nesting, decoded size.

What lies beyond stays in the stored raw message; a defect says what was left out.
"""

from __future__ import annotations

from parsers import Limits, parse

HEAD = (
    b"From: Ana <ana@clinica.example>\r\nTo: soporte@soporte.example\r\n"
    b"Subject: muchas partes\r\nMessage-ID: <partes@clinica.example>\r\nMIME-Version: 1.0\r\n"
)


def many_parts(count: int) -> bytes:
    part = b"--BB\r\nContent-Type: text/plain\r\n\r\nuna linea\r\n"
    return (
        HEAD + b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n" + part * count + b"--BB--\r\n"
    )


def nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nal fondo\r\n"
    for level in range(depth):
        boundary = f"L{level}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n--" + boundary
            + b"\r\n" + body + b"--" + boundary + b"--\r\n"
        )  # fmt: skip
    return HEAD + body


def test_a_mail_of_100000_parts_is_read_up_to_the_part_limit() -> None:
    parsed = parse(many_parts(100_000), Limits(max_parts=500))
    assert parsed.subject == "muchas partes" and parsed.from_addr is not None
    assert "more than 500 MIME parts; rest ignored" in parsed.defects
    assert 0 < parsed.text.count("una linea") <= 500


def test_a_mail_within_the_limits_is_read_whole() -> None:
    parsed = parse(many_parts(50), Limits(max_parts=500))
    assert parsed.text.count("una linea") == 50
    assert not [d for d in parsed.defects if "rest ignored" in d]


def test_nesting_beyond_the_limit_is_left_out() -> None:
    deep = parse(nested(30), Limits(max_depth=10))
    assert "MIME nesting too deep (over 10); rest ignored" in deep.defects
    assert "al fondo" not in deep.text
    assert "al fondo" in parse(nested(5), Limits(max_depth=10)).text


def test_decoded_size_beyond_the_budget_is_left_out() -> None:
    attachment = b"A" * 4000
    raw = (
        HEAD + b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n"
        b"--BB\r\nContent-Type: text/plain\r\n\r\nadjunto dos archivos\r\n"
        b"--BB\r\nContent-Type: application/octet-stream; name=uno.bin\r\n\r\n" + attachment
        + b"\r\n--BB\r\nContent-Type: application/octet-stream; name=dos.bin\r\n\r\n" + attachment
        + b"\r\n--BB--\r\n"
    )  # fmt: skip
    parsed = parse(raw, Limits(max_decoded_bytes=6000))
    assert [a.filename for a in parsed.attachments] == ["uno.bin"]
    assert "decoded content over 6000 bytes; rest ignored" in parsed.defects
    assert parsed.new_text.strip() == "adjunto dos archivos"
