"""A small home for the DNS server's kernel answer cache, in namespaces (tests and the image).

    cli (192.168.78.11) --veth-- vp0 in "vp" (192.168.78.2: the DNS server, the program at
                                 tc ingress of vp0, nftables REDIRECT of DNS to the gateway)
                                 up0 -- "up" (192.168.78.1 = the modem: a small authoritative
                                        server with A, AAAA, CNAME chains, NXDOMAIN/NODATA + SOA)

The client asks the gateway 192.168.78.1 with vp0's MAC (a static neighbour
entry stands for the vswitch's MAC rewrite), as the box's home does. vp0's
peer is in another namespace, as vproxy0's is on the box, so the kernel's
answers go straight into it (bpf_redirect_peer).

`python kclab.py` (the image test, on Debian's 6.1): asks one name twice and
prints, as JSON, the server's kernel cache status, both answers and the
kernel's hits before and after the second.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

# The checkout (or, in the image test, /opt/appliance) the DNS server runs from.
ROOT = Path(os.environ.get("APPLIANCE_ROOT") or Path(__file__).resolve().parents[2])
GW, VP, CLI = "192.168.78.1", "192.168.78.2", "192.168.78.11"
TAG = f"{os.getpid() % 10000}{random.randint(0, 0xfff):03x}"
NS = {k: f"kc-{TAG}-{k}" for k in ("cli", "vp", "up")}

UPSTREAM = r'''
import socket, sys
import dns.message, dns.rrset, dns.rcode, dns.flags
SOA = dns.rrset.from_text("test.", 600, "IN", "SOA", "ns.test. admin.test. 1 3600 600 86400 120")
ZONE = {
    ("www.a.test", "A"): [("www.a.test", 300, "A", "203.0.113.1"), ("www.a.test", 300, "A", "203.0.113.2")],
    ("www.a.test", "AAAA"): [("www.a.test", 300, "AAAA", "2001:db8::1")],
    ("alias.test", "A"): [("alias.test", 300, "CNAME", "mid.test."), ("mid.test", 200, "CNAME", "www.a.test."),
                          ("www.a.test", 300, "A", "203.0.113.1")],
    ("alias.test", "CNAME"): [("alias.test", 300, "CNAME", "mid.test.")],
    ("short.test", "A"): [("short.test", 2, "A", "203.0.113.9")],
    ("many.test", "A"): [("many.test", 300, "A", f"198.51.100.{i}") for i in range(1, 21)],
}
for i in range(20):
    ZONE[(f"n{i}.test", "A")] = [(f"n{i}.test", 100 + i, "A", f"198.51.100.{100 + i}")]
KNOWN = {name for name, _ in ZONE}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    data, addr = s.recvfrom(4096)
    try:
        q = dns.message.from_wire(data)
    except Exception:
        continue
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AA
    name = q.question[0].name.to_text().rstrip(".").lower()
    rtype = dns.rdatatype.to_text(q.question[0].rdtype)
    records = ZONE.get((name, rtype))
    if records:
        for owner, ttl, t, value in records:
            r.answer.append(dns.rrset.from_text(owner + ".", ttl, "IN", t, value))
    else:
        if name not in KNOWN:
            r.set_rcode(dns.rcode.NXDOMAIN)
        r.authority.append(SOA)
    s.sendto(r.to_wire(), addr)
'''

CLIENT = r'''
import socket, sys, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.connect((sys.argv[1], 53))
out = []
for line in sys.stdin:
    s.send(bytes.fromhex(line.strip()))
    try:
        out.append(s.recv(4096).hex())
    except socket.timeout:
        out.append(None)
print(json.dumps(out))
'''


def sh(*args, ns=None, check=True, timeout=30, input=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def poll(fn, timeout=10.0, every=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {fn}")
        time.sleep(every)


def query(name: str, qtype: int, qid: int = 0x1234, edns: bool = True, do: bool = False,
          rd: bool = True) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    head = struct.pack(">HHHHHH", qid, 0x0100 if rd else 0, 1, 0, 0, 1 if edns else 0)
    opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0x8000 if do else 0, 0) if edns else b""
    return head + wire + struct.pack(">HH", qtype, 1) + opt


@contextlib.contextmanager
def kc_lab(tmp: Path):
    """The three namespaces, the upstream running; everything removed afterwards."""
    procs = {}
    try:
        for ns in NS.values():
            sh("ip", "netns", "add", ns)
        vp = NS["vp"]
        sh("ip", "link", "add", "vp0", "netns", vp, "type", "veth", "peer", "name", "eth0", "netns", NS["cli"])
        sh("ip", "link", "add", "up0", "netns", vp, "type", "veth", "peer", "name", "eth0", "netns", NS["up"])
        for ns, dev, addr in ((vp, "vp0", f"{VP}/24"), (NS["cli"], "eth0", f"{CLI}/24"),
                              (NS["up"], "eth0", f"{GW}/24")):
            sh("ip", "addr", "add", addr, "dev", dev, ns=ns)
        for ns, dev in ((vp, "vp0"), (vp, "up0"), (NS["cli"], "eth0"), (NS["up"], "eth0"),
                        (vp, "lo"), (NS["cli"], "lo"), (NS["up"], "lo")):
            sh("ip", "link", "set", dev, "up", ns=ns)
        sh("ip", "route", "add", f"{GW}/32", "dev", "up0", ns=vp)
        vp_mac = sh("cat", "/sys/class/net/vp0/address", ns=vp).strip()
        sh("ip", "neigh", "replace", GW, "lladdr", vp_mac, "dev", "eth0", "nud", "permanent", ns=NS["cli"])
        nft = tmp / "redirect.nft"
        nft.write_text("table ip kc {\n chain prerouting {\n"
                       "  type nat hook prerouting priority dstnat; policy accept;\n"
                       f"  iifname \"vp0\" ip daddr {GW} udp dport 53 redirect to :53\n }}\n}}\n")
        sh("nft", "-f", nft, ns=vp)
        (tmp / "upstream.py").write_text(UPSTREAM)
        procs["up"] = subprocess.Popen(["ip", "netns", "exec", NS["up"], sys.executable,
                                        str(tmp / "upstream.py"), GW])
        (tmp / "client.py").write_text(CLIENT)
        yield {"tmp": tmp, "procs": procs}
    finally:
        end(procs.values(), NS.values())


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate `proc`, killed if it is still there after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def end(procs, namespaces) -> None:
    """A namespace lab's teardown: its processes stopped, then its namespaces deleted."""
    for proc in procs:
        stop(proc)
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)




