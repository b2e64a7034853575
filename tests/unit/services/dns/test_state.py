"""Fake-IP pool, cache, query log, rate limit, local names, wire helpers."""

import ipaddress

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from appliance.services.dns.cache import AnswerCache
from appliance.services.dns.fakeip import FakeIpPool
from appliance.services.dns.localnames import LocalNames, kea_lease_file
from appliance.services.dns.querylog import QueryLog
from appliance.services.dns.ratelimit import RateLimiter
from appliance.services.dns.wire import parse_query, prepare, render


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_fake_ip_stable_two_way_and_in_pool(tmp_path):
    pool = FakeIpPool("100.96.0.0/11", str(tmp_path / "f.db"))
    a = pool.allocate("a.example", "proxyA")
    assert ipaddress.ip_address(a) in ipaddress.ip_network("100.96.0.0/11")
    assert pool.allocate("a.example", "proxyA") == a
    assert pool.lookup_ip(a).domain == "a.example" and pool.lookup_ip(a).route == "proxyA"
    assert pool.lookup_domain("A.Example.").ip == a
    other = FakeIpPool("100.96.0.0/11")  # no database: the hash alone is stable
    assert other.allocate("a.example") == a


def test_a_recycled_address_is_named_once_and_no_longer_holds_its_old_name(tmp_path, monkeypatch):
    import appliance.services.dns.fakeip as fakeip

    pool = FakeIpPool("10.9.0.0/29", max_entries=2)
    a, b = pool.allocate("a.test"), pool.allocate("b.test")
    key = int(ipaddress.ip_address(a))
    assert pool.holds(key, "a.test") and not pool.holds(key, "b.test")
    generation = pool.generation
    pool.allocate("c.test")  # recycles a's address: one address changed, not the generation
    assert pool.take_recycled() == [key] and pool.take_recycled() == []
    assert not pool.holds(key, "a.test")
    assert pool.holds(int(ipaddress.ip_address(b)), "b.test")
    assert pool.generation == generation
    # Recycles nobody takes are not kept without end: past the limit, every answer is forgotten.
    monkeypatch.setattr(fakeip, "RECYCLED_KEPT", 3)
    for i in range(4):
        pool.allocate(f"n{i}.test")
    assert pool.generation == generation + 1 and len(pool.take_recycled()) == 1


def test_fake_ip_probing_persisted_across_restart(tmp_path):
    db = str(tmp_path / "f.db")
    pool = FakeIpPool("10.9.0.0/29", db)  # 6 usable addresses: collisions certain
    names = [f"n{i}.example" for i in range(6)]
    first = {n: pool.allocate(n) for n in names}
    assert len(set(first.values())) == 6
    pool.close()
    again = FakeIpPool("10.9.0.0/29", db)
    # Allocated in the reverse order, probing alone would give other answers.
    assert {n: again.allocate(n) for n in reversed(names)} == first
    assert "10.9.0.0" not in first.values() and "10.9.0.7" not in first.values()


def test_fake_ip_lru_recycling_skips_pinned(tmp_path):
    clock = Clock()
    pool = FakeIpPool("10.9.0.0/29", str(tmp_path / "f.db"), max_entries=3, clock=clock)
    ips = {}
    for name in ("a", "b", "c"):
        clock.t += 1
        ips[name] = pool.allocate(name)
    clock.t += 1
    pool.allocate("a")  # a is now the most recently used; b is the LRU
    assert pool.pin(ips["b"])
    d = pool.allocate("d")  # must recycle c (b is pinned)
    assert pool.lookup_domain("c") is None
    assert pool.lookup_domain("b").ip == ips["b"]
    assert pool.recycled == 1
    pool.pin(ips["a"]), pool.pin(d)
    assert pool.allocate("e") is None  # every address pinned: nothing recycled
    pool.unpin(ips["b"])
    assert pool.allocate("e") is not None and pool.lookup_domain("b") is None
    assert not pool.pin("10.9.0.6") or pool.lookup_ip("10.9.0.6") is not None


