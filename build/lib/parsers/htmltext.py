"""HTML bodies → readable plain text with html2text."""

from __future__ import annotations

from html.parser import HTMLParser

import html2text

# html2text needs ~3 s per MB; past this size the text is a tail nobody reads in a ticket.
MAX_HTML_CHARS = 300_000


def html_to_text(html: str, defects: list[str] | None = None) -> str:
    if len(html) > MAX_HTML_CHARS:
        if defects is not None:
            defects.append(f"HTML body over {MAX_HTML_CHARS} characters; text cut there")
        html = html[:MAX_HTML_CHARS]
    html = escape_unclosed_brackets(html)
    converter = html2text.HTML2Text()
    converter.body_width = 0  # keep paragraphs on one line; wrapping is the reader's job
    converter.ignore_images = True
    converter.ignore_emphasis = True  # "**De:**" would hide Outlook reply headers from reply.py
    converter.unicode_snob = True  # keep "ñ" and "€" instead of ASCII approximations
    converter.single_line_break = False
    try:
        return converter.handle(html).strip()
    except Exception:  # a converter bug must not cost the body; plain extraction
        return _data_only(html)


def escape_unclosed_brackets(html: str) -> str:
    """Turn every "<" that no ">" closes before the next "<" into "&lt;".

    The stdlib HTMLParser (under html2text) rescans to the end of the input for each unclosed
    "<tag", which is quadratic: 140 KB of them took 18 s. One linear pass keeps it linear.
    """
    pieces: list[str] = []
    position = 0
    closing = html.find(">")
    while (opening := html.find("<", position)) >= 0:
        if 0 <= closing < opening:
            closing = html.find(">", opening)
        following = html.find("<", opening + 1)
        pieces.append(html[position:opening])
        if closing < 0 or 0 <= following < closing:
            pieces.append("&lt;")
            position = opening + 1
        else:
            pieces.append(html[opening : closing + 1])
            position = closing + 1
    pieces.append(html[position:])
    return "".join(pieces)


class _DataCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)


def _data_only(html: str) -> str:
    collector = _DataCollector()
    try:
        collector.feed(html)
        collector.close()
    except Exception:  # last resort: nothing better than the markup itself
        return html
    return "".join(collector.chunks).strip()
