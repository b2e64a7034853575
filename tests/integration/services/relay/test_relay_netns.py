"""The fake-IP relay in namespaces: client -> vproxy (DNS server + relay) -> internet.

Real pieces only: the DNS server of issue 6 hands out the fake addresses,
nftables TPROXY steers them to the relay, Dante and tinyproxy are the
upstream proxies (with authentication), curl and small Python clients are
the applications. See `appliance.lab.relaylab` for the topology.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import textwrap
import time

import pytest

from appliance.kernel.base import Route
from appliance.lab import relaylab
from appliance.lab.relaylab import (HTTP_IP, MODEM_IP, SOCKS_IP, TEST_PORT, UDP_ECHO_PORT, UP_IP,
                                    WAN_IP, RelayLab)



@pytest.fixture(scope="module")
def lab():
    # The relay itself: its kernel fast path (which takes a name's later
    # connections away from it) is tested in test_fastpath.py.
    with RelayLab(relay_overrides={"fast_path": {"enabled": False}}) as lab:
        yield lab


def curl(lab, url, *opts, ns="client", check=False):
    return lab.sh(ns, ["curl", "-sS", "--connect-timeout", "10", "-m", "60", *opts, url], check=check)


def client_py(lab, code, timeout=120, ns="client"):
    """Run a Python snippet in a namespace; it prints one JSON line as its result."""
    res = lab.sh(ns, [relaylab.PYTHON, "-c", textwrap.dedent(code)], check=False, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def wait_for(predicate, what, tries=100, pause=0.1):
    for _ in range(tries):
        value = predicate()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"never happened: {what}")


def last_conn(lab, domain, after=0):
    """The newest ended connection to `domain` with an id above `after` (the relay
    notes the end when it sees the close, just after curl exits)."""
    def find():
        rows = [r for r in lab.query("history") if r["domain"] == domain and r["id"] > after]
        return rows[-1] if rows else None
    return wait_for(find, f"a connection to {domain} in the relay's history")


def dns_control(lab):
    from appliance.services.dns.control import DnsControl

    return DnsControl(lab.dns_control)


# -- routes ---------------------------------------------------------------------------

def test_direct_route_gets_the_page(lab):
    page = curl(lab, "http://direct.test/", check=True).stdout
    assert "internet page for direct.test" in page
    # The web server saw the relay's WAN address: the connection was relayed, not routed.
    assert curl(lab, "http://direct.test/whoami", check=True).stdout.strip() == WAN_IP
    row = last_conn(lab, "direct.test")
    assert row["route"] == "direct" and row["real"] == f"{relaylab.WEB_IP}:80"
    assert row["fake_ip"] == lab.resolve("direct.test")
    assert row["bytes_down"] > 0 and row["bytes_up"] > 0 and row["state"] == "closed"


def test_socks5_route_goes_through_dante_with_auth(lab):
    assert curl(lab, "http://socks.test/whoami", check=True).stdout.strip() == SOCKS_IP
    assert "username%relayuser@" in (lab.dir / "danted.out").read_text()
    assert last_conn(lab, "socks.test")["route"] == "socks"


def test_http_route_goes_through_tinyproxy_with_auth(lab):
    assert curl(lab, "http://http.test/whoami", check=True).stdout.strip() == HTTP_IP
    assert "CONNECT http.test:80" in (lab.dir / "tinyproxy.out").read_text()
    assert last_conn(lab, "http.test")["route"] == "web-proxy"


def test_reject_route_is_refused_at_once(lab):
    res = curl(lab, "http://reject.test/")
    # A reset as soon as the handshake is done: curl sees it either while
    # connecting (7) or on its first read (56), never a timeout (28).
    assert res.returncode in (7, 56), res.stderr
    assert "reset" in res.stderr or "Couldn't connect" in res.stderr
    row = last_conn(lab, "reject.test")
    assert row["state"] == "refused" and row["error"] == "route reject"


def test_upstream_proxy_down_fails_fast_with_logged_reason(lab):
    res = curl(lab, "http://dead.test/")
    assert res.returncode in (7, 52, 56), res.stderr  # reset, not a timeout
    row = last_conn(lab, "dead.test")
    assert row["state"] == "failed" and "Connection refused" in row["error"]
    log = lab.relay_log.read_text()
    assert "dead.test:80 via dead: connect to 203.0.113.10:1081: Connection refused" in log


def test_wrong_proxy_password_is_a_logged_failure(lab):
    settings = lab.relay_settings()
    settings["proxies"][0] = {**settings["proxies"][0], "password": "wrong"}
    lab.write_config(proxies=settings["proxies"])
    lab.signal("relay", signal.SIGHUP)
    try:
        wait_for(lambda: "settings reloaded" in lab.relay_log.read_text(), "reload")
        assert curl(lab, "http://socks.test/").returncode in (7, 52, 56)
        assert "SOCKS5 auth: username/password rejected" in last_conn(lab, "socks.test")["error"]
    finally:
        lab.write_config()
        lab.signal("relay", signal.SIGHUP)
        wait_for(lambda: lab.relay_log.read_text().count("settings reloaded") >= 2, "reload back")
    assert curl(lab, "http://socks.test/whoami", check=True).stdout.strip() == SOCKS_IP


# -- the byte stream ------------------------------------------------------------------

def test_gigabyte_download_arrives_intact(lab):
    from appliance.lab.web import CHUNK

    size = 1 << 30
    expected = hashlib.sha256()
    for _ in range(size // len(CHUNK)):
        expected.update(CHUNK)
    res = lab.sh("client", ["bash", "-c", f"curl -sS -m 300 http://direct.test/bytes/{size} | sha256sum"],
                 timeout=320)
    assert res.stdout.split()[0] == expected.hexdigest()
    row = last_conn(lab, "direct.test")
    assert row["bytes_down"] > size


def test_half_closed_connection_delivers_remaining_data(lab):
    fake = lab.resolve("direct.test")
    result = client_py(lab, f"""
        import hashlib, json, os, socket
        s = socket.create_connection(({fake!r}, {TEST_PORT}))
        body = os.urandom(3 << 20)
        s.sendall(b"sink\\n" + body)
        s.shutdown(socket.SHUT_WR)  # our half ends; the server answers after seeing EOF
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
        head, _, rest = data.partition(b"\\n")
        count, digest = head.split()
        print(json.dumps({{"count": int(count), "ok": digest.decode() == hashlib.sha256(body).hexdigest(),
                          "rest": len(rest), "ys": rest == b"y" * len(rest)}}))
    """)
    assert result == {"count": 3 << 20, "ok": True, "rest": 1 << 20, "ys": True}


def test_thousand_concurrent_connections_held_and_completed(lab):
    fake = lab.resolve("direct.test")
    before = lab.query("stats")["totals"]["accepted"]
    script = textwrap.dedent(f"""
        import json, resource, selectors, socket, sys
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
        socks = [socket.create_connection(({fake!r}, {TEST_PORT}), timeout=30) for _ in range(1000)]
        print("connected", flush=True)
        sys.stdin.readline()
        for s in socks:
            s.sendall(b"bytes 5000\\n")
        sel = selectors.DefaultSelector()
        got = {{}}
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            got[s] = 0
        done = 0
        while done < len(socks):
            for key, _ in sel.select(30):
                data = key.fileobj.recv(65536)
                if data:
                    got[key.fileobj] += len(data)
                else:
                    sel.unregister(key.fileobj)
                    done += 1
        print(json.dumps({{"complete": sum(1 for n in got.values() if n == 5000), "total": len(socks)}}))
    """)
    proc = subprocess.Popen(["ip", "netns", "exec", lab.ns["client"], relaylab.PYTHON, "-c", script],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "connected"
        # All 1000 are held open by the relay at the same time, each with its upstream leg.
        live = wait_for(lambda: [c for c in lab.query("connections")
                                 if c["domain"] == "direct.test" and c["state"] == "open"
                                 and c["port"] == TEST_PORT] if len(lab.query("connections")) >= 1000
                        else None, "1000 live connections", tries=300)
        assert len(live) == 1000
        proc.stdin.write("go\n")
        proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
        proc.wait(60)
    finally:
        proc.kill()
    assert result == {"complete": 1000, "total": 1000}
    assert lab.query("stats")["totals"]["accepted"] - before >= 1000
    wait_for(lambda: lab.query("stats")["live_tcp"] == 0, "all 1000 closed")


# -- the fake-IP map ------------------------------------------------------------------

def test_fake_address_stays_pinned_while_its_connection_is_open(lab):
    pinned = lab.resolve("pin.test")
    other = lab.resolve("direct.test")
    script = textwrap.dedent(f"""
        import socket, sys
        s = socket.create_connection(({pinned!r}, {TEST_PORT}))
        print("open", flush=True)
        sys.stdin.readline()
        s.sendall(b"bytes 100000\\n")
        n = 0
        while chunk := s.recv(65536):
            n += len(chunk)
        print(n, flush=True)
    """)
    proc = subprocess.Popen(["ip", "netns", "exec", lab.ns["client"], relaylab.PYTHON, "-c", script],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        with dns_control(lab) as dns:
            wait_for(lambda: (dns.lookup_fake_ip(pinned) or {}).get("pins", 0) >= 1, "pin reaches DNS")
            recycled_before = dns.stats()["fake_ip_recycled"]
            # The pool holds 16; 40 new names recycle every address that is not pinned.
            for i in range(40):
                lab.resolve(f"n{i}.fill.test")
            assert dns.stats()["fake_ip_recycled"] - recycled_before >= 24
            entry = dns.lookup_fake_ip(pinned)
            assert entry is not None and entry["domain"] == "pin.test"
            assert (dns.lookup_fake_ip(other) or {}).get("domain") != "direct.test"  # recycled
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "100000"  # the connection still works
        proc.wait(30)
    finally:
        proc.kill()
    with dns_control(lab) as dns:
        wait_for(lambda: (dns.lookup_fake_ip(pinned) or {}).get("pins", 1) == 0, "unpinned after close")


# -- who may reach the relay ----------------------------------------------------------

def test_modem_side_cannot_reach_the_listener(lab):
    fake = lab.resolve("direct.test")
    accepted = lab.query("stats")["totals"]["accepted"]
    lab.kernel.add_route(lab.ns["modem"], Route(relaylab.FAKE_RANGE, via=UP_IP))
    res = curl(lab, f"http://{fake}/", "-H", "Host: direct.test", ns="modem")
    assert res.returncode == 7, res.stdout  # nothing on the fake address answers the modem side
    res = curl(lab, f"http://{UP_IP}:7893/", ns="modem")
    assert res.returncode == 7  # the listener is on loopback only
    assert lab.query("stats")["totals"]["accepted"] == accepted
    assert MODEM_IP not in json.dumps(lab.query("history"))
    # The home side still works.
    assert curl(lab, "http://direct.test/whoami", check=True).stdout.strip() == WAN_IP


# -- UDP ------------------------------------------------------------------------------

def udp_exchange(lab, domain):
    fake = lab.resolve(domain)
    return client_py(lab, f"""
        import json, socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect(({fake!r}, {UDP_ECHO_PORT}))
        try:
            s.send(b"hello")
            print(json.dumps({{"reply": s.recv(2048).decode()}}))
        except ConnectionRefusedError:
            print(json.dumps({{"refused": True}}))
        except socket.timeout:
            print(json.dumps({{"timeout": True}}))
    """)


def test_udp_direct_is_relayed(lab):
    assert udp_exchange(lab, "udp.test") == {"reply": "echo:hello"}
    rows = [c for c in lab.query("connections") if c["proto"] == "udp" and c["domain"] == "udp.test"]
    assert rows and rows[0]["real"].endswith(f":{UDP_ECHO_PORT}")


def test_udp_through_socks5_udp_associate(lab):
    assert udp_exchange(lab, "socks.test") == {"reply": "echo:hello"}


def test_udp_on_a_route_without_udp_gets_icmp_at_once(lab):
    assert udp_exchange(lab, "nudp.test") == {"refused": True}
    assert udp_exchange(lab, "reject.test") == {"refused": True}


# -- the console's view ---------------------------------------------------------------

def test_counters_per_domain_and_client(lab):
    curl(lab, "http://direct.test/bytes/100000", "-o", "/dev/null", check=True)
    counters = lab.query("counters")
    assert counters["domains"]["direct.test"]["bytes_down"] >= 100000
    assert counters["clients"][relaylab.CLIENT_IP]["connections"] >= 1
    assert len(lab.query("history", limit=3)) == 3


# -- faults ---------------------------------------------------------------------------

def test_relay_restart_new_connections_work_within_seconds(lab):
    lab.stop("relay", signal.SIGKILL)
    assert curl(lab, "http://direct.test/").returncode != 0  # nobody behind the rule
    lab.start_relay()

    def works():
        return curl(lab, "http://direct.test/whoami").stdout.strip() == WAN_IP
    wait_for(works, "relay answers after restart", tries=50, pause=0.1)