def _answer(name, ttl, rcode=dns.rcode.NOERROR, soa=None):
    q = dns.message.make_query(name, "A")
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if ttl is not None:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", "192.0.2.1"))
    if soa:
        r.authority.append(dns.rrset.from_text("example.", soa[0], "IN", "SOA",
                                               f"ns. h. 1 2 3 4 {soa[1]}"))
    return prepare(r.to_wire())


def test_cache_ttl_negative_and_stale():
    clock = Clock()
    cache = AnswerCache(size=10, negative_ttl=600, stale_max_age=100, clock=clock)
    cache.put(("a.example", 1, 1), _answer("a.example.", 30))
    assert cache.get(("a.example", 1, 1))[1] is True
    assert cache.lookup(("a.example", 1, 1), clock.t) == (cache.get(("a.example", 1, 1))[0], True)
    clock.t += 31
    entry, fresh = cache.get(("a.example", 1, 1))
    assert not fresh and entry.lifetime == 30
    assert cache.lookup(("a.example", 1, 1), clock.t) == (entry, False)  # stale, still there
    clock.t += 100
    assert cache.get(("a.example", 1, 1)) is None
    # Negative: the SOA's minimum (RFC 2308), capped by negative_ttl.
    cache.put(("n.example", 1, 1), _answer("n.example.", None, dns.rcode.NXDOMAIN, soa=(3600, 120)))
    assert cache.get(("n.example", 1, 1))[0].lifetime == 120
    cache.put(("m.example", 1, 1), _answer("m.example.", None, dns.rcode.NXDOMAIN))
    assert cache.get(("m.example", 1, 1))[0].lifetime == 30  # no SOA: a short while anyway
    assert cache.put(("s.example", 1, 1), _answer("s.example.", None, dns.rcode.SERVFAIL)) is False
    assert cache.get(("s.example", 1, 1)) is None


def test_cache_is_bounded_lru():
    cache = AnswerCache(size=2, clock=Clock())
    for n in "abc":
        cache.put((n, 1, 1), _answer(f"{n}.example.", 60))
    assert len(cache) == 2 and cache.get(("a", 1, 1)) is None


def test_query_log_bounded_by_size_and_age_searchable_with_stats():
    clock = Clock()
    log = QueryLog(max_entries=3, max_age=60, clock=clock)
    log.add("10.0.0.2", "ads.example", 1, "block", 3)
    log.add("10.0.0.2", "a.example", 1, "direct", 0)
    log.add("10.0.0.3", "a.example", 1, "direct", 0)
    log.add("10.0.0.3", "b.example", 28, "fake-ip", 0)
    assert len(log) == 3 and log.total == 4
    stats = log.stats()
    assert stats["top_domains"][0] == ("a.example", 2)
    assert stats["blocked"] == 0 and stats["blocked_total"] == 1
    assert [e["qname"] for e in log.search(client="10.0.0.3")] == ["b.example", "a.example"]
    assert log.search(domain="b.ex")[0]["qtype"] == "AAAA"
    assert log.search(action="fake-ip")[0]["client"] == "10.0.0.3"
    clock.t += 61
    log.add("10.0.0.4", "c.example", 1, "block", 3)
    assert len(log) == 1
    assert log.stats()["blocked_share"] == 1.0
    assert log.stats()["top_clients"] == [("10.0.0.4", 1)]


def test_rate_limit_per_client():
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, clock=clock)
    assert all(limiter.allow("a") for _ in range(5))
    assert not limiter.allow("a")
    assert limiter.allow("b")  # another client is not affected
    clock.t += 0.5
    assert sum(limiter.allow("a") for _ in range(10)) == 5
    assert RateLimiter(0, 1).allow("x")


