"""The one boundary between the appliance and the kernel.

Everything that touches netlink, sysctl, nftables or processes goes through a
`Kernel`: `LinuxKernel` does it for real (pyroute2, nft, ip netns exec),
`FakeKernel` keeps the same state in memory for unit tests. Every method
takes the network namespace it acts in, so the same code runs against the
machine's root namespace (ns=None) or a lab namespace standing for it.

Beside `Kernel`, each in its own module with its fake in `fake_<module>.py`:
`bpf.Bpf` (objects, maps, pins, test runs; Linux: `libbpf.LinuxBpf`),
`tc.Tc` (tcx links and clsact filters), `devices.Devices` (ifindex, veth
peers, carrier, byte counters), `conntrack.Conntrack` and
`nftables.Nftables` (a running service's own table).
"""
from appliance.kernel.base import Kernel, KernelError, Link, Route
from appliance.kernel.fake import FakeKernel

__all__ = ["Kernel", "KernelError", "Link", "Route", "FakeKernel", "LinuxKernel"]


def __getattr__(name: str):
    # LinuxKernel brings pyroute2 (some 20 MB and 0.2 s per process): it is
    # loaded by whoever uses it, not by every process that only runs programs
    # (the supervisor's monitors import appliance.kernel.process).
    if name == "LinuxKernel":
        from appliance.kernel.linux import LinuxKernel

        return LinuxKernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
