"""IPv6 clients of the DNS server: their groups, their names (AAAA) and rebinding by the home's prefix."""

import asyncio
import json

import dns.message
import dns.rcode
import dns.reversename
import dns.rrset
import pytest

from appliance.box.settings import SettingsError as BoxSettingsError, parse_settings as parse_box
from appliance.services.dns.cache import AnswerCache
from appliance.services.dns.localnames import LocalNames
from appliance.services.dns.neighbours import NeighbourTable, eui64_mac
from appliance.services.dns.policy import Policy
from appliance.services.dns.querylog import QueryLog
from appliance.services.dns.rebind import RebindGuard, read_ra_prefixes
from appliance.services.dns.resolver import Resolver
from appliance.services.dns.settings import SettingsError, parse_settings
from appliance.services.dns.upstream import Upstream, UpstreamSet

KID_MAC = "52:54:00:12:34:56"
KID_EUI64 = "2001:db8:1:0:5054:ff:fe12:3456"  # SLAAC from KID_MAC
KID_PRIVACY = "2001:db8:1:0:9c1d:42ab:77e0:1b2f"  # a temporary address of the same device
OTHER = "2001:db8:1:0:1111:2222:3333:4444"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class AddressUpstream(Upstream):
    """Answers every A/AAAA with the addresses `answers` holds for the name."""

    pipelined = False

    def __init__(self, answers):
        super().__init__("udp://192.0.2.53", name="u1")
        self.answers = answers
        self.asked = []

    async def exchange(self, wire, timeout):
        query = dns.message.from_wire(wire)
        self.asked.append(query.question[0].name.to_text().rstrip("."))
        q = query.question[0]
        r = dns.message.make_response(query)
        name = q.name.to_text().rstrip(".")
        wanted = [a for a in self.answers.get(name, []) if (":" in a) == (q.rdtype == 28)]
        if wanted:
            r.answer.append(dns.rrset.from_text(q.name, 60, "IN", q.rdtype, *wanted))
        return r.to_wire()


def make_resolver(doc, neighbours=None, names=None, answers=None):
    settings = parse_settings({"upstreams": [{"url": "udp://192.0.2.53"}], **doc})
    clock = Clock()
    table = neighbours or NeighbourTable(read6=lambda: [], read_arp=lambda ip: None, clock=clock)
    log = QueryLog()
    upstream = AddressUpstream(answers or {})
    resolver = Resolver(settings, Policy(settings, {}), UpstreamSet([upstream], clock=clock),
                        None, names or LocalNames("lan"), log, AnswerCache(clock=clock), clock=clock,
                        neighbour_mac=table.mac_of)
    resolver.upstream = upstream  # for the tests' eyes only
    return resolver, clock, log


def ask(resolver, name, rtype="A", client="192.168.1.10"):
    wire = asyncio.run(resolver.answer(dns.message.make_query(name, rtype).to_wire(), client, True))
    return dns.message.from_wire(wire)


def addresses(r):
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


BLOCK_VIDEO = [{"match": "suffix", "value": "video.example", "then": {"action": "block"}}]


def test_the_mac_inside_an_eui64_address_and_no_mac_inside_a_privacy_address():
    assert eui64_mac(KID_EUI64) == KID_MAC
    assert eui64_mac("fe80::5054:ff:fe12:3456") == KID_MAC
    assert eui64_mac(KID_PRIVACY) is None
    assert eui64_mac("::ffff:192.168.1.5") is None
    assert eui64_mac("2001:db8:1:0:301:2ff:fe00:1") is None  # would be a group MAC (01:...)
    assert eui64_mac("not an address") is None


