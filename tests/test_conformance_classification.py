"""Bounce and auto-reply classification, scored against the labels of three public suites.

Labels come from where each project files its test mails (../shared/corpus):
- flufl-bounce: every file is a bounce flufl.bounce must read (103);
- sisimai-set-of-emails: maildir/{bsd,dos,mac,err,tmp} are machine mail sisimai decodes;
  files named rfc3834-* are vacation auto-replies, every other one is a bounce or an ARF
  report (sisimai counts both as bounces); maildir/not holds the mails that are not bounces;
- request-tracker: `multipart-report` is RT's auto-generated bounce fixture; every other
  mail in t/data/emails, gnupg and smime is a person's mail fed to RT as a ticket.

A person's mail here is a non-automatic one in those suites, plus our own people's mails in
tests/mails/people (one per way issue 14 saw them lost: Precedence on a reply, an
auto-forward, a postmaster who writes, a named null From, a missing From); the RT fixtures
that came through mailing lists with list headers are list traffic, not counted either way.
The test prints precision and recall for "automatic" and for "bounce", the number of
people's mails classified automatic and of those left without a usable sender, and holds
each at a floor set from the measured figure.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from parsers import MailKind, ParsedMessage, parse

SISIMAI_MACHINE = [f"sisimai-set-of-emails/maildir/{name}" for name in ("bsd", "dos", "mac")]
SISIMAI_MACHINE += ["sisimai-set-of-emails/maildir/err", "sisimai-set-of-emails/maildir/tmp"]
SISIMAI_NOT = "sisimai-set-of-emails/maildir/not"
RT = "request-tracker"
RT_BOUNCES = {"emails/multipart-report"}
LIST_HEADERS = ("list-id", "list-post", "list-unsubscribe", "mailing-list")

# sisimai's not-a-bounce set: two people's mails and a postmaster notice about a bounce.
SISIMAI_NOT_PEOPLE = {"is-not-bounce-01.eml", "is-not-bounce-02.eml"}

# Measured 2026-12-01 in this suite; see CONFORMANCE.md.
FLOORS = {
    "automatic precision": 1.0,
    "automatic recall": 0.983,
    "bounce precision": 1.0,
    "bounce recall": 0.981,
}
MAX_PEOPLE_AUTOMATIC = 0
# rt/emails/lorem-ipsum has no header at all: only the SMTP envelope, which a parser of the
# stored bytes does not see, could name its sender.
MAX_PEOPLE_WITHOUT_SENDER = 1
OUR_PEOPLE = Path(__file__).parent / "mails" / "people"


@dataclass(frozen=True, slots=True)
class Labelled:
    name: str
    automatic: bool  # machine mail of any kind
    bounce: bool
    person: bool


@dataclass
class Confusion:
    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    missed: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    def add(self, name: str, *, expected: bool, got: bool) -> None:
        if expected and got:
            self.true_positive += 1
        elif got:
            self.false_positive += 1
            self.wrong.append(name)
        elif expected:
            self.false_negative += 1
            self.missed.append(name)

    @property
    def precision(self) -> float:
        found = self.true_positive + self.false_positive
        return self.true_positive / found if found else 1.0

    @property
    def recall(self) -> float:
        relevant = self.true_positive + self.false_negative
        return self.true_positive / relevant if relevant else 1.0


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _labels(corpus: Path) -> list[tuple[Labelled, Path]]:
    labelled = [
        (Labelled(f"flufl/{path.name}", True, True, False), path)
        for path in _files(corpus / "flufl-bounce")
    ]
    for folder in SISIMAI_MACHINE:
        for path in _files(corpus / folder):
            bounce = not path.name.startswith("rfc3834")
            labelled.append((Labelled(f"sisimai/{path.name}", True, bounce, False), path))
    for path in _files(corpus / SISIMAI_NOT):
        person = path.name in SISIMAI_NOT_PEOPLE
        labelled.append((Labelled(f"sisimai/not/{path.name}", not person, False, person), path))
    for path in _files(corpus / RT):
        name = str(path.relative_to(corpus / RT))
        bounce = name in RT_BOUNCES
        labelled.append((Labelled(f"rt/{name}", bounce, bounce, not bounce), path))
    for path in _files(OUR_PEOPLE):
        labelled.append((Labelled(f"buzón/{path.name}", False, False, True), path))
    return labelled


def _is_list_traffic(raw: bytes) -> bool:
    head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0].lower()
    return any(b"\n" + name.encode() + b":" in head for name in LIST_HEADERS)


@dataclass
class People:
    count: int = 0
    automatic: list[str] = field(default_factory=list)
    without_sender: list[str] = field(default_factory=list)

    def add(self, name: str, parsed: ParsedMessage) -> None:
        self.count += 1
        if parsed.is_automatic:
            self.automatic.append(f"{name} ({parsed.kind_reason})")
        if parsed.from_addr is None:
            self.without_sender.append(name)


@functools.cache
def _measure(corpus: Path) -> tuple[Confusion, Confusion, People]:
    automatic, bounce, people = Confusion(), Confusion(), People()
    for label, path in _labels(corpus):
        raw = path.read_bytes()
        if label.person and _is_list_traffic(raw):
            continue
        parsed: ParsedMessage = parse(raw)
        automatic.add(label.name, expected=label.automatic, got=parsed.is_automatic)
        bounce.add(label.name, expected=label.bounce, got=parsed.kind is MailKind.BOUNCE)
        if label.person:
            people.add(label.name, parsed)
    return automatic, bounce, people


def _table(automatic: Confusion, bounce: Confusion, people: People) -> str:
    lines = ["\nclassification vs flufl-bounce, sisimai-set-of-emails, request-tracker"]
    for title, matrix in (("automatic", automatic), ("bounce", bounce)):
        lines.append(
            f"{title:<10} precision {matrix.precision:6.1%}  recall {matrix.recall:6.1%}  "
            f"(tp {matrix.true_positive}, fp {matrix.false_positive}, "
            f"fn {matrix.false_negative})"
        )
        lines.append(f"  missed: {', '.join(matrix.missed) or '-'}")
        lines.append(f"  wrongly flagged: {', '.join(matrix.wrong) or '-'}")
    lines.append(f"people's mails classified automatic: {len(people.automatic)} of {people.count}")
    lines.extend(f"  {item}" for item in people.automatic)
    lines.append(f"people's mails without a usable sender: {len(people.without_sender)}")
    lines.extend(f"  {item}" for item in people.without_sender)
    return "\n".join(lines)


def test_bounce_and_auto_reply_classification(corpus: Path) -> None:
    automatic, bounce, people = _measure(corpus)
    table = _table(automatic, bounce, people)
    print(table)
    figures = {
        "automatic precision": automatic.precision,
        "automatic recall": automatic.recall,
        "bounce precision": bounce.precision,
        "bounce recall": bounce.recall,
    }
    low = {name: round(value, 4) for name, value in figures.items() if value < FLOORS[name]}
    assert not low, f"below the floor: {low}\n{table}"
    assert len(people.automatic) <= MAX_PEOPLE_AUTOMATIC, table
    assert len(people.without_sender) <= MAX_PEOPLE_WITHOUT_SENDER, table
