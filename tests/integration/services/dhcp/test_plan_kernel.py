"""The plan's kernel part on a real kernel: the reconciler (the lead's
kernel boundary) applies it to namespaces of our own and a second pass
changes nothing; the vproxy DNS REDIRECT and the host's console guard
(nftables) behave as the plan says. No flows here (that is the datapath's
part): the bridge switches normally, so the client reaches vproxy by a
static neighbour entry, as the flow's mod_dl_dst would do.
"""
import dataclasses
import os
import secrets
import socket
import subprocess
import time

import pytest

from appliance.box.plan import BRIDGE, BridgePort, Observed, plan
from appliance.box.settings import default_settings
from appliance.kernel import LinuxKernel
from appliance.kernel.desired import Bridge, Namespace, Veth
from appliance.kernel.reconcile import reconcile, remove

GW_MAC = "18:00:00:00:00:e8"


def sh(ns, *argv, check=True, timeout=20):
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=check, timeout=timeout)


@pytest.fixture(scope="module")
def applied():
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    names = {None: f"kp{tag}b", "gw": f"kp{tag}g", "vproxy": f"kp{tag}v"}
    client, modem = f"kp{tag}c", f"kp{tag}m"
    k = LinuxKernel()
    # The box's NICs: veths to a client namespace and to a (silent) modem namespace.
    nics = [Namespace(names[None]), Namespace(client), Namespace(modem),
            Veth(names[None], "enp1s0", client, "eth0"), Veth(names[None], "enp5s0", modem, "eth0")]
    objects = []
    try:
        reconcile(k, nics)
        macs = {l.name: l.mac for l in k.links(names[None])}
        settings = default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC})
        p = plan(settings, Observed.of({n: macs[n] for n in ("enp5s0", "enp1s0")}))

        def remap(o):
            if isinstance(o, Namespace):
                return Namespace(names[o.name])
            fields = {f: names[getattr(o, f)] for f in ("ns", "peer_ns") if hasattr(o, f)}
            return dataclasses.replace(o, **fields)

        objects = [remap(o) for o in p.kernel]
        kernel_objects = [o for o in objects if not isinstance(o, BridgePort)]
        # LinuxKernel.add_route gives a local route no `scope host` (EINVAL,
        # reported to the kernel boundary's owner): make it the way
        # `ip route add local` does; the reconciler then finds it in place.
        reconcile(k, [o for o in kernel_objects if isinstance(o, (Namespace, Bridge, Veth))])
        sh(names["vproxy"], "ip", "route", "replace", "local", str(settings.vproxy.fake_range), "dev", "lo")
        first = reconcile(k, kernel_objects)
        for bp in (o for o in objects if isinstance(o, BridgePort)):  # the apply layer's job
            k.set_link(bp.ns, bp.name, master=bp.master, up=True)
        second = reconcile(k, kernel_objects)
        # The flow `dl_dst=<admin MAC>,actions=output:admin` keeps frames for
        # the box away from the bridge, which holds the uplink NIC's MAC (=
        # admin0's) as its own. Without a datapath here, drop that entry.
        # (Nothing to delete when the apply layer gave the NIC another MAC.)
        subprocess.run(["bridge", "-n", names[None], "fdb", "del", macs["enp5s0"], "dev", "enp5s0", "master"],
                       capture_output=True)
        sh(client, "ip", "addr", "add", "192.168.1.70/24", "dev", "eth0")
        yield {"names": names, "client": client, "plan": p, "first": first, "second": second, "k": k,
               "kernel_objects": kernel_objects}
    finally:
        try:
            remove(k, objects + nics)
        finally:
            for ns in list(names.values()) + [client, modem]:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_the_plan_applies_and_a_second_pass_changes_nothing(applied):
    assert applied["first"], "the first apply must do something"
    assert applied["second"] == []
    links = {l.name: l for l in applied["k"].links(applied["names"][None])}
    for port in ("enp5s0", "enp1s0", "admin", "vgw", "vproxy"):
        assert links[port].master == BRIDGE
    assert links["admin0"].mac == links["enp5s0"].mac  # the admin veth carries the uplink NIC's MAC
    gw0 = {l.name: l for l in applied["k"].links(applied["names"]["gw"])}["gw0"]
    assert gw0.mac == GW_MAC
    assert applied["k"].addresses(applied["names"]["gw"], "gw0") == ["192.168.1.1/24"]


