"""Faults of the box's state, against the box in the lab with real clients (issue 13, items 4, 6, 7).

A power cut that leaves the applied settings cut short or garbage, a NIC
gone at boot, a full or read-only state directory: each scenario does it to
the real files and links of the lab's box, runs what the image runs at boot
(`./manage.py apply --boot`), and asserts what the home sees: a client holds
a lease, resolves, fetches a page. Each prints the outage it measured (run
with -s): from the power cut to the first answered DNS query of a client,
so it includes the boot's apply (the datapath's compile, the services'
start).

The box's state directory is a small tmpfs of its own, so it can be filled
and made read-only without touching anything else.
"""
import ipaddress
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from appliance.box import boot as boot_ladder
from appliance.box import status
from appliance.box.settings import parse_settings
from appliance.lab import topology
from appliance.lab.lab import parse_dig_answers
from tests.support.boxlab import POOL, box_in_lab, settings_data
from tests.support.console import PASSWORD, Visitor
from tests.support.faults import (QueryWatch, box_args, boot, filled, manage, poll, power_cut, read_only,
                                  small_tmpfs)
from tests.support.stack import Stack

DNS = {
    "upstreams": [{"url": "udp://192.168.1.1"}],
    "rules": [
        {"match": "suffix", "value": "blocked.test", "then": {"action": "block"}},
        {"match": "suffix", "value": "proxied.test", "then": {"action": "fake-ip", "route": "direct"}},
    ],
}
SETTINGS = settings_data(dns=DNS)
MODEM_POOL = ("192.168.1.100", "192.168.1.200")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("box")
    with small_tmpfs(tmp / "state"):
        with box_in_lab(tmp, "s", clients=2, apply=SETTINGS) as (lab, box):
            for c in lab.spec.client_names:
                lab.dhcp(c)
            yield lab, box


def dig(lab, client, name):
    return lab.run(client, ["dig", "+time=1", "+tries=2", "@192.168.1.1", name]).stdout


def served_by_the_box(lab, client) -> bool:
    """The box's DNS server answers (it blocks this name; the modem would resolve it)."""
    return "status: NXDOMAIN" in dig(lab, client, "www.blocked.test")


def in_range(ip, pool) -> bool:
    return ipaddress.ip_address(pool[0]) <= ipaddress.ip_address(ip) <= ipaddress.ip_address(pool[1])


def fetches(lab, client, name) -> bool:
    return f"internet page for {name}" in lab.run(client, ["curl", "-s", "-m", "5", f"http://{name}/"]).stdout


def the_box_serves_the_home(lab, box):
    """A client resolves through the box, gets a lease from its pool, fetches through the relay."""
    c1, c2 = lab.spec.client(1), lab.spec.client(2)
    assert poll(lambda: served_by_the_box(lab, c1), 30), dig(lab, c1, "www.blocked.test")
    lab.release(c2)
    lease = lab.dhcp(c2, timeout=30)
    assert in_range(lease.address, POOL) and lease.server_identifier == "192.168.1.1", lease
    fake = parse_dig_answers(dig(lab, c1, "www.proxied.test"))
    assert fake and ipaddress.ip_address(fake[0]) in ipaddress.ip_network("100.96.0.0/11")
    assert poll(lambda: fetches(lab, c1, "www.proxied.test"), 15)


def cut_and_boot(lab, box, damage) -> tuple[int, str, float]:
    """Power cut, `damage()` the machine, boot; (exit code, output, DNS outage seen by a client)."""
    c = lab.spec.client(1)
    with QueryWatch(c, "www.example.test", every=0.2) as watch:
        time.sleep(0.5)
        t0 = time.monotonic()
        power_cut(box)
        damage()
        res = boot(box)
        assert watch.wait_answered_since(t0, 60), "no DNS answer after the boot"
        time.sleep(1.2)  # every query of the outage answered or timed out
    return res.returncode, res.stdout + res.stderr, watch.outage(t0)


# ---------------------------------------------------------------- applied settings damaged

