"""The OS image booted in qemu: first boot, console, SSH, reboot, upgrade.

One VM for the module, in order: first boot from a seed, checks, settings
changed and a lease added, reboot, checks, power off, upgrade the disk to a
newly built image N+1 (A/B slot), boot, everything is still there. Times are
printed (boot to console-ready), never asserted.
"""
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import vm  # noqa: E402

TOP = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = float(os.environ.get("IMAGE_TEST_BOOT_TIMEOUT", "1200"))
LEASE = {"ip-address": "192.168.1.150", "hw-address": "52:54:00:c0:ff:ee", "hostname": "kept-lease"}
KEA_CONF = "/var/lib/appliance/box/dhcp/kea-dhcp4.conf"

# Run with the box's venv: sends one command to Kea's control socket.
KEA_CMD = f"""
import json, sys
from appliance.services.dhcp.kea import KeaControl
conf = json.load(open("{KEA_CONF}"))
print(json.dumps(KeaControl(conf["Dhcp4"]["control-socket"]["socket-name"]).command(
    sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)))
"""


def kea(box, command, args=None):
    q = "'" + json.dumps(args).replace("'", "'\\''") + "'" if args is not None else ""
    res = box.ssh(f"cd /opt/appliance && .venv/bin/python -c '{KEA_CMD.replace(chr(39), chr(34))}' {command} {q}")
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def box():
    work = TOP / "build/image-test" / uuid.uuid4().hex[:8]
    work.mkdir(parents=True)
    key = vm.keypair(work)
    disk = vm.copy_disk(TOP / "build/image/appliance.raw", work / "box.raw")
    seed = vm.make_seed(work / "seed.img", {"settings.yaml": vm.settings(3600),
                                            "authorized_keys": key.with_suffix(".pub").read_text()})
    machine = vm.VM(disk=disk, workdir=work, key=key, seed=seed)
    machine.start()
    try:
        took = machine.wait_console(BOOT_TIMEOUT)
        print(f"\nimage-test: first boot to console-ready: {took:.0f} s", flush=True)
        machine.wait_ssh(300)
        yield machine
    finally:
        machine.stop()
        if os.environ.get("IMAGE_TEST_KEEP") != "1":
            vm.clean(work)


def running(box) -> str:
    return box.ssh("systemctl is-system-running --wait", check=False, timeout=900).stdout.strip()


def test_multi_user_with_no_failed_units(box):
    state = running(box)
    failed = box.ssh("systemctl --failed --no-legend --plain", check=False).stdout.strip()
    assert (state, failed) == ("running", "")
    assert box.ssh("systemctl is-active multi-user.target").stdout.strip() == "active"


def test_console_login_page_over_https(box):
    status, body = box.login_page()
    assert status == 200
    # No admin yet: the first visit is sent to create one (no default password).
    assert "<form" in body and "password" in body.lower()


def test_the_setup_code_is_on_the_local_console_and_setup_needs_it(box):
    """Read off the serial console's login prompt, as someone at the box would; kept root-only."""
    import re

    deadline = time.monotonic() + 120
    while not (m := re.search(r"setup code:\s+([0-9A-Z]{5}-[0-9A-Z]{5}-[0-9A-Z]{5})",
                              box.serial_log.read_text(errors="replace"))):
        assert time.monotonic() < deadline, "no setup code at the serial login prompt"
        time.sleep(2)
    code = m.group(1)
    assert box.ssh("stat -c '%a %U' /var/lib/appliance/console/setup-code").stdout.split() == ["600", "root"]
    assert box.ssh("cat /var/lib/appliance/console/setup-code").stdout.strip() == code
    assert code in box.ssh("cat /etc/issue.d/appliance-setup.issue").stdout
    # Without it, /setup/ makes no admin (with it, the owner made below through the shell ends the first run).
    page = ("c=$(mktemp); curl -sk -c $c -b $c https://127.0.0.1/setup/ | "
            "sed -n 's/.*name=\"csrfmiddlewaretoken\" value=\"\\([^\"]*\\)\".*/\\1/p' > $c.t; "
            "curl -sk -o $c.out -w '%{http_code}' -c $c -b $c -e https://127.0.0.1/setup/ "
            "--data-urlencode csrfmiddlewaretoken=$(cat $c.t) -d code=AAAAA-AAAAA-AAAAA -d username=x "
            "-d password=a-long-passphrase-1 -d password2=a-long-passphrase-1 https://127.0.0.1/setup/; "
            "grep -q 'Wrong setup code' $c.out && echo ' wrong code'; rm -f $c $c.t $c.out")
    assert box.ssh(page).stdout.strip() == "403 wrong code"


