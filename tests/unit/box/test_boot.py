"""The boot never leaves the home cut off: applied settings, else the last good ones, else the factory bridge."""
import json

import pytest

from appliance.box import boot
from appliance.box.fake import FakeServices, FakeSwitch, MemFs
from appliance.box.placement import Placement
from appliance.box.plan import Layout
from appliance.box.runtime import Box
from appliance.box.settings import default_settings
from appliance.kernel import FakeKernel
from appliance.kernel.reconcile import remove

GW_MAC = "02:4d:4f:44:45:4d"
NS = "lab-box"


def settings(**kw):
    return default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC}, **kw)


@pytest.fixture
def box(tmp_path):
    k = FakeKernel()
    k.add_netns(NS)
    k.add_veth(NS, "enp5s0", None, "m0", mac="52:54:00:00:05:00")
    k.add_veth(NS, "enp1s0", None, "h0", mac="52:54:00:00:01:00")
    return Box(placement=Placement.inside(NS), layout=Layout(state_dir=str(tmp_path / "s"), run_dir=str(tmp_path / "r")),
               kernel=k, switch=FakeSwitch(), services=FakeServices(), fs=MemFs())


def power_cycle(box):
    """What a reboot leaves: no links, services or datapath of the box; its state files stay."""
    plan = box.applied_plan()
    remove(box.kernel, plan.kernel)
    for s in plan.services:
        box.services.remove(s.name)
    box.switch.unload(plan.switch)
    box.fs.remove(box.layout.boot_note)


def runs(box, s) -> bool:
    return box.switch.loaded == box.plan(s).switch and all(
        box.services.status(spec.name).state == "running" for spec in box.plan(s).services)


def lines():
    out = []
    return out, out.append


def test_a_clean_boot_applies_the_applied_settings_and_leaves_no_note(box):
    assert box.apply(settings()).ok
    power_cycle(box)
    out, say = lines()
    assert boot.boot(box, say) == boot.APPLIED
    assert runs(box, settings())
    assert boot.read_note(box) is None


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],  # a power cut before the data reached the disk
    lambda text: "",  # a zero-length file: rename kept, data lost
    lambda text: "\x00\x17garbage" * 40,
    lambda text: json.dumps({**json.loads(text), "settings": {"ports": "eth9"}}),  # valid JSON, invalid settings
], ids=["truncated", "empty", "garbage", "invalid"])
def test_a_damaged_applied_file_boots_the_last_good_settings_and_says_so(box, damage):
    assert box.apply(settings()).ok
    power_cycle(box)
    path = box.layout.state_file
    box.fs.write(path, damage(box.fs.read(path)))
    out, say = lines()
    assert boot.boot(box, say) == boot.LAST_GOOD
    assert runs(box, settings())
    note = boot.read_note(box)
    assert note.ran == "last-good" and path in note.reasons[0]
    assert "last good settings" in note.banner
    # The applied file holds what runs again; a later apply clears the note.
    assert box.applied_settings() == settings()
    assert box.apply(settings(admin={"address": "192.168.1.7"})).ok
    assert boot.read_note(box) is None


def test_both_files_unreadable_the_factory_bridge_keeps_the_home_online(box):
    assert box.apply(settings()).ok
    power_cycle(box)
    for path in (box.layout.state_file, box.layout.good_state_file):
        box.fs.write(path, "{\"format\": 2, \"settings\": ")
    out, say = lines()
    assert boot.boot(box, say) == boot.FACTORY
    links = {l.name: l for l in box.kernel.links(NS)}
    assert links["enp5s0"].master == "br0" and links["enp1s0"].master == "br0" and links["br0"].up
    note = boot.read_note(box)
    assert note.ran == "factory" and len(note.reasons) == 2
    assert "factory bridge" in note.banner


def test_a_missing_nic_boots_the_factory_bridge_with_the_nics_there_are_and_the_admin_address(box):
    s = settings()
    assert box.apply(s).ok
    power_cycle(box)
    box.kernel.del_link(NS, "enp5s0")  # replaced or renamed
    box.kernel.add_veth(NS, "enp9s0", None, "m1", mac="52:54:00:00:09:00")
    out, say = lines()
    assert boot.boot(box, say) == boot.FACTORY
    links = {l.name: l for l in box.kernel.links(NS)}
    assert links["enp9s0"].master == "br0" and links["enp1s0"].master == "br0"
    assert f"{s.admin.address}/24" in box.kernel.addresses(NS, "br0")
    note = boot.read_note(box)
    assert "enp5s0" in note.banner and "enp9s0" in note.banner
    # Nothing of the box was made: no switch, no services.
    assert box.switch.loaded is None
    # The NIC is back and the settings are applied (from the console, say): the admin port takes the
    # address; the factory bridge gives it up.
    box.kernel.del_link(NS, "enp9s0")
    box.kernel.add_veth(NS, "enp5s0", None, "m2", mac="52:54:00:00:05:00")
    assert box.apply(s).ok
    assert box.kernel.addresses(NS, "br0") == [] and boot.read_note(box) is None


def test_settings_that_do_not_apply_at_boot_fall_back_to_the_factory_bridge(box):
    assert box.apply(settings()).ok
    power_cycle(box)
    box.switch.fail = True  # the datapath is refused now (a new kernel's verifier, say)
    out, say = lines()
    assert boot.boot(box, say) == boot.FACTORY
    note = boot.read_note(box)
    assert [r for r in note.reasons if "did not apply" in r] and len(note.reasons) == 2
    assert {l.name: l.master for l in box.kernel.links(NS)}["enp5s0"] == "br0"


def test_nothing_ever_applied_is_the_factory_bridge_without_an_address(box):
    out, say = lines()
    assert boot.boot(box, say) == boot.FACTORY
    assert box.kernel.addresses(NS, "br0") == []