class Server:
    def __init__(self, lab, name: str, workers: int, **extra):
        self.tmp = lab["tmp"] / name
        self.tmp.mkdir()
        self.sock = str(self.tmp / "dns.sock")
        self.doc = {
            "listen": ["0.0.0.0:53"],
            "upstreams": [{"url": f"udp://{GW}"}],
            "control_socket": self.sock,
            "lists_dir": str(self.tmp),
            "fake_ip": {"db_path": str(self.tmp / "fake.db")},
            "workers": workers,
            "kernel_cache": "on",
            "kernel_cache_device": "vp0",
            "kernel_cache_answer_as": [f"{GW}/32"],
            **extra,
        }
        self.config = self.tmp / "dns.yaml"
        self.config.write_text(yaml.safe_dump(self.doc))
        self.log = open(self.tmp / "log", "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS["vp"], sys.executable, "-m", "appliance.services.dns",
             "--config", str(self.config)], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            # 60 s: the image test runs this last, in an emulated VM still busy with its boot.
            poll(lambda: os.path.exists(self.sock) and self._stats_or_none(), timeout=60)
            if workers > 1:
                poll(lambda: len(self.stats()["workers"]) == workers - 1, timeout=20)
        except AssertionError:
            self.log.flush()
            print(f"the DNS server's log ({'running' if self.proc.poll() is None else 'ended'}):\n"
                  + (self.tmp / "log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise

    def _stats_or_none(self):
        try:
            return self.stats()
        except OSError:
            return None

    def stats(self) -> dict:
        from appliance.services.dns.control import DnsControl

        with DnsControl(self.sock) as c:
            return c.stats()

    def kernel(self) -> dict:
        return self.stats()["kernel_cache"]

    def reload(self, **changes) -> None:
        self.doc.update(changes)
        self.config.write_text(yaml.safe_dump(self.doc))
        before = self.stats()["reloads"]
        self.proc.send_signal(signal.SIGHUP)
        poll(lambda: self.stats()["reloads"] > before)

    def stop(self) -> None:
        stop(self.proc, 10)
        self.log.close()


def ask(lab, *queries: bytes) -> list[bytes | None]:
    out = sh(sys.executable, lab["tmp"] / "client.py", GW, ns=NS["cli"],
             input="".join(q.hex() + "\n" for q in queries))
    return [bytes.fromhex(a) if a else None for a in json.loads(out)]


def hits(server) -> int:
    return server.kernel()["hits"]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp, kc_lab(Path(tmp)) as lab:
        server = Server(lab, "srv", 1)
        try:
            first, = ask(lab, query("www.a.test", 1))
            before = hits(server)
            deadline = time.monotonic() + 10
            while True:
                second, = ask(lab, query("www.a.test", 1))
                after = hits(server)
                if after > before or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            print(json.dumps({"status": server.kernel()["status"], "first": first and first.hex(),
                              "second": second and second.hex(), "before": before, "after": after}))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
