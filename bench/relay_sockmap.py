"""Can an in-kernel relay beat splice here? BPF sockmap vs splice, same harness.

    sudo .venv/bin/python bench/relay_sockmap.py [--rounds 3] [--gib 2]

In one throwaway namespace: a sender, a sink, and two forwarders between
them (`--gib` GiB per transfer, rounds interleaved so a shared machine's load
falls on both alike):

- splice: what the relay does, one blocking thread per direction,
  socket -> pipe -> socket (`os.splice`);
- sockmap: both sockets in a SOCKMAP with an `sk_skb/stream_verdict`
  program that counts the bytes in a hash map and `bpf_sk_redirect_map`s
  every skb to the egress of the peer socket (what Cilium-style socket
  splicing does), so no byte or syscall reaches user space.

Each row: Gbit/s and CPU seconds per GB moved (sender + sink + forwarder +
kworkers, which run the sockmap's redirect backlog, + ksoftirqd).

A throughput prototype, not a relay: the sender waits for the forwarder's
"go" before it sends (so no data is queued before the socket enters the
map, which the verdict program would never see) and the sink answers after
the last byte instead of a half-close (a sockmap relay has to wait until the
peer's redirect backlog is drained before it may pass a FIN on).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.cpu import cpu_seconds, threads_seconds  # noqa: E402

SINK_PORT, SPLICE_PORT, SOCKMAP_PORT = 7001, 7002, 7003
BLOCK = 1 << 20

VERDICT_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct peer { __u32 index; __u32 pad; __u64 bytes; };

struct { __uint(type, BPF_MAP_TYPE_SOCKMAP); __uint(max_entries, 1024);
         __type(key, __u32); __type(value, __u64); } relay_sources SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_SOCKMAP); __uint(max_entries, 1024);
         __type(key, __u32); __type(value, __u64); } relay_targets SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024);
         __type(key, __u64); __type(value, struct peer); } relay_peers SEC(".maps");

SEC("sk_skb/stream_verdict")
int relay_verdict(struct __sk_buff *skb)
{
    __u64 cookie = bpf_get_socket_cookie(skb);
    struct peer *p = bpf_map_lookup_elem(&relay_peers, &cookie);
    if (!p)
        return SK_PASS;
    __sync_fetch_and_add(&p->bytes, skb->len);
    return bpf_sk_redirect_map(skb, &relay_targets, p->index, 0);
}

char LICENSE[] SEC("license") = "GPL";
"""

# The forwarder runs as its own process (its CPU time is one of the figures).
FORWARDER = r"""
import ctypes, os, socket, struct, sys, threading
mode, port, target, obj_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
PIPE = 1 << 18
SO_COOKIE, BPF_SK_SKB_STREAM_VERDICT = 57, 5

def splice_one_way(src, dst):
    r, w = os.pipe()
    import fcntl
    fcntl.fcntl(w, 1031, PIPE)  # F_SETPIPE_SZ
    try:
        while (n := os.splice(src.fileno(), w, PIPE, flags=os.SPLICE_F_MOVE)):
            while n:
                n -= os.splice(r, dst.fileno(), n, flags=os.SPLICE_F_MOVE)
    except OSError:
        pass
    os.close(r); os.close(w)

if mode == "sockmap":
    from appliance.kernel import libbpf as lb
    from appliance.kernel.bpf import Map
    obj = lb.BpfObject(obj_path, ("relay_verdict",))
    attach = lb._sig("bpf_prog_attach", ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                     ctypes.c_uint)
    lb._check(attach(obj.prog_fd("relay_verdict"), obj.map_fd("relay_sources"),
                     BPF_SK_SKB_STREAM_VERDICT, 0), "attach verdict")
    sources = Map(lb.LinuxBpf(), obj.map_fd("relay_sources"), 4, 8)
    targets = Map(lb.LinuxBpf(), obj.map_fd("relay_targets"), 4, 8)
    peers = Map(lb.LinuxBpf(), obj.map_fd("relay_peers"), 8, 16)

def serve(cli, slot):
    up = socket.create_connection(("127.0.0.1", target))
    if mode == "splice":
        t = threading.Thread(target=splice_one_way, args=(up, cli))
        t.start()
        cli.sendall(b"g")
        splice_one_way(cli, up)
        t.join()
    else:
        a, b = 2 * slot, 2 * slot + 1
        for i, s in ((a, cli), (b, up)):
            targets.update(struct.pack("I", i), struct.pack("Q", s.fileno()))
        for s, peer in ((cli, b), (up, a)):
            cookie = s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8)
            peers.update(cookie, struct.pack("IIQ", peer, 0, 0))
        for i, s in ((a, cli), (b, up)):
            sources.update(struct.pack("I", i), struct.pack("Q", s.fileno()))
        cli.sendall(b"g")  # from here on every byte is redirected in the kernel
        import select
        p = select.poll()
        p.register(cli, select.POLLRDHUP)
        p.poll()
        for i in (a, b):
            sources.delete(struct.pack("I", i))
            targets.delete(struct.pack("I", i))
    cli.close()
    up.close()

ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(16)
print("ready", flush=True)
slot = 0
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c, slot % 256), daemon=True).start()
    slot += 1
"""