def test_neighbour_table_is_read_once_per_second_for_unknown_addresses_and_refreshed_for_known():
    reads = []
    table_now = [(KID_EUI64.upper(), KID_MAC.upper())]
    clock = Clock()
    table = NeighbourTable(read6=lambda: reads.append(1) or table_now, read_arp=lambda ip: "aa:aa:aa:aa:aa:aa",
                           clock=clock)
    assert table.mac_of("192.168.1.10") == "aa:aa:aa:aa:aa:aa"  # IPv4 from the ARP table
    assert table.mac_of(KID_EUI64) == KID_MAC and len(reads) == 1
    assert table.mac_of("2001:DB8:1:0:5054:FF:FE12:3456%vproxy0") == KID_MAC and len(reads) == 1
    assert table.mac_of(OTHER) is None and table.mac_of(OTHER) is None and len(reads) == 1
    clock.t += 1.0
    table_now.append((OTHER, "02:00:00:00:00:01"))
    assert table.mac_of(OTHER) == "02:00:00:00:00:01" and len(reads) == 2
    table_now[:] = [(KID_EUI64, "02:00:00:00:00:09")]  # the address moved to another device
    clock.t += 29.0
    assert table.mac_of(KID_EUI64) == KID_MAC  # known, and read less than 30 s ago
    clock.t += 1.0
    assert table.mac_of(KID_EUI64) == "02:00:00:00:00:09"


def test_ipv6_clients_get_their_groups_policy_by_address_prefix_and_mac():
    doc = {"groups": [
        {"name": "kids", "clients": [KID_MAC], "rules": BLOCK_VIDEO},
        {"name": "guests", "clients": ["2001:db8:1:0:aaaa::/80"], "rules": BLOCK_VIDEO},
        {"name": "tv", "clients": ["2001:db8:1::77"], "rules": BLOCK_VIDEO},
    ]}
    known = [(KID_PRIVACY, KID_MAC)]
    table = NeighbourTable(read6=lambda: known, read_arp=lambda ip: None, clock=Clock())
    resolver, clock, log = make_resolver(doc, table, answers={"www.video.example": ["192.0.2.7"]})
    blocked = dns.rcode.NXDOMAIN
    # Default group: the upstream's answer.
    assert addresses(ask(resolver, "www.video.example", client=OTHER)) == ["192.0.2.7"]
    # By the MAC the neighbour table holds for a privacy address, which carries no MAC.
    assert ask(resolver, "www.video.example", client=KID_PRIVACY).rcode() == blocked
    # By prefix and by address (a /128).
    assert ask(resolver, "www.video.example", client="2001:db8:1::aaaa:0:0:5").rcode() == blocked
    assert ask(resolver, "www.video.example", "AAAA", client="2001:db8:1::77").rcode() == blocked
    assert [resolver.policy.groups[resolver.client_group(c)].name
            for c in (KID_PRIVACY, "2001:db8:1::aaaa:0:0:5", "2001:db8:1::77", OTHER)] == [
        "kids", "guests", "tv", "default"]


def test_a_new_eui64_client_is_in_its_macs_group_at_once_and_the_table_decides_once_it_knows():
    doc = {"groups": [{"name": "kids", "clients": [KID_MAC], "rules": BLOCK_VIDEO}]}
    known = []
    clock = Clock()
    table = NeighbourTable(read6=lambda: known, read_arp=lambda ip: None, clock=clock)
    resolver, _, _ = make_resolver(doc, table)
    resolver._clock = clock
    assert resolver.client_group(KID_EUI64) == 1  # the EUI-64 hint: first query already the kids'
    # The address was not the kid's device after all (any host may choose it): the table says so.
    known.append((KID_EUI64, "02:00:00:00:00:99"))
    clock.t += 1.5
    assert resolver.client_group(KID_EUI64) == 0


def test_group_clients_accept_ipv6_and_name_the_bad_field():
    ok = parse_settings({"upstreams": [{"url": "udp://192.0.2.53"}],
                         "groups": [{"name": "g", "clients": ["2001:DB8:1::/64", "2001:db8:1::5", "52-54-00-12-34-56"]}]})
    assert ok.groups[0].clients == ["2001:db8:1::/64", "2001:db8:1::5/128", KID_MAC]
    with pytest.raises(SettingsError) as e:
        parse_settings({"upstreams": [{"url": "udp://192.0.2.53"}],
                        "groups": [{"name": "g", "clients": ["2001:db8:1::/64", "2001:db8::1::5"]}]})
    assert list(e.value.errors) == ["groups.0.clients.1"]
    assert "2001:db8::1::5" in str(e.value) and "IPv4/IPv6" in str(e.value)


