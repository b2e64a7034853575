"""Just enough DNS wire parsing for the cache-hit fast path.

dnspython parses and renders everything on the slow path. A cache hit only
needs the query's ID, flags, question bytes and EDNS size, and the cached
answer's TTL positions, so those are read here by hand, which is several
times cheaper than a full parse. Anything unusual returns None and takes
the slow path, which is the one that produces error answers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEADER = struct.Struct(">HHHHHH")
_TTL = struct.Struct(">I")
TYPE_OPT = 41

# Header flag bits, as in RFC 1035 / 6895.
QR = 0x8000
OPCODE_MASK = 0x7800
TC = 0x0200
RD = 0x0100
CD = 0x0010


@dataclass(frozen=True, slots=True)
class QueryHead:
    """The part of a standard query the fast path needs."""

    qid: int
    flags: int
    question: bytes  # qname (as sent) + qtype + qclass
    qname_end: int  # offset just after the qname, in the question
    qtype: int
    edns_size: int | None  # None: no OPT record
    do_bit: bool

    def key_flags(self) -> int:
        # What in a query changes the answer's bytes: RD and CD are copied
        # into the answer; EDNS presence and DO decide the OPT record.
        return (
            (self.flags & (RD | CD))
            | (0x1 if self.edns_size is not None else 0)
            | (0x2 if self.do_bit else 0)
        )


def read_query_head(data: bytes) -> QueryHead | None:
    """Parse a plain one-question query, or return None (slow path)."""
    if len(data) < 17:
        return None
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    if flags & (QR | OPCODE_MASK | TC) or qd != 1 or an or ns or ar > 1:
        return None
    pos = 12
    end = len(data)
    while True:
        if pos >= end:
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:  # compression pointer or reserved: leave it to dnspython
            return None
        pos += 1 + length
    if pos + 4 > end:
        return None
    qtype = (data[pos] << 8) | data[pos + 1]
    question = data[12 : pos + 4]
    rest = pos + 4
    edns_size = None
    do_bit = False
    if ar:
        # Only the usual OPT shape: root owner, type 41.
        if rest + 11 > end or data[rest] != 0:
            return None
        rtype, rclass, ttl, rdlen = struct.unpack_from(">HHIH", data, rest + 1)
        if rtype != TYPE_OPT or rest + 11 + rdlen != end:
            return None
        if (ttl >> 16) & 0xFF:  # EDNS version other than 0: BADVERS on the slow path
            return None
        edns_size = max(512, rclass)
        do_bit = bool(ttl & 0x8000)
    elif rest != end:
        return None
    return QueryHead(qid, flags, bytes(question), pos - 12, qtype, edns_size, do_bit)


def qname_text(question: bytes, qname_end: int) -> str:
    """The question's name in lower-case presentation form, without the dot."""
    labels = []
    pos = 0
    while pos < qname_end - 1:
        length = question[pos]
        labels.append(question[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    return ".".join(labels).lower()


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + length


def ttl_offsets(wire: bytes) -> list[tuple[int, int]]:
    """(offset, ttl) of every record's TTL field, OPT excluded."""
    _, _, qd, an, ns, ar = _HEADER.unpack_from(wire)
    pos = 12
    for _ in range(qd):
        pos = _skip_name(wire, pos) + 4
    found = []
    for _ in range(an + ns + ar):
        pos = _skip_name(wire, pos)
        rtype = (wire[pos] << 8) | wire[pos + 1]
        if rtype != TYPE_OPT:
            found.append((pos + 4, _TTL.unpack_from(wire, pos + 4)[0]))
        rdlen = (wire[pos + 8] << 8) | wire[pos + 9]
        pos += 10 + rdlen
    return found


def patch(template: bytes, qid: int, offsets: list[tuple[int, int]], age: int) -> bytes:
    """A copy of a cached answer with the query's ID and TTLs aged by `age`."""
    buf = bytearray(template)
    buf[0] = qid >> 8
    buf[1] = qid & 0xFF
    if age > 0:
        for off, ttl in offsets:
            _TTL.pack_into(buf, off, ttl - age if ttl > age else 0)
    return bytes(buf)
