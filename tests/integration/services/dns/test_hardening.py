"""The DNS server against hostile clients and hostile answers, over loopback
with real clients (dig) and a real upstream (dnsmasq): a rule that would
backtrack, names too long, answers pointing into the home (rebinding),
connection floods and fake-IP floods."""

import contextlib
import json
import resource
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dns.message
import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[4]

# The upstream's zone: public names (documentation ranges are public here, as
# in the lab) and names an attacker points at the home or at the box.
RECORDS = {
    "www.real.test": "198.51.100.7",
    "home.evil.test": "192.168.1.10",
    "cgnat.evil.test": "100.64.3.4",
    "loop.evil.test": "127.0.0.1",
    "link.evil.test": "169.254.1.1",
    "lanpfx.evil.test": "203.0.113.77",  # inside the LAN prefix this test gives the server
    "nas.allowed.test": "192.168.1.20",
}
RECORDS6 = {"ula.evil.test": "fd00::1", "v6.real.test": "2001:db8::7",
            "fake6.evil.test": "2001:2::5",  # inside the box's IPv6 fake range
            # inside the home's IPv6 prefix (the modem's RA), before and after the ISP moves it
            "lan6.evil.test": "2001:db8:1::20", "moved.evil.test": "2001:db8:5::20",
            "mapped.evil.test": "::ffff:192.168.1.20", "lo6.evil.test": "::1", "ll6.evil.test": "fe80::1"}


def dig(port, name, *opts, rtype="A"):
    """dig's answer section and status; +time=1 +tries=1: one second, no retry."""
    out = subprocess.run(["dig", "-p", str(port), "@127.0.0.1", "+time=1", "+tries=1",
                          "+noall", "+answer", "+comments", *opts, name, rtype],
                         capture_output=True, text=True, timeout=10).stdout
    status = next((line.split("status: ")[1].split(",")[0] for line in out.splitlines()
                   if "status: " in line), None)
    answers = [line.split()[-1] for line in out.splitlines() if line and not line.startswith(";")]
    return status, answers