@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_applied_settings_boot_the_last_good_ones_and_the_home_is_served(home, damage):
    lab, box = home
    path = box.layout.state_file
    good = open(box.layout.good_state_file).read()

    def hurt():
        text = open(path).read()
        with open(path, "w") as f:  # as a power cut between write and rename left it, without fsync
            f.write(text[: len(text) // 3] if damage == "truncated" else "\x00\x7f{not json" * 100)

    code, out, outage = cut_and_boot(lab, box, hurt)
    print(f"\napplied settings {damage}, then the boot: exit {code}, DNS outage {outage:.2f} s "
          f"(power cut to the first answer, the boot's apply included)")
    assert code == boot_ladder.LAST_GOOD, out
    assert outage is not None
    the_box_serves_the_home(lab, box)
    note = boot_ladder.read_note(box)
    assert note.ran == "last-good" and path in note.banner, note
    # The applied file holds what runs again.
    assert json.loads(open(path).read()) == json.loads(good)
    assert "last good" in manage("status", *box_args(box)).stdout


# ---------------------------------------------------------------- a NIC gone at boot

def test_a_missing_nic_at_boot_bridges_the_nics_and_the_modem_serves_the_home(home):
    lab, box = home
    ns, gone, renamed = lab.spec.box, topology.UPLINK_NIC, "enp9s0"

    def rename():
        ip(ns, "link", "set", gone, "down")
        ip(ns, "link", "set", gone, "name", renamed)

    try:
        code, out, outage = cut_and_boot(lab, box, rename)
        print(f"\nuplink NIC renamed at boot: exit {code} (factory bridge), DNS outage {outage:.2f} s")
        assert code == boot_ladder.FACTORY, out
        c1, c2 = lab.spec.client(1), lab.spec.client(2)
        # The home keeps internet through the modem: a lease from its pool, its DNS, a page.
        lab.release(c2)
        lease = lab.dhcp(c2, timeout=30)
        assert in_range(lease.address, MODEM_POOL), lease
        assert poll(lambda: parse_dig_answers(dig(lab, c1, "www.blocked.test")) == [topology.SITES["www.blocked.test"]],
                    10)
        assert fetches(lab, c1, "www.example.test")
        note = boot_ladder.read_note(box)
        assert note.ran == "factory" and gone in note.banner and renamed in note.banner
    finally:
        # Back as it was, then a boot as the next one would run.
        power_cut_factory(lab, box)
        if renamed in ip(ns, "-o", "link", "show", check=False).stdout:
            ip(ns, "link", "set", renamed, "down")
            ip(ns, "link", "set", renamed, "name", gone)
    res = boot(box)
    assert res.returncode == boot_ladder.APPLIED, res.stdout
    the_box_serves_the_home(lab, box)


def power_cut_factory(lab, box):
    """A reboot after the factory bridge: its admin address goes."""
    settings = box.applied_settings()
    cidr = f"{settings.admin.address}/{settings.lan.prefix.prefixlen}"
    ip(lab.spec.box, "addr", "del", cidr, "dev", boot_ladder.FACTORY_BRIDGE, check=False)


def ip(ns, *argv, check=True):
    return subprocess.run(["ip", "-n", ns, *argv], capture_output=True, text=True, check=check)


# ---------------------------------------------------------------- a full or read-only state directory

def test_an_apply_refuses_before_touching_anything_when_the_state_directory_is_full_or_read_only(home, tmp_path):
    lab, box = home
    c = lab.spec.client(1)
    assert poll(lambda: served_by_the_box(lab, c), 30)
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(settings_data(dns=DNS, dhcp={**SETTINGS["dhcp"], "lease_time": 900})))
    before_text = open(box.layout.state_file).read()
    before_plan = box.applied_plan()
    state = box.layout.state_dir
    with QueryWatch(c, "www.example.test", every=0.2) as watch:
        time.sleep(0.5)
        t0 = time.monotonic()
        with filled(state):
            full = manage("apply", "--settings", str(changed), *box_args(box))
        with read_only(state):
            ro = manage("apply", "--settings", str(changed), *box_args(box))
        time.sleep(1.2)
    outage = watch.outage(t0)
    print(f"\napply refused on a full and on a read-only state directory: exit {full.returncode} / "
          f"{ro.returncode}; DNS outage meanwhile {outage:.2f} s")
    assert full.returncode == 2 and f"the state directory {state} is full" in full.stdout, full.stdout
    assert "nothing was applied" in full.stdout and "step 1/5" not in full.stdout
    assert ro.returncode == 2 and "read-only file system" in ro.stdout, ro.stdout
    assert outage == 0.0
    # Nothing changed: the same state, the same plan, the box still serves the home.
    assert open(box.layout.state_file).read() == before_text and box.applied_plan() == before_plan
    # Polled: a loaded machine can hold one dig past its 2 s (the watch above saw no outage).
    assert poll(lambda: served_by_the_box(lab, c), 10)
    # With room again the same apply goes through.
    res = box.apply(parse_settings(json.loads(changed.read_text())))
    assert res.ok, res.error
    assert box.apply(parse_settings(SETTINGS)).ok


# ---------------------------------------------------------------- the DHCP pool runs out

NEW_MAC = "02:0d:0e:0a:0d:01"


def lease_of(box, mac):
    got = status.leases(box)
    return next((row["ip"] for row in got.value if row["mac"] == mac and row["state"] == 0), None) if got.ok else None


def test_a_full_dhcp_pool_is_warned_of_before_and_a_client_turned_away_is_named_by_mac(home):
    lab, box = home
    c1, c2 = lab.spec.client(1), lab.spec.client(2)
    a1 = poll(lambda: lease_of(box, topology.client_mac(1)), 10) or lab.dhcp(c1).address
    spare = "192.168.1.98"
    assert lease_of(box, topology.client_mac(2)) != spare
    two = settings_data(dns=DNS, dhcp={**SETTINGS["dhcp"], "pool_warn_percent": 50,
                                       "pools": [{"start": a1, "end": a1}, {"start": spare, "end": spare}]})
    try:
        assert box.apply(parse_settings(two)).ok
        # One of two addresses leased: the warning, before anyone is turned away.
        pool = poll(lambda: (r := status.dhcp_pool(box)).ok and r.value["warning"] and r.value, 10)
        assert pool and not pool["exhausted"] and "nearly full: 1 of 2" in pool["warning"], pool
        # The second client takes the last address.
        assert lab.dhcp(c2, timeout=30).address == spare
        assert status.dhcp_pool(box).value["exhausted"]
        # A new device (another MAC) asks: nothing left. The box says who, and when.
        ip(c2, "link", "set", "eth0", "address", NEW_MAC)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="got no lease|not done within"):
            lab.dhcp(c2, timeout=10)
        told = poll(lambda: [c for c in status.dhcp_pool(box).value["no_lease"] if c["mac"] == NEW_MAC], 10)
        print(f"\nDHCP pool full: {NEW_MAC} turned away and named {time.monotonic() - t0:.1f} s after it asked "
              f"(its dhclient gave up after 10 s); the warning came at 1 of 2 leased")
        assert told, status.dhcp_pool(box).value
        shown = manage("status", *box_args(box)).stdout
        assert "The DHCP pool is full: 2 of 2" in shown and f"no lease for {NEW_MAC}" in shown, shown
    finally:
        lab.release(c2)
        ip(c2, "link", "set", "eth0", "address", topology.client_mac(2))
        assert box.apply(parse_settings(SETTINGS)).ok
    the_box_serves_the_home(lab, box)