def test_no_ipv6_on_the_boxs_links(applied):
    # The box's own ports carry no IPv6 at all; gw0 (as the modem, for DHCPv6) and vproxy0
    # (the source of its neighbour solicitations) a link-local only (ipv6.policy invisible).
    for ns, dev in ((applied["names"][None], "admin0"), (applied["names"][None], BRIDGE)):
        out = sh(ns, "ip", "-6", "addr", "show", "dev", dev).stdout
        assert "inet6" not in out, (ns, dev, out)
    for ns, dev in ((applied["names"]["gw"], "gw0"), (applied["names"]["vproxy"], "vproxy0")):
        out = sh(ns, "ip", "-6", "addr", "show", "dev", dev).stdout
        assert all(" fe80::" in line for line in out.splitlines() if "inet6" in line), (ns, dev, out)


def _udp_listener(ns, addr, port):
    """A UDP echo server in `ns` answering one datagram (runs in a thread)."""
    code = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            f"s.bind(('{addr}',{port}));s.settimeout(15);d,a=s.recvfrom(512);s.sendto(b'vproxy:'+d,a)")
    return subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", code])


def test_dns_to_the_gateway_is_answered_in_vproxy(applied):
    names, client = applied["names"], applied["client"]
    vp_mac = next(o.mac for o in applied["plan"].kernel if isinstance(o, Veth) and o.name == "vproxy0")
    server = _udp_listener(names["vproxy"], "192.168.1.9", 53)
    try:
        # The flow would rewrite dl_dst to vproxy's MAC; the neighbour entry does it here.
        sh(client, "ip", "neigh", "replace", "192.168.1.1", "lladdr", vp_mac, "dev", "eth0")
        out = sh(client, "python3", "-c",
                 "import socket,time;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)\n"
                 "for i in range(6):\n"
                 "  s.sendto(b'q',('192.168.1.1',53))\n"
                 "  try: print(s.recvfrom(512)); break\n"
                 "  except socket.timeout: pass\n").stdout
        # The answer comes back from 192.168.1.1: the REDIRECT is undone by conntrack.
        assert "b'vproxy:q'" in out and "'192.168.1.1', 53" in out
    finally:
        server.kill()
        server.wait()
        sh(client, "ip", "neigh", "del", "192.168.1.1", "dev", "eth0", check=False)


def _tcp_accepts(from_ns, to_addr, port):
    r = sh(from_ns, "python3", "-c",
           f"import socket;s=socket.socket();s.settimeout(2);s.connect(('{to_addr}',{port}));print('open')",
           check=False)
    return "open" in r.stdout


def test_console_guard_refuses_the_gateway_mac_but_not_the_home(applied):
    names = applied["names"]
    listener = subprocess.Popen(["ip", "netns", "exec", names[None], "python3", "-c",
                                 "import socket,time;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,"
                                 "socket.SO_REUSEADDR,1);s.bind(('192.168.1.8',22));s.listen(8);time.sleep(60)"])
    try:
        for _ in range(100):  # wait until it listens
            if "192.168.1.8:22" in sh(names[None], "ss", "-ltnH").stdout:
                break
            time.sleep(0.05)
        assert _tcp_accepts(applied["client"], "192.168.1.8", 22)  # from the home side: open
        # From a stack with the gateway's MAC (gw0 here; the modem in real life): refused by the host table.
        assert not _tcp_accepts(names["gw"], "192.168.1.8", 22)
    finally:
        listener.kill()
        listener.wait()
