"""What was applied is kept with its plan: an upgrade removes what the old version made,
and a state written by the version before plans were kept still works."""
import dataclasses
import json
from pathlib import Path

import pytest

from appliance.box import stored
from appliance.box.fake import FakeServices, FakeSwitch, MemFs
from appliance.box.placement import Placement
from appliance.box.plan import Layout
from appliance.box.runtime import Box
from appliance.box.settings import default_settings
from appliance.kernel import FakeKernel
from appliance.kernel.desired import Dummy
from appliance.services.supervisor import ServiceSpec

GW_MAC = "02:4d:4f:44:45:4d"
UP_MAC, DOWN_MAC = "52:54:00:00:05:00", "52:54:00:00:01:00"
CUSTOM = "priority=100,udp,in_port=downlink,tp_dst=123,actions=output:uplink\n"
# Written by the box before it kept its plan (commit 32e2e67), for these very settings and NICs.
V1_STATE = Path(__file__).parents[2] / "data" / "applied-v1.json"


def settings(**kw):
    return default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC},
                            flows={"custom": CUSTOM}, **kw)


@pytest.fixture
def box(tmp_path):
    k = FakeKernel()
    k.add_netns("lab-box")
    k.add_veth("lab-box", "enp5s0", None, "m0", mac=UP_MAC)
    k.add_veth("lab-box", "enp1s0", None, "h0", mac=DOWN_MAC)
    k.add_bridge("lab-box", "br0")  # the factory bridge the NICs are in before the box takes them
    for nic in ("enp5s0", "enp1s0"):
        k.set_link("lab-box", nic, up=True, master="br0")
    return Box(placement=Placement.inside("lab-box"),
               layout=Layout(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run")),
               kernel=k, switch=FakeSwitch(), services=FakeServices(), fs=MemFs())


def snapshot(k: FakeKernel):
    return {name: (dict(ns.links), {d: set(a) for d, a in ns.addrs.items()}, list(ns.routes), dict(ns.nft))
            for name, ns in k.ns.items()}


def test_the_applied_plan_is_stored_and_read_back_equal(box):
    assert box.apply(settings()).ok
    text = box.fs.read(box.layout.state_file)
    data = json.loads(text)
    assert data["format"] == stored.FORMAT and data["settings"]["admin"]["address"] == "192.168.1.8"
    # The flows are kept as add-flows lines, the box's own with why they are there.
    assert CUSTOM.strip() in data["plan"]["switch"]["custom"]
    assert {"why": "everything else is switched normally", "flow": "priority=0,actions=NORMAL"} \
        in data["plan"]["switch"]["flows"]
    again = stored.loads(text, box.layout, box.placement)
    assert again.plan == box.plan(settings())
    assert again.settings == settings() and again.before == {"masters": {"enp5s0": "br0", "enp1s0": "br0"}}
    assert stored.loads(stored.dumps(again), box.layout, box.placement) == again


def v1_settings():
    """The stored version-1 settings as today's code reads them: IPv6 stays dropped."""
    return settings(ipv6={"policy": "drop"})


def test_a_box_applied_by_the_old_code_keeps_working(box):
    settings = v1_settings
    before = snapshot(box.kernel)
    assert box.apply(settings()).ok  # what the old code made (its plan is the same)
    made = snapshot(box.kernel)
    box.fs.write(box.layout.state_file, V1_STATE.read_text())  # ... and the state it wrote
    assert "plan" not in json.loads(box.fs.read(box.layout.state_file))

    assert box.applied_settings() == settings()
    # The old code's plan, made again: all of today's but the devices service and the watchdog,
    # which it did not have.
    old, new = box.applied_plan(), box.plan(settings())
    assert [s.name for s in new.services if s not in old.services] == ["devices", "watchdog"]
    assert [f.path for f in new.files if f not in old.files] == [box.layout.devices_config,
                                                                 box.layout.watchdog_config]
    assert (old.kernel, old.switch) == (new.kernel, new.switch)
    res = box.apply(settings())
    # (what "the old code" made here was made by today's, the watchdog included: nothing to change)
    assert res.ok and res.changes == []
    assert {line[1:].split()[0] for line in res.diff.splitlines()[2:] if line[:1] in "+-"} <= {"file", "service"}
    assert snapshot(box.kernel) == made
    assert json.loads(box.fs.read(box.layout.state_file))["format"] == stored.FORMAT  # now kept with its plan
    box.fs.write(box.layout.state_file, V1_STATE.read_text())
    box.services.remove("watchdog")  # which the old code never started
    box.services.remove("devices")
    box.teardown()
    assert snapshot(box.kernel) == before, "the NICs are back in the factory bridge, nothing else is left"
    assert box._services.running == {} and box.applied_settings() is None


def _as_an_older_version_made_it(box):
    """The applied plan as a version that also made a link and ran a service this one does not."""
    box.kernel.add_dummy("lab-box", "legacy0")
    old = box.services.start(ServiceSpec(name="legacy", argv=("sleep", "1000")))
    assert old == "started"
    applied = box.applied()
    plan = dataclasses.replace(applied.plan, kernel=(*applied.plan.kernel, Dummy("lab-box", "legacy0")),
                               services=(*applied.plan.services, ServiceSpec(name="legacy", argv=("sleep", "1000"))))
    box.fs.write(box.layout.state_file, stored.dumps(dataclasses.replace(applied, plan=plan)))


def test_an_upgrade_removes_what_only_the_old_version_made(box):
    assert box.apply(settings()).ok
    _as_an_older_version_made_it(box)
    res = box.apply(settings())
    assert res.ok
    assert "- service legacy" in res.changes and "legacy" not in box._services.running
    assert "legacy0" not in {l.name for l in box.kernel.links("lab-box")}


def test_teardown_removes_what_the_old_version_made(box):
    before = snapshot(box.kernel)
    assert box.apply(settings()).ok
    _as_an_older_version_made_it(box)
    box.teardown()
    assert snapshot(box.kernel) == before and box._services.running == {}


def test_an_unreadable_state_names_the_problem(box):
    box.fs.write(box.layout.state_file, json.dumps({"format": 2, "settings": {"ports": {}}}))
    with pytest.raises(stored.StateError) as e:
        box.applied()
    assert "applied state" in str(e.value) and "ports" in str(e.value)
