"""The resolver end to end, with upstreams standing in for the network."""

import asyncio
import struct

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from appliance.services.dns.cache import AnswerCache
from appliance.services.dns.fakeip import FakeIpPool
from appliance.services.dns.localnames import LocalNames
from appliance.services.dns.policy import Policy
from appliance.services.dns.querylog import QueryLog
from appliance.services.dns.resolver import Resolver
from appliance.services.dns.settings import parse_settings
from appliance.services.dns.upstream import Upstream, UpstreamSet


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class ScriptedUpstream(Upstream):
    """Answers A queries with 192.0.2.x (TTL 60), big TXT for 'big.', or fails."""

    pipelined = False  # one `exchange` per query, no sockets

    def __init__(self, name="u1"):
        super().__init__("udp://192.0.2.53", name=name)
        self.mode = "ok"  # ok | refused | slow
        self.calls = 0

    async def exchange(self, wire, timeout):
        query = dns.message.from_wire(wire)
        self.calls += 1
        if self.mode == "refused":
            raise ConnectionRefusedError("port unreachable")
        if self.mode == "slow":
            await asyncio.sleep(timeout)
            raise asyncio.TimeoutError
        if self.mode == "bad-pointer":
            return bad_pointer_answer(wire)
        if self.mode == "full":  # an answer as big as a DNS message can be
            return full_answer(wire)
        r = dns.message.make_response(query)
        q = query.question[0]
        if q.name.to_text().startswith("nx."):
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif q.name.to_text().startswith("big.") and q.rdtype == dns.rdatatype.TXT:
            r.answer.append(dns.rrset.from_text_list(q.name, 60, "IN", "TXT",
                                                     [f'"{i:03d}{"x" * 60}"' for i in range(30)]))
        elif q.rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(q.name, 60, "IN", "A", f"192.0.2.{self.calls % 250}"))
        return r.to_wire(max_size=65535)


def bad_pointer_answer(query: bytes) -> bytes:
    """An A answer whose authority record's owner points into the middle of a label.

    The records are whole and the counts right, so the answer can be relayed
    as it came; the owner only breaks when the name is followed."""
    qid = query[:2]
    question = query[12:12 + query[12:].index(b"\0") + 5]
    a = b"\xc0\x0c" + b"\x00\x01\x00\x01" + b"\x00\x00\x00\x3c" + b"\x00\x04" + bytes([192, 0, 2, 7])
    ns = b"\xc0\x0d" + b"\x00\x02\x00\x01" + b"\x00\x00\x00\x3c" + b"\x00\x02" + b"\xc0\x0c"
    return qid + b"\x81\x80\x00\x01\x00\x01\x00\x01\x00\x00" + question + a + ns


def full_answer(query: bytes) -> bytes:
    """An A answer of 4094 records: for x.example 65531 bytes, which fit in a message, not behind a CNAME."""
    qid = query[:2]
    question = query[12:12 + query[12:].index(b"\0") + 5]
    n = 4094
    a = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04"
    records = b"".join(a + struct.pack(">I", 0x0B000000 + i) for i in range(n))
    return qid + b"\x81\x80\x00\x01" + struct.pack(">HHH", n, 0, 0) + question + records


DOC = {
    "upstreams": [{"url": "udp://192.0.2.53"}],
    "cache": {"stale_after": 0.05, "servfail_after": 0.3},
    "rules": [
        {"match": "suffix", "value": "ads.example", "then": {"action": "block"}},
        {"match": "suffix", "value": "null.example", "then": {"action": "block", "mode": "null"}},
        {"match": "suffix", "value": "video.example", "then": {"action": "fake-ip", "route": "proxyA"}},
        {"match": "exact", "value": "rw.example", "then": {"action": "rewrite", "answer": ["10.1.1.1", "fd00::1"]}},
        {"match": "exact", "value": "cn.example", "then": {"action": "rewrite", "answer": ["x.example"]}},
    ],
    "groups": [{"name": "kids", "clients": ["192.168.1.50"],
                "rules": [{"match": "suffix", "value": "video.example", "then": {"action": "block"}}]}],
}


@pytest.fixture
def env(tmp_path):
    settings = parse_settings(DOC)
    clock = Clock()
    upstream = ScriptedUpstream()
    ups = UpstreamSet([upstream], clock=clock)
    pool = FakeIpPool(settings.fake_ip.network, str(tmp_path / "f.db"))
    resolver = Resolver(settings, Policy(settings, {}), ups, pool,
                        LocalNames("lan", static=[("nas", "192.168.1.20", None)]), QueryLog(),
                        AnswerCache(clock=clock), clock=clock, neighbour_mac=lambda ip: None)
    return resolver, upstream, clock


