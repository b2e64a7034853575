"""Socket options that hand the kernel a program: the socket half of the kernel boundary."""
from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51
_INSN = struct.Struct("=HBBI")


def attach_reuseport_cbpf(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """Let a classic BPF program pick the socket of the SO_REUSEPORT group `sock`
    belongs to (or joins at bind); `program` is (code, jt, jf, k) instructions."""
    insns = b"".join(_INSN.pack(*i) for i in program)
    # sock_fprog holds a pointer: the buffer must live until setsockopt returns.
    buf = ctypes.create_string_buffer(insns, len(insns))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
