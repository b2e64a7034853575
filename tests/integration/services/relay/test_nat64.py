"""The IPv6 clients' translator (`appliance/services/relay/nat64.py`) in namespaces.

A client with only IPv6 asks a fake IPv6 address over TCP; a router
namespace (vproxy's part) holds the translator, an IPv4 DNAT of the fake
IPv4 twin to a server and a masquerade, as the relay's IPv4 fast path does;
the server has only IPv4. What a user would notice: once the relay has
mapped the address and given the client a shadow address, the download
works and arrives intact through the kernel; before, or for a client
without a shadow, nothing is translated (the relay would take it); nothing
IPv4 for a shadow address leaves towards the home. Both attachments: tcx
where the kernel has it, and the clsact filters of Debian's 6.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from appliance.kernel.tc import LinuxTc
from appliance.services.dns.fakeip import twin6
from appliance.services.relay import nat64

ROOT = Path(__file__).resolve().parents[4]
TAG = f"{os.getpid() % 10000}{random.randint(0, 0xfff):03x}"
FAKE4_NET, FAKE6_NET, SHADOW_NET = "100.96.0.0/11", "2001:db8:7e::/96", "100.95.0.0/16"
FAKE4 = "100.96.0.5"
FAKE6 = twin6(FAKE4, FAKE4_NET, FAKE6_NET)
CLIENT6, STRANGER6, ROUTER6 = "2001:db8:64::11", "2001:db8:64::12", "2001:db8:64::1"
ROUTER4, SERVER4 = "10.64.0.1", "10.64.0.2"
PORT = 8080
SIZE = 8 * 1024 * 1024

# The relay's part, kept alive by a process in the router namespace (the links go with it).
HOLDER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from appliance.services.dns.kernel_cache import KernelCache
    from appliance.services.relay.nat64 import Nat64
    tcx = {"auto": None, "clsact": False}[sys.argv[1]]
    # As in the box, the DNS server's kernel cache is on the device first; it ends the walk for
    # whatever it passes up, so the translator must come before it.
    cache = KernelCache("r0", ["0.0.0.0/0", "::/0"], sys.argv[2], Path(sys.argv[5]), tcx=tcx,
                        fake_network6=sys.argv[3])
    cache.start()
    n = Nat64("r0", sys.argv[2], sys.argv[3], sys.argv[4], Path(sys.argv[5]), tcx=tcx)
    n.start()
    print(json.dumps({"mode": n.attach_mode}), flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "shadow":
            out = n.shadow_for(args[0])
        elif cmd == "map":
            out = n.map_fake(*args)
        elif cmd == "unmap":
            out = n.unmap_fake(*args)
        elif cmd == "stats":
            out = n.stats()
        else:
            break
        print(json.dumps(out), flush=True)
    n.close()
    cache.close()
""")


def sh(ns, *argv, check=True, text=True, **kw):
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=check, capture_output=True,
                          text=text, **kw)


