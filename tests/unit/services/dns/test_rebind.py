"""The rebinding guard's address check against Python's own `ipaddress` (an independent oracle)."""
import ipaddress

import dns.message
import dns.rdatatype
import dns.rrset
from hypothesis import given, strategies as st

from appliance.services.dns.rebind import PRIVATE_NETWORKS, RebindGuard
from appliance.services.dns.wire import answer_addresses, prepare

EXTRA = ("192.0.2.0/25", "2001:db8:1::/64")  # the LAN's own prefixes, as the resolver adds them
NETWORKS = [ipaddress.ip_network(n) for n in (*PRIVATE_NETWORKS, *EXTRA)]
GUARD = RebindGuard(EXTRA)


def oracle(packed: bytes) -> bool:
    address = ipaddress.ip_address(packed)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in n for n in NETWORKS if n.version == address.version)


# Addresses near every network's edges, mapped IPv4 among them, and anything at all.
near = st.sampled_from(NETWORKS).flatmap(lambda n: st.integers(
    int(n.network_address) - 2, int(n.broadcast_address) + 2).map(
    lambda i, v=n.version: (i % (1 << (32 if v == 4 else 128))).to_bytes(4 if v == 4 else 16, "big")))
mapped = st.integers(0, 0xffffffff).map(lambda i: ((0xffff << 32) | i).to_bytes(16, "big"))
anything = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))


@given(st.one_of(near, mapped, anything, near.map(lambda b: (b if len(b) == 16
                                                            else bytes(10) + b"\xff\xff" + b))))
def test_an_address_is_private_exactly_when_ipaddress_puts_it_in_a_guarded_network(packed):
    assert GUARD.private(packed) == oracle(packed)


def test_the_edges_of_the_ranges():
    inside = ["10.0.0.0", "10.255.255.255", "100.64.0.1", "192.0.2.127", "::ffff:172.31.255.255", "fe80::1",
              "fdff:ffff::1", "2001:db8:1::ffff"]
    outside = ["9.255.255.255", "11.0.0.0", "100.128.0.0", "192.0.2.128", "::ffff:172.32.0.0", "fec0::1",
               "2001:db8:2::1", "::2"]
    assert [GUARD.private(ipaddress.ip_address(a).packed) for a in inside] == [True] * len(inside)
    assert [GUARD.private(ipaddress.ip_address(a).packed) for a in outside] == [False] * len(outside)


# The guard judges the addresses `prepare` collected while it read an upstream's answer: exactly the
# A and AAAA records of the answer section, as dnspython reads the same wire (not the authority's
# or the additional section's, which no client connects to).
v4 = st.integers(0, 0xffffffff).map(lambda i: str(ipaddress.IPv4Address(i)))
v6 = st.integers(0, (1 << 128) - 1).map(lambda i: str(ipaddress.IPv6Address(i)))
record = st.one_of(st.tuples(st.just("A"), v4), st.tuples(st.just("AAAA"), v6),
                   st.tuples(st.just("CNAME"), st.just("other.example.")),
                   st.tuples(st.just("TXT"), st.just('"1.2.3.4"')))


@given(st.lists(record, max_size=6), st.lists(record, max_size=3), st.booleans())
def test_the_addresses_prepare_reads_are_the_answer_sections_a_and_aaaa_records(answer, extra, edns):
    query = dns.message.make_query("www.example.", "A", use_edns=0 if edns else None)
    response = dns.message.make_response(query)
    for i, (rtype, text) in enumerate(answer):
        response.answer.append(dns.rrset.from_text(f"n{i}.example.", 300, "IN", rtype, text))
    for i, (rtype, text) in enumerate(extra):
        response.additional.append(dns.rrset.from_text(f"x{i}.example.", 300, "IN", rtype, text))
    wire = response.to_wire()
    expected = [rd.to_wire() for rrset in dns.message.from_wire(wire).answer for rd in rrset
                if rd.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
    prepared = prepare(wire)
    assert list(prepared.addresses) == expected
    assert answer_addresses(prepared) == expected
    assert GUARD.refuses("www.example", prepared.addresses) == any(map(oracle, expected))