def test_box_document_with_an_ipv6_group_client_loads_and_a_bad_one_names_the_field():
    from tests.unit.box.test_plan import settings as box_settings
    doc = box_settings().model_dump(mode="json")
    doc["dns"] = {"upstreams": [{"url": "udp://192.168.1.1"}],
                  "groups": [{"name": "kids", "clients": [KID_MAC, "2001:db8:1::/64"]}]}
    assert parse_box(doc).dns.groups[0].clients == [KID_MAC, "2001:db8:1::/64"]
    doc["dns"]["groups"][0]["clients"].append("2001:db8:1::/129")
    with pytest.raises(BoxSettingsError) as e:
        parse_box(doc)
    assert list(e.value.errors) == ["dns.groups[0].clients[2]"]


def test_local_names_answer_aaaa_with_the_ipv6_neighbours_of_their_mac():
    neighbours = [(KID_EUI64, KID_MAC), (KID_PRIVACY, KID_MAC), ("fe80::5054:ff:fe12:3456", KID_MAC),
                  ("2001:db8:1::99", "02:00:00:00:00:99")]  # nobody's name: no name for it
    names = LocalNames("lan", [lambda: [("tablet", "192.168.1.30", KID_MAC)]],
                       static=[("nas", "192.168.1.20", "02:00:00:00:00:20"),
                               ("nas", "2001:db8:1::20", "02:00:00:00:00:20")],
                       neighbours=lambda: neighbours)
    resolver, _, _ = make_resolver({}, names=names)
    assert addresses(ask(resolver, "tablet.lan", "AAAA")) == [KID_EUI64, KID_PRIVACY]
    assert addresses(ask(resolver, "tablet.lan", "A")) == ["192.168.1.30"]
    assert addresses(ask(resolver, "nas.lan", "AAAA")) == ["2001:db8:1::20"]  # a static lease's ip6
    ptr = ask(resolver, dns.reversename.from_address(KID_EUI64).to_text(), "PTR")
    assert [rd.to_text() for rrset in ptr.answer for rd in rrset] == ["tablet.lan."]
    assert names.mac_of(KID_PRIVACY) == KID_MAC  # the group lookup's fallback too
    # The device takes a new temporary address: the next refresh has it.
    neighbours.append(("2001:db8:1:0:4242:4242:4242:4242", KID_MAC))
    names.refresh()
    assert "2001:db8:1:0:4242:4242:4242:4242" in names.forward("tablet.lan")


def test_a_lease_whose_name_another_device_holds_lends_that_name_no_ipv6():
    names = LocalNames("lan", [lambda: [("nas", "192.168.1.31", KID_MAC)]],
                       static=[("nas", "192.168.1.20", "02:00:00:00:00:20")],
                       neighbours=lambda: [(KID_EUI64, KID_MAC)])
    assert names.forward("nas.lan") == ["192.168.1.20"]


def test_a_broken_neighbour_source_costs_only_the_ipv6_names():
    def broken():
        raise OSError("netlink says no")
    names = LocalNames("lan", [lambda: [("tablet", "192.168.1.30", KID_MAC)]], neighbours=broken)
    assert names.forward("tablet.lan") == ["192.168.1.30"] and names.errors == ["neighbours: netlink says no"]


def write_ra(path, prefixes):
    path.write_text(json.dumps({"source": "fe80::4d:4fff:fe44:454d", "managed": False, "other": True,
                                "prefixes": prefixes, "dns": ["2001:db8:1::1"], "lifetime": 1800}) + "\n")