class Holder:
    def __init__(self, ns, mode, build_dir):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", HOLDER, mode, FAKE4_NET, FAKE6_NET,
             SHADOW_NET, str(build_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the translator did not start (exit {self.proc.wait()})")
        self.mode = json.loads(line)["mode"]

    def ask(self, *words):
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    names = {k: f"n64{k}-{TAG}" for k in ("c", "r", "s")}
    c, r, s = names["c"], names["r"], names["s"]
    served = tmp_path_factory.mktemp("served")
    payload = random.randbytes(SIZE)
    (served / "file").write_bytes(payload)
    server = None
    try:
        for ns in names.values():
            subprocess.run(["ip", "netns", "add", ns], check=True)
            sh(ns, "ip", "link", "set", "lo", "up")
        subprocess.run(["ip", "-n", c, "link", "add", "c0", "type", "veth", "peer", "name", "r0",
                        "netns", r], check=True)
        subprocess.run(["ip", "-n", s, "link", "add", "s0", "type", "veth", "peer", "name", "r1",
                        "netns", r], check=True)
        for cmd in (
                [c, "ip", "addr", "add", f"{CLIENT6}/64", "dev", "c0", "nodad"],
                [c, "ip", "addr", "add", f"{STRANGER6}/64", "dev", "c0", "nodad"],
                [c, "ip", "link", "set", "c0", "up"],
                [c, "ip", "route", "add", FAKE6_NET, "via", ROUTER6],
                [r, "ip", "addr", "add", f"{ROUTER6}/64", "dev", "r0", "nodad"],
                [r, "ip", "addr", "add", f"{ROUTER4}/24", "dev", "r1"],
                [r, "ip", "link", "set", "r0", "up"],
                [r, "ip", "link", "set", "r1", "up"],
                [r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                [s, "ip", "addr", "add", f"{SERVER4}/24", "dev", "s0"],
                [s, "ip", "link", "set", "s0", "up"]):
            sh(*cmd)
        # The relay's IPv4 fast path for FAKE4, as its nftables table does it.
        sh(r, "nft", "-f", "-", input=textwrap.dedent(f"""
            table ip n64test {{
              chain pre {{ type nat hook prerouting priority dstnat; ip daddr {FAKE4} dnat to {SERVER4}; }}
              chain post {{ type nat hook postrouting priority srcnat; oifname "r1" masquerade; }}
            }}"""))
        server = subprocess.Popen(["ip", "netns", "exec", s, sys.executable, "-m", "http.server",
                                   "-b", SERVER4, str(PORT)], cwd=served,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while sh(r, "curl", "-so", "/dev/null", f"http://{SERVER4}:{PORT}/", check=False).returncode:
            assert time.monotonic() < deadline, "the test server never answered"
            time.sleep(0.1)
        yield {"c": c, "r": r, "s": s, "sha": hashlib.sha256(payload).hexdigest(),
               "build": tmp_path_factory.mktemp("build"), "server": server}
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], check=False)


def fetch(net, source, timeout=10):
    return sh(net["c"], "curl", "-sS", "-g", "--interface", source, "--connect-timeout", "3",
              "-m", str(timeout), "-o", "-", f"http://[{FAKE6}]:{PORT}/file", check=False,
              text=False)


@pytest.mark.parametrize("mode", ["auto", "clsact"])
def test_an_ipv6_client_reaches_an_ipv4_server_through_the_kernel_once_mapped(net, mode):
    holder = Holder(net["r"], mode, net["build"])
    try:
        assert holder.mode == ("tcx" if mode == "auto" and LinuxTc().tcx_supported() else "tc clsact")
        # Not mapped yet: untouched (in the box the relay takes it; here nothing answers).
        assert fetch(net, CLIENT6, timeout=3).returncode != 0
        assert holder.ask("stats")["to4"] == 0

        shadow = holder.ask("shadow", CLIENT6)
        assert shadow.startswith("100.95.")
        holder.ask("map", FAKE4, SERVER4)
        got = fetch(net, CLIENT6)
        assert got.returncode == 0, got.stderr
        assert hashlib.sha256(got.stdout).hexdigest() == net["sha"]
        stats = holder.ask("stats")
        assert stats["to4"] > 0 and stats["to6"] > SIZE // 65536, stats
        assert stats["failed"] == 0, stats

        # The same client, another address without a shadow: not translated.
        before = stats["no_shadow"]
        assert fetch(net, STRANGER6, timeout=3).returncode != 0
        assert holder.ask("stats")["no_shadow"] > before
    finally:
        holder.close()


def test_a_translated_download_outlives_the_mapping_and_the_next_connection_is_the_relays(net):
    holder = Holder(net["r"], "auto", net["build"])
    try:
        holder.ask("shadow", CLIENT6)
        holder.ask("map", FAKE4, SERVER4)
        slow = subprocess.Popen(
            ["ip", "netns", "exec", net["c"], "curl", "-sS", "-g", "--interface", CLIENT6,
             "--limit-rate", f"{SIZE // 3}", "-m", "30", "-o", "-", f"http://[{FAKE6}]:{PORT}/file"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while holder.ask("stats")["to6"] < 3:  # under way, through the kernel
            assert time.monotonic() < deadline and slow.poll() is None, "the download never started"
            time.sleep(0.05)
        holder.ask("unmap", FAKE4)  # the relay's ttl ran out mid-download
        out, err = slow.communicate(timeout=40)
        assert slow.returncode == 0, err
        assert hashlib.sha256(out).hexdigest() == net["sha"]
        # A new connection is no longer translated (the relay would take it).
        before = holder.ask("stats")["not_mapped"]
        assert fetch(net, CLIENT6, timeout=3).returncode != 0
        assert holder.ask("stats")["not_mapped"] > before
    finally:
        holder.close()


def test_nothing_ipv4_for_a_shadow_address_reaches_the_home(net):
    holder = Holder(net["r"], "auto", net["build"])
    try:
        shadow = holder.ask("shadow", CLIENT6)
        # A reply the translator cannot make IPv6 (ICMP, from no fake address): dropped, counted.
        assert sh(net["r"], "ping", "-c", "1", "-W", "1", shadow, check=False).returncode != 0
        assert holder.ask("stats")["dropped"] >= 1
    finally:
        holder.close()


def test_the_translator_goes_with_its_process(net):
    holder = Holder(net["r"], "clsact", net["build"])
    # The replies' route: 20 bytes under the device's MTU, through a neighbour never resolved.
    route = sh(net["r"], "ip", "route", "show", SHADOW_NET).stdout
    assert f"via {nat64.NEXT_HOP} dev r0" in route and "onlink" in route and "mtu 1480" in route
    assert "PERMANENT" in sh(net["r"], "ip", "neigh", "show", nat64.NEXT_HOP, "dev", "r0").stdout
    holder.close()
    assert sh(net["r"], "ip", "route", "show", SHADOW_NET).stdout.strip() == ""
    assert sh(net["r"], "ip", "neigh", "show", nat64.NEXT_HOP, "dev", "r0").stdout.strip() == ""
    filters = sh(net["r"], "tc", "filter", "show", "dev", "r0", "ingress").stdout
    filters += sh(net["r"], "tc", "filter", "show", "dev", "r0", "egress").stdout
    assert "nat64" not in filters


def test_a_killed_translators_filters_and_route_are_taken_off_by_a_successor_that_does_not_translate(net):
    """On clsact a filter outlives its process: a relay started without the translator (settings
    changed) must not leave IPv6 clients translated onto a fast path that no longer maps them."""
    holder = Holder(net["r"], "clsact", net["build"])
    holder.proc.kill()
    holder.proc.wait()
    assert "appliance-nat64" in sh(net["r"], "tc", "filter", "show", "dev", "r0", "egress").stdout
    assert sh(net["r"], "ip", "route", "show", SHADOW_NET).stdout.strip()
    sh(net["r"], sys.executable, "-c", "from appliance.services.relay import nat64; nat64.remove_leftovers('r0')", cwd=ROOT)
    filters = sh(net["r"], "tc", "filter", "show", "dev", "r0", "ingress").stdout
    filters += sh(net["r"], "tc", "filter", "show", "dev", "r0", "egress").stdout
    assert "nat64" not in filters
    assert sh(net["r"], "ip", "route", "show", SHADOW_NET).stdout.strip() == ""
    assert sh(net["r"], "ip", "neigh", "show", nat64.NEXT_HOP, "dev", "r0").stdout.strip() == ""


def test_the_relay_can_start_and_close_the_translator_from_its_event_loop(net):
    """The relay stops its fast path on its asyncio loop, where pyroute2's own loop cannot run:
    the route and the filters must still go."""
    code = textwrap.dedent(f"""
        import asyncio, pathlib, sys
        from appliance.services.relay.nat64 import Nat64
        async def main():
            n = Nat64("r0", {FAKE4_NET!r}, {FAKE6_NET!r}, {SHADOW_NET!r}, pathlib.Path({str(net["build"])!r}), tcx=False)
            n.start()
            print(n.attach_mode, flush=True)
            n.close()
        asyncio.run(main())
    """)
    res = sh(net["r"], sys.executable, "-c", code, cwd=ROOT)
    assert res.stdout.strip() == "tc clsact", res.stderr[-2000:]
    assert sh(net["r"], "ip", "route", "show", SHADOW_NET).stdout.strip() == ""
    filters = sh(net["r"], "tc", "filter", "show", "dev", "r0", "egress").stdout
    assert "nat64" not in filters
