import pytest

from appliance.kernel import FakeKernel
from appliance.kernel.desired import Namespace, Veth
from appliance.kernel.reconcile import reconcile
from appliance.lab import topology
from appliance.lab.topology import LabError, LabSpec


@pytest.mark.parametrize("prefix", ["", "Lab", "1lab", "lab-x", "lab_x", "abcdefghi", "la b", None])
def test_bad_prefix_is_rejected_with_the_field_named(prefix):
    with pytest.raises(LabError, match=r"^prefix: .* is not valid"):
        LabSpec(prefix=prefix)


@pytest.mark.parametrize("clients", [0, -1, 17, "3", 2.5, True])
def test_bad_client_count_is_rejected_with_the_field_named(clients):
    with pytest.raises(LabError, match=r"^clients: .* is not valid"):
        LabSpec(clients=clients)


def test_every_namespace_carries_the_prefix():
    spec = LabSpec(prefix="abc", clients=4)
    objs = topology.build(spec)
    names = {o.name for o in objs if isinstance(o, Namespace)}
    assert names == {f"abc-{r}" for r in ["internet", "modem", "box", "home",
                                           "client1", "client2", "client3", "client4"]}
    for o in objs:
        for attr in ("ns", "peer_ns"):
            ns = getattr(o, attr, None)
            assert ns is None or ns.startswith("abc-")


def test_box_has_two_nics_named_like_hardware_and_bridged():
    objs = topology.build(LabSpec())
    ends = {}
    for o in objs:
        if isinstance(o, Veth):
            ends[(o.ns, o.name)] = o.master
            ends[(o.peer_ns, o.peer)] = o.peer_master
    assert ends[("lab-box", "enp5s0")] == "br0"
    assert ends[("lab-box", "enp1s0")] == "br0"


def test_clients_have_distinct_fixed_macs():
    macs = [topology.client_mac(i) for i in range(1, topology.MAX_CLIENTS + 1)]
    assert len(set(macs)) == len(macs)


def test_lab_builds_on_a_fake_kernel_and_a_second_build_changes_nothing():
    k = FakeKernel()
    objs = topology.build(LabSpec(prefix="f", clients=2))
    first = reconcile(k, objs)
    assert "+ netns f-modem" in first
    assert k.links("f-box") and {l.name for l in k.links("f-box")} >= {"br0", "enp5s0", "enp1s0"}
    calls = len(k.calls)
    assert reconcile(k, objs) == []
    assert len(k.calls) == calls, "a no-op reconcile must not call the kernel to change anything"


def test_modem_processes_serve_the_lan_and_forward_dns_to_the_internet():
    procs = {p.name: p for p in topology.processes(LabSpec(), "/run/x")}
    modem = " ".join(procs["modem"].argv)
    assert "--dhcp-range=192.168.1.100,192.168.1.200" in modem
    assert f"--server={topology.PUBLIC_RESOLVER}" in modem
    assert procs["modem"].ns == "lab-modem" and procs["dns"].ns == "lab-internet"


def test_link_local_and_slaac_addresses_are_the_kernels_eui64():
    assert topology.MODEM_LINK_LOCAL == "fe80::4d:4fff:fe44:454d"
    assert topology.slaac_address(topology.client_mac(1)) == "2001:db8:1::ff:fe00:1001"


def test_the_lab_is_dual_stack_with_the_issues_addresses():
    from appliance.kernel.desired import Address, RouteEntry
    objs = topology.build(LabSpec(prefix="d"))
    addrs = {(o.ns, o.dev, o.cidr) for o in objs if isinstance(o, Address)}
    assert {("d-internet", "isp0", "2001:db8:ffff::1/64"), ("d-internet", "isp0", "2001:db8:ffff::53/128"),
            ("d-modem", "wan0", "2001:db8:ffff::2/64"), ("d-modem", "lan0", "2001:db8:1::1/64")} <= addrs
    routes = {(o.ns, o.route.dst, o.route.via) for o in objs if isinstance(o, RouteEntry)}
    assert ("d-internet", "2001:db8:1::/64", "2001:db8:ffff::2") in routes
    assert ("d-modem", "::/0", "2001:db8:ffff::1") in routes
    procs = {p.name: " ".join(p.argv) for p in topology.processes(LabSpec(), "/run/x")}
    assert "--enable-ra" in procs["modem"] and ",ra-stateless," in procs["modem"]
    assert "option6:dns-server,[2001:db8:1::1]" in procs["modem"]
    assert "--host-record=www.proxied.test,198.51.100.12,2001:db8:ffff::12" in procs["dns"]


def test_the_labs_zones_carry_a_real_ttl_so_caches_work_as_in_a_home():
    # With TTL 0 every cache (the modem's, the box's) forwarded every query, and
    # the bench through the box measured forwarding where a home sees cache hits.
    procs = {p.name: p.argv for p in topology.processes(LabSpec(), "/run/x")}
    assert "--local-ttl=300" in procs["dns"]
    assert not [a for a in procs["modem"] if a.startswith(("--local-ttl", "--max-ttl", "--neg-ttl"))]