def test_the_home_prefix_from_the_modems_ra_is_read_and_checked(tmp_path):
    ra = tmp_path / "modem-ra.json"
    assert read_ra_prefixes(str(ra)) == ()  # no RA yet
    write_ra(ra, ["2001:db8:1::/64", "2001:db8:1::/64", "::/0", "2001::/16", "nonsense", "10.0.0.0/8"])
    assert read_ra_prefixes(str(ra)) == ("2001:db8:1::/64",)  # a default or /16 "LAN" would hide the internet
    ra.write_text("{truncated")
    assert read_ra_prefixes(str(ra)) == ()


def test_rebinding_refuses_the_home_prefix_ula_link_local_loopback_and_mapped_private(tmp_path):
    guard = RebindGuard(["2001:db8:1::/64"])
    import ipaddress
    private = ["2001:db8:1::20", "fd12:3456::1", "fe80::1", "::1", "::ffff:192.168.1.20", "::ffff:10.0.0.1"]
    public = ["2001:db8:ffff::10", "2606:4700::1111", "::ffff:198.51.100.1"]
    assert [guard.private(ipaddress.IPv6Address(a).packed) for a in private] == [True] * len(private)
    assert [guard.private(ipaddress.IPv6Address(a).packed) for a in public] == [False] * len(public)


def test_upstream_aaaa_inside_the_home_prefix_is_refused_and_a_new_prefix_is_followed(tmp_path):
    ra = tmp_path / "modem-ra.json"
    write_ra(ra, ["2001:db8:1::/64"])
    answers = {"evil.example": ["2001:db8:1::20"], "moved.example": ["2001:db8:2::20"],
               "www.example.test": ["2001:db8:ffff::10"], "ula.example": ["fd00::5"],
               "mapped.example": ["::ffff:192.168.1.20"], "printer.corp.example": ["2001:db8:1::30"]}
    resolver, clock, log = make_resolver({"rebind": {"prefixes_file": str(ra), "allow": ["corp.example"]}},
                                         answers=answers)
    resolver.set_lan_prefixes(read_ra_prefixes(str(ra)))
    refused = dns.rcode.REFUSED
    assert ask(resolver, "evil.example", "AAAA", client=OTHER).rcode() == refused
    assert ask(resolver, "ula.example", "AAAA").rcode() == refused
    assert ask(resolver, "mapped.example", "AAAA").rcode() == refused
    assert addresses(ask(resolver, "www.example.test", "AAAA", client=OTHER)) == ["2001:db8:ffff::10"]
    assert addresses(ask(resolver, "printer.corp.example", "AAAA")) == ["2001:db8:1::30"]  # rebind.allow
    assert addresses(ask(resolver, "moved.example", "AAAA")) == ["2001:db8:2::20"]  # cached now
    # The ISP hands the modem a new prefix: no apply, the next read of its RA follows it,
    # and an answer cached before that points into it is not given again; the rest stays cached.
    write_ra(ra, ["2001:db8:2::/64"])
    asked = len(resolver.upstream.asked)
    assert resolver.set_lan_prefixes(read_ra_prefixes(str(ra)))
    assert ask(resolver, "moved.example", "AAAA").rcode() == refused
    assert addresses(ask(resolver, "www.example.test", "AAAA", client=OTHER)) == ["2001:db8:ffff::10"]
    assert resolver.upstream.asked[asked:] == ["moved.example"]
    assert addresses(ask(resolver, "evil.example", "AAAA")) == ["2001:db8:1::20"]
    assert not resolver.set_lan_prefixes(read_ra_prefixes(str(ra)))


def test_the_query_log_and_statistics_record_ipv6_clients_by_address():
    resolver, clock, log = make_resolver({}, answers={"www.example.test": ["2001:db8:ffff::10"]})
    ask(resolver, "www.example.test", "AAAA", client=KID_PRIVACY)
    ask(resolver, "www.example.test", "AAAA", client=KID_PRIVACY)
    log.settle()
    entries = log.search(client=KID_PRIVACY)
    assert [(e["client"], e["qname"]) for e in entries] == [(KID_PRIVACY, "www.example.test")] * 2
    assert (KID_PRIVACY, 2) in log.stats()["top_clients"]