# ---------------------------------------------------------------- the console's own backends, its clock

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
REPO = Path(__file__).resolve().parents[2]
FAKETIME_SHIM = REPO / "tests" / "support" / "faketime_shim"  # time.sleep that works under it
CONFIRM = 20.0
RISKY_FLOW = "priority=9,udp,in_port=admin,tp_dst=9,actions=drop"  # touches the admin port: needs a confirm


@pytest.fixture(scope="module")
def console(home, tmp_path_factory):
    """The console (Redis, Celery, the ASGI server) managing the lab's box, every process on a wall clock
    that the test can move (libfaketime reading an offset from a file; the monotonic clocks stay true)."""
    if not os.path.exists(FAKETIME_LIB):
        pytest.skip("needs libfaketime (Debian: libfaketime)")
    lab, box = home
    offset = tmp_path_factory.mktemp("clock") / "offset"
    offset.write_text("+0\n")
    s = Stack(confirm_timeout=CONFIRM, step_delay=0, fakes=False, env={
        "APPLIANCE_HOST_NETNS": lab.spec.box, "APPLIANCE_BOX_STATE": box.layout.state_dir,
        "APPLIANCE_BOX_RUN": box.layout.run_dir,
        "LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": str(offset), "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": f"{FAKETIME_SHIM}:{REPO}"})
    try:
        s.start()
        s.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                                f"get_user_model().objects.create_superuser('admin', '', {PASSWORD!r})")
        s.offset = offset
        yield s
    finally:
        s.cleanup()


