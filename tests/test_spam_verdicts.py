"""The filters' verdicts in the headers: SpamAssassin, Rspamd, another filter, DMARC."""

from __future__ import annotations

import pytest

from parsers import SpamRules, parse
from tests.mailbuilder import mail


def flagged(**headers: str) -> bytes:
    return mail("Oferta <ventas@ofertas.example>", "Gane dinero", "Haga clic.", headers=headers)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Spam-Flag": "YES"}, "SpamAssassin: X-Spam-Flag YES"),
        (
            {"X-Spam-Status": "Yes, score=7.1 required=5.0 tests=BAYES_99,URIBL_BLACK"},
            "SpamAssassin: score 7.1",
        ),
        ({"X-Rspamd-Action": "reject"}, "Rspamd: action reject"),
        ({"X-Rspamd-Action": "add header"}, "Rspamd: action add header"),
        (
            {"X-Spamd-Result": "default: True [16.20 / 15.00]; BAYES_SPAM(5.10)"},
            "Rspamd: score 16.20",
        ),
        (
            {
                "Authentication-Results": "mx.clinica.example; spf=fail"
                " smtp.mailfrom=banco.example; dmarc=fail (p=REJECT sp=REJECT dis=NONE)"
                " header.from=banco.example"
            },
            "DMARC fail, domain policy reject",
        ),
    ],
)
def test_the_filters_verdict_marks_spam(headers: dict[str, str], reason: str) -> None:
    assert parse(flagged(**headers)).spam_reason == reason


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Spam-Flag": "NO", "X-Spam-Status": "No, score=1.2 required=5.0"},
        {"X-Rspamd-Action": "no action", "X-Spamd-Result": "default: False [2.00 / 15.00]"},
        {"Authentication-Results": "mx.clinica.example; dmarc=fail (p=NONE) header.from=x.example"},
        {
            "Authentication-Results": "mx.clinica.example; dmarc=pass (p=REJECT)"
            " header.from=x.example"
        },
        {"Authentication-Results": "garbage ;;; = ("},
        {},
    ],
)
def test_a_clean_or_unsure_verdict_is_not_spam(headers: dict[str, str]) -> None:
    assert parse(flagged(**headers)).spam_reason is None


def test_our_own_threshold_and_another_filters_header() -> None:
    raw = flagged(**{"X-Spam-Status": "No, score=4.5 required=5.0", "X-Barracuda-Spam": "Yes"})
    assert parse(raw).spam_reason is None
    assert parse(raw, spam=SpamRules(threshold=4.0)).spam_reason == "SpamAssassin: score 4.5"
    rules = SpamRules(header="X-Barracuda-Spam", pattern=r"^yes")
    assert parse(raw, spam=rules).spam_reason == "X-Barracuda-Spam: Yes"
