"""Settings validation and rule lists: errors name the field or the line."""

import pytest

from appliance.services.dns.policy import Policy
from appliance.services.dns.rules import DomainMatcher, ListError, Rule, parse_list
from appliance.services.dns.settings import SettingsError, parse_settings

UP = [{"url": "udp://192.168.1.1"}]


def test_defaults_are_valid_and_home_friendly():
    s = parse_settings({"upstreams": UP})
    assert s.fake_ip.network == "100.96.0.0/11"
    assert s.rate_limit.per_client_qps >= 100  # AdGuard Home's 20 q/s is the complaint
    assert s.listen_addresses() == [("0.0.0.0", 53)]


@pytest.mark.parametrize("doc, field, words", [
    ({"upstreams": UP, "rules": [{"match": "suffix", "value": "a.b", "then": {"action": "block"}},
                                 {"match": "regex", "value": "(", "then": {"action": "block"}}]},
     "rules.1.value", "invalid regex"),
    ({"upstreams": UP, "rules": [{"match": "exact", "value": "bad_label-.x", "then": {"action": "direct"}}]},
     "rules.0", "invalid label"),
    ({"upstreams": UP, "rules": [{"match": "exact", "value": "a.b", "then": {"action": "fly"}}]},
     "rules.0.then", "action"),
    ({"upstreams": [{"url": "ftp://1.2.3.4"}]}, "upstreams.0.url", "unknown upstream scheme"),
    ({"upstreams": [{"url": "tls://dns.example"}]}, "upstreams.0", "address"),
    ({"upstreams": UP, "fake_ip": {"network": "fd00::/64"}}, "fake_ip.network", "IPv4"),
    ({"upstreams": UP, "colour": "blue"}, "colour", "Extra inputs"),
    ({"upstreams": UP, "groups": [{"name": "kids", "clients": ["nonsense"]}]},
     "groups.0.clients.0", "neither a MAC"),
    ({"upstreams": UP, "groups": [{"name": "kids", "lists": ["nope"]}]}, "groups.0.lists", "unknown list"),
    ({"upstreams": []}, "upstreams", "at least 1"),
])
def test_errors_are_keyed_by_field(doc, field, words):
    with pytest.raises(SettingsError) as info:
        parse_settings(doc)
    assert field in info.value.errors, info.value.errors
    assert words in info.value.errors[field]


def test_list_formats():
    text = """! AdBlock header
[Adblock Plus 2.0]
||ads.example^
@@||good.ads.example^
||tracker.example^$important
example.com##.banner
||x.example^$third-party
0.0.0.0 hosts.example other.example
127.0.0.1 localhost
plain.example
*.wild.example
"""
    parsed = parse_list(text)
    assert ("suffix", "ads.example") in parsed.entries
    assert parsed.important == [("suffix", "tracker.example")]
    assert ("exact", "hosts.example") in parsed.entries
    assert ("exact", "other.example") in parsed.entries
    assert ("suffix", "plain.example") in parsed.entries
    assert ("suffix", "wild.example") in parsed.entries
    assert parsed.exceptions == [("suffix", "good.ads.example")]
    assert parsed.skipped == 2
    assert not any(v == "localhost" for _, v in parsed.entries)


def test_rules_format_and_bad_line_names_line_and_reason():
    parsed = parse_list("suffix a.example\nkeyword ads\nregex ^x[0-9]+\\.\nexact b.example\n", "rules")
    assert parsed.entries == [("suffix", "a.example"), ("keyword", "ads"),
                              ("regex", "^x[0-9]+\\."), ("exact", "b.example")]
    with pytest.raises(ListError) as info:
        parse_list("suffix ok.example\n\n# comment\nwildcard x.example\n", "rules", source="mylist")
    assert info.value.line == 4 and "unknown match" in info.value.reason
    assert "mylist line 4" in str(info.value)
    with pytest.raises(ListError) as info:
        parse_list("good.example\nbad..example\n", "plain")
    assert info.value.line == 2 and "invalid label" in info.value.reason
    with pytest.raises(ListError) as info:
        parse_list("0.0.0.0 a.example\n999.1.1.1 b.example\n", "hosts")
    assert info.value.line == 2 and "not an IP" in info.value.reason


def test_matcher_first_match_wins_and_suffix_respects_labels():
    m = DomainMatcher([
        Rule("keyword", "ads", "k", "r0"),
        Rule("suffix", "example.com", "s", "r1"),
        Rule("exact", "ads.example.com", "e", "r2"),
        Rule("regex", r"^cdn[0-9]+\.", "x", "r3"),
    ])
    assert m.match("ads.example.com").action == "k"  # rule 0 comes first
    assert m.match("www.example.com").action == "s"
    assert m.match("example.com").action == "s"
    assert m.match("notexample.com") is None
    assert m.match("cdn7.other.org").action == "x"
    assert m.match("cdn.other.org") is None


def _policy(extra):
    return Policy(parse_settings({"upstreams": UP, **extra}), {})


