import pytest

from appliance.kernel import FakeKernel, KernelError, Route
from appliance.kernel.desired import (
    Address, Bridge, Namespace, NftTable, RouteEntry, Sysctls, Veth,
)
from appliance.kernel.reconcile import ordered, reconcile, remove

OBJS = [
    NftTable("a", "inet", "t", "  chain c { type filter hook input priority 0; }"),
    RouteEntry("a", Route(dst="default", via="10.0.0.1")),
    Address("a", "x0", "10.0.0.2/24"),
    Veth("a", "x0", "b", "y0", mac="02:00:00:00:00:01", master="br"),
    Bridge("a", "br"),
    Sysctls("a", (("net.ipv4.conf.x0.arp_announce", "2"),)),
    Sysctls("a", (("net.ipv6.conf.all.disable_ipv6", "1"),)),
    Namespace("b"),
    Namespace("a"),
]




def test_objects_are_applied_in_dependency_order():
    kinds = [type(o).__name__ for o in ordered(OBJS)]
    assert kinds.index("Namespace") < kinds.index("Bridge") < kinds.index("Veth") < kinds.index("Address")
    # Namespace-wide sysctls come before any link exists; per-link ones after.
    sysctl_positions = [i for i, o in enumerate(ordered(OBJS)) if isinstance(o, Sysctls)]
    assert ordered(OBJS)[sysctl_positions[0]].values[0][0] == "net.ipv6.conf.all.disable_ipv6"
    assert sysctl_positions[0] < kinds.index("Bridge") < kinds.index("Veth") < sysctl_positions[1]


def test_reconcile_is_idempotent_and_a_second_run_touches_nothing():
    k = FakeKernel()
    first = reconcile(k, OBJS)
    assert "+ netns a" in first and any(c.startswith("+ veth a/x0") for c in first)
    assert k.addresses("a", "x0") == ["10.0.0.2/24"]
    assert [l.master for l in k.links("a") if l.name == "x0"] == ["br"]
    n = len(k.calls)
    assert reconcile(k, OBJS) == []
    assert len(k.calls) == n


def test_changed_nft_body_is_replaced_and_unchanged_is_kept():
    k = FakeKernel()
    reconcile(k, OBJS)
    changed = [o if not isinstance(o, NftTable) else NftTable("a", "inet", "t", "  chain d { }") for o in OBJS]
    assert reconcile(k, changed) == [f"~ {changed[0].key()}"]


def test_half_a_veth_pair_is_replaced():
    k = FakeKernel()
    k.add_netns("a")
    k.add_netns("b")
    k.add_bridge("a", "br")
    k.add_veth("a", "x0", "a", "stray")  # x0 exists, but its peer is elsewhere
    reconcile(k, [Namespace("a"), Namespace("b"), Bridge("a", "br"), Veth("a", "x0", "b", "y0")])
    assert "y0" in {l.name for l in k.links("b")}


def test_a_failing_kernel_call_raises_and_names_the_call():
    k = FakeKernel()
    k.fail_on.add("add_address")
    with pytest.raises(KernelError, match="add_address"):
        reconcile(k, OBJS)


def test_remove_takes_everything_away():
    k = FakeKernel()
    reconcile(k, OBJS)
    remove(k, OBJS)
    assert k.list_netns() == []
