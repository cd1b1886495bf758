"""Spam verdicts that the MTA and its filters already wrote into the headers.

buzón does not score mail itself: SpamAssassin, Rspamd and the receiving server's DMARC
check have seen far more mail than we will. We read what they concluded:
- SpamAssassin: `X-Spam-Flag: YES`, or `X-Spam-Status: Yes, score=…` (or a score at or
  above our own threshold);
- Rspamd: `X-Rspamd-Action` of reject / add header / rewrite subject, or
  `X-Spamd-Result: default: True [score / required]` (or the score at our threshold);
- a configured header of another filter, matched by a regular expression;
- `Authentication-Results` saying DMARC failed for a domain whose policy is reject or
  quarantine (parsed with `authres`; the published policy sits in a comment).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from parsers.headers import one_line, raw_values

_SA_STATUS = re.compile(r"^\s*(?P<flag>yes|no)\b.*?\bscore=(?P<score>-?[\d.]+)", re.I | re.S)
_RSPAMD_RESULT = re.compile(r"\b(?P<flag>true|false)\s*\[\s*(?P<score>-?[\d.]+)\s*/", re.I)
_RSPAMD_SPAM_ACTIONS = frozenset({"reject", "add header", "rewrite subject"})
_DMARC_POLICY = re.compile(r"\bdmarc=fail\b[^;]*?\bp=(?P<policy>[a-z]+)", re.I)


@dataclass(frozen=True, slots=True)
class SpamRules:
    """What counts as spam. `threshold` (a score) applies to SpamAssassin and Rspamd
    scores on top of their own verdict; `header`/`pattern` name one more filter's header."""

    enabled: bool = True
    threshold: float | None = None
    header: str | None = None
    pattern: str = r"^\s*yes\b"
    dmarc_policies: frozenset[str] = frozenset({"reject", "quarantine"})


def spam_reason(msg: Message, rules: SpamRules) -> str | None:
    """Why this mail is spam in the filters' eyes, or None."""
    if not rules.enabled:
        return None
    for check in (_spamassassin, _rspamd, _configured, _dmarc):
        reason = check(msg, rules)
        if reason is not None:
            return reason
    return None


def _spamassassin(msg: Message, rules: SpamRules) -> str | None:
    if any(one_line(v).lower().startswith("yes") for v in raw_values(msg, "x-spam-flag")):
        return "SpamAssassin: X-Spam-Flag YES"
    for value in raw_values(msg, "x-spam-status"):
        match = _SA_STATUS.match(value)
        if match and _over(match["flag"].lower() == "yes", match["score"], rules):
            return f"SpamAssassin: score {match['score']}"
    return None


def _rspamd(msg: Message, rules: SpamRules) -> str | None:
    for value in raw_values(msg, "x-rspamd-action"):
        action = one_line(value).lower()
        if action in _RSPAMD_SPAM_ACTIONS:
            return f"Rspamd: action {action}"
    for value in raw_values(msg, "x-spamd-result"):
        match = _RSPAMD_RESULT.search(value)
        if match and _over(match["flag"].lower() == "true", match["score"], rules):
            return f"Rspamd: score {match['score']}"
    return None


def _over(flagged: bool, score: str, rules: SpamRules) -> bool:
    if flagged:
        return True
    try:
        return rules.threshold is not None and float(score) >= rules.threshold
    except ValueError:
        return False


def _configured(msg: Message, rules: SpamRules) -> str | None:
    if not rules.header:
        return None
    pattern = re.compile(rules.pattern, re.I)
    for value in raw_values(msg, rules.header):
        if pattern.search(one_line(value)):
            return f"{rules.header}: {one_line(value)[:80]}"
    return None


def _dmarc(msg: Message, rules: SpamRules) -> str | None:
    for value in raw_values(msg, "authentication-results"):
        if not _dmarc_failed(value):
            continue
        match = _DMARC_POLICY.search(value)
        policy = match["policy"].lower() if match else ""
        if policy in rules.dmarc_policies:
            return f"DMARC fail, domain policy {policy}"
    return None


def _dmarc_failed(value: str) -> bool:
    lowered = value.lower()
    if "dmarc" not in lowered or "fail" not in lowered:
        return False  # authres takes a millisecond a header: most never name a DMARC failure
    import authres  # here: only mail with an Authentication-Results header needs it

    try:
        header = authres.AuthenticationResultsHeader.parse_value(one_line(value))
    except Exception:  # noqa: BLE001 - a malformed header from anyone: no verdict
        return False
    return any(r.method == "dmarc" and r.result == "fail" for r in header.results)