SINK = r"""
import socket, sys
size = int(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(16)
print("ready", flush=True)
buf = bytearray(1 << 20)
while True:
    c, _ = ls.accept()
    n = 0
    while n < size and (k := c.recv_into(buf)):
        n += k
    c.sendall(b"%d\n" % n)
    c.close()
"""

SENDER = r"""
import os, socket, sys, time
port, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
assert s.recv(1) == b"g"
block = b"x" * (1 << 20)
t = time.monotonic()
for _ in range(size // len(block)):
    s.sendall(block)
answer = s.recv(64)
elapsed = time.monotonic() - t
t_cpu = os.times()
print(int(answer), elapsed, t_cpu.user + t_cpu.system)
"""


def kernel_threads_seconds() -> float:
    """kworkers (the sockmap redirect backlog runs there) and ksoftirqd."""
    return threads_seconds("kworker", "ksoftirqd/")


def build_verdict(out_dir: str) -> str:
    from appliance.switch.datapath.build import build

    return str(build(VERDICT_C, out_dir))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gib", type=int, default=2)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (a namespace, BPF)", file=sys.stderr)
        return 1
    size = args.gib << 30
    ns = f"r7sm{os.getpid() % 100000}{secrets.token_hex(2)}"
    tmp = tempfile.mkdtemp(prefix="relay-sockmap-")
    procs: list[subprocess.Popen] = []
    loads = [os.getloadavg()[0]]

    def start(code: str, *argv: str) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code, *argv],
                             stdout=subprocess.PIPE, text=True, cwd=sys.path[0],
                             env={**os.environ, "PYTHONPATH": sys.path[0]})
        procs.append(p)
        assert p.stdout.readline().strip() == "ready", f"{argv} did not start"
        return p

    results: dict[str, list[tuple[float, float]]] = {"splice": [], "sockmap": []}
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        obj = build_verdict(tmp)
        sink = start(SINK, str(SINK_PORT), str(size))
        fwd = {"splice": start(FORWARDER, "splice", str(SPLICE_PORT), str(SINK_PORT), obj),
               "sockmap": start(FORWARDER, "sockmap", str(SOCKMAP_PORT), str(SINK_PORT), obj)}
        ports = {"splice": SPLICE_PORT, "sockmap": SOCKMAP_PORT}
        for _ in range(args.rounds):
            for mode in ("splice", "sockmap"):
                before = cpu_seconds(sink.pid) + cpu_seconds(fwd[mode].pid) + kernel_threads_seconds()
                res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER,
                                      str(ports[mode]), str(size)],
                                     capture_output=True, text=True, timeout=600, check=True)
                after = cpu_seconds(sink.pid) + cpu_seconds(fwd[mode].pid) + kernel_threads_seconds()
                got, elapsed, sender_cpu = res.stdout.split()
                assert int(got) == size, f"{mode}: the sink got {got} of {size} bytes"
                gb = size / 1e9
                results[mode].append((gb * 8 / float(elapsed), (after - before + float(sender_cpu)) / gb))
                loads.append(os.getloadavg()[0])
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["rm", "-rf", tmp], check=False)

    print(textwrap.dedent(f"""
        relay forwarder, splice vs BPF sockmap: {args.gib} GiB per transfer over loopback, one namespace,
        median of {args.rounds} interleaved rounds, {os.cpu_count()} CPUs, load average {min(loads):.1f}..{max(loads):.1f}
    """).strip())
    print(f"{'forwarder':<10} {'Gbit/s':>8} {'CPU s/GB':>9}   rounds (Gbit/s)")
    for mode, runs in results.items():
        rates = ", ".join(f"{r:.2f}" for r, _ in runs)
        print(f"{mode:<10} {statistics.median(r for r, _ in runs):>8.2f} "
              f"{statistics.median(c for _, c in runs):>9.3f}   {rates}")
    print(f"command: sudo .venv/bin/python bench/relay_sockmap.py --rounds {args.rounds} --gib {args.gib}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
