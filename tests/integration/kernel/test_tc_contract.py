"""`Tc`: the same assertions on `FakeTc` and on the running kernel (`LinuxTc`).

Programs go on the veths of a scratch namespace, by clsact filter and by
tcx link; what each reports (filters, links, program ids) must agree. The
tcx half needs a kernel with tcx (>= 6.6); on Debian's 6.1 it is skipped
for the kernel side and the filter half is what runs there.
"""
from __future__ import annotations

import errno
import os
import secrets

import pytest

from appliance.kernel import tc
from appliance.kernel.base import KernelError
from appliance.kernel.bpf import BpfError
from appliance.kernel.devices import LinuxDevices
from appliance.kernel.fake_bpf import FakeBpf
from appliance.kernel.fake_devices import FakeDevices
from appliance.kernel.fake_tc import FakeTc
from appliance.kernel.libbpf import LinuxBpf
from appliance.switch.datapath.build import build
from tests.support.scratchns import ScratchNamespaces, sh


SOURCE = """
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int kc_pass(struct __sk_buff *skb) { return TC_ACT_OK; }
SEC("tc") int kc_drop(struct __sk_buff *skb) { return TC_ACT_SHOT; }
char _license[] SEC("license") = "GPL";
"""


class Side:
    """One side of the contract: the implementation and how to make devices for it."""

    def __init__(self, kind: str, ns: str, object_path: str):
        self.kind, self.ns = kind, ns
        if kind == "fake":
            self.devices = FakeDevices()
            self.devices.add_netns(ns)
            self.bpf = FakeBpf()
            self.tc = FakeTc(self.bpf, self.devices)
        else:
            self.devices, self.bpf, self.tc = LinuxDevices(), LinuxBpf(), tc.LinuxTc()
        self.obj = self.bpf.load(object_path, ("kc_pass", "kc_drop"))
        self.pin_dir = f"/sys/fs/bpf/kc{os.getpid()}{secrets.token_hex(3)}"
        self.bpf.make_pin_dir(self.pin_dir)

    def add_veth(self, name: str, peer: str) -> int:
        if self.kind == "fake":
            self.devices.add_veth(self.ns, name, self.ns, peer)
        else:
            sh(self.ns, "ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        return self.ifindex(name)

    def remove(self, name: str) -> None:
        if self.kind == "fake":
            self.devices.remove(self.ns, name)
        else:
            sh(self.ns, "ip", "link", "del", name)

    def ifindex(self, name: str) -> int:
        return next(d.ifindex for d in self.devices.devices(self.ns) if d.name == name)

    def close(self) -> None:
        for name in self.bpf.pins(self.pin_dir):
            self.tc.link_detach(os.path.join(self.pin_dir, name))
        self.bpf.remove_pin_dir(self.pin_dir)
        self.obj.close()


@pytest.fixture(scope="module")
def object_path(tmp_path_factory):
    return str(build(SOURCE, tmp_path_factory.mktemp("kc-tc")))


@pytest.fixture(params=["fake", "linux"])
def side(request, object_path):
    with ScratchNamespaces("kct") as (ns,):
        s = Side(request.param, ns, object_path)
        try:
            yield s
        finally:
            s.close()


def needs_tcx(side: Side) -> None:
    if not side.tc.tcx_supported():
        pytest.skip("this kernel has no tcx (before 6.6): the clsact filter is what it offers")


def test_our_filter_is_replaced_in_place_and_removed_with_its_qdisc(side):
    a = side.add_veth("kc0", "kc1")
    assert side.tc.filters(side.ns, a) == []
    side.tc.filter_attach(side.ns, a, side.obj.prog_fd("kc_pass"))
    [first] = side.tc.filters(side.ns, a)
    assert (first.prio, first.handle, first.kind, first.name) == (tc.PRIO, tc.HANDLE, "bpf", tc.FILTER_NAME)
    assert tc.ours([first])
    side.tc.filter_attach(side.ns, a, side.obj.prog_fd("kc_drop"))
    [second] = side.tc.filters(side.ns, a)
    assert (second.prio, second.handle) == (tc.PRIO, tc.HANDLE) and second.prog_id != first.prog_id
    side.tc.filter_detach(side.ns, a)
    assert side.tc.filters(side.ns, a) == []
    side.tc.filter_detach(side.ns, a)             # nothing there: nothing to do
    if side.kind == "linux":
        assert "clsact" not in sh(side.ns, "tc", "qdisc", "show", "dev", "kc0").stdout
    else:
        assert side.tc.clsact == set()


def test_a_filter_on_a_missing_device_fails_and_its_removal_does_not(side):
    a = side.add_veth("kc0", "kc1")
    side.remove("kc0")
    with pytest.raises(KernelError) as err:
        side.tc.filter_attach(side.ns, a, side.obj.prog_fd("kc_pass"))
    assert f"ifindex {a}" in str(err.value)
    side.tc.filter_detach(side.ns, a)
    assert side.tc.filters(side.ns, a) == []


def test_a_tcx_link_is_updated_in_place_and_detached(side):
    needs_tcx(side)
    a = side.add_veth("kc0", "kc1")
    pin = os.path.join(side.pin_dir, "tcx-kc0")
    assert side.tc.link(pin) is None
    assert side.tc.link_attach(side.ns, pin, a, side.obj.prog_fd("kc_pass")) == "created"
    first = side.tc.link(pin)
    assert first.ifindex == a and first.attach_type == tc.BPF_TCX_INGRESS
    assert side.tc.tcx_programs(side.ns, a) == [first.prog_id]
    assert side.tc.filters(side.ns, a) == []      # no clsact: tcx runs it
    assert side.tc.link_attach(side.ns, pin, a, side.obj.prog_fd("kc_drop")) == "updated"
    second = side.tc.link(pin)
    assert second.id == first.id and second.prog_id != first.prog_id
    assert side.tc.tcx_programs(side.ns, a) == [second.prog_id]
    assert side.tc.link_detach(pin) is True
    assert side.tc.link(pin) is None and side.tc.tcx_programs(side.ns, a) == []
    assert side.tc.link_detach(pin) is False
    assert side.bpf.pins(side.pin_dir) == []


def test_a_link_whose_device_was_recreated_is_replaced(side):
    needs_tcx(side)
    a = side.add_veth("kc0", "kc1")
    pin = os.path.join(side.pin_dir, "tcx-kc0")
    side.tc.link_attach(side.ns, pin, a, side.obj.prog_fd("kc_pass"))
    old = side.tc.link(pin)
    side.remove("kc0")
    assert side.tc.link(pin).ifindex == 0          # the device is gone, the pin stays
    b = side.add_veth("kc0", "kc1")
    assert b != a
    assert side.tc.link_attach(side.ns, pin, b, side.obj.prog_fd("kc_pass")) == "created"
    new = side.tc.link(pin)
    assert new.id != old.id and new.ifindex == b
    assert side.tc.tcx_programs(side.ns, b) == [new.prog_id]


def test_no_link_on_a_missing_device(side):
    needs_tcx(side)
    a = side.add_veth("kc0", "kc1")
    side.remove("kc0")
    pin = os.path.join(side.pin_dir, "tcx-kc0")
    with pytest.raises(BpfError) as err:
        side.tc.link_attach(side.ns, pin, a, side.obj.prog_fd("kc_pass"))
    assert err.value.errno == errno.ENODEV
    assert side.tc.link(pin) is None
