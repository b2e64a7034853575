"""The DNS server against hostile clients and hostile answers, over loopback
with real clients (dig) and a real upstream (dnsmasq): a rule that would
backtrack, names too long, answers pointing into the home (rebinding),
connection floods and fake-IP floods."""

import subprocess
import sys
import textwrap
from pathlib import Path

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
RECORDS6 = {"ula.evil.test": "fd00::1", "v6.real.test": "2001:db8::7"}


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
        workers: 1
        rate_limit: {{per_client_qps: 0}}
        fake_ip: {{db_path: "{tmp_path}/f.sqlite3"}}
        """) + textwrap.dedent(extra))
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


@pytest.mark.parametrize("server", ["rebind: {enabled: false}\n"], indirect=True)
def test_rebinding_protection_can_be_turned_off(server):
    assert dig(server, "home.evil.test") == ("NOERROR", ["192.168.1.10"])