def test_ssh_by_key_only_on_the_admin_address(box):
    listening = box.ssh("ss -Htln 'sport = :22' | awk '{print $4}'").stdout.split()
    assert listening == [f"{vm.ADMIN}:22"]
    conf = box.ssh("sshd -T").stdout
    assert "passwordauthentication no" in conf and "kbdinteractiveauthentication no" in conf


def test_first_boot_made_keys_and_nothing_has_a_password(box):
    assert box.ssh("passwd -S root").stdout.split()[1] == "L"
    out = box.ssh("ls /var/lib/appliance/ssh /var/lib/appliance/tls").stdout
    for f in ("ssh_host_ed25519_key", "authorized_keys", "console.crt", "console.key"):
        assert f in out
    # Host keys were made on this box, not shipped in the image.
    assert box.ssh("ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l").stdout.strip() == "0"


def test_the_wizard_sees_both_nics(box):
    out = box.ssh("appliance-manage shell -c 'from appliance.web.network import wizard; "
                  "from appliance.kernel import LinuxKernel; print(wizard.detect(LinuxKernel(), None).nics)'").stdout
    assert vm.UPLINK in out and vm.DOWNLINK in out


def test_box_services_run_as_units_in_their_namespaces(box):
    for unit in ("appliance-svc-dhcp4", "appliance-svc-dns", "appliance-svc-relay"):
        assert box.ssh(f"systemctl is-active {unit}").stdout.strip() == "active"
    assert box.ssh("systemctl show -p NetworkNamespacePath appliance-svc-dhcp4").stdout.strip() == \
        "NetworkNamespacePath=/run/netns/gw"
    assert ":67" in box.ssh("ip netns exec gw ss -Hluln").stdout


def test_settings_and_leases_applied_before_a_reboot_are_live_after_it(box):
    box.put("/root/new.yaml", vm.settings(7200))
    box.ssh("appliance-manage apply --settings /root/new.yaml", timeout=900)
    res = kea(box, "lease4-add", LEASE)
    assert res["result"] == 0, res
    box.ssh("systemctl reboot", check=False, timeout=20)
    rebooted = time.monotonic()
    time.sleep(15)  # until the old console has gone
    box.wait_console(BOOT_TIMEOUT)
    print(f"\nimage-test: reboot to console-ready: {time.monotonic() - rebooted:.0f} s", flush=True)
    box.wait_ssh(300)
    assert running(box) == "running"
    applied = json.loads(box.ssh("cat /var/lib/appliance/box/applied.json").stdout)
    assert applied["settings"]["dhcp"]["lease_time"] == 7200
    assert '"valid-lifetime": 7200' in box.ssh(f"cat {KEA_CONF}").stdout
    assert ":67" in box.ssh("ip netns exec gw ss -Hluln").stdout
    got = kea(box, "lease4-get", {"ip-address": LEASE["ip-address"]})
    assert got["result"] == 0 and got["arguments"]["hw-address"] == LEASE["hw-address"], got


SESSION = """
from django.contrib.auth import get_user_model, login
from django.contrib.sessions.backends.db import SessionStore
from django.test import RequestFactory
User = get_user_model()
user = User.objects.filter(username="owner").first() or \
    User.objects.create_superuser("owner", password="kept-owner-pass-1")
req = RequestFactory().get("/")
req.session = SessionStore()
login(req, user, backend="django.contrib.auth.backends.ModelBackend")
req.session.save()
print("SESSION", req.session.session_key)
"""


def console_session(box) -> str:
    """A logged-in console session's key (the owner's, made on first use)."""
    box.put("/root/session.py", SESSION)
    out = box.ssh("appliance-manage shell < /root/session.py").stdout
    return out.split("SESSION", 1)[1].split()[0]