def test_local_names_from_kea_leases_and_static(tmp_path):
    csv = tmp_path / "leases.csv"
    csv.write_text(
        "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n"
        "192.168.1.30,aa:bb:cc:00:00:01,,3600,2000,1,0,0,old-name,0,,0\n"
        "192.168.1.30,aa:bb:cc:00:00:01,,3600,9000,1,0,0,Laptop.lan.,0,,0\n"
        "192.168.1.31,aa:bb:cc:00:00:02,,3600,500,1,0,0,expired,0,,0\n"
        "192.168.1.32,aa:bb:cc:00:00:03,,3600,9000,1,0,0,My Phone,0,,0\n")
    names = LocalNames("lan", [kea_lease_file(str(csv), clock=lambda: 1000)],
                       static=[("nas", "192.168.1.20", None)])
    assert names.forward("laptop.lan") == ["192.168.1.30"]
    assert names.forward("my-phone.lan") == ["192.168.1.32"]
    assert names.forward("expired.lan") == []
    assert names.forward("old-name.lan") == []
    assert names.forward("nas.lan") == ["192.168.1.20"]
    assert names.forward("example.com") is None
    assert names.reverse("30.1.168.192.in-addr.arpa") == "laptop.lan"
    names.sources.append(lambda: [("tv", "192.168.1.40", None)])
    names.refresh()
    assert names.forward("tv.lan") == ["192.168.1.40"]


def test_a_lease_hostname_that_is_not_utf8_costs_only_its_own_name(tmp_path):
    # Found by `make fuzz` (kea_leases): one such byte in Kea's lease file made
    # reading the file fail, and every lease lost its name.
    csv = tmp_path / "leases.csv"
    csv.write_bytes(
        b"address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id\n"
        b"192.168.1.30,aa:bb:cc:00:00:01,,3600,9000,1,0,0,laptop,0,,0\n"
        b"192.168.1.31,aa:bb:cc:00:00:02,,3600,9000,1,0,0,tv\x9e\xff,0,,0\n")
    names = LocalNames("lan", [kea_lease_file(str(csv), clock=lambda: 1000)])
    assert names.errors == []
    assert names.forward("laptop.lan") == ["192.168.1.30"]
    assert names.reverse("31.1.168.192.in-addr.arpa") == "tv.lan"


def test_wire_helpers_agree_with_dnspython():
    q = dns.message.make_query("Www.Example.com", "A", use_edns=0, payload=4096, want_dnssec=True)
    head = parse_query(q.to_wire())
    assert head.qid == q.id and head.qtype == 1 and head.edns == 4096
    assert head.key == dns.message.make_query("www.example.com", "A").question[0].name.to_wire() + b"\x00\x01\x00\x01"
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text("www.example.com.", 300, "IN", "A", "192.0.2.1", "192.0.2.2"))
    r.authority.append(dns.rrset.from_text("example.com.", 600, "IN", "NS", "ns.example.com."))
    prepared = prepare(r.to_wire())
    assert sorted(t for _, t in prepared.ttls) == [300, 300, 600] and prepared.answer_ttl == 300
    # Another client asking in other letters, with another ID, 100 s later.
    other = dns.message.make_query("WWW.example.COM", "A", use_edns=0, payload=1232)
    q2 = parse_query(other.to_wire())
    wire = render(q2.qid, q2.flags, q2.question, q2.edns, prepared, prepared.body_at(100),
                  b"\x00\x00\x29\x04\xd0" + b"\x00" * 6, 1232)
    patched = dns.message.from_wire(wire)
    assert patched.id == other.id and patched.question[0].name.to_text() == "WWW.example.COM."
    assert patched.answer[0].ttl == 200 and patched.authority[0].ttl == 500
    assert sorted(rd.address for rd in patched.answer[0]) == ["192.0.2.1", "192.0.2.2"]
    assert patched.opt is not None and patched.payload == 1232  # ours, not the upstream's
    plain = parse_query(dns.message.make_query("www.example.com", "A").to_wire())
    assert dns.message.from_wire(render(plain.qid, plain.flags, plain.question, plain.edns, prepared,
                                        prepared.body, b"", 512)).opt is None
    tiny = render(plain.qid, plain.flags, plain.question, plain.edns, prepared, prepared.body, b"",
                  40)  # does not fit: TC, no records
    assert dns.message.from_wire(tiny).flags & dns.flags.TC and not dns.message.from_wire(tiny).answer
    assert parse_query(b"\x00" * 11) is None
    assert parse_query(r.to_wire()) is None  # an answer is not a query