def ask(resolver, name, rtype="A", client="192.168.1.10", udp=True, **kw):
    q = dns.message.make_query(name, rtype, **kw)
    wire = asyncio.run(resolver.answer(q.to_wire(), client, udp))
    return None if wire is None else dns.message.from_wire(wire)


def addresses(r):
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def test_block_fake_rewrite_local_direct(env):
    resolver, upstream, _ = env
    assert ask(resolver, "x.ads.example").rcode() == dns.rcode.NXDOMAIN
    assert addresses(ask(resolver, "null.example")) == ["0.0.0.0"]
    assert addresses(ask(resolver, "null.example", "AAAA")) == ["::"]
    fake = addresses(ask(resolver, "www.video.example"))
    assert fake[0].startswith("100.") and resolver.fakeips.lookup_ip(fake[0]).route == "proxyA"
    assert addresses(ask(resolver, "www.video.example")) == fake  # same on every query
    for rtype in ("AAAA", "HTTPS", "SVCB"):
        r = ask(resolver, "www.video.example", rtype)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert addresses(ask(resolver, "rw.example")) == ["10.1.1.1"]
    assert addresses(ask(resolver, "rw.example", "AAAA")) == ["fd00::1"]
    assert addresses(ask(resolver, "nas.lan")) == ["192.168.1.20"]
    assert ask(resolver, "nobody.lan").rcode() == dns.rcode.NXDOMAIN
    assert addresses(ask(resolver, "20.1.168.192.in-addr.arpa", "PTR")) == ["nas.lan."]
    assert upstream.calls == 0
    assert addresses(ask(resolver, "www.example.org")) == ["192.0.2.1"]
    stats = resolver.querylog.stats()
    assert stats["by_action"]["block"] == 3 and stats["by_action"]["fake-ip"] == 5


def test_relay_down_answers_real_addresses_briefly_then_fake_again(env):
    resolver, upstream, _ = env
    fake = addresses(ask(resolver, "www.video.example"))
    assert fake[0].startswith("100.")
    assert resolver.set_relay_up(False) is True and resolver.set_relay_up(False) is False
    real = ask(resolver, "www.video.example")
    assert addresses(real)[0].startswith("192.0.2.") and real.answer[0].ttl <= 10
    # Blocking is the DNS server's own: it holds whatever the relay does.
    assert ask(resolver, "x.ads.example").rcode() == dns.rcode.NXDOMAIN
    assert resolver.set_relay_up(True) is True
    assert addresses(ask(resolver, "www.video.example")) == fake  # the same fake address as before
    assert upstream.calls == 1


def test_groups_get_different_answers(env):
    resolver, _, _ = env
    assert ask(resolver, "www.video.example", client="192.168.1.50").rcode() == dns.rcode.NXDOMAIN
    assert addresses(ask(resolver, "www.video.example", client="192.168.1.10"))[0].startswith("100.")
    # and the fast path keeps them apart
    assert ask(resolver, "www.video.example", client="192.168.1.50").rcode() == dns.rcode.NXDOMAIN


def test_cache_fast_path_ages_ttl_and_expires(env):
    resolver, upstream, clock = env
    first = ask(resolver, "a.example.org")
    assert first.answer[0].ttl == 60 and upstream.calls == 1
    clock.t += 20
    again = ask(resolver, "a.example.org")
    assert again.answer[0].ttl == 40 and upstream.calls == 1
    assert resolver.fast_hits == 1
    clock.t += 41
    assert ask(resolver, "a.example.org").answer[0].ttl == 60 and upstream.calls == 2


def test_negative_answers_cached(env):
    resolver, upstream, _ = env
    assert ask(resolver, "nx.example.org").rcode() == dns.rcode.NXDOMAIN
    assert ask(resolver, "nx.example.org").rcode() == dns.rcode.NXDOMAIN
    assert upstream.calls == 1


def test_serve_stale_when_upstream_slow_then_servfail_when_down(env):
    resolver, upstream, clock = env
    ask(resolver, "s.example.org")
    clock.t += 61
    upstream.mode = "slow"
    stale = ask(resolver, "s.example.org")
    assert stale.rcode() == dns.rcode.NOERROR and stale.answer[0].ttl == 30  # RFC 8767 TTL
    upstream.mode = "refused"
    assert ask(resolver, "fresh.example.org").rcode() == dns.rcode.SERVFAIL
    calls = upstream.calls
    # All upstreams down: SERVFAIL at once without waiting (only a probe goes out).
    assert ask(resolver, "other.example.org").rcode() == dns.rcode.SERVFAIL
    assert upstream.calls <= calls + 1
    upstream.mode = "ok"
    clock.t += 1
    answers = [ask(resolver, "back.example.org").rcode() for _ in range(3)]
    assert answers[-1] == dns.rcode.NOERROR