def test_novnc_only_behind_the_console_login(box):
    key = console_session(box)
    # On the admin address only (test_console_and_novnc_listen_on_the_admin_address_and_loopback_only).
    curl = f"curl -sk -o /dev/null -w '%{{http_code}}' https://{vm.ADMIN}:6443/vnc.html"
    # After a reboot (the test before), noVNC's proxy may still be starting under emulation.
    deadline = time.monotonic() + 120
    while ":6443" not in box.ssh("ss -Htln 'sport = :6443'").stdout:
        assert time.monotonic() < deadline, "noVNC's proxy never listened on 6443"
        time.sleep(2)
    assert box.ssh(curl).stdout == "403"
    assert box.ssh(f"{curl} -H 'Cookie: __Host-sessionid=not-a-session'").stdout == "403"
    assert box.ssh(f"{curl} -H 'Cookie: __Host-sessionid={key}'").stdout == "200"
    # The VNC server on no port at all: a root-only unix socket.
    assert box.ssh("ss -Htlnp | grep -c x11vnc || true").stdout.strip() == "0"
    assert box.ssh("stat -c %a /run/appliance/vnc").stdout.strip() == "700"


def test_console_and_novnc_listen_on_the_admin_address_and_loopback_only(box):
    console = box.ssh("ss -Htln 'sport = :443' | awk '{print $4}' | sort -u").stdout.split()
    assert console == sorted(["127.0.0.1:443", f"{vm.ADMIN}:443"])
    assert box.ssh("ss -Htln 'sport = :6443' | awk '{print $4}' | sort -u").stdout.split() == [f"{vm.ADMIN}:6443"]


def test_redis_on_a_unix_socket_with_a_password(box):
    assert box.ssh("ss -Htlnp | grep -c redis-server || true").stdout.strip() == "0"
    assert "NOAUTH" in box.ssh("redis-cli -s /run/redis/redis-server.sock ping").stdout
    assert box.ssh("stat -c '%a %U %G' /var/lib/appliance/redis/auth.conf").stdout.strip() == "640 root redis"
    assert box.ssh("stat -c %a /var/lib/appliance/console/redis.env").stdout.strip() == "600"


@pytest.mark.parametrize("unit, user, caps", [
    # CAP_NET_ADMIN: the DNS server attaches its kernel answer cache (tc) itself.
    ("appliance-svc-dns", "appliance-dns", "cap_net_bind_service cap_bpf cap_net_admin"),
    # CAP_BPF with CAP_NET_ADMIN: the relay attaches its IPv6 translator (tc) itself.
    ("appliance-svc-relay", "appliance-relay", "cap_bpf cap_net_admin cap_net_bind_service cap_net_raw"),
    ("appliance-svc-dhcp4", "appliance-kea", "cap_net_bind_service cap_net_raw"),
    ("appliance-svc-dhcp6", "appliance-dhcp6", "cap_net_bind_service cap_net_raw"),
])
def test_box_units_run_unprivileged_with_their_capabilities(box, unit, user, caps):
    props = dict(line.split("=", 1) for line in box.ssh(
        f"systemctl show -p User,AmbientCapabilities,CapabilityBoundingSet,NoNewPrivileges,"
        f"ProtectSystem,PrivateTmp,MainPID {unit}").stdout.splitlines() if "=" in line)
    assert props["User"] == user
    assert sorted(props["AmbientCapabilities"].split()) == sorted(caps.split())
    assert sorted(props["CapabilityBoundingSet"].split()) == sorted(caps.split())
    assert (props["NoNewPrivileges"], props["ProtectSystem"], props["PrivateTmp"]) == ("yes", "strict", "yes")
    status = box.ssh(f"grep -E '^(Uid|CapEff)' /proc/{props['MainPID']}/status").stdout
    assert "\t0\t" not in status.splitlines()[0]  # not root


def test_secret_files_are_root_only(box):
    for path in ("/var/lib/appliance/box/applied.json", "/var/lib/appliance/box/dns/relay.json"):
        assert box.ssh(f"stat -c %a {path}").stdout.strip() == "600", path


