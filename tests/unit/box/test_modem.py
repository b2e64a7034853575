"""Following the modem: when a MAC seen is the gateway's, when to ask, and the re-apply it leads to."""
import pytest

from appliance.box.fake import FakeServices, FakeSwitch, MemFs
from appliance.box.modem import PROBE_AT, WINDOW, Learned, Learner, LinkWatch
from appliance.box.placement import Placement
from appliance.box.plan import MODEM_WATCH, Layout
from appliance.box.runtime import Box
from appliance.box.settings import default_settings
from appliance.kernel import FakeKernel

OLD, NEW = "02:4d:4f:44:45:4d", "f4:1e:57:00:00:02"
UP_MAC, DOWN_MAC = "52:54:00:00:05:00", "52:54:00:00:01:00"


# ---------------------------------------------------------------- what is believed

def test_one_arp_frame_from_the_gateway_address_is_believed():
    learner = Learner(OLD)
    assert learner.saw(NEW.upper(), arp=True, now=1.0) == NEW
    assert learner.current == NEW
    assert learner.saw(NEW, arp=True, now=2.0) is None  # nothing new


def test_ip_frames_with_another_mac_are_never_believed_two_within_the_window_raise_doubt():
    learner = Learner(OLD)
    assert learner.saw(NEW, arp=False, now=0.0) is None and not learner.doubt
    assert learner.saw(NEW, arp=False, now=WINDOW + 1) is None and not learner.doubt  # the first is too old
    assert learner.saw(NEW, arp=False, now=WINDOW + 2) is None and learner.doubt
    assert learner.current == OLD
    assert learner.saw(NEW, arp=True, now=WINDOW + 3) == NEW  # the gateway's ARP decides


def test_the_current_mac_still_speaking_forgets_the_candidates():
    learner = Learner(OLD)
    learner.saw(NEW, arp=False, now=0.0)
    learner.saw(OLD, arp=False, now=0.5)
    assert learner.saw(NEW, arp=False, now=1.0) is None
    assert learner.current == OLD


def test_a_first_mac_is_believed_when_none_was_known():
    assert Learner(None).saw(NEW, arp=True, now=0.0) == NEW


def test_the_kept_record_reads_back_and_garbage_is_nothing():
    kept = Learned("192.168.1.1", NEW, "arp", 5.0)
    assert Learned.from_json(kept.to_json()) == kept
    assert Learned.from_json("{\"ip\": ") is None and Learned.from_json(None) is None


# ---------------------------------------------------------------- when to ask

def test_asks_only_after_a_link_change_and_stops_when_the_gateway_spoke():
    link = LinkWatch()
    assert not link.update(True, 7, 0.0)  # the first reading is no change
    assert not any(link.due(t) for t in (1.0, 10.0))
    assert not link.update(False, 7, 11.0)  # down: nothing to ask on
    assert link.update(True, 7, 12.0)  # back: asks are due
    assert not link.due(12.0)
    assert link.due(12.0 + PROBE_AT[0]) and not link.due(12.0 + PROBE_AT[0])
    link.heard()
    assert not link.due(100.0)


def test_doubt_asks_like_a_link_change_at_most_once_a_window():
    link = LinkWatch()
    link.update(True, 7, 0.0)
    assert link.ask(1.0)
    assert not link.due(1.0) and link.due(1.0 + PROBE_AT[0])
    assert not link.ask(2.0)  # asks pending
    link.heard()
    assert not link.ask(1.0 + WINDOW - 0.1)  # quiet for a window
    assert link.ask(1.0 + WINDOW)


def test_a_flap_between_two_reads_is_a_link_change():
    link = LinkWatch()
    link.update(True, 7, 0.0, changes=2)
    assert not link.update(True, 7, 1.0, changes=2)
    assert link.update(True, 7, 2.0, changes=4)  # lost and back since the last read


def test_another_nic_under_the_uplinks_name_is_a_link_change():
    link = LinkWatch()
    link.update(True, 7, 0.0)
    assert link.update(True, 9, 1.0)


# ---------------------------------------------------------------- the box follows

