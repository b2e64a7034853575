"""What `ofctl dump-flows` and `appctl ofproto/trace --datapath` ask of the datapath.

`appliance/switch/cli.py` (and the console, through `appliance.box.status`) calls:

- `flow_stats(bridge)`: n_packets/n_bytes per flow from the running
  program's per-CPU counters (None when no datapath runs for the bridge,
  so dump-flows prints the --no-stats form);
- `trace_datapath(bridge, packet, result)`: compile the bridge's table as a
  test build, run the packet through it with BPF_PROG_TEST_RUN and return
  lines saying what the program did, and whether it agrees with the
  reference classifier's `result`; raises `DatapathUnavailable` when the
  program cannot be built;
- `monitor(bridge, out, port_names, count, timeout, state_dir)`: `ofctl
  monitor`: print the running program's controller events (packet-ins)
  as they come; raises `DatapathUnavailable` when no datapath runs.
"""
from __future__ import annotations

from ..flows import OFPP_CONTROLLER, OFPP_NORMAL, format_port
from ..fields import format_mac
from . import contract as C
from .datapath import Datapath
from .events import monitor as run_monitor
from .testrun import TestDatapath


class DatapathUnavailable(Exception):
    """No datapath can answer: none runs for the bridge, or the test build failed; the message says which."""


_VERDICTS = {C.TC_ACT_OK: "TC_ACT_OK (to the Linux bridge)", C.TC_ACT_SHOT: "TC_ACT_SHOT (drop)",
             C.TC_ACT_REDIRECT: "TC_ACT_REDIRECT (bpf_redirect)"}


def flow_stats(bridge):
    dp = Datapath(bridge.name)
    if not dp.attached():
        return None
    try:
        return dp.flow_stats(bridge.flows)
    except OSError:
        return None   # not root: no access to the pinned maps


def trace_datapath(bridge, packet, result) -> list[str]:
    names = bridge.port_names
    lines = ["", "Compiled datapath (BPF_PROG_TEST_RUN of the test build)",
             "--------------------------------------------------------"]
    try:
        dp = TestDatapath(bridge.flows, bridge.ports.values(), names)
    except Exception as e:  # compile, clang, verifier or permission: say which
        raise DatapathUnavailable(f"{type(e).__name__}: {e}") from None
    with dp:
        got, ns = dp.run(packet)
    for table_flow in got.flows:
        lines.append(f"matched: {table_flow.to_ofctl(names) if table_flow else '(miss: drop)'}")
    outs = []
    for o in got.outputs:
        port = {OFPP_NORMAL: "NORMAL", OFPP_CONTROLLER: "CONTROLLER"}.get(o.port) \
            or format_port(o.port, names)
        tag = f",vlan_tci=0x{o.vlan_tci:04x}" if o.vlan_tci else ""
        outs.append(f"{port}(dl_src={format_mac(o.dl_src)},dl_dst={format_mac(o.dl_dst)}{tag})")
    more = got.n_outputs - len(got.outputs)
    lines.append("outputs: " + (", ".join(outs) if outs else "none (drop)")
                 + (f", and {more} more (the test build records the first {len(got.outputs)})" if more > 0 else ""))
    lines.append(f"verdict: {_VERDICTS.get(got.verdict, got.verdict)}")
    want = [(o.port, o.packet["dl_src"], o.packet["dl_dst"], o.packet["vlan_tci"]) for o in result.outputs]
    have = [(o.port, o.dl_src, o.dl_dst, o.vlan_tci) for o in got.outputs]
    same = (want[:len(have)] == have and got.n_outputs == len(want)
            and list(got.flows) == [lk.flow for lk in result.lookups])
    lines.append("agrees with the reference classifier" if same
                 else "DISAGREES with the reference classifier")
    return lines


def monitor(bridge, out, port_names=None, count=None, timeout=None, state_dir=None) -> int:
    dp = Datapath(bridge.name, state_dir=state_dir)
    if not dp.attached():
        raise DatapathUnavailable(f"no compiled datapath runs for bridge {bridge.name}")
    try:
        return run_monitor(dp, bridge.flows, out, port_names, count=count, timeout=timeout)
    except OSError as e:   # not root, or the pins went away under us
        raise DatapathUnavailable(f"{bridge.name}: {e}") from None
