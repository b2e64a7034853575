"""Which process answers a query: always the same one for the same name.

With several processes on one address (SO_REUSEPORT), the kernel would
pick a socket by the query's addresses and ports, so two queries for one
name from two source ports would reach two processes, each with its own
answer cache: twice the upstream queries, and an answer one process has
cached (and could serve while the upstream is down) missing in the other.
Instead a classic BPF program on the group picks the socket from a hash of
the question's name: each name's cache entry, its upstream query in flight
and its stale copy live in one process, as if the cache were shared.

The program (`program(n)`) walks the name's labels (at most `LABELS`),
hashes the first 16 bytes of each as 32-bit words with every byte OR 0x20
(so letter case does not matter; FNV-1a's prime, a MurmurHash3-style
finish), and returns the hash modulo the number of sockets. It reads no byte past the question's type,
so EDNS options and the query ID do not change the choice. A packet too
short for its loads ends the program with 0 (the first socket); a result
past the last socket (a worker being restarted) makes the kernel choose by
addresses and ports as usual. `index(payload, n)` computes the same in
Python, for tests.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Callable

from appliance.kernel.sockets import attach_reuseport_cbpf

MAX_DEFAULT_PROCESSES = 4

LABELS = 8
PRIME = 16777619
FINAL = 0x85EBCA6B  # MurmurHash3's finaliser constant

# Classic BPF opcodes (linux/filter.h).
LD_IMM, LD_W_IND, LD_B_IND, LD_MEM = 0x00, 0x40, 0x50, 0x60
LDX_IMM, LDX_MEM = 0x01, 0x61
ST, STX = 0x02, 0x03
ALU_ADD_K, ALU_ADD_X, ALU_MUL_K, ALU_OR_K, ALU_RSH_K, ALU_MOD_K, ALU_XOR_X = (
    0x04, 0x0C, 0x24, 0x44, 0x74, 0x94, 0xAC)
JA, JEQ_K, JGE_K = 0x05, 0x15, 0x35
RET_A = 0x16
TAX, TXA = 0x07, 0x87
HASH, WORD, SAVED_X, LENGTH = 0, 1, 2, 3  # scratch memory slots


def program(sockets: int) -> list[tuple[int, int, int, int]]:
    """The steering program for a group of `sockets` sockets, as (code, jt, jf, k)."""
    code: list[list] = []  # jumps hold label names until resolved
    labels: dict[str, int] = {}

    def op(c, k=0, jt=0, jf=0):
        code.append([c, jt, jf, k])

    def mark(name):
        labels[name] = len(code)

    def mix():  # HASH = (HASH ^ A) * PRIME; X kept
        op(ST, WORD)
        op(TXA)
        op(ST, SAVED_X)
        op(LD_MEM, HASH)
        op(LDX_MEM, WORD)
        op(ALU_XOR_X)
        op(ALU_MUL_K, PRIME)
        op(ST, HASH)
        op(LDX_MEM, SAVED_X)

    op(LD_IMM, 0)
    op(ST, HASH)
    op(LDX_IMM, 12)  # the name starts after the header
    for i in range(LABELS):
        op(LD_B_IND, 0)  # the label's length
        op(JEQ_K, 0, 0, 1)
        op(JA, "done")  # 0: the end of the name (a JA: conditional jumps reach 255 at most)
        op(ST, LENGTH)
        for k in (0, 4, 8, 12):
            if k:
                # Only words that start inside the label: they end at most at the
                # type's second byte, never in EDNS or beyond.
                op(LD_MEM, LENGTH)
                op(JGE_K, k, 0, f"next{i}")
            op(LD_W_IND, k)
            op(ALU_OR_K, 0x20202020)
            mix()
        mark(f"next{i}")
        op(LD_MEM, LENGTH)
        op(ALU_ADD_K, 1)
        op(ALU_ADD_X)
        op(TAX)
    mark("done")
    op(LD_MEM, HASH)  # spread the high bits into the low ones the modulo keeps
    op(TAX)
    op(ALU_RSH_K, 16)
    op(ALU_XOR_X)
    op(ALU_MUL_K, FINAL)
    op(TAX)
    op(ALU_RSH_K, 13)
    op(ALU_XOR_X)
    op(ALU_MOD_K, sockets)
    op(RET_A)
    out = []
    for pc, (c, jt, jf, k) in enumerate(code):
        if c == JA:
            k = labels[k] - pc - 1
        else:
            jt = labels[jt] - pc - 1 if isinstance(jt, str) else jt
            jf = labels[jf] - pc - 1 if isinstance(jf, str) else jf
            assert 0 <= jt < 256 and 0 <= jf < 256
        out.append((c, jt, jf, k))
    return out


def index(payload: bytes, sockets: int) -> int:
    """What `program(sockets)` returns for a DNS message (the kernel's choice)."""
    def word(at):
        if at + 4 > len(payload):
            raise IndexError
        return struct.unpack_from(">I", payload, at)[0] | 0x20202020

    try:
        h = 0
        x = 12
        for _ in range(LABELS):
            if x >= len(payload):
                raise IndexError
            length = payload[x]
            if length == 0:
                break
            for k in (0, 4, 8, 12):
                if k and length < k:
                    break
                h = ((h ^ word(x + k)) * PRIME) & 0xFFFFFFFF
            x = (x + length + 1) & 0xFFFFFFFF
    except IndexError:
        return 0  # the kernel ends a program whose load falls outside the packet with 0
    h = ((h ^ (h >> 16)) * FINAL) & 0xFFFFFFFF
    return (h ^ (h >> 13)) % sockets


def attach(sock: socket.socket, sockets: int) -> None:
    """Steer the SO_REUSEPORT group `sock` belongs to (or will join at bind)."""
    attach_reuseport_cbpf(sock, program(sockets))


def default_processes() -> int:
    """Processes answering UDP when the settings do not say: one per CPU this
    process may use, at most MAX_DEFAULT_PROCESSES."""
    return max(1, min(MAX_DEFAULT_PROCESSES, len(os.sched_getaffinity(0))))


def names_for_each(base: str, sockets: int, query: "Callable[[str], bytes]") -> list[str]:
    """One name under `base` per socket of the group, in socket order: a query
    (`query(name)` builds it) for names[i] reaches socket i, so asking all of
    them asks every process."""
    found: dict[int, str] = {}
    k = 0
    while len(found) < sockets:
        name = f"p{k}.{base}"
        found.setdefault(index(query(name), sockets), name)
        k += 1
    return [found[i] for i in range(sockets)]
