"""Python's side of `c/dp_contract.h`: the same structs as `struct` formats.

Kept beside the header and checked against it by a unit test (which reads
the #defines and compares sizes), so the two cannot drift apart silently.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

OFPP_IN_PORT = 0xFFF8
OFPP_NORMAL = 0xFFFA
OFPP_FLOOD = 0xFFFB
OFPP_ALL = 0xFFFC
OFPP_CONTROLLER = 0xFFFD
OFPP_LOCAL = 0xFFFE

MAX_PORTS = 64
MAX_TRACE_MATCH = 16
MAX_TRACE_OUT = 32
EVENT_BYTES = 128

MARK_HOPS = 0x0F000000
MARK_NORMAL = 0x10000000
MAX_HOPS = 8

PORT_PEER = 1
PORT_INGRESS = 2
PORT_HOME = 4
PORT_DNS = 8
PORT_SKB_COUNT = 16

MISC_LOOP_DROPS = 1
MISC_EVENT_DROPS = 2
MISC_PAUSE_DROPS = 3
MISC_MAX = 4

HEALTH_REG = 15
HEALTH_SERVICES = 8
HEALTH = struct.Struct("<8Q")             # struct dp_health: fresh_until[], CLOCK_MONOTONIC ns

MISS_SLOT = 0xFFFFFFFF

MAX_MACS = 4096
MAC_STATS = struct.Struct("<5Q")          # struct dp_mac_stats
MAX_PAUSED = 1024

TC_ACT_OK = 0
TC_ACT_SHOT = 2
TC_ACT_REDIRECT = 7

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
PORT = struct.Struct("<II")               # struct dp_port
FLOOD_SLOT = struct.Struct("<IIII")       # struct dp_flood_slot
STATS = struct.Struct("<QQ")              # struct dp_stats
EVENT_HEAD = struct.Struct("<IIII")       # struct dp_event without data
EVENT_SIZE = EVENT_HEAD.size + EVENT_BYTES
TRACE_HEAD = struct.Struct("<IIII")
TRACE_MATCH = struct.Struct("<II")
TRACE_OUT = struct.Struct("<IHHQQ")
TRACE_SIZE = TRACE_HEAD.size + MAX_TRACE_MATCH * TRACE_MATCH.size + MAX_TRACE_OUT * TRACE_OUT.size
KEY_SIZE = 136                            # struct dp_key


@dataclass(frozen=True)
class TraceOutput:
    port: int
    vlan_tci: int
    dl_src: int
    dl_dst: int


@dataclass(frozen=True)
class Trace:
    """What the test build did to one frame."""
    matches: tuple[tuple[int, int], ...]  # (table, slot or MISS_SLOT)
    outputs: tuple[TraceOutput, ...]      # the first MAX_TRACE_OUT
    verdict: int
    n_outputs: int                        # all of them, recorded or not

    @classmethod
    def decode(cls, raw: bytes) -> "Trace":
        n_matches, n_outputs, verdict, _ = TRACE_HEAD.unpack_from(raw, 0)
        off = TRACE_HEAD.size
        matches = tuple(TRACE_MATCH.unpack_from(raw, off + i * TRACE_MATCH.size)
                        for i in range(min(n_matches, MAX_TRACE_MATCH)))
        off += MAX_TRACE_MATCH * TRACE_MATCH.size
        outs = []
        for i in range(min(n_outputs, MAX_TRACE_OUT)):
            port, tci, _, src, dst = TRACE_OUT.unpack_from(raw, off + i * TRACE_OUT.size)
            outs.append(TraceOutput(port, tci, src, dst))
        return cls(matches, tuple(outs), verdict, n_outputs)


@dataclass(frozen=True)
class Event:
    """A controller action: the frame's first bytes and where it matched."""
    in_port: int
    slot: int
    table: int
    length: int
    data: bytes

    @classmethod
    def decode(cls, raw: bytes) -> "Event":
        in_port, slot, table, length = EVENT_HEAD.unpack_from(raw, 0)
        data = raw[EVENT_HEAD.size:EVENT_HEAD.size + min(length, EVENT_BYTES)]
        return cls(in_port, slot, table, length, data)
