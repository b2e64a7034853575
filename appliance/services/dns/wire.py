"""DNS wire format by hand: what the server's paths read and write per query.

No query or answer of the usual kinds goes through dnspython. A query is
read for its ID, flags, question and EDNS size (`parse_query`). An answer
is kept as its records' bytes (`Prepared`: the sections after the question,
without OPT), which serve any client asking the same question: the header
and the question are the client's own, the records are copied with their
TTLs aged, and our OPT record is appended when the client used EDNS
(`render`). The question keeps its length whatever the client's letter
case, so compression pointers in the records stay valid. Answers the
server makes itself (fake IPs, blocks, local names, rewrites) are built as
the same `Prepared` records (`address_records`, `ptr_record`).

Anything unusual (several questions, a compressed question name, an EDNS
version other than 0, a zone transfer) makes `parse_query` return None:
the server then takes dnspython's path, which answers the errors.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

HEADER = struct.Struct(">HHHHHH")
_RR = struct.Struct(">HHIH")  # type, class, TTL, rdata length
_TTL = struct.Struct(">I")
_U16 = struct.Struct(">H")

# Header flag bits, as in RFC 1035 / 6895.
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080

TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_PTR, TYPE_AAAA = 1, 2, 5, 6, 12, 28
TYPE_OPT, TYPE_IXFR, TYPE_AXFR, TYPE_ANY = 41, 251, 252, 255
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

_NOT_LEAN = frozenset((TYPE_OPT, TYPE_IXFR, TYPE_AXFR))  # refused on dnspython's path


class WireError(ValueError):
    """A message that cannot be read (truncated, a bad name, counts that lie)."""


class Query(NamedTuple):
    """The part of a plain one-question query the server needs."""

    qid: int
    flags: int
    question: bytes  # the name as sent + qtype + qclass
    name_len: int  # bytes of the name in `question`, its final zero included
    qtype: int
    qclass: int
    edns: int  # the client's UDP payload size (>= 512); -1: no OPT record
    key: bytes  # `question` with the name lower-cased: the same for any letter case
    name: str  # the name in lower-case presentation form, without the final dot


def parse_query(data: bytes) -> Query | None:
    """Read a plain query, or None for anything dnspython's path must judge."""
    end = len(data)
    if end < 17:
        return None
    qid, flags, qd, an, ns, ar = HEADER.unpack_from(data)
    if flags & (QR | OPCODE_MASK | TC) or qd != 1 or an or ns or ar > 1:
        return None
    pos = 12
    dots = []  # where the text form has a dot: the length bytes after the first
    while True:
        if pos >= end:
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:  # a compression pointer or a reserved label type
            return None
        dots.append(pos)
        pos += 1 + length
    name_len = pos - 12
    if name_len > 255 or pos + 4 > end:
        return None
    qtype = (data[pos] << 8) | data[pos + 1]
    qclass = (data[pos + 2] << 8) | data[pos + 3]
    if qtype in _NOT_LEAN:
        return None
    rest = pos + 4
    edns = -1
    if ar:
        # Only the usual OPT shape: root owner, type 41, nothing after it.
        if rest + 11 > end or data[rest] != 0:
            return None
        rtype, size, ttl, rdlen = _RR.unpack_from(data, rest + 1)
        if rtype != TYPE_OPT or rest + 11 + rdlen != end or (ttl >> 16) & 0xFF:
            return None  # EDNS version other than 0: BADVERS on dnspython's path
        edns = size if size > 512 else 512
    elif rest != end:
        return None
    question = data[12:rest]
    name = question[:name_len]
    lowered = name.lower()  # lengths are < 64, below 'A': only letters change
    key = question if lowered == name else lowered + question[name_len:]
    text = bytearray(lowered[1:-1])
    for at in dots[1:]:
        text[at - 13] = 46  # "."
    return Query(qid, flags, question, name_len, qtype, qclass, edns, key,
                 text.decode("ascii", "replace"))


