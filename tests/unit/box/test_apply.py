"""Apply by diff, idempotent, and a failed apply leaves the previous box running."""
import pytest

from appliance.box.fake import FakeServices, FakeSwitch, MemFs
from appliance.box.files import RealFileSystem
from appliance.box.placement import Placement, place
from appliance.box.plan import Layout, Observed, plan
from appliance.box.runtime import Box
from appliance.box.settings import default_settings
from appliance.kernel import FakeKernel

GW_MAC = "02:4d:4f:44:45:4d"
UP_MAC, DOWN_MAC = "52:54:00:00:05:00", "52:54:00:00:01:00"


def settings(**kw):
    return default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC}, **kw)


@pytest.fixture
def box(tmp_path):
    k = FakeKernel()
    k.add_netns("lab-box")
    k.add_veth("lab-box", "enp5s0", None, "m0", mac=UP_MAC)
    k.add_veth("lab-box", "enp1s0", None, "h0", mac=DOWN_MAC)
    k.set_link("lab-box", "enp5s0", up=True)
    k.set_link("lab-box", "enp1s0", up=True)
    k.calls.clear()
    return Box(placement=Placement.inside("lab-box"),
               layout=Layout(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run")),
               kernel=k, switch=FakeSwitch(), services=FakeServices(), fs=MemFs())


def snapshot(k: FakeKernel):
    return {name: (dict(ns.links), {d: set(a) for d, a in ns.addrs.items()}, list(ns.routes), dict(ns.nft))
            for name, ns in k.ns.items()}


def test_first_apply_builds_the_box_inside_its_host_namespace(box):
    res = box.apply(settings())
    assert res.ok, res.error
    k = box.kernel
    assert {"lab-box-gw", "lab-box-vproxy"} <= set(k.list_netns())
    links = {l.name: l for l in k.links("lab-box")}
    assert links["enp5s0"].master == "vswitch" and links["enp1s0"].master == "vswitch"
    # The admin port carries the uplink NIC's MAC, gw0 the modem's IP and MAC.
    assert links["admin0"].mac == UP_MAC
    gw0 = {l.name: l for l in k.links("lab-box-gw")}["gw0"]
    assert gw0.mac == GW_MAC and k.addresses("lab-box-gw", "gw0") == ["192.168.1.1/24"]
    assert box._services.running["dhcp4"].netns == "lab-box-gw"
    assert box._switch.loaded is not None


def test_second_apply_reports_no_changes_and_touches_nothing(box):
    assert box.apply(settings()).ok
    calls = len(box.kernel.calls)
    res = box.apply(settings())
    assert res.ok and res.changes == []
    assert len(box.kernel.calls) == calls


def test_dry_run_prints_the_diff_and_changes_nothing(box):
    res = box.apply(settings(), dry_run=True)
    assert res.dry_run and "+flow priority=" in res.diff and "dhcp4" in res.diff
    assert box.kernel.calls == [] and box._switch.loaded is None


def test_changed_pool_only_rewrites_the_dhcp_config_and_restarts_kea(box):
    assert box.apply(settings()).ok
    calls = len(box.kernel.calls)
    res = box.apply(settings(dhcp={"pools": [{"start": "192.168.1.100", "end": "192.168.1.150"}],
                                   "lease_time": 3600}))
    assert res.ok
    assert len(box.kernel.calls) == calls, "no kernel object changed"
    assert any(c.startswith("~ file") for c in res.changes)
    assert "~ service dhcp4: restarted" in res.changes
    assert "192.168.1.100" in res.diff


def test_failed_apply_restores_the_previous_box(box):
    assert box.apply(settings()).ok
    before = snapshot(box.kernel)
    loaded, services, files = box._switch.loaded, dict(box._services.running), dict(box._fs.files)
    box._switch.fail = True
    res = box.apply(settings(admin={"address": "192.168.1.7"},
                             vproxy={"address": "192.168.1.9", "mac": "d6:00:00:00:00:be"}))
    assert not res.ok and res.restored and "verifier rejected flow 3" in res.error
    assert snapshot(box.kernel) == before
    assert box._switch.loaded == loaded and box._services.running == services and box._fs.files == files
    assert str(box.applied_settings().admin.address) == "192.168.1.8"


def test_a_service_that_never_answers_rolls_the_apply_back_naming_it_and_its_log(box):
    assert box.apply(settings()).ok
    before = snapshot(box.kernel)
    services, files = dict(box._services.running), dict(box._fs.files)
    box._services.never_ready["relay"] = "cannot start: [Errno 98] Address already in use"
    res = box.apply(settings(relay={"listen": "127.0.0.1:7894"}))
    assert not res.ok and res.restored
    assert res.error == ("ServiceNotReady: service relay is not ready: it does not answer its probe; "
                         "its log: cannot start: [Errno 98] Address already in use")
    del box._services.never_ready["relay"]
    assert box.applied_settings() == settings() and box._services.running["relay"] == services["relay"]
    assert snapshot(box.kernel) == before and box._fs.files == files
    assert box._services.running == services


def test_a_changed_nftables_table_is_replaced_and_stays(box):
    assert box.apply(settings()).ok
    old = box.kernel.nft_table("lab-box-vproxy", "ip", "appliance")
    res = box.apply(settings(relay={"listen": "127.0.0.1:7894"}))  # the TPROXY rule's port changes
    assert res.ok, res.error
    new = box.kernel.nft_table("lab-box-vproxy", "ip", "appliance")
    assert new is not None and new != old and ":7894" in new
    assert not [c for c in res.changes if c.startswith("- nft")]


def test_failed_first_apply_leaves_nothing(box):
    before = snapshot(box.kernel)
    box.kernel.fail_on.add("nft_load")
    res = box.apply(settings())
    assert not res.ok and res.restored
    assert snapshot(box.kernel) == before
    assert box.applied_settings() is None


def test_teardown_removes_everything_the_box_made(box):
    before = snapshot(box.kernel)
    assert box.apply(settings()).ok
    box.teardown()
    assert snapshot(box.kernel) == before
    assert box._services.running == {} and box._switch.loaded is None


def test_placement_renames_every_namespace():
    s = settings()
    p = place(plan(s, Observed.of({"enp5s0": UP_MAC, "enp1s0": DOWN_MAC}), Layout()), Placement.inside("x"))
    seen = set()
    for o in p.kernel:
        for attr in ("ns", "peer_ns"):
            if hasattr(o, attr):
                seen.add(getattr(o, attr))
    assert seen <= {"x", "x-gw", "x-vproxy"} and None not in seen


def test_teardown_removes_the_runtime_directory_and_keeps_the_state(box, tmp_path):
    box._fs = RealFileSystem()  # the machine's disk, in tmp_path
    assert box.apply(settings()).ok
    run, state = tmp_path / "run", tmp_path / "state"
    # What the services leave behind them: sockets, Kea's pid file, the supervisor's files.
    for name in ("dns.sock", "relay.sock", "dhcp/kea4.sock", "dhcp/kea-dhcp4.kea-dhcp4.pid",
                 "services/dns.state.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("")
    (state / "dhcp" / "dhcp4.leases").write_text("lease\n")
    box.teardown()
    assert not run.exists()
    assert (state / "dhcp" / "dhcp4.leases").read_text() == "lease\n", "leases survive a teardown"
    assert not (state / "applied.json").exists()


def test_teardown_leaves_a_runtime_directory_it_shares(box, tmp_path):
    box._fs = RealFileSystem()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "console.env").write_text("DJANGO_ALLOWED_HOSTS=*\n")  # the image's, beside the box's
    assert box.apply(settings()).ok
    (tmp_path / "run" / "dns.sock").write_text("")
    box.teardown()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["console.env"]


def test_the_box_keeps_its_state_through_its_file_system(box, tmp_path):
    assert box.apply(settings()).ok
    assert box.layout.state_file in box._fs.files and not (tmp_path / "state").exists()
    box.teardown()
    assert box._fs.files.keys().isdisjoint({box.layout.state_file}) and not box._fs.exists(box.layout.run_dir)