def test_the_console_shows_the_units_state(box):
    """The dashboard's services panel reads systemd, which runs the box's services here."""
    key = console_session(box)
    status = f"curl -sk -H 'Cookie: __Host-sessionid={key}' https://127.0.0.1/status.json"

    def panel(want: dict, timeout: float = 30) -> dict:
        """The panel's states of want's services, once they are want's or at the timeout."""
        deadline = time.monotonic() + timeout  # the panel's reading may be a second old
        while True:
            services = json.loads(box.ssh(status).stdout)["services"]
            rows = {row["name"]: row["state"] for row in services["value"] or ()}
            got = {name: rows.get(name, services["problem"]) for name in want}
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(1)

    running = {"dhcp4": "running", "dns": "running", "relay": "running"}
    assert panel(running) == running
    box.ssh("systemctl stop appliance-svc-relay")
    try:
        assert panel({"relay": "stopped"}) == {"relay": "stopped"}
    finally:
        box.ssh("systemctl start appliance-svc-relay")
    assert panel(running) == running


def decide(box, then: str | None = None, until_open: float | None = None) -> dict:
    """Where the live datapath sends a client's DNS query now (`dp_decide.py`, run in the box),
    after the command `then` (run by it once it is ready); with `until_open`, asked again until
    it falls open (timed in the box, from the end of `then`)."""
    wait = f" --until-open {until_open}" if until_open is not None else ""
    run = f" --then {shlex.quote(then)}" if then else ""
    return json.loads(box.ssh(f"set -a; . /etc/appliance/environment; set +a; "
                              f"cd /opt/appliance && .venv/bin/python /root/dp_decide.py{wait}{run}").stdout)


def steered(decision: dict) -> bool:
    """The query met the flow that sends DNS to vproxy while the box's DNS is healthy (reg15)."""
    return any("reg15" in f and "tp_dst=53" in f for f in decision["moved"])


def test_the_datapath_falls_open_on_6_1_when_the_watchdog_stops(box):
    """Debian's 6.1 (no tcx): the program is on tc, and with the watchdog gone (its heartbeat
    stops, as when all user space is gone) the datapath itself sends DNS to the modem after 3 s.
    Stopped, not frozen: systemd restarts a frozen one within 5 s (WatchdogSec), which would
    leave the datapath open for too short a time to see through ssh."""
    assert box.ssh("uname -r").stdout.startswith("6.1.")
    assert "bpf" in box.ssh(f"tc filter show dev {vm.DOWNLINK} ingress").stdout
    box.put("/root/dp_decide.py", (Path(__file__).parent / "dp_decide.py").read_text())
    deadline = time.monotonic() + 60  # the watchdog's first rounds after the boot
    while not steered(first := decide(box)):
        assert time.monotonic() < deadline, f"DNS is never steered to vproxy: {first}"
        time.sleep(1)
    assert first["moved"] and first["health"] & 1
    try:
        # It writes nothing on the way out: the heartbeat just stops.
        now = decide(box, then="systemctl stop appliance-svc-watchdog", until_open=10)
        print(f"\nimage-test: the datapath fell open {now['after']:.1f} s after the watchdog stopped", flush=True)
        assert not steered(now), f"still steered to vproxy 10 s after the watchdog stopped: {now}"
        assert now["moved"], "the query met no flow at all"
        assert now["health"] == 0, now
        # The heartbeat's 3 s, less the part of the watchdog's last round already gone.
        assert now["after"] <= 3.5, now
    finally:
        box.ssh("systemctl start appliance-svc-watchdog", check=False)
    deadline = time.monotonic() + 60
    while not steered(back := decide(box)):
        assert time.monotonic() < deadline, f"steering never came back after the watchdog resumed: {back}"
        time.sleep(1)


def reading(box, script: str, tag: str, ready, what: str) -> dict:
    """What the console reads from a service (`script` prints `tag` and JSON, through the box's
    Django shell), once `ready` says the service has answered: the boot's apply (re)starts them."""
    box.put("/root/reading.py", script)
    deadline = time.monotonic() + 120
    while True:
        out = box.ssh("appliance-manage shell < /root/reading.py", check=False).stdout
        value = json.loads(out.split(tag, 1)[1]) if tag in out else None
        if value and ready(value):
            return value
        assert time.monotonic() < deadline, f"no reading of {what}: {out} {value}"
        time.sleep(2)


KERNEL_CACHE = """
import json
from appliance.box import status
from appliance.web import boxes
r = status.dns(boxes.get_box())
print("KC", json.dumps(r.value.get("kernel_cache") if r.ok else {"problem": r.problem}))
"""