def test_truncation_and_tcp_and_edns(env):
    resolver, _, _ = env
    small = ask(resolver, "big.example.org", "TXT")  # no EDNS: 512 bytes
    assert small.flags & dns.flags.TC and not small.answer
    edns = ask(resolver, "big.example.org", "TXT", use_edns=0, payload=4096)
    assert edns.flags & dns.flags.TC  # ours is 1232; the answer is ~2 KB
    tcp = ask(resolver, "big.example.org", "TXT", udp=False)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 30
    assert ask(resolver, "a.example.org", use_edns=0).payload == 1232


def test_error_answers(env):
    resolver, _, _ = env
    q = dns.message.make_query("a.example.org", "A")
    q.set_opcode(dns.opcode.STATUS)
    r = dns.message.from_wire(asyncio.run(resolver.answer(q.to_wire(), "192.168.1.10")))
    assert r.rcode() == dns.rcode.NOTIMP
    response = dns.message.make_response(dns.message.make_query("a.example", "A"))
    assert asyncio.run(resolver.answer(response.to_wire(), "192.168.1.10")) is None
    assert asyncio.run(resolver.answer(b"\x12\x34", "192.168.1.10")) is None
    formerr = asyncio.run(resolver.answer(b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x07garb", "x"))
    assert formerr[:2] == b"\x12\x34" and formerr[3] & 0xF == dns.rcode.FORMERR


_seeds = [dns.message.make_query(n, t, use_edns=e).to_wire()
          for n, t, e in (("www.video.example", "A", 0), ("x.ads.example", "AAAA", -1),
                          ("nas.lan", "A", 0), ("big.example.org", "TXT", -1))]


@st.composite
def mutated(draw):
    base = bytearray(draw(st.sampled_from(_seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(base) - 1)))
        if kind == "flip" and base:
            base[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del base[pos:pos + draw(st.integers(1, 8))]
        else:
            base[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(base)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=600), mutated()), udp=st.booleans())
def test_fuzz_never_raises(env, data, udp):
    resolver, _, _ = env
    wire = asyncio.run(resolver.answer(data, "192.168.1.10", udp))
    if wire is not None:
        assert wire[:2] == data[:2]  # answers carry the query's ID
        if udp:
            assert len(wire) <= 1232


@pytest.mark.parametrize("name", [
    "ctest.cdn.nintendo.net", "conntest.nintendowifi.net", "nncs1-lp1.n.n.srv.nintendo.net",
    "stun.np.ac.playstation.net", "ps5.np.playstation.net", "teredo.ipv6.microsoft.com",
    "xsts.auth.xboxlive.com", "www.xbox.com", "win10.ipv6.microsoft.com", "xbox.dlassets.microsoft.com",
    "xbox.core.eu.microsoft.com", "a.b.psn", "auth.api.sonyentertainmentnetwork.com",
    "nintendo.net", "pool.ntp.org", "time.windows.com", "captive.apple.com",
    "connectivitycheck.gstatic.com", "stun1.l.google.com",
])
def test_keep_real_list_beats_a_fake_ip_rule(tmp_path, name):
    """Names a console or a phone checks the network with get real answers even
    under a rule that fakes everything; other names under it are faked."""
    doc = dict(DOC, rules=[{"match": "regex", "value": ".", "then": {"action": "fake-ip"}}])
    settings = parse_settings(doc)
    upstream = ScriptedUpstream()
    resolver = Resolver(settings, Policy(settings, {}), UpstreamSet([upstream]),
                        FakeIpPool(settings.fake_ip.network, None), LocalNames("lan"), QueryLog(),
                        neighbour_mac=lambda ip: None)
    answer = ask(resolver, name)
    assert addresses(answer)[0].startswith("192.0.2.") and upstream.calls == 1
    entry = resolver.querylog.search(domain=name)[0]
    assert entry["action"] == "direct" and "kept real" in entry["origin"]
    assert addresses(ask(resolver, "www.example.org"))[0].startswith("100.")  # the rule still fakes
    builtin_off = parse_settings(dict(doc, fake_ip={"builtin_filter": False}))
    plain = Resolver(builtin_off, Policy(builtin_off, {}), UpstreamSet([upstream]),
                     FakeIpPool(settings.fake_ip.network, None), LocalNames("lan"), QueryLog(),
                     neighbour_mac=lambda ip: None)
    assert addresses(ask(plain, name))[0].startswith("100.")  # without the filter it is faked


def test_fake_ip_names_get_the_ipv6_twin_of_their_fake_address_when_network6_is_set(tmp_path):
    import ipaddress
    settings = parse_settings(dict(DOC, fake_ip={"network6": "2001:2::/48"}))
    resolver = Resolver(settings, Policy(settings, {}), UpstreamSet([ScriptedUpstream()]),
                        FakeIpPool(settings.fake_ip.network, None), LocalNames("lan"), QueryLog(),
                        neighbour_mac=lambda ip: None)
    v6 = addresses(ask(resolver, "www.video.example", "AAAA", client="2001:db8:1::5"))
    v4 = addresses(ask(resolver, "www.video.example"))
    offset = int(ipaddress.ip_address(v4[0])) - int(ipaddress.ip_address("100.96.0.0"))
    assert v6 == [str(ipaddress.ip_address("2001:2::") + offset)]
    # HTTPS/SVCB stay empty: the client connects to the addresses it got.
    assert not ask(resolver, "www.video.example", "HTTPS").answer


def test_fake_ipv6_range_must_hold_every_fake_ipv4_twin():
    from appliance.services.dns.settings import SettingsError
    with pytest.raises(SettingsError, match="network6"):
        parse_settings(dict(DOC, fake_ip={"network6": "2001:2::/120"}))


def _resolver(doc):
    settings = parse_settings(doc)
    upstream = ScriptedUpstream()
    return Resolver(settings, Policy(settings, {}), UpstreamSet([upstream]),
                    FakeIpPool(settings.fake_ip.network, None), LocalNames("lan"), QueryLog(),
                    neighbour_mac=lambda ip: None), upstream


@pytest.mark.parametrize("name", ["dns.google", "cloudflare-dns.com", "mozilla.cloudflare-dns.com",
                                  "dns.quad9.net", "abc123.dns.nextdns.io"])
def test_intercept_all_blocks_well_known_doh_names_unless_a_rule_says_otherwise(name):
    """A device that would carry its DNS past the box inside HTTPS cannot find its DoH server;
    a group's own rule for the name still decides, and `gateway` (the default) leaves them."""
    resolver, upstream = _resolver(dict(DOC, intercept="all"))
    assert ask(resolver, name).rcode() == dns.rcode.NXDOMAIN and upstream.calls == 0
    assert "DNS-over-HTTPS" in resolver.querylog.search(domain=name)[0]["origin"]
    kids = ask(resolver, name, client="192.168.1.50")  # a group inheriting the default's
    assert kids.rcode() == dns.rcode.NXDOMAIN
    allowed, upstream = _resolver(dict(DOC, intercept="all", rules=[
        {"match": "suffix", "value": name, "then": {"action": "direct"}}]))
    assert addresses(ask(allowed, name))[0].startswith("192.0.2.")
    default, upstream = _resolver(DOC)
    assert addresses(ask(default, name))[0].startswith("192.0.2.")


def test_intercept_all_answers_firefoxs_canary_nxdomain_whatever_the_block_mode():
    resolver, upstream = _resolver(dict(DOC, intercept="all", block_mode="null"))
    assert ask(resolver, "use-application-dns.net").rcode() == dns.rcode.NXDOMAIN
    assert upstream.calls == 0
    assert ask(resolver, "dns.google").answer[0][0].to_text() == "0.0.0.0"  # blocked the group's way


def test_a_rewrite_whose_target_answers_a_broken_name_is_servfail_and_the_server_goes_on(env):
    resolver, upstream, clock = env
    upstream.mode = "bad-pointer"
    r = ask(resolver, "cn.example")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.CNAME]
    upstream.mode = "ok"
    clock.t += 61  # the target's own answer is cached for its TTL, as it came
    r = ask(resolver, "cn.example")  # the rewrite's failure itself is not kept
    assert r.rcode() == dns.rcode.NOERROR and addresses(r)[0].startswith("192.0.2.")


def test_a_rewrite_whose_target_answer_does_not_fit_behind_the_cname_is_servfail_not_silence(env):
    # Found by `make fuzz` (dns_answer): the client got no answer at all and waited for its timeout.
    resolver, upstream, clock = env
    upstream.mode = "full"
    r = ask(resolver, "cn.example", udp=False)
    assert r.rcode() == dns.rcode.SERVFAIL
    assert [rrset.rdtype for rrset in r.answer] == [dns.rdatatype.CNAME]
    upstream.mode = "ok"
    clock.t += 61
    r = ask(resolver, "cn.example", udp=False)  # the failure is not kept
    assert r.rcode() == dns.rcode.NOERROR and addresses(r)[0].startswith("192.0.2.")