def settings(**gateway):
    return default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", **gateway})


@pytest.fixture
def box(tmp_path):
    k = FakeKernel()
    k.add_netns("lab-box")
    k.add_veth("lab-box", "enp5s0", None, "m0", mac=UP_MAC)
    k.add_veth("lab-box", "enp1s0", None, "h0", mac=DOWN_MAC)
    k.neighbours = {("lab-box", "192.168.1.1"): OLD}
    return Box(placement=Placement.inside("lab-box"),
               layout=Layout(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run")),
               kernel=k, switch=FakeSwitch(), services=FakeServices(), fs=MemFs())


def gw0_mac(box):
    return {l.name: l.mac for l in box.kernel.links("lab-box-gw")}["gw0"]


def learn(box, mac):
    box.fs.write(box.layout.gateway_file, Learned("192.168.1.1", mac, "arp").to_json())


def test_a_learned_mac_is_applied_to_the_virtual_gateway_flows_guards_and_kea(box):
    assert box.apply(settings()).ok
    before = box.applied_plan()
    kea_before = box._services.running["dhcp4"].revision
    assert box.follow_gateway() is None  # nothing learned: nothing to do
    learn(box, NEW)
    res = box.follow_gateway()
    assert res is not None and res.ok, res and res.error
    assert gw0_mac(box) == NEW
    flows = box.applied_plan().switch.flow_text()
    assert NEW.replace(":", "") in flows.replace(":", "") and OLD not in flows
    host_table = next(o for o in box.applied_plan().kernel if getattr(o, "family", "") == "inet")
    assert f"ether saddr {NEW}" in host_table.body
    assert box._services.running["dhcp4"].revision != kea_before  # Kea sends with gw0's new MAC
    assert box.applied().observed.gateway_mac == NEW and before != box.applied_plan()
    # The home is told at once, from gw0, as the gateway.
    assert ("arp_announce", "lab-box-gw", "gw0", "192.168.1.1") in box.kernel.calls
    assert box.follow_gateway() is None  # followed: nothing more


def test_every_later_apply_plans_with_the_learned_mac_a_rollback_too(box):
    assert box.apply(settings()).ok
    learn(box, NEW)
    # The console's apply, or a rollback to earlier settings, planned after the modem changed:
    assert box.apply(default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1"},
                                      dhcp={"pools": [{"start": "192.168.1.70", "end": "192.168.1.90"}]})).ok
    assert gw0_mac(box) == NEW


def test_a_set_gateway_mac_is_never_followed_and_has_no_watch(box):
    assert box.apply(settings(mac=OLD)).ok
    assert MODEM_WATCH not in {s.name for s in box.applied_plan().services}
    learn(box, NEW)
    assert box.follow_gateway() is None and gw0_mac(box) == OLD


def test_the_watch_runs_before_the_watchdog_and_keeps_no_mac_in_its_definition(box):
    assert box.apply(settings()).ok
    names = [s.name for s in box.applied_plan().services]
    assert names[-2:] == [MODEM_WATCH, "watchdog"]
    watch = box._services.running[MODEM_WATCH]
    learn(box, NEW)
    assert box.follow_gateway().ok
    # Its own re-apply does not restart it.
    assert box._services.running[MODEM_WATCH] == watch


def test_once_bridged_the_box_asks_from_the_admin_port_never_the_uplink_nic(box):
    assert box.apply(settings()).ok
    box.kernel.neighbours[("lab-box", "192.168.1.254")] = NEW
    box.kernel.calls.clear()
    probed = []
    real = box.kernel.arp_probe
    box.kernel.arp_probe = lambda ns, ifname, ip, timeout=1.5: probed.append(ifname) or real(ns, ifname, ip)
    # Another gateway address: the MAC of the one applied does not hold.
    observed = box.observe(default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.254"}), box.applied())
    assert observed.gateway_mac == NEW and probed == ["admin0"]


def test_an_apply_waits_for_the_one_running(box):
    with box.lock():
        with pytest.raises(Exception) as e:
            box.lock(timeout=0.1).__enter__()
    assert type(e.value).__name__ == "BoxBusy"