def test_the_kernel_answer_cache_loads_on_6_1(box):
    """Debian's 6.1 verifier takes the DNS server's kernel answer cache (on tc, no tcx), and the
    reading the console's DNS page shows says so (or why not)."""
    kc = reading(box, KERNEL_CACHE, "KC", lambda kc: "status" in kc, "the DNS server's kernel cache")
    print(f"\nimage-test: kernel answer cache: {kc['status']}", flush=True)
    assert kc["status"] == "on (tc clsact on vproxy0)", kc
    assert "bpf" in box.ssh("ip netns exec vproxy tc filter show dev vproxy0 ingress").stdout


def test_the_kernel_answer_cache_answers_a_client_on_6_1(box):
    """On 6.1 (clsact, no tcx) the kernel's answer reaches the client, straight into vp0's peer
    (bpf_redirect_peer), as the server's own answer did: the DNS server from the image, in
    namespaces of its own (tests/support/kclab.py)."""
    box.put("/root/kclab.py", (Path(__file__).parents[1] / "support" / "kclab.py").read_text())
    out = box.ssh("cd /opt/appliance && APPLIANCE_ROOT=/opt/appliance .venv/bin/python /root/kclab.py",
                  check=False)
    result = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    print(f"\nimage-test: kernel answer to a client: {result}", flush=True)
    assert result.get("status") == "on (tc clsact on vp0)", out.stderr[-2000:]
    assert result["after"] == result["before"] + 1, "the second query was not the kernel's"
    import dns.message

    first, second = (dns.message.from_wire(bytes.fromhex(result[k])) for k in ("first", "second"))
    assert second.id == first.id and second.flags == first.flags, (first, second)
    assert [sorted(r.to_text() for r in rrset) for rrset in second.answer] == \
        [sorted(r.to_text() for r in rrset) for rrset in first.answer], (first, second)


RELAY_FAST_PATH = """
import json
from appliance.box import status
from appliance.web import boxes
r = status.relay(boxes.get_box())
print("FP", json.dumps(r.value.get("fast_path") if r.ok else {"problem": r.problem}))
"""


def test_the_ipv6_translator_loads_on_6_1(box):
    """Debian's 6.1 verifier takes the relay's IPv6-to-IPv4 translator (on tc, no tcx), so IPv6
    clients' connections to fake addresses can take the kernel fast path; its route is made."""
    fp = reading(box, RELAY_FAST_PATH, "FP", lambda fp: fp.get("ipv6_translator", "off") != "off",
                 "the relay's IPv6 translator")
    print(f"\nimage-test: IPv6 translator: {fp['ipv6_translator']}", flush=True)
    assert fp["ipv6_translator"] == "on (tc clsact on vproxy0, shadows 100.95.0.0/16)", fp
    assert "appliance-nat64" in box.ssh("ip netns exec vproxy tc filter show dev vproxy0 egress").stdout
    assert "mtu 1480" in box.ssh("ip netns exec vproxy ip route show 100.95.0.0/16").stdout


LOAD = """
import sys
sys.path.insert(0, "/opt/appliance")
from appliance.switch import parser
from appliance.switch.flows import FlowTable
from appliance.switch.datapath.testrun import TestDatapath
# Generated tables set fields without their prerequisites (see test_equivalence.py).
parser._check_prereqs = lambda mb: None
table = FlowTable(parser.parse_flows(open(sys.argv[1]).read()))
for strategy in sys.argv[2:]:
    with TestDatapath(table, (1, 2, 3, 4, 5), strategy=strategy) as dp:
        print("LOADED", strategy, len(dp.program.source.splitlines()), flush=True)
"""


def load_on_the_box(box, name: str, flows: str, strategies: tuple[str, ...]):
    """Compile and load `flows` (the test build) on the image's kernel, once per strategy."""
    box.put(f"/root/{name}.txt", flows)
    box.put("/root/load.py", LOAD)
    out = box.ssh(f"cd /opt/appliance && .venv/bin/python /root/load.py /root/{name}.txt {' '.join(strategies)}",
                  check=False)
    print(f"\nimage-test: {out.stdout.strip()} {out.stderr.strip()[-300:]}", flush=True)
    for strategy in strategies:
        assert f"LOADED {strategy} " in out.stdout, out.stderr[-2000:]


