"""The relay's lab as a topology: built by the reconciler and run by `Lab`, like the home lab."""
import sys

from appliance.kernel import FakeKernel
from appliance.kernel.base import Route
from appliance.kernel.desired import NftTable, RouteEntry
from appliance.kernel.fake_process import FakeProgram
from appliance.kernel.reconcile import reconcile
from appliance.lab import relaytopology as rt
from appliance.lab.lab import Lab

SPEC = rt.RelaySpec(prefix="r7t")


def test_every_object_is_in_the_labs_namespaces_and_a_second_build_changes_nothing():
    objs = SPEC.objects()
    for o in objs:
        for attr in ("ns", "peer_ns"):
            assert getattr(o, attr, "r7t-") is None or getattr(o, attr, "r7t-").startswith("r7t-")
    k = FakeKernel()
    reconcile(k, objs)
    assert k.addresses("r7t-client", "eth0") == [f"{rt.CLIENT_IP}/24"]
    assert sorted(l.name for l in k.links("r7t-vproxy")) == ["home", "lo", "modem0", "wan"]
    calls = len(k.calls)
    assert reconcile(k, objs) == [] and len(k.calls) == calls


def test_vproxy_steers_the_fake_range_from_the_home_side_only_as_the_box_does():
    table = next(o for o in SPEC.objects() if isinstance(o, NftTable))
    assert table.ns == "r7t-vproxy" and (table.family, table.name) == ("ip", "relay")
    assert f'iifname {{ "home" }} ip daddr {rt.FAKE_RANGE}' in table.body and "tproxy to 127.0.0.1:7893" in table.body
    assert RouteEntry("r7t-vproxy", Route(rt.FAKE_RANGE, dev="lo", type="local", table="local")) in SPEC.objects()


def test_the_services_point_at_each_other_through_the_run_directory():
    dns = SPEC.dns_settings("/run/x")
    relay = SPEC.relay_settings("/run/x")
    assert dns["control_socket"] == relay["dns_control"] == "/run/x/dns.sock"
    assert dns["fake_ip"]["db_path"] == relay["fakeip_db"]
    assert SPEC.relay("/run/x").argv[-1] == "/run/x/relay.yaml"
    assert {p.name: p.ready for p in SPEC.processes("/run/x")}["danted"] == ("tcp/1080",)


class WithoutHostFiles(rt.RelaySpec):
    """Without the copies of the host's /etc/passwd and /etc/shadow (root only)."""

    def files(self, rundir):
        return [f for f in super().files(rundir) if f.base is None]


def test_the_relay_lab_comes_up_and_goes_down_with_lab(tmp_path):
    python = FakeProgram(listens=("tcp/80", "tcp/9000", "udp/9001", "udp/53", "tcp/53"))
    programs = {sys.executable: python, "dnsmasq": FakeProgram(listens=("udp/53", "tcp/53")),
                "danted": FakeProgram(listens=("tcp/1080",)), "tinyproxy": FakeProgram(listens=("tcp/8888",)),
                "iperf3": FakeProgram(listens=("tcp/5201",))}
    lab = Lab(WithoutHostFiles("r7t"), FakeKernel(programs), run_root=tmp_path / "run", netns_etc=tmp_path / "netns")
    lab.up(progress=None)
    assert lab.status()["up"]
    assert (tmp_path / "netns/r7t-client/resolv.conf").read_text() == f"nameserver {rt.HOME_IP}\n"
    assert (tmp_path / "netns/r7t-internet/hosts").read_text().startswith("127.0.0.1 localhost\n")
    assert "rules" in (lab.rundir / "dns.yaml").read_text()
    lab.down(progress=None)
    assert lab.kernel.list_netns() == [] and list((tmp_path / "netns").iterdir()) == []
    assert not (tmp_path / "run").exists()