def test_groups_by_ip_and_mac_inherit_and_keep_real():
    p = _policy({
        "rules": [{"match": "suffix", "value": "video.example", "then": {"action": "fake-ip", "route": "proxyA"}},
                  {"match": "suffix", "value": "pool.ntp.org", "then": {"action": "fake-ip"}}],
        "groups": [
            {"name": "kids", "clients": ["192.168.1.50", "AA-BB-CC-DD-EE-FF"],
             "rules": [{"match": "suffix", "value": "video.example", "then": {"action": "block"}}]},
            {"name": "guests", "clients": ["192.168.1.128/25"], "inherit": False},
        ],
    })
    assert p.group_of("192.168.1.50") == 1
    assert p.group_of("192.168.1.7", "aa:bb:cc:dd:ee:ff") == 1
    assert p.group_of("192.168.1.200") == 2
    assert p.group_of("192.168.1.7") == 0
    assert p.decide(0, "www.video.example").kind == "fake-ip"
    assert p.decide(0, "www.video.example").action.route == "proxyA"
    assert p.decide(1, "www.video.example").kind == "block"
    assert p.decide(2, "www.video.example").kind == "direct"  # does not inherit
    kept = p.decide(0, "0.pool.ntp.org")
    assert kept.kind == "direct" and "kept real" in kept.origin


@pytest.mark.parametrize("lines, blocked", [
    # AdGuard's order (its docs' `important` examples; the same answers from its engine,
    # @adguard/tsurlfilter's DnsEngine): an important line beats an exception, wherever it
    # stands in the list, and an important exception beats it.
    (["||ads.example^$important", "@@||ads.example^"], True),
    (["@@||ads.example^", "||ads.example^$important"], True),
    (["||example^$important", "@@||ads.example^"], True),
    (["||ads.example^$important", "@@||ads.example^$important"], False),
    (["||ads.example^", "@@||example^"], False),
])
def test_important_lines_beat_exceptions_as_in_adguard(lines, blocked):
    settings = parse_settings({"upstreams": UP, "lists": [
        {"name": "ads", "source": "/nonexistent", "format": "adblock"}]})
    p = Policy(settings, {"ads": parse_list("\n".join(lines), "adblock")})
    for name in ("ads.example", "x.ads.example"):
        assert (p.decide(0, name).kind == "block") is blocked, name


def test_lists_feed_policy_with_exceptions():
    settings = parse_settings({"upstreams": UP, "lists": [
        {"name": "ads", "source": "/nonexistent", "format": "adblock"}]})
    parsed = parse_list("||ads.example^\n@@||ok.ads.example^\n", "adblock")
    p = Policy(settings, {"ads": parsed})
    assert p.decide(0, "x.ads.example").kind == "block"
    assert p.decide(0, "ok.ads.example").kind == "direct"
    assert p.list_counts == {"ads": 2}


@pytest.mark.parametrize("pattern, words", [
    (r"^(a)\1$", "back-references"),  # needs backtracking: refused when read, not at query time
    (r"^(?=ads)", "look-around"),
    ("a" * 1001, "longer than 1000"),
])
def test_regex_rules_that_could_backtrack_are_refused_by_field(pattern, words):
    doc = {"upstreams": [{"url": "udp://192.0.2.1"}],
           "rules": [{"match": "regex", "value": pattern, "then": {"action": "block"}}]}
    with pytest.raises(SettingsError) as err:
        parse_settings(doc)
    assert "rules.0.value" in err.value.errors
    assert words in err.value.errors["rules.0.value"]
    with pytest.raises(ListError, match="line 2"):
        parse_list(f"suffix ok.example\nregex {pattern}\n", "rules", source="mylist")


def test_regex_rules_match_case_insensitively_in_linear_time():
    m = DomainMatcher([Rule("regex", r"^(a+)+$", "block", "r")])
    assert m.match("a" * 200) is not None
    assert m.match("A" * 30) is not None
    assert m.match("a" * 200 + "b") is None  # Python's re: 2^200 steps


def test_list_sources_plain_http_unpinned_outside_the_directory_or_altered_are_refused(tmp_path):
    import hashlib

    from appliance.services.dns.lists import ListStore
    from appliance.services.dns.settings import RuleListSettings

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "ads.txt").write_text("||ads.example^\n")
    (tmp_path / "secret").write_text("||x.example^\n")
    (lists / "escape.txt").symlink_to(tmp_path / "secret")
    store = ListStore(str(lists))

    def load(**item):
        ok = store.load(RuleListSettings(name="l", **item))
        return ok, store.status["l"].error

    assert load(source="ads.txt") == (True, None)
    assert load(source=str(lists / "ads.txt")) == (True, None)
    for source in (str(tmp_path / "secret"), "../secret", "escape.txt", "file:///etc/passwd"):
        ok, error = load(source=source)
        assert not ok and "outside the lists directory" in error, source
    ok, error = load(source="http://192.0.2.1/ads.txt")
    assert not ok and "use https, or pin the list with sha256" in error
    good = hashlib.sha256(b"||ads.example^\n").hexdigest()
    assert load(source="ads.txt", sha256=good) == (True, None)
    ok, error = load(source="ads.txt", sha256="0" * 64)
    assert not ok and f"content has sha256 {good}" in error
    with pytest.raises(SettingsError) as err:
        parse_settings({"upstreams": [{"url": "udp://192.0.2.1"}],
                        "lists": [{"name": "l", "source": "ads.txt", "sha256": "abc"}]})
    assert "64 hexadecimal" in err.value.errors["lists.0.sha256"]
