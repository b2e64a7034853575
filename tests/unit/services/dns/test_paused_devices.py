"""A device that is off (paused, or by a schedule) gets every name blocked by the box's DNS,
from the files the datapath's pause comes from, and its answers come back when it is resumed."""

import json

import dns.rcode

from appliance.durable import write_atomic
from appliance.services.dns.localnames import LocalNames
from appliance.services.dns.neighbours import NeighbourTable
from appliance.services.dns.paused import OffDevices
from tests.unit.services.dns.test_ipv6_clients import Clock, addresses, ask, make_resolver

KID = ("192.168.1.20", "52:54:00:aa:bb:01")
OTHER = ("192.168.1.21", "52:54:00:aa:bb:02")
ANSWERS = {"www.example.test": ["192.0.2.10"], "printer.lan": []}


def resolver_with(macs: dict, doc=None):
    table = NeighbourTable(read6=lambda: [], read_arp=macs.get, clock=Clock())
    names = LocalNames("lan", [], [("printer", "192.168.1.50", "52:54:00:aa:bb:50")])
    return make_resolver(doc or {}, table, names=names, answers=ANSWERS)


def test_an_off_device_gets_every_name_blocked_and_its_answers_back_when_resumed():
    resolver, clock, log = resolver_with(dict((KID, OTHER)))
    assert addresses(ask(resolver, "www.example.test", client=KID[0])) == ["192.0.2.10"]
    # Paused while its group is remembered (30 s): blocked from the next query all the same.
    resolver.set_off_devices(frozenset({KID[1]}))
    for name, rtype in (("www.example.test", "A"), ("www.example.test", "AAAA"), ("printer.lan", "A"),
                        ("example.test", "MX")):
        got = ask(resolver, name, rtype, client=KID[0])
        assert got.rcode() == dns.rcode.NXDOMAIN and not got.answer, (name, rtype)
    # The others are untouched: the upstream's answer and the local name.
    assert addresses(ask(resolver, "www.example.test", client=OTHER[0])) == ["192.0.2.10"]
    assert addresses(ask(resolver, "printer.lan", client=OTHER[0])) == ["192.168.1.50"]
    resolver.set_off_devices(frozenset())
    assert addresses(ask(resolver, "www.example.test", client=KID[0])) == ["192.0.2.10"]
    assert addresses(ask(resolver, "printer.lan", client=KID[0])) == ["192.168.1.50"]


def test_an_off_device_in_a_group_by_mac_is_blocked_and_back_in_its_group_after():
    doc = {"block_mode": "null",
           "groups": [{"name": "kids", "clients": [KID[1]],
                       "rules": [{"match": "exact", "value": "www.example.test", "then": {"action": "block"}}]}]}
    resolver, clock, log = resolver_with(dict((KID, OTHER)), doc)
    resolver.set_off_devices(frozenset({KID[1]}))
    # block_mode null: the unspecified address, as for any blocked name.
    assert addresses(ask(resolver, "other.example.test", client=KID[0])) == ["0.0.0.0"]
    assert resolver.policy.groups[resolver.client_group(KID[0])].name == "paused"
    resolver.set_off_devices(frozenset())
    assert resolver.policy.groups[resolver.client_group(KID[0])].name == "kids"


def test_a_client_whose_mac_is_unknown_is_asked_again_within_a_quarter_second():
    macs = {}
    resolver, clock, log = resolver_with(macs)
    resolver._clock = clock
    resolver.set_off_devices(frozenset({KID[1]}))
    assert resolver.client_group(KID[0], clock()) == 0     # no MAC yet: not taken for off
    macs[KID[0]] = KID[1]                                  # the neighbour table learns it
    clock.t += 0.3
    assert resolver.client_group(KID[0], clock()) == resolver.policy.paused


def test_off_devices_are_the_union_of_the_files_and_follow_their_changes(tmp_path):
    paused, scheduled = tmp_path / "datapath/paused.json", tmp_path / "devices/scheduled.json"
    off = OffDevices([str(paused), str(scheduled)])
    assert not off.refresh() and off.macs == frozenset()           # neither file yet: nobody
    write_atomic(str(paused), json.dumps({"macs": ["52:54:00:AA:BB:01"]}))
    assert off.refresh() and off.macs == {KID[1]}
    assert not off.refresh()                                         # unchanged: not read again
    write_atomic(str(scheduled), json.dumps({"macs": [OTHER[1]]}))
    assert off.refresh() and off.macs == {KID[1], OTHER[1]}
    paused.write_text("{not json")                                   # half-written by hand: nobody from it
    assert off.refresh() and off.macs == {OTHER[1]}
    scheduled.unlink()
    assert off.refresh() and off.macs == frozenset()


def test_the_box_points_its_dns_at_the_files_its_datapath_pauses_from():
    from appliance.box.layout import Layout
    from appliance.box.plan import dns_settings
    from tests.unit.box.test_plan import settings as box_settings
    layout = Layout(state_dir="/srv/box")
    s = dns_settings(box_settings(), layout)
    assert s.paused_files == ["/srv/box/datapath/paused.json", "/srv/box/devices/scheduled.json"]