def test_a_four_table_pipeline_loads_on_6_1(box):
    """Debian's 6.1 verifier takes a four-table pipeline whose every flow jumps on (each
    table's code once in the program, not once per jump)."""
    from tests.support.flowgen import fan_out_pipeline

    load_on_the_box(box, "pipeline", fan_out_pipeline(), ("linear", "hashed"))


def test_a_table_that_resubmits_twice_into_hashed_tables_loads_on_6_1(box):
    """6.1's verifier takes the generated table that 6.18's refused before the
    pending output moved to a per-CPU map (tests/data/resubmit-twice-flows.txt)."""
    table = Path(__file__).resolve().parents[1] / "data" / "resubmit-twice-flows.txt"
    load_on_the_box(box, "resubmit-twice", table.read_text(), ("linear", "tuple", "hashed"))


def test_a_table_with_nested_resubmits_into_hashed_tables_loads_on_6_1(box):
    """6.1's verifier takes the generated table whose nested tables' tuple keys passed 512 bytes
    of stack before the keys moved to per-CPU maps (tests/data/nested-resubmits-flows.txt)."""
    table = Path(__file__).resolve().parents[1] / "data" / "nested-resubmits-flows.txt"
    load_on_the_box(box, "nested-resubmits", table.read_text(), ("linear", "tuple", "hashed"))


def test_a_pipeline_of_eight_retagging_tables_loads_on_6_1(box):
    """6.1's verifier takes eight goto_table tables whose flows rewrite VIDs and MACs that later
    tables match on (6.18's refused five as straight-line code before `dp_blind`)."""
    from tests.support.flowgen import retagging_pipeline

    load_on_the_box(box, "retagging", retagging_pipeline(8), ("linear", "hashed"))


def test_upgrade_to_the_next_image_keeps_everything(box):
    host_key = box.ssh("cat /var/lib/appliance/ssh/ssh_host_ed25519_key.pub").stdout
    box.stop()
    assert not box.alive()
    version = "upgrade-test-" + uuid.uuid4().hex[:6]
    t0 = time.monotonic()
    subprocess.run(["/usr/bin/python3", str(TOP / "image/build.py"), "--version", version, "--no-link"], check=True,
                   timeout=3600)
    print(f"\nimage-test: image N+1 ({version}) built in {time.monotonic() - t0:.0f} s", flush=True)
    new = TOP / f"build/image/appliance-{version}.raw"
    try:
        # The key the box's running root carries (the host has none in /etc).
        subprocess.run(["/usr/bin/python3", str(TOP / "image/upgrade.py"), "--disk", str(box.disk),
                        "--public-key", str(TOP / "build/image/image-signing.pub"), str(new)],
                       check=True, timeout=900)
    finally:
        for f in (new, new.with_suffix(".qcow2")):
            f.unlink(missing_ok=True)
            f.with_name(f.name + ".sig").unlink(missing_ok=True)
    box.start()
    took = box.wait_console(BOOT_TIMEOUT)
    print(f"\nimage-test: upgraded boot to console-ready: {took:.0f} s", flush=True)
    box.wait_ssh(300)
    assert box.ssh("cat /etc/appliance-release").stdout.strip() == f"VERSION={version}"
    assert box.ssh("findmnt -no SOURCE /").stdout.strip() == "/dev/vda3"  # slot b
    assert running(box) == "running"
    # Same host key (known_hosts did not change), settings, lease, console user.
    assert box.ssh("cat /var/lib/appliance/ssh/ssh_host_ed25519_key.pub").stdout == host_key
    applied = json.loads(box.ssh("cat /var/lib/appliance/box/applied.json").stdout)
    assert applied["settings"]["dhcp"]["lease_time"] == 7200
    got = kea(box, "lease4-get", {"ip-address": LEASE["ip-address"]})
    assert got["result"] == 0 and got["arguments"]["hw-address"] == LEASE["hw-address"], got
    assert "True" in box.ssh("appliance-manage shell -c \"from django.contrib.auth import get_user_model; "
                             "print(get_user_model().objects.filter(username='owner').exists())\"").stdout
    status, body = box.login_page()
    assert status == 200 and "<form" in body