def start(tmp_path, extra: str):
    extra = extra.replace("@TMP@", str(tmp_path))  # files of the test's own
    up_port, port = free_port(), free_port()
    records = [f"--host-record={n},{ip}" for n, ip in {**RECORDS, **RECORDS6}.items()]
    upstream = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
         "--bind-interfaces", "--listen-address=127.0.0.1", f"--port={up_port}", "--user=root",
         "--local=/test/", "--local-ttl=60", f"--pid-file={tmp_path}/up.pid", *records],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = tmp_path / "dns.yaml"
    conf.write_text(textwrap.dedent(f"""\
        listen: ["127.0.0.1:{port}"]
        upstreams: [{{url: "udp://127.0.0.1:{up_port}", timeout: 0.5}}]
        control_socket: null
        rate_limit: {{per_client_qps: 0}}
        """) + ("" if "workers:" in extra else "workers: 1\n")
        + textwrap.dedent(extra if "fake_ip:" in extra else extra + "fake_ip: {}\n").replace(
            "fake_ip: {", f'fake_ip: {{db_path: "{tmp_path}/f.sqlite3", '))
    proc = subprocess.Popen([sys.executable, "-m", "appliance.services.dns", "--config", str(conf),
                             "--log-level", "ERROR"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        for p in (proc, upstream):
            p.terminate()
            p.wait(5)
        raise AssertionError(f"the DNS server did not start: {line!r}")
    return proc, upstream, port


@pytest.fixture
def server(tmp_path, request):
    proc, upstream, port = start(tmp_path, getattr(request, "param", ""))
    try:
        yield port
    finally:
        for p in (proc, upstream):
            p.terminate()
            p.wait(5)


PATHOLOGICAL = """\
rules:
  - {match: regex, value: "^(a+)+$", then: {action: block}}
  - {match: suffix, value: slow.test, then: {action: rewrite, answer: ["198.51.100.9"]}}
"""


@pytest.mark.parametrize("server", [PATHOLOGICAL], indirect=True)
def test_a_backtracking_rule_answers_before_the_clients_timeout(server):
    # Python's `re` needs about 2^40 steps to find that `^(a+)+$` does not
    # match these 40 letters and a "b" (0.85 s at 24 letters, doubling per
    # letter): minutes, the whole DNS frozen. RE2 answers at once, so the
    # rule after it answers before dig gives up (1 s, no retry).
    name = "a" * 40 + "b.slow.test"
    assert dig(server, name) == ("NOERROR", ["198.51.100.9"])
    assert dig(server, "a" * 40 + ".") == ("NXDOMAIN", [])  # the regex itself still works


REBIND = """\
rebind: {allow: [allowed.test], networks: ["203.0.113.0/24"]}
"""


@pytest.mark.parametrize("server", [REBIND], indirect=True)
def test_answers_pointing_into_the_home_are_refused(server):
    assert dig(server, "www.real.test") == ("NOERROR", ["198.51.100.7"])
    assert dig(server, "v6.real.test", rtype="AAAA") == ("NOERROR", ["2001:db8::7"])
    for name in ("home.evil.test", "cgnat.evil.test", "loop.evil.test", "link.evil.test",
                 "lanpfx.evil.test"):
        assert dig(server, name) == ("REFUSED", []), name
    assert dig(server, "ula.evil.test", rtype="AAAA") == ("REFUSED", [])
    assert dig(server, "nas.allowed.test") == ("NOERROR", ["192.168.1.20"])  # the allow-list


FAKE6_REBIND = """\
rebind: {networks: ["2001:2::/48"]}
fake_ip: {network6: "2001:2::/48"}
rules: [{match: suffix, value: proxied.test, then: {action: fake-ip}}]
"""


@pytest.mark.parametrize("server", [FAKE6_REBIND], indirect=True)
def test_the_fake_ipv6_twins_are_answered_but_an_upstream_answer_in_their_range_is_refused(server):
    # The plan puts the fake ranges among the rebinding networks (`dns_settings`):
    # the box's own fake answers are not upstream answers and pass...
    status, fake6 = dig(server, "www.proxied.test", rtype="AAAA")
    assert status == "NOERROR" and len(fake6) == 1 and fake6[0].startswith("2001:2::"), fake6
    assert dig(server, "www.proxied.test")[1][0].startswith("100.")
    # ...an upstream pointing a public name into the fake range or a ULA does not.
    assert dig(server, "fake6.evil.test", rtype="AAAA") == ("REFUSED", [])
    assert dig(server, "ula.evil.test", rtype="AAAA") == ("REFUSED", [])
    assert dig(server, "v6.real.test", rtype="AAAA") == ("NOERROR", ["2001:db8::7"])


def write_ra(path: Path, prefixes: list[str]) -> None:
    """The modem's RA as the DHCPv6 service keeps it (`RouterAdvert.to_json`), written atomically."""
    from appliance.services.dhcp.ra import RouterAdvert
    ra = RouterAdvert("fe80::4d:4fff:fe44:454d", managed=False, other=True, prefixes=tuple(prefixes),
                      dns=("2001:db8:1::1",), lifetime=1800)
    tmp = path.with_name(".ra.tmp")
    tmp.write_text(json.dumps(ra.to_json()) + "\n")
    tmp.replace(path)


def until(check, what: str, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


LAN6_REBIND = """\
workers: {workers}
rebind: {{prefixes_file: "@TMP@/modem-ra.json"}}
"""


@pytest.mark.parametrize("server", [LAN6_REBIND.format(workers=1), LAN6_REBIND.format(workers=2)],
                         indirect=True, ids=["one-process", "workers"])
def test_aaaa_inside_the_homes_ipv6_prefix_is_refused_and_a_new_prefix_is_followed(server, tmp_path):
    ra = tmp_path / "modem-ra.json"
    # No RA heard yet: the home's prefix is unknown, the documentation range is public here.
    assert dig(server, "lan6.evil.test", rtype="AAAA") == ("NOERROR", ["2001:db8:1::20"])
    assert dig(server, "moved.evil.test", rtype="AAAA") == ("NOERROR", ["2001:db8:5::20"])  # now cached
    write_ra(ra, ["2001:db8:1::/64"])
    until(lambda: dig(server, "lan6.evil.test", rtype="AAAA") == ("REFUSED", []),
          "the prefix of the modem's RA never became a rebinding network")
    for name in ("mapped.evil.test", "lo6.evil.test", "ll6.evil.test", "ula.evil.test"):
        assert dig(server, name, rtype="AAAA") == ("REFUSED", []), name
    assert dig(server, "v6.real.test", rtype="AAAA") == ("NOERROR", ["2001:db8::7"])
    # The ISP hands the modem a new prefix: followed without a restart or a reload, and the
    # answer cached before it is not given again.
    write_ra(ra, ["2001:db8:5::/64"])
    until(lambda: dig(server, "moved.evil.test", rtype="AAAA") == ("REFUSED", []),
          "the new prefix was not followed")
    until(lambda: dig(server, "lan6.evil.test", rtype="AAAA") == ("NOERROR", ["2001:db8:1::20"]),
          "the old prefix stayed a rebinding network")


@pytest.mark.parametrize("server", ["rebind: {enabled: false}\n"], indirect=True)
def test_rebinding_protection_can_be_turned_off(server):
    assert dig(server, "home.evil.test") == ("NOERROR", ["192.168.1.10"])


FAKE_RATE = """\
fake_ip: {new_per_client: 0.01, new_burst: 3}
rules: [{match: suffix, value: real.test, then: {action: fake-ip}}]
"""


@pytest.mark.parametrize("server", [FAKE_RATE], indirect=True)
def test_a_client_making_new_fake_addresses_fast_gets_real_ones(server):
    fake = [dig(server, f"n{i}.real.test")[1] for i in range(3)]
    assert all(a and a[0].startswith("100.") for a in fake), fake
    # Past its burst, a new name is answered for real (no such name: NXDOMAIN from upstream)...
    assert dig(server, "n9.real.test") == ("NXDOMAIN", [])
    assert dig(server, "www.real.test") == ("NOERROR", ["198.51.100.7"])
    # ...while the names it already has keep their fake addresses.
    assert dig(server, "n0.real.test")[1] == fake[0]


def tcp_query(sock, name):
    """The first A of the answer; None when the server closed the connection instead. A server that
    closes a connection it refuses after the query has arrived (unread) resets it, as TCP does."""
    wire = dns.message.make_query(name, "A").to_wire()
    try:
        sock.sendall(struct.pack(">H", len(wire)) + wire)
        head = sock.recv(2)
    except (ConnectionResetError, BrokenPipeError):
        return None
    if len(head) < 2:
        return None
    length = struct.unpack(">H", head)[0]
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            return None
        data += chunk
    return dns.message.from_wire(data).answer[0][0].to_text()


def closed_by_peer(sock, deadline=5.0):
    sock.settimeout(deadline)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


TCP_CAPS = "tcp_max_per_client: 4\ntcp_max_clients: 6\ntcp_idle_timeout: 30\n"


@pytest.mark.parametrize("server", [TCP_CAPS], indirect=True)
def test_tcp_connections_are_capped_per_client_and_in_all(server):
    held = []
    try:
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", server), timeout=5)
            held.append(s)
            assert tcp_query(s, "www.real.test") == "198.51.100.7"
        extra = socket.create_connection(("127.0.0.1", server), timeout=5)
        held.append(extra)
        assert closed_by_peer(extra)  # a fifth from the same address
        # Another address (127.0.0.2: another client on loopback) still gets in, up to the total.
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", server), timeout=5, source_address=("127.0.0.2", 0))
            held.append(s)
            assert tcp_query(s, "www.real.test") == "198.51.100.7"
        third = socket.create_connection(("127.0.0.1", server), timeout=5, source_address=("127.0.0.3", 0))
        held.append(third)
        assert closed_by_peer(third)  # 6 open in all
        # A connection that ends gives its place back.
        held[0].close()
        deadline = time.monotonic() + 5
        while True:
            s = socket.create_connection(("127.0.0.1", server), timeout=5, source_address=("127.0.0.3", 0))
            held.append(s)
            answer = tcp_query(s, "www.real.test")
            if answer is not None or time.monotonic() > deadline:
                break
        assert answer == "198.51.100.7"
        # The first four still answer.
        assert tcp_query(held[1], "www.real.test") == "198.51.100.7"
    finally:
        for s in held:
            s.close()


def test_the_server_raises_its_descriptor_limit(tmp_path):
    # Started as a service manager would, with the usual 1024.
    with lowered_open_files(1024):
        proc, upstream, port = start(tmp_path, "")
    try:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        for p in (proc, upstream):
            p.terminate()
            p.wait(5)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    line = next(l for l in limits.splitlines() if l.startswith("Max open files"))
    assert int(line.split()[3]) == wanted, line


@contextlib.contextmanager
def lowered_open_files(soft):
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.fixture
def silent_upstream():
    """An upstream that never answers (a UDP socket nobody reads)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def test_questions_waiting_upstream_are_bounded(tmp_path, silent_upstream):
    port = free_port()
    conf = tmp_path / "dns.yaml"
    conf.write_text(textwrap.dedent(f"""\
        listen: ["127.0.0.1:{port}"]
        upstreams: [{{url: "udp://127.0.0.1:{silent_upstream}", timeout: 10}}]
        control_socket: null
        workers: 1
        max_inflight: 2
        cache: {{servfail_after: 10}}
        fake_ip: {{db_path: "{tmp_path}/f.sqlite3"}}
        """))
    proc = subprocess.Popen([sys.executable, "-m", "appliance.services.dns", "--config", str(conf),
                             "--log-level", "ERROR"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        # Each question waits 10 s for an upstream that never answers; dig waits 1 s. Without
        # a bound no answer comes before 10 s; with it, the third question in flight is
        # answered SERVFAIL at once.
        statuses = []
        deadline = time.monotonic() + 8
        while "SERVFAIL" not in statuses and time.monotonic() < deadline:
            statuses.append(dig(port, f"q{len(statuses)}.real.test")[0])
        assert statuses[:2] == [None, None]  # no answer within dig's second
        assert statuses[-1] == "SERVFAIL" and len(statuses) == 3, statuses
    finally:
        proc.terminate()
        proc.wait(5)
