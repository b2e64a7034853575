"""Packets: fields <-> frame bytes."""
import struct

import pytest

from appliance.switch.packet import Packet, PacketError, ipv4, mac, packet_from_text


def test_udp_ipv4_round_trip_and_checksums():
    p = Packet(in_port=1, dl_src=mac("02:00:00:00:00:01"), dl_dst=mac("18:00:00:00:00:e8"),
               dl_type=0x0800, nw_proto=17, nw_src=ipv4("192.168.1.70"), nw_dst=ipv4("192.168.1.1"),
               tp_src=40000, tp_dst=53, nw_ttl=64, payload=b"hello")
    b = p.to_bytes()
    assert len(b) == 14 + 20 + 8 + 5
    # The IPv4 header checksum verifies to zero.
    s = sum(struct.unpack("!10H", b[14:34]))
    assert (s + (s >> 16)) & 0xFFFF == 0xFFFF
    q = Packet.from_bytes(b, in_port=1)
    assert q.fields == {**p.fields, "nw_tos": 0}
    assert q.to_bytes() == b


@pytest.mark.parametrize("fields", [
    dict(dl_type=0x0806, arp_op=1, arp_spa=ipv4("10.0.0.1"), arp_tpa=ipv4("10.0.0.2"), arp_sha=5, arp_tha=0),
    dict(dl_type=0x0800, nw_proto=6, nw_src=1, nw_dst=2, tp_src=1, tp_dst=80, nw_ttl=9, nw_tos=0x10),
    dict(dl_type=0x0800, nw_proto=1, nw_src=1, nw_dst=2, icmp_type=8, icmp_code=0, nw_ttl=64),
    dict(dl_type=0x86DD, nw_proto=17, ipv6_src=1, ipv6_dst=2, tp_src=546, tp_dst=547, nw_ttl=255),
    dict(dl_type=0x86DD, nw_proto=58, ipv6_src=1, ipv6_dst=2, icmp_type=135, icmp_code=0, nw_ttl=255),
    dict(dl_type=0x0800, nw_proto=17, nw_src=1, nw_dst=2, tp_src=1, tp_dst=2, nw_ttl=1, vlan_tci=0x1000 | (5 << 13) | 7),
    dict(dl_type=0x88CC),
])
def test_every_protocol_round_trips(fields):
    p = Packet(in_port=3, dl_src=1, dl_dst=2, **fields)
    q = Packet.from_bytes(p.to_bytes(), in_port=3)
    assert q == p
    assert q.to_bytes() == p.to_bytes()


def test_l2_rewrite_keeps_the_rest_of_the_frame():
    raw = bytes.fromhex("ffffffffffff" "020000000001" "0800") + bytes.fromhex(
        "4500001c0001000040110000c0a80146c0a80101" "9c400035000800ff")
    p = Packet.from_bytes(raw, in_port=2)
    q = p.replace(dl_dst=mac("d6:00:00:00:00:bf"), vlan_tci=0x1005)
    b = q.to_bytes()
    assert b[:6] == bytes.fromhex("d600000000bf")
    assert b[12:16] == bytes.fromhex("81000005")
    assert b[18:] == raw[14:]  # the IP packet untouched, its (wrong) checksum too


def test_bad_input():
    with pytest.raises(PacketError, match="shorter than an Ethernet header"):
        Packet.from_bytes(b"\x00" * 10)
    with pytest.raises(PacketError, match="does not fit in 16 bits"):
        Packet(tp_dst=70000)
    with pytest.raises(PacketError, match="not a mask"):
        packet_from_text("ip,nw_dst=10.0.0.0/8")


def test_from_text_is_a_trace_flow():
    p = packet_from_text("in_port=2,udp,nw_dst=192.168.1.1,udp_dst=53")
    assert (p["in_port"], p["dl_type"], p["nw_proto"], p["tp_dst"], p["nw_ttl"]) == (2, 0x0800, 17, 53, 64)
    assert "udp_dst=53" in p.to_ofctl()
