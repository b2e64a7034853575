"""`ofproto/trace` for the reference classifier, shaped like Open vSwitch's.

``trace(bridge, text)`` parses a trace flow string ('in_port=uplink,udp,
nw_dst=192.168.1.1,udp_dst=53', names resolved through the bridge),
classifies it and ``format_trace`` prints what OVS users expect:

    Flow: in_port=2,dl_src=...,udp_src=...,udp_dst=53

    bridge("br0")
    -------------
     0. udp,nw_dst=192.168.1.1,tp_dst=53, priority 499
        mod_dl_dst:d6:00:00:00:00:bf
        output:vproxy

    Final flow: ...
    OpenFlow outputs: vproxy(5)

`extra` lines (e.g. the compiled datapath's own verdict, added by the
datapath's `--datapath` option) are appended after the outputs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from . import flows as FL
from .classifier import ClassifyResult, classify
from .packet import Packet, packet_from_text

if TYPE_CHECKING:
    from .bridge import Bridge


def trace(bridge: "Bridge", text: str, generate: bool = False) -> tuple[Packet, ClassifyResult]:
    """`generate` is OVS's -generate: NORMAL learns and learn() adds its flow."""
    packet = packet_from_text(text, bridge.port_map)
    return packet, classify(bridge.flows, packet, bridge, generate=generate)


def format_trace(bridge: "Bridge", packet: Packet, result: ClassifyResult,
                 extra: Iterable[str] = ()) -> str:
    names = bridge.port_names
    lines = [f"Flow: {packet.to_ofctl(names)}", "", f'bridge("{bridge.name}")',
             "-" * (len(bridge.name) + 10)]
    # Replay the lookups in order, attaching each action to its flow; a
    # resubmit's nested lookup follows the resubmit line, as in OVS.
    lookups = iter(result.lookups)
    _emit(next(lookups, None), lookups, lines, names, result, [0], 0)
    lines.append("")
    final = result.packet
    lines.append("Final flow: " + ("unchanged" if final == packet else final.to_ofctl(names)))
    outs = []
    for ev in result.outputs:
        if ev.port == FL.OFPP_NORMAL:
            outs.append("NORMAL")  # no bridge to switch on
        elif ev.port == FL.OFPP_CONTROLLER:
            outs.append("CONTROLLER")
        else:
            outs.append(f"{FL.format_port(ev.port, names)}({ev.port})")
    lines.append("OpenFlow outputs: " + (", ".join(outs) if outs else "drop"))
    lines.extend(extra)
    return "\n".join(lines) + "\n"


def _emit(lk, lookups, lines, names, result: ClassifyResult, done: list[int], depth) -> None:
    """Print one lookup and its actions; `done` counts the actions printed,
    which is their index in `result.actions` (and `result.notes`)."""
    if lk is None:
        return
    indent = "    " * depth
    if lk.flow is None:
        lines.append(f"{indent} {lk.table}. No match.")
        lines.append(f"{indent}    drop")
        return
    f = lk.flow
    head = f.match.to_ofctl(names)
    head = f"{head}, priority {f.priority}" if head else f"priority {f.priority}"
    if f.cookie:
        head += f", cookie 0x{f.cookie:x}"
    lines.append(f"{indent} {lk.table}. {head}")
    if not f.actions:
        lines.append(f"{indent}    drop")
    for a in f.actions:
        if done[0] >= len(result.actions):
            return  # the resubmit depth limit or dec_ttl ended the run here
        index = done[0]
        done[0] += 1
        lines.append(f"{indent}    {a.to_ofctl(names)}")
        note = result.notes.get(index)
        if note:
            lines.append(f"{indent}     {note}")
        if isinstance(a, (FL.Resubmit, FL.GotoTable)):
            nxt = next(lookups, None)
            if nxt is None:
                lines.append(f"{indent}     >> resubmit depth limit reached, dropping")
                return
            # OVS nests a resubmit's lookup; goto_table's stays at its level.
            _emit(nxt, lookups, lines, names, result, done,
                  depth + (not isinstance(a, FL.GotoTable)))
        elif isinstance(a, FL.Learn) and index < len(result.actions):
            nth = sum(isinstance(x, FL.Learn) for x in result.actions[:index])
            for lf in result.learned[nth:nth + 1]:
                lines.append(f"{indent}     -> table={lf.table} {lf.to_ofctl(names)}")
        if note and "goes no further" in note:
            return