def name_text(question: bytes, name_len: int) -> str:
    """The question's name in lower-case presentation form, without the final dot."""
    labels = []
    pos = 0
    while pos < name_len - 1:
        length = question[pos]
        labels.append(question[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    return ".".join(labels).lower()


def name_wire(text: str) -> bytes:
    """A name in presentation form (no escapes) as uncompressed wire labels."""
    out = bytearray()
    for label in text.strip(".").split("."):
        if label:
            raw = label.encode("ascii")
            out.append(len(raw))
            out += raw
    out.append(0)
    return bytes(out)


def opt_record(payload: int) -> bytes:
    """Our OPT record: root owner, our UDP payload size, version 0, no flags or options."""
    return b"\x00" + _RR.pack(TYPE_OPT, payload, 0, 0)


def upstream_query(qid: int, key: bytes, payload: int) -> bytes:
    """The query the server sends upstream for a question (recursion desired, EDNS 0)."""
    return HEADER.pack(qid, RD, 1, 0, 0, 1) + key + opt_record(payload)


class Prepared:
    """An answer's records after the question, ready to be sent to any client.

    `ttls` holds (offset in `body`, TTL) of every record whose TTL ages;
    answers the server makes itself have none. `answer_ttl` (the smallest
    TTL of the answer section) and `negative_ttl` (an authority SOA's, RFC
    2308) are what the cache needs to know how long to keep it.
    """

    __slots__ = ("rcode", "an", "ns", "ar", "body", "ttls", "answer_ttl", "negative_ttl",
                 "stored", "lifetime", "_age", "_aged", "addresses")

    def __init__(self, rcode: int, an: int = 0, ns: int = 0, ar: int = 0, body: bytes = b"",
                 ttls: tuple = (), answer_ttl: int | None = None, negative_ttl: int | None = None):
        self.rcode = rcode
        self.an, self.ns, self.ar = an, ns, ar
        self.body = body
        self.ttls = ttls
        self.answer_ttl = answer_ttl
        self.negative_ttl = negative_ttl
        self.stored = 0.0
        self.lifetime = 0  # seconds it may be served (the cache sets it)
        self._age = 0
        self._aged = body
        # The A/AAAA rdata of the answer section when `prepare` read them on its way (the
        # rebinding guard judges them); None: not read (`answer_addresses`).
        self.addresses: tuple | None = None

    def body_at(self, age: int) -> bytes:
        """The records with every TTL lowered by `age` seconds (never below 0)."""
        if age <= 0 or not self.ttls:
            return self.body
        if age == self._age:
            return self._aged  # many answers a second share one copy
        buf = bytearray(self.body)
        pack = _TTL.pack_into
        for offset, ttl in self.ttls:
            pack(buf, offset, ttl - age if ttl > age else 0)
        aged = bytes(buf)
        self._age, self._aged = age, aged
        return aged

    def with_ttl(self, ttl: int) -> "Prepared":
        """A copy whose records all carry `ttl` (a stale answer, RFC 8767)."""
        buf = bytearray(self.body)
        for offset, _ in self.ttls:
            _TTL.pack_into(buf, offset, ttl)
        return Prepared(self.rcode, self.an, self.ns, self.ar, bytes(buf))


EMPTY = Prepared(NOERROR)
NXDOMAIN_ANSWER = Prepared(NXDOMAIN)
SERVFAIL_ANSWER = Prepared(SERVFAIL)
REFUSED_ANSWER = Prepared(REFUSED)


def render(qid: int, flags: int, question: bytes, edns: int, p: Prepared, body: bytes,
           opt: bytes, limit: int) -> bytes:
    """The answer to a query: its ID and question, RD copied, RA set; TC past `limit` bytes.

    `edns` is the query's UDP size (-1: no OPT record); `opt` is our OPT
    record, sent only to clients that used EDNS; `limit` is the client's
    UDP size (0 for TCP: no limit). `body` is `p.body` or its aged copy.
    """
    flags = QR | RA | (flags & RD) | p.rcode
    if edns >= 0:
        wire = HEADER.pack(qid, flags, 1, p.an, p.ns, p.ar + 1) + question + body + opt
    else:
        opt = b""
        wire = HEADER.pack(qid, flags, 1, p.an, p.ns, p.ar) + question + body
    if limit and len(wire) > limit:
        # Too big for UDP: the header and question only, TC set; the client asks again over TCP.
        return HEADER.pack(qid, flags | TC, 1, 0, 0, 1 if opt else 0) + question + opt
    return wire


def udp_limit(edns: int, ours: int) -> int:
    """How big a UDP answer may be: 512 without EDNS, else the smaller of both sizes."""
    if edns < 0:
        return 512
    return edns if edns < ours else ours


def _skip_name(wire: bytes, pos: int, end: int) -> int:
    hops = 0
    while True:
        if pos >= end:
            raise WireError("name runs past the end")
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise WireError("pointer runs past the end")
            return pos + 2
        if length > 63:
            raise WireError("reserved label type")
        pos += 1 + length
        hops += 1
        if hops > 127:
            raise WireError("name too long")


def question_end(wire: bytes) -> int:
    """Offset just after the first question of a message."""
    return _skip_name(wire, 12, len(wire)) + 4


def prepare(wire: bytes, question_len: int = 0) -> Prepared:
    """An upstream's answer (one question, already checked) as a `Prepared`.

    `question_len`: the question's length in bytes when the caller knows it
    (it checked the question), else 0 (found here).

    The OPT record is dropped (the client gets ours). An extended RCODE or
    an OPT record that is not the last record raises WireError; the caller
    treats the answer as a failure or rebuilds it with dnspython.
    """
    end = len(wire)
    if end < 12:
        raise WireError("shorter than a header")
    _, flags, qd, an, ns, ar = HEADER.unpack_from(wire)
    if qd != 1:
        raise WireError("not one question")
    start = pos = 12 + question_len if question_len else question_end(wire)
    if pos > end:
        raise WireError("question runs past the end")
    total = an + ns + ar
    ttls = []
    addresses = []
    answer_ttl = None
    negative_ttl = None
    body_end = None
    for index in range(total):
        record = pos
        if pos < end and wire[pos] >= 0xC0:  # the usual owner: a pointer
            pos += 2
        else:
            pos = _skip_name(wire, pos, end)
        if pos + 10 > end:
            raise WireError("record header runs past the end")
        rtype, _, ttl, rdlen = _RR.unpack_from(wire, pos)
        rdata_end = pos + 10 + rdlen
        if rdata_end > end:
            raise WireError("rdata runs past the end")
        if rtype == TYPE_OPT:
            if index != total - 1 or index < an + ns:
                raise WireError("OPT record not last")
            if ttl >> 24:
                raise WireError("extended RCODE")
            body_end = record
        else:
            ttls.append((pos + 4 - start, ttl))
            if index < an:
                answer_ttl = ttl if answer_ttl is None or ttl < answer_ttl else answer_ttl
                if (rtype == TYPE_A and rdlen == 4) or (rtype == TYPE_AAAA and rdlen == 16):
                    addresses.append(wire[pos + 10:rdata_end])
            elif index < an + ns and rtype == TYPE_SOA and rdlen >= 20:
                minimum = _TTL.unpack_from(wire, rdata_end - 4)[0]
                negative_ttl = min(ttl, minimum)
        pos = rdata_end
    if body_end is None:
        body = wire[start:pos]
    else:
        body = wire[start:body_end]
        ar -= 1
    prepared = Prepared(flags & 0xF, an, ns, ar, body, tuple(ttls), answer_ttl, negative_ttl)
    prepared.addresses = tuple(addresses)
    return prepared


def address_records(addresses: list[str], ttl: int) -> Prepared:
    """A and AAAA records for the question's name (a pointer to offset 12)."""
    body = bytearray()
    for address in addresses:
        if ":" in address:
            body += b"\xc0\x0c" + _RR.pack(TYPE_AAAA, CLASS_IN, ttl, 16) + socket.inet_pton(
                socket.AF_INET6, address)
        else:
            body += b"\xc0\x0c" + _RR.pack(TYPE_A, CLASS_IN, ttl, 4) + socket.inet_aton(address)
    return Prepared(NOERROR, len(addresses), 0, 0, bytes(body))


def ptr_record(target: str, ttl: int) -> Prepared:
    rdata = name_wire(target)
    return Prepared(NOERROR, 1, 0, 0, b"\xc0\x0c" + _RR.pack(TYPE_PTR, CLASS_IN, ttl, len(rdata)) + rdata)


def answer_id(wire: bytes) -> int:
    return _U16.unpack_from(wire)[0]


def answer_addresses(p: Prepared) -> list[bytes]:
    """The rdata of every A and AAAA record in an answer's answer section (4 or 16 bytes)."""
    body, end = p.body, len(p.body)
    out = []
    pos = 0
    for _ in range(p.an):
        pos = _skip_name(body, pos, end)
        if pos + 10 > end:
            raise WireError("record header runs past the end")
        rtype, _, _, rdlen = _RR.unpack_from(body, pos)
        pos += 10
        if (rtype == TYPE_A and rdlen == 4) or (rtype == TYPE_AAAA and rdlen == 16):
            out.append(body[pos:pos + rdlen])
        pos += rdlen
    return out
