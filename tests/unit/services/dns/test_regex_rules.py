"""Regex rules searched as one RE2 set give the rule that searching them one by one gives."""
import pytest
import re2
from hypothesis import given, settings, strategies as st

from appliance.services.dns import pattern
from appliance.services.dns.rules import DomainMatcher, Rule, parse_list

LABELS = ["ad", "ads", "cdn", "ntp", "track", "x", "mail", "example", "com", "net", "a1", "b22"]
OPTIONS = re2.Options()
OPTIONS.case_sensitive = False


def oracle(rules: list[Rule], name: str) -> Rule | None:
    """The first rule, in order, that matches: each kind checked on its own, each regex by RE2 alone."""
    for rule in rules:
        if rule.match == "exact" and name == rule.value:
            return rule
        if rule.match == "suffix" and (name == rule.value or name.endswith("." + rule.value)):
            return rule
        if rule.match == "keyword" and rule.value in name:
            return rule
        if rule.match == "regex" and re2.search(rule.value, name, OPTIONS):
            return rule
    return None


label = st.sampled_from(LABELS)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
regex = st.one_of(
    st.tuples(label, st.sampled_from(["[0-9]*\\.", "s?[0-9]+\\.", "\\.", "[a-z]*"])).map(lambda t: "^" + "".join(t)),
    st.tuples(label, label).map(lambda t: f"\\.{t[0]}\\.{t[1]}$"),
    label.map(lambda w: f"{w}[0-9]"),
    label.map(lambda w: f"^({w}|{w}s)\\.|\\.{w}$"),
)
rule = st.one_of(
    st.tuples(st.just("regex"), regex),
    st.tuples(st.sampled_from(["exact", "suffix"]), domain),
    st.tuples(st.just("keyword"), label),
)
name = st.lists(st.one_of(label, st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)), min_size=1, max_size=5).map(".".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(rule, min_size=1, max_size=40), st.lists(name, min_size=1, max_size=20))
def test_the_first_matching_rule_is_the_one_a_rule_by_rule_search_finds(kinds, names):
    rules = [Rule(kind, value, f"action {i}", f"rules.{i}") for i, (kind, value) in enumerate(kinds)]
    matcher = DomainMatcher(rules)
    for n in names:
        assert matcher.match(n) is oracle(rules, n), n


def test_a_hundred_regex_rules_are_one_automaton_and_the_first_match_wins():
    rules = [Rule("regex", rf"^banner{i}[a-z]*\.", "block", f"list.{i}") for i in range(100)]
    rules.insert(50, Rule("regex", r"^banner7", "keep", "rules.early"))
    rules.insert(0, Rule("suffix", "ok.example", "direct", "rules.0"))
    rules.insert(30, Rule("suffix", "mid.example", "direct", "rules.mid"))
    matcher = DomainMatcher(rules)
    assert matcher._regexes.combined
    assert matcher.match("banner7x.ads.example").origin == "list.7"  # before rules.early
    assert matcher.match("banner77.ads.example").origin == "rules.early"  # banner77 is after it
    assert matcher.match("banner7.ok.example").origin == "rules.0"
    assert matcher.match("banner77.mid.example").origin == "rules.mid"  # list.77 comes after it
    assert matcher.match("banner17.mid.example").origin == "list.17"
    assert matcher.match("BANNER99ZZ.ads.example").origin == "list.99"
    assert matcher.match("www.example") is None
    assert matcher._regexes.failures == 0


@pytest.mark.parametrize("memory, combined", [(64 << 10, True), (1 << 10, False)])
def test_regexes_too_big_for_one_automaton_are_split_then_searched_one_by_one(monkeypatch, memory,
                                                                             combined):
    # 64 KiB: RE2 refuses the 60 as one set, and takes them in smaller ones; 1 KiB: not even
    # MIN_CHUNK of them, which are then searched one at a time.
    monkeypatch.setattr(pattern, "SET_MEMORY", memory)
    rules = [Rule("regex", rf"^(ad|track)[0-9]*\.{w}[a-z]+\.", "block", f"list.{i}")
             for i, w in enumerate(["one", "two", "three"] * 20)]
    matcher = DomainMatcher(rules)
    assert matcher._regexes.combined is combined
    assert len(matcher._regexes._sets) > 1
    assert matcher.match("ad12.twoxyz.example").origin == "list.1"
    assert matcher.match("track.threeq.example").origin == "list.2"
    assert matcher.match("cdn.one.example") is None


@settings(max_examples=200, deadline=None)
@given(st.lists(rule, min_size=1, max_size=40), st.lists(name, min_size=1, max_size=20))
def test_in_sets_of_a_few_the_first_matching_rule_is_still_the_first(kinds, names):
    # Sets of 3: a name's first match may be in any set, and rules of other kinds between them.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pattern, "CHUNK", 3)
        rules = [Rule(kind, value, f"action {i}", f"rules.{i}") for i, (kind, value) in enumerate(kinds)]
        matcher = DomainMatcher(rules)
    for n in names:
        assert matcher.match(n) is oracle(rules, n), n


def test_five_thousand_adblock_wildcard_lines_are_searched_in_sets():
    lines = [f"||ad{i}*.tracker{i % 97}.example^" for i in range(5000)]
    parsed = parse_list("\n".join(lines), "adblock")
    matcher = DomainMatcher(Rule(m, v, "block", lines[i]) for i, (m, v) in enumerate(parsed.entries))
    assert matcher._regexes.combined  # one by one, they cost 15 ms a name
    assert matcher.match("x.ad4321-cdn.tracker53.example").origin == lines[4321]
    assert matcher.match("ad4999.tracker52.example").origin == lines[4999]
    assert matcher.match("ad12.tracker12.example").origin == lines[12]
    assert matcher.match("ad12.tracker14.example") is None
