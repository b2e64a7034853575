"""Controller events: frames a flow sends to CONTROLLER, read from the ring buffer.

The program's `controller` action reserves a `struct dp_event` in the
bridge's pinned ring buffer `dp_events` (the input port, the flow's counter
slot and table, the frame's length and its first DP_EVENT_BYTES bytes).
`EventReader` consumes that buffer; `format_event` prints an event the way
`ovs-ofctl monitor` prints a packet-in (NXT_PACKET_IN2), plus the flow that
sent it; `monitor` is `ofctl monitor BR`: print events until a count or a
timeout.  The ring buffer has one consumer position, so two monitors of one
bridge share the events between them.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, TextIO

from ..flows import Flow, FlowTable
from ..packet import Packet, PacketError
from . import contract as C
from .datapath import Datapath, flow_identity


class EventReader:
    """The controller events of one running datapath, oldest first."""

    def __init__(self, dp: Datapath):
        self._bpf = dp.bpf
        self._fd = dp.events_fd()
        self._pending: list[C.Event] = []
        try:
            self._rb = self._bpf.ring_buffer(self._fd, lambda raw: self._pending.append(C.Event.decode(raw)))
        except BaseException:
            self._bpf.close(self._fd)
            raise

    def poll(self, timeout_ms: int = 100) -> list[C.Event]:
        """Events that arrived (waiting up to `timeout_ms` for the first)."""
        self._rb.poll(timeout_ms)
        out, self._pending = self._pending, []
        return out

    def close(self) -> None:
        self._rb.close()
        if self._fd >= 0:
            self._bpf.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def flows_by_slot(dp: Datapath, table: FlowTable) -> dict[int, Flow]:
    """The running program's counter slot -> flow (from the datapath's state)."""
    slots = dp.slots()
    return {slots[flow_identity(f)]: f for f in table if flow_identity(f) in slots}


def format_event(ev: C.Event, flow: Flow | None,
                 port_names: Mapping[int, str] | None = None) -> str:
    """A packet-in as `ovs-ofctl monitor` shows it, and the flow that sent it."""
    from ..flows import format_port
    cookie = flow.cookie if flow else 0
    lines = [f"NXT_PACKET_IN2 (xid=0x0): table_id={ev.table} cookie=0x{cookie:x} "
             f"total_len={ev.length} in_port={format_port(ev.in_port, port_names)} "
             f"(via action) data_len={len(ev.data)} (unbuffered)"]
    try:
        lines.append(Packet.from_bytes(ev.data, in_port=ev.in_port).to_ofctl(port_names))
    except PacketError as e:
        lines.append(f"(unparsable frame: {e}) {ev.data.hex()}")
    lines.append(" flow: " + (flow.to_ofctl(port_names) if flow else
                              f"(slot {ev.slot}: not in the current table)"))
    return "\n".join(lines) + "\n"


def monitor(dp: Datapath, table: FlowTable, out: TextIO,
            port_names: Mapping[int, str] | None = None, count: int | None = None,
            timeout: float | None = None, clock: Callable[[], float] = time.monotonic) -> int:
    """Print controller events until `count` of them or `timeout` seconds; returns how many."""
    seen = 0
    deadline = None if timeout is None else clock() + timeout
    by_slot = flows_by_slot(dp, table)
    with EventReader(dp) as reader:
        while count is None or seen < count:
            wait = 200
            if deadline is not None:
                left = deadline - clock()
                if left <= 0:
                    break
                wait = max(1, min(wait, int(left * 1000)))
            for ev in reader.poll(wait):
                out.write(format_event(ev, by_slot.get(ev.slot), port_names))
                out.flush()
                seen += 1
                if count is not None and seen >= count:
                    break
    return seen
