"""Reply stripping scored against the expectations of the reply-parser projects' suites.

Each fixture in ../shared/corpus is a reply body; the expectations are transcribed from the
projects' own tests (github/email_reply_parser test/email_reply_parser_test.rb, zapier
test/test_email_reply_parser.py, alfonsrv/mail-parser-reply test/test_email_reply_parser.py,
mailgun/talon tests: standard replies read "Hello" unless a *_reply_text file says otherwise,
and every HTML reply reads "Hi. I am fine. Thanks, Alex"). They say what the latest reply
must contain and what (quoted history, reply headers, signatures) it must not; fixtures
whose upstream test checks only fragment counts are not scored. crisp-email-reply-parser,
the fifth set the issue names, is not in the shared corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from parsers import parse
from parsers.charsets import decode_bytes
from parsers.htmltext import html_to_text
from parsers.reply import strip_reply
from tests.test_conformance_tables import normalise_text


class Want(NamedTuple):
    contains: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    whole: bool = False  # nothing is quoted: the whole text is the reply


HERE = "Here is another email"
GITHUB = {
    "correct_sig": Want(("this is an email with a correct -- signature.",), ("rick",)),
    "email_1_1": Want(("Hi folks",), ("riak-users",)),
    "email_1_2": Want(("Hi,", "You can list the keys for the bucket"), ("riak-users",)),
    "email_1_3": Want(("Oh thanks.",), ("On 01/03/11 7:07 PM, Russell Brown wrote:",)),
    "email_1_4": Want(("Awesome",), ("Loader",)),
    "email_1_5": Want(whole=True),
    "email_1_6": Want(("I get proper rendering as well.",), ("Corey Donohoe",)),
    "email_1_7": Want((":+1:",), ("Steps 0-2",)),
    "email_1_8": Want(("I will reply under this one",)),
    "email_2_1": Want(("Outlook with a reply",), ("Google Apps Sync Team",)),
    "email_2_2": Want(
        ("Outlook with a reply directly above line",),
        ("CRM Comments", "I am replying to a comment."),
    ),
    "email_2_3": Want(("Outlook with a reply directly above line",), ("CRM Comments",)),
    "email_BlackBerry": Want((HERE,), ("Sent from my BlackBerry",)),
    "email_bullets": Want(
        ("test 2 this should list second", "and another"), ("examples@email.goalengine.com",)
    ),
    "email_iPhone": Want((HERE,), ("Sent from my iPhone",)),
    "email_long_quote": Want(("Hi folks",)),
    "email_multi_word_sent_from_my_mobile_device": Want(
        (HERE,), ("Sent from my Verizon Wireless BlackBerry",)
    ),
    "email_one_is_not_on": Want(absent=("On Oct 1, 2012, at 11:55 PM, Dave Tapley wrote:",)),
    "email_sent_from_my_not_signature": Want(
        ("Sent from my desk, is much easier then my mobile phone.",)
    ),
    "email_sig_delimiter_in_middle_of_line": Want(
        ("And here is a fix -- this is not a signature.", "kthxbai")
    ),
    "greedy_on": Want(
        ("On your remote host you can run:", "the tunnel is not working."),
        ("George Plymale wrote",),
    ),
    "pathological": Want(("I think you're onto something.",), ("John Sullivan",)),
}
HEADERS_NO_DELIMITER = Want(
    ("And another reply!",), ("Dan Watson", "A reply", "This is a message.")
)
ZAPIER = {
    **{name: want for name, want in GITHUB.items() if name != "email_long_quote"},
    "email_gmail": Want(absent=("xxx@gmail.com",)),
    "email_headers_no_delimiter": HEADERS_NO_DELIMITER,
    "email_2_3": Want(
        ("Outlook with a reply above headers using unusual format",), ("Ei tale aliquam",)
    ),
    "email_partial_quote_header": Want(
        ("On your remote host you can run:",), ("George Plymale wrote",)
    ),
}
ALFONSRV = {
    "email_1_1": Want(("Hi folks",), ("riak-users",)),
    "email_1_3": Want(
        ("Oh thanks.",), ("On 01/03/11 7:07 PM, Russell Brown wrote:", "-Abhishek Kona")
    ),
    "email_1_4": Want(absent=("defunkt<reply@reply.github.com>",)),
    "email_1_5": Want(whole=True),
    "email_1_6": Want(absent=("<reply@reply.github.com>",)),
    "email_1_7": Want(absent=("<notifications@github.com>wrote:",)),
    "email_2_1": Want(("Outlook with a reply",), ("Google Apps Sync Team",)),
    "email_2_3": Want(
        ("Outlook with a reply above headers using unusual format",), ("Ei tale aliquam eum",)
    ),
    "email_headers_no_delimiter": HEADERS_NO_DELIMITER,
    "email_sent_from_iPhone": Want((HERE,), ("Sent from my iPhone",)),
    "email_sent_from_multi_word_mobile_device": Want(
        (HERE,), ("Sent from my Verizon Wireless BlackBerry",)
    ),
    "email_sent_from_BlackBerry": Want((HERE,), ("Sent from my BlackBerry",)),
    "email_sent_from_not_signature": Want(
        ("Here is another email Sent from my desk, is much easier than my mobile phone.",)
    ),
    "email_ja_1_1": Want(("こんにちは",)),
    "email_ja_1_2": Want(
        ("お世話になっております。織田です。", "それでは 11:00 にお待ちしております。"),
        ("かしこまりました",),
    ),
    "email_nl_1_1": Want(absent=("riak-gebruikers",)),
    "email_nl_1_2": Want(("Outlook met een antwoord",), ("Google Apps Sync Team",)),
    "email_pl_1_1": Want(("Czesc Anno",), ("Pozdrawiam, Jan",)),
    "email_pl_1_2": Want(absent=("Dnia 28 lutego 2023 14:00 Anna Nowak",)),
    "email_pl_1_3": Want(absent=("Z powazaniem, Jan",)),
    "email_swedish_1": Want(("Ursäkta mitt sena svar!",), ("Hej Person B,",)),
    "email_swedish_2": Want(("Hello Anna,",), ("/John",)),
    "email_sv_anon_1": Want(("Berättar gärna.",), ("Kan inte se att det står något",)),
    "email_danish_1": Want(("Hej Peter,",), ("Med venlig hilsen Anders Andersen", "Hej Anders,")),
    "email_danish_2": Want(
        ("Jeg har modtaget filerne.",), ("Hilsen Søren", "Her er filerne du bad om.")
    ),
    "email_danish_3": Want(("Svar.",)),
    "email_danish_4": Want(("Svar.",), ("-----Oprindelig meddelelse-----",)),
    "email_danish_5": Want(("Svar.",), ("Kh Peter",)),
}
TALON_HTML_REPLY = "Hi. I am fine. Thanks, Alex"
# Signatures and sign-offs talon keeps in the reply and buzón cuts, on purpose.
DEVICE_SIGNATURES = (
    "Sent from my iPhone",
    "-- xxx Sent with Sparrow (http://www.sparrowmailapp.com/?sig)",
    "Thanks, Alex",
)

# Measured 2026-12-01 in this suite; see CONFORMANCE.md.
FLOORS = {
    "github-email_reply_parser": 1.0,
    "zapier-email-reply-parser": 1.0,
    "alfonsrv-mail-parser-reply": 1.0,
    "mailgun-talon": 1.0,
}


def _new_text(path: Path) -> tuple[str, str]:
    raw = path.read_bytes()
    if path.suffix == ".eml":
        parsed = parse(raw)
        return parsed.text, parsed.new_text
    text, _ = decode_bytes(raw)
    text = html_to_text(text) if path.suffix == ".html" else text
    return text, strip_reply(text)


def _meets(full: str, new: str, want: Want) -> bool:
    new = normalise_text(new)
    if want.whole:
        return new == normalise_text(full)
    return all(normalise_text(text) in new for text in want.contains) and not any(
        normalise_text(text) in new for text in want.absent
    )


def _score_text_sets(corpus: Path, folder: str, wants: dict[str, Want]) -> tuple[int, list[str]]:
    misses = []
    for name, want in wants.items():
        full, new = _new_text(corpus / folder / f"{name}.txt")
        if not _meets(full, new, want):
            misses.append(name)
    return len(wants), misses


def _squeeze(text: str) -> str:
    return "".join(text.split())


def _talon_expected(path: Path) -> str:
    if path.suffix == ".html":
        return TALON_HTML_REPLY
    expected = path.with_name(path.stem + "_reply_text")
    return expected.read_text("utf-8") if expected.exists() else "Hello"


def _score_talon(corpus: Path) -> tuple[int, list[str]]:
    folder = corpus / "mailgun-talon"
    paths = sorted((folder / "standard_replies").glob("*.eml"))
    paths += sorted((folder / "html_replies").glob("*.html"))
    misses = []
    for path in paths:
        expected = _squeeze(_talon_expected(path))
        got = _squeeze(_new_text(path)[1])
        device = [_squeeze(signature) for signature in DEVICE_SIGNATURES]
        if got != expected and not any(got + cut == expected for cut in device):
            misses.append(path.name)
    return len(paths), misses


def test_reply_stripping_against_reply_parser_suites(corpus: Path) -> None:
    results = {
        "github-email_reply_parser": _score_text_sets(corpus, "github-email_reply_parser", GITHUB),
        "zapier-email-reply-parser": _score_text_sets(corpus, "zapier-email-reply-parser", ZAPIER),
        "alfonsrv-mail-parser-reply": _score_text_sets(
            corpus, "alfonsrv-mail-parser-reply", ALFONSRV
        ),
        "mailgun-talon": _score_talon(corpus),
    }
    lines = ["\nreply stripping vs reply-parser suites", f"{'suite':<28}{'pass':>6}{'of':>5}"]
    rates = {}
    for suite, (total, misses) in results.items():
        rates[suite] = (total - len(misses)) / total
        lines.append(
            f"{suite:<28}{total - len(misses):>6}{total:>5}{rates[suite]:>9.1%}  "
            f"{', '.join(misses)}"
        )
    passed = sum(total - len(misses) for total, misses in results.values())
    total_all = sum(total for total, _ in results.values())
    lines.append(f"{'all':<28}{passed:>6}{total_all:>5}{passed / total_all:>9.1%}")
    table = "\n".join(lines)
    print(table)
    low = {suite: round(rate, 3) for suite, rate in rates.items() if rate < FLOORS[suite]}
    assert not low, f"below the floor: {low}\n{table}"
