"""Loopback ports that are free now, as the kernel says (a random port may be
another program's, e.g. one in the kernel's ephemeral range)."""
import socket


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port(count: int = 1) -> int:
    """The first of `count` consecutive ports free for both UDP and TCP."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + count <= 65536 and all(_free(p) for p in range(port, port + count)):
            return port
