"""The plan's gw namespace when the box serves DHCPv6, on a real kernel: the reconciler applies
the plan's own objects (gw, its veth, its sysctls) to namespaces of our own, a second pass
changes nothing, gw0 carries exactly the modem's link-local (EUI-64 of the modem's MAC, not
tentative), and the plan's dhcp6 service, run by the supervisor there, answers dhclient -6 -S
on the other end of the veth."""
import dataclasses
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from appliance.box.layout import Layout
from appliance.box.plan import GW_NS, Observed, plan
from appliance.box.settings import Ipv6, default_settings
from appliance.kernel import LinuxKernel
from appliance.kernel.desired import Address, Namespace, Sysctls, Veth
from appliance.kernel.reconcile import reconcile, remove
from appliance.services.supervisor import Supervisor

GW_MAC = "18:00:00:00:00:e8"
GW_LL = "fe80::1a00:ff:fe00:e8"


def sh(ns, *argv, check=True, timeout=60):
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          check=check, timeout=timeout)


@pytest.fixture(scope="module")
def gw():
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    names = {GW_NS: f"k6{tag}g", None: f"k6{tag}c"}
    tmp = Path(tempfile.mkdtemp(prefix="k6-", dir="/tmp"))
    layout = Layout(state_dir=str(tmp / "state"), run_dir=str(tmp / "run"))
    s = default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": GW_MAC},
                         dhcp={"pools": [{"start": "192.168.1.65", "end": "192.168.1.191"}],
                               "options": {"domain": "home.arpa"}})
    p = plan(s.model_copy(update={"ipv6": Ipv6.model_construct(policy="invisible")}),
             Observed.of({"enp5s0": "5c:00:00:00:00:7d", "enp1s0": "5c:00:00:00:00:7c"}), layout)
    # gw, its veth and addresses; the veth's host end (vgw) in a namespace of its own, standing for the home.
    mine = [o for o in p.kernel if (isinstance(o, Namespace) and o.name == GW_NS)
            or (isinstance(o, (Veth, Sysctls, Address)) and o.ns == GW_NS)]
    objects = [Namespace(names[None])]
    for o in mine:
        if isinstance(o, Namespace):
            objects.append(Namespace(names[o.name]))
        elif isinstance(o, Veth):
            objects.append(dataclasses.replace(o, ns=names[o.ns], peer_ns=names[None], peer_master=None))
        else:
            objects.append(dataclasses.replace(o, ns=names[o.ns]))
    k = LinuxKernel()
    spec = next(svc for svc in p.services if svc.name == "dhcp6")
    spec = dataclasses.replace(spec, netns=names[GW_NS], probe=dataclasses.replace(spec.probe, netns=names[GW_NS]))
    sup = Supervisor(tmp / "services")
    try:
        first = reconcile(k, objects)
        second = reconcile(k, objects)
        tmp.chmod(0o711)  # the server's own user reaches its directories inside
        for d in p.directories:
            Path(d).mkdir(parents=True, exist_ok=True)
        for d, uid, gid, mode in p.owners:  # as the apply makes them
            Path(d).mkdir(parents=True, exist_ok=True)
            os.chown(d, uid, gid)
            os.chmod(d, mode)
        for f in p.files:
            Path(f.path).write_text(f.content)
        yield {"names": names, "first": first, "second": second, "sup": sup, "spec": spec, "tmp": tmp}
    finally:
        try:
            sup.stop(spec.name)
        finally:
            remove(k, objects)
            for ns in names.values():
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)


def test_the_gw_part_applies_and_a_second_pass_changes_nothing(gw):
    assert gw["first"] and gw["second"] == []


def test_gw0_carries_exactly_the_modems_link_local_and_lo_has_its_loopback(gw):
    out = sh(gw["names"][GW_NS], "ip", "-6", "addr", "show", "dev", "gw0").stdout
    assert out.count("inet6") == 1 and f"inet6 {GW_LL}/64 scope link" in out, out
    assert "tentative" not in out and "dadfailed" not in out, out
    assert "inet6 ::1/128" in sh(gw["names"][GW_NS], "ip", "-6", "addr", "show", "dev", "lo").stdout


def test_the_plans_dhcp6_service_answers_a_client_on_the_other_end(gw):
    assert gw["sup"].start(gw["spec"]) == "started"  # its probe answered
    client = gw["names"][None]
    script = gw["tmp"] / "script"
    script.write_text("#!/bin/sh\nenv | grep -E '^new_' > \"$0.out\"\n")
    script.chmod(0o755)
    sh(client, "ip", "link", "set", "vgw", "up")
    deadline = __import__("time").monotonic() + 20
    while "tentative" in (out := sh(client, "ip", "-6", "addr", "show", "dev", "vgw").stdout) or "inet6" not in out:
        assert __import__("time").monotonic() < deadline, out
        __import__("time").sleep(0.1)
    p = sh(client, "dhclient", "-6", "-S", "-1", "-v", "-sf", str(script), "-lf", str(gw["tmp"] / "lease"),
           "-pf", str(gw["tmp"] / "pid"), "vgw")
    assert p.returncode == 0, p.stderr
    assert f"Reply message on vgw from {GW_LL}" in p.stderr
    got = dict(line.split("=", 1) for line in Path(f"{script}.out").read_text().splitlines())
    assert got["new_dhcp6_domain_search"] == "home.arpa."
