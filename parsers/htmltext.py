"""HTML bodies → readable plain text with html2text."""

from __future__ import annotations

from html.parser import HTMLParser

import html2text


def html_to_text(html: str) -> str:
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