def banner(visitor, key) -> bool:
    return f'data-banner="{key}"' in visitor.get("/")[2]


def test_redis_and_the_worker_down_are_said_on_the_console_not_a_500(home, console):
    lab, box = home
    v = Visitor(console.url)
    v.login("admin")
    assert v.get("/")[0] == 200 and not banner(v, "redis")
    c = lab.spec.client(1)
    with QueryWatch(c, "www.example.test", every=0.2) as watch:
        time.sleep(0.5)
        t0 = time.monotonic()
        console.kill("redis")
        # Each server process checks Redis on its own (kept 2 s): the first page that says it.
        said = poll(lambda: (lambda got: got if 'data-banner="redis"' in got[2] else None)(v.get("/")), 15)
        seen = time.monotonic() - t0
        status_code, _, page = said or (None, None, "")
        applies = v.get("/applies/")[0]
        refused = Visitor(console.url)
        refused.get("/login/")
        login = refused.post("/login/", {"username": "admin", "password": PASSWORD})
        time.sleep(1.2)
    print(f"\nRedis stopped: the console's banner after {seen:.1f} s; pages {status_code}/{applies}, a login "
          f"{login[0]}; the home's DNS outage meanwhile {watch.outage(t0):.2f} s")
    assert said and status_code == 200 and applies == 200 and "Redis does not answer" in page
    assert login[0] == 503 and "Redis does not answer" in login[2]
    assert watch.outage(t0) == 0.0
    # Redis back: the banner goes; then the worker stops, and that is said.
    console._start("redis", [shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(console.redis_port),
                             "--save", "", "--appendonly", "no"])
    assert poll(lambda: not banner(v, "redis"), 15)
    console.kill("celery")
    try:
        t0 = time.monotonic()
        assert poll(lambda: banner(v, "worker"), 30), v.get("/")[2][:3000]
        print(f"Celery worker killed: the console's banner after {time.monotonic() - t0:.1f} s")
        # Each server process checks the worker on its own (kept a few seconds): poll, as a user reloads.
        assert poll(lambda: "applies wait in the queue" in v.get("/applies/")[2], 30)
    finally:
        console.start_worker()  # the next tests apply through it
    assert poll(lambda: not banner(v, "worker"), 30)


def apply_record(console, code: str) -> str:
    return console.manage("shell", "--no-imports", "-c", "from appliance.web.applies.models import ApplyRecord as R\n" + code).strip()


@pytest.mark.parametrize("jump", ["-2h", "+2h"], ids=["back", "ahead"])
def test_a_clock_jump_inside_the_confirm_window_rolls_back_at_the_deadline_all_the_same(home, console, jump):
    lab, box = home
    risky = settings_data(dns=DNS, flows={"custom": RISKY_FLOW})
    pk = int(apply_record(console, "import json\nfrom appliance.web.applies import service\n"
                                   "from appliance.box.settings import parse_settings\n"
                                   f"print(service.queue_apply(None, parse_settings(json.loads({json.dumps(risky)!r}))).pk)"))

    def state():
        return apply_record(console, f"print(R.objects.get(pk={pk}).state)")

    assert poll(lambda: state() == "awaiting_confirm", 120, every=0.5), state()
    awaiting = time.monotonic()
    # NTP syncs the box's clock (no real-time clock): every process of the console sees it jump.
    console.offset.write_text(f"{jump}\n")
    try:
        assert poll(lambda: state() == "rolled_back", CONFIRM + 60, every=0.5), state()
        rolled = time.monotonic() - awaiting
    finally:
        console.offset.write_text("+0\n")
    print(f"\nwall clock {jump} inside a {CONFIRM:g} s confirm window: rolled back {rolled:.1f} s after the apply "
          "waited for its confirm")
    assert CONFIRM - 2 <= rolled <= CONFIRM + 15
    # The rollback applied the settings before: the box serves the home as it did.
    assert poll(lambda: box.applied_settings() == parse_settings(SETTINGS), 60)
    the_box_serves_the_home(lab, box)
