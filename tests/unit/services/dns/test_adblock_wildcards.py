"""AdBlock masks with `*` block the names AdGuard blocks for them.

The expected names come from AdGuard's own matcher, not from this code:
tests/data/adguard-wildcards.json, written by tests/data/adguard_wildcards.py
(which says how it asks AdGuard's engine, and where that engine differs from
AdGuard Home's).
"""
import json
from pathlib import Path

import pytest

from appliance.services.dns.policy import Policy
from appliance.services.dns.rules import DomainMatcher, Rule, parse_list
from appliance.services.dns.settings import parse_settings

CORPUS = json.loads((Path(__file__).parents[3] / "data" / "adguard-wildcards.json").read_text())
NAMES = CORPUS["names"]
MATCHES = CORPUS["matches"]


def matcher_of(text: str) -> DomainMatcher | None:
    parsed = parse_list(text, "adblock")
    entries = (parsed.exceptions + parsed.important_exceptions if text.startswith("@@")
               else parsed.entries + parsed.important)
    assert parsed.count + parsed.skipped == 1, text
    return DomainMatcher(Rule(m, v, "block", text) for m, v in entries) if entries else None


def test_the_corpus_is_the_class_of_masks_lists_carry():
    assert len(MATCHES) > 200 and len(NAMES) > 400
    assert sum(1 for expected in MATCHES.values() if expected) > 180  # rules that do block something
    assert {"||*^", "||*.example.com^", "@@||*.example.com^", "||ads*.example.com^$important"} <= set(MATCHES)


@pytest.mark.parametrize("text", sorted(MATCHES))
def test_a_wildcard_rule_blocks_what_adguard_blocks(text):
    matcher = matcher_of(text)
    expected = MATCHES[text]
    if expected is None:  # AdGuard refuses it as too wide: skipped, never all of the home
        assert matcher is None
        return
    got = [i for i, name in enumerate(NAMES) if matcher is not None and matcher.match(name)]
    assert [NAMES[i] for i in got] == [NAMES[i] for i in expected]


def test_a_whole_list_of_them_gives_each_name_its_first_matching_line():
    texts = [t for t in MATCHES if MATCHES[t] and not t.startswith("@@") and "$" not in t]
    parsed = parse_list("\n".join(texts), "adblock")
    assert len(parsed.entries) == len(texts)
    matcher = DomainMatcher(Rule(m, v, "block", texts[i]) for i, (m, v) in enumerate(parsed.entries))
    assert matcher._regexes.combined  # hundreds of wildcard lines are one automaton
    for i, name in enumerate(NAMES):
        first = next((t for t in texts if i in MATCHES[t]), None)
        found = matcher.match(name)
        assert (found.origin if found else None) == first, name


def test_auto_format_reads_a_wildcard_line_as_adblock_and_the_policy_blocks_by_it():
    parsed = parse_list("ads*.example.com\n||track*.example.net^\n@@||trackok*.example.net^\n"
                        "plain.example\n*.wild.example\n")
    assert ("suffix", "plain.example") in parsed.entries and ("suffix", "wild.example") in parsed.entries
    settings = parse_settings({"upstreams": [{"url": "udp://192.0.2.1"}], "lists": [
        {"name": "ads", "source": "/nonexistent"}]})
    policy = Policy(settings, {"ads": parsed})
    assert policy.decide(0, "ads-1.example.com.evil").kind == "block"
    assert policy.decide(0, "x.tracker.example.net").kind == "block"
    assert policy.decide(0, "trackok1.example.net").kind == "direct"  # the list's exception
    assert policy.decide(0, "tracker.example.com").kind == "direct"
