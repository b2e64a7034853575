"""Run a flow table's test build on packets with BPF_PROG_TEST_RUN.

`TestDatapath(table, ports)` compiles the table with `-DDP_TEST`, loads it,
gives every port a stand-in ifindex (nothing is sent anywhere: the test
build records its outputs instead) and runs packets through it.  The result
speaks the reference classifier's language: the flows matched, the output
ports in order with the headers each copy left with.

This is what the equivalence tests and `appctl ofproto/trace --datapath`
use.  Needs root (bpf(2)), nothing else: no interface is touched.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Iterable, Mapping

from appliance.kernel.bpf import Bpf, BpfError, Map
from appliance.kernel.libbpf import LinuxBpf

from ..flows import Flow, FlowTable
from ..packet import Packet
from . import contract as C
from .build import build
from .compiler import Program, compile_table
from .datapath import MacStats, mac_number, open_map, read_mac_stats
from .verifier import explain

# skb->cb[0] carries the input port into the test build, cb[1] the health register.
_SKB_CB_OFFSET = 48            # offsetof(struct __sk_buff, cb)
_SKB_GSO_SEGS_OFFSET = 164     # offsetof(struct __sk_buff, gso_segs)
_SKB_SIZE = 192                # sizeof(struct __sk_buff) in the 6.1 headers


@dataclass(frozen=True)
class DatapathResult:
    flows: tuple[Flow | None, ...]            # matched flow per lookup
    outputs: tuple[C.TraceOutput, ...]         # in order, NORMAL/CONTROLLER included
    verdict: int                               # TC_ACT_* of the production build
    data: bytes                                # the frame as the program left it
    n_outputs: int                             # all outputs; `outputs` holds the first MAX_TRACE_OUT

    @property
    def output_ports(self) -> list[int]:
        return [o.port for o in self.outputs]


class TestDatapath:
    """A loaded test build of one flow table."""

    __test__ = False  # not a pytest class

    def __init__(self, table: FlowTable, ports: Iterable[int],
                 port_names: Mapping[int, str] | None = None,
                 strategy: str = "auto", program: Program | None = None,
                 build_dir: str | None = None, defines: tuple[str, ...] = (),
                 bpf: Bpf | None = None, port_flags: Mapping[int, int] | None = None):
        self.bpf = bpf if bpf is not None else LinuxBpf()
        self.program = program or compile_table(table, port_names, strategy=strategy)
        self._tmp = None
        if build_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dp-test-")
            build_dir = self._tmp.name
        self.object_path = build(self.program.source, build_dir, test=True, defines=defines)
        try:
            self.obj = self.bpf.load(str(self.object_path), ("dp_ingress",))
        except BpfError as e:
            if self._tmp is not None:
                self._tmp.cleanup()
            raise explain(e, self.program, self.object_path, port_names) from None
        self.prog_fd = self.obj.prog_fd("dp_ingress")
        self.trace_map = open_map(self.bpf, self.obj.map_fd("dp_trace"), "dp_trace")
        ports_map = open_map(self.bpf, self.obj.map_fd("dp_ports"), "dp_ports")
        flood = open_map(self.bpf, self.obj.map_fd("dp_flood_ports"), "dp_flood_ports")
        # The classifier floods to the bridge's ports in number order, then LOCAL.
        numbers = sorted(set(ports)) + [C.OFPP_LOCAL]
        for i, port in enumerate(numbers):
            ifindex = 1000 + i
            ports_map.update(C.U32.pack(port), C.PORT.pack(ifindex, (port_flags or {}).get(port, 0)))
            if i < C.MAX_PORTS:
                flood.update(C.U32.pack(i), C.FLOOD_SLOT.pack(port, ifindex, 0, 0))
        for image in self.program.tables:
            if image.map_name:
                m = Map(self.bpf, self.obj.map_fd(image.map_name), image.key_size, 16)
                for key, val in image.entries:
                    m.update(key, val)

    def run(self, packet: Packet | bytes, in_port: int | None = None,
            repeat: int = 1, gso_segs: int = 0) -> tuple[DatapathResult, int]:
        """(result, ns per run) for one frame; `gso_segs` > 1: the frame stands for that many
        segments (a GSO/GRO skb)."""
        if isinstance(packet, Packet):
            frame = packet.to_bytes()
            in_port = packet.in_port if in_port is None else in_port
        else:
            frame = packet
        ctx = bytearray(_SKB_SIZE)
        C.U32.pack_into(ctx, _SKB_CB_OFFSET, in_port or 0)
        C.U32.pack_into(ctx, _SKB_GSO_SEGS_OFFSET, gso_segs)
        if isinstance(packet, Packet):
            # skb->cb[1]: the health register the production build loads from dp_health.
            C.U32.pack_into(ctx, _SKB_CB_OFFSET + 4, packet[f"reg{C.HEALTH_REG}"])
        r = self.bpf.test_run(self.prog_fd, frame, bytes(ctx), repeat=repeat)
        trace = C.Trace.decode(self.trace_map.lookup(C.U32.pack(0)))
        flows = tuple(None if slot == C.MISS_SLOT else self.program.flows_by_slot[slot]
                      for _, slot in trace.matches)
        return DatapathResult(flows, trace.outputs, trace.verdict, r.data, trace.n_outputs), r.duration_ns

    def mac_stats(self) -> dict[str, MacStats]:
        """What the runs counted per home device (dp_macs; ports flagged PORT_HOME)."""
        return read_mac_stats(open_map(self.bpf, self.obj.map_fd("dp_macs"), "dp_macs"))

    def pause(self, macs) -> None:
        """Pause these MACs (dp_paused), as `Datapath.set_paused` does on a running datapath."""
        m = open_map(self.bpf, self.obj.map_fd("dp_paused"), "dp_paused")
        for mac in macs:
            m.update(C.U64.pack(mac_number(mac)), C.U32.pack(0))

    def close(self) -> None:
        self.obj.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
