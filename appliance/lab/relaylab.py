"""A small namespace lab for the fake-IP relay (issue 7): tests and bench use it.

    client --home-- vproxy --wan-- internet          modem --up-- vproxy

- ``client`` (10.77.0.2) routes the fake range (and, for the bench's
  baseline, the internet) to ``vproxy`` (10.77.0.1);
- ``vproxy`` runs the relay with the real nft TPROXY rule (home interface
  only) and the local route for the fake range; ``ip_forward`` is on for
  the relay's kernel fast path (direct routes NATed, `fastpath.py`) and so
  the bench can compare with plain routing;
- ``internet`` (203.0.113.0/24) runs the lab web server, a test server
  (`TestServer`: sized replies, half-close echo, UDP echo), dnsmasq
  answering ``*.test``, Dante (SOCKS5, username/password from the
  namespace's own /etc/passwd + shadow) and tinyproxy (HTTP CONNECT, basic
  auth), and iperf3;
- ``modem`` (192.168.1.1, inside the home allow list on purpose) stands for
  the uplink side and must not reach the relay.

The DNS server of issue 6 runs in ``vproxy`` too (the client's resolver):
its rules give each test domain a fake address and a route, and the relay
asks its control socket, as in the box. Every name carries a unique prefix;
`close()` kills what it started and removes namespaces and /etc/netns files.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

CLIENT_IP, HOME_IP = "10.77.0.2", "10.77.0.1"
WAN_IP, WEB_IP, SOCKS_IP, HTTP_IP = "203.0.113.1", "203.0.113.10", "203.0.113.20", "203.0.113.21"
MODEM_IP, UP_IP = "192.168.1.1", "192.168.1.8"
FAKE_RANGE = "100.96.0.0/11"
TEST_PORT, UDP_ECHO_PORT, IPERF_PORT, DEAD_PORT = 9000, 9001, 5201, 1081
USER, PASSWORD = "relayuser", "s3cret-" + secrets.token_hex(4)


def _run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


class RelayLab:
    def __init__(self, tag: str | None = None, relay_overrides: dict | None = None):
        tag = tag or f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.tag = tag
        self.ns = {role: f"r7{tag}-{role}" for role in ("client", "vproxy", "internet", "modem")}
        self.dir = Path(tempfile.mkdtemp(prefix=f"relaylab-{tag}-"))
        self.db = str(self.dir / "fakeip.sqlite3")
        self.control = str(self.dir / "relay.sock")
        self.dns_control = str(self.dir / "dns.sock")
        self.config = self.dir / "relay.yaml"
        self.relay_log = self.dir / "relay.log"
        self.procs: dict[str, subprocess.Popen] = {}
        self.relay_overrides = relay_overrides or {}
        self.fake: dict[str, str] = {}

    # -- building -------------------------------------------------------------
    def ip(self, role: str, *args: str) -> None:
        _run(["ip", "-n", self.ns[role], *args])

    def sh(self, role: str, argv: list[str], check: bool = True, timeout: float = 120,
           **kw) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", self.ns[role], *argv], check=check, timeout=timeout, **kw)

    def spawn(self, name: str, role: str, argv: list[str], log: Path | None = None) -> subprocess.Popen:
        out = open(log or self.dir / f"{name}.log", "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns[role], *argv], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        self.procs[name] = proc
        return proc

    def up(self) -> "RelayLab":
        try:
            self._namespaces()
            self._internet_services()
            self._dns_server()
            self.write_config()
            self.start_relay()
        except BaseException:
            self.close()
            raise
        return self

    def _namespaces(self) -> None:
        for name in self.ns.values():
            _run(["ip", "netns", "add", name])
        for role in self.ns:
            self.ip(role, "link", "set", "lo", "up")
            self.sh(role, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        v = self.ns["vproxy"]
        self.ip("vproxy", "link", "add", "home", "type", "veth", "peer", "name", "eth0", "netns",
                self.ns["client"])
        self.ip("vproxy", "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns",
                self.ns["internet"])
        self.ip("vproxy", "link", "add", "modem0", "type", "veth", "peer", "name", "eth0", "netns",
                self.ns["modem"])
        for dev, addr in (("home", f"{HOME_IP}/24"), ("wan", f"{WAN_IP}/24"), ("modem0", f"{UP_IP}/24")):
            self.ip("vproxy", "addr", "add", addr, "dev", dev)
            self.ip("vproxy", "link", "set", dev, "up")
        for role, addrs, via in (("client", [f"{CLIENT_IP}/24"], HOME_IP),
                                 ("internet", [f"{WEB_IP}/24", f"{SOCKS_IP}/24", f"{HTTP_IP}/24"], WAN_IP),
                                 ("modem", [f"{MODEM_IP}/24"], UP_IP)):
            for addr in addrs:
                self.ip(role, "addr", "add", addr, "dev", "eth0")
            self.ip(role, "link", "set", "eth0", "up")
            self.ip(role, "route", "add", "default", "via", via)
        # The vproxy namespace's plan: fake range local, TPROXY from the home side only.
        from appliance.services.relay import nft
        from appliance.services.relay.settings import RelaySettings

        settings = RelaySettings(fake_range=FAKE_RANGE)
        self.ip("vproxy", *nft.local_route(settings))
        table = "table ip relay {\n" + nft.chain(settings, ["home"]) + "\n}\n"
        _run(["ip", "netns", "exec", v, "nft", "-f", "-"], input=table)
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "2"),
                           ("net.ipv4.ip_local_port_range", "{} {}".format(*nft.LOCAL_PORTS)),
                           ("net.ipv4.conf.default.rp_filter", "2")):
            self.sh("vproxy", ["sysctl", "-qw", f"{key}={value}"])

    def _internet_services(self) -> None:
        etc = Path("/etc/netns") / self.ns["internet"]
        etc.mkdir(parents=True, exist_ok=True)
        names = " ".join(f"{n}.test" for n in ("direct", "socks", "http", "reject", "dead", "pin",
                                               "other", "udp"))
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{WEB_IP} {names}\n")
        (etc / "resolv.conf").write_text(f"nameserver {WEB_IP}\n")
        # Dante's username method checks the system password database: give the
        # internet namespace its own, so the host's is never touched.
        import crypt  # deprecated in 3.13; Dante wants a crypt(3) hash

        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
        (etc / "passwd").write_text(Path("/etc/passwd").read_text()
                                    + f"{USER}:x:4777:65534::/nonexistent:/usr/sbin/nologin\n")
        shadow = etc / "shadow"
        shadow.write_text(Path("/etc/shadow").read_text() + f"{USER}:{hashed}:19000:0:99999:7:::\n")
        shadow.chmod(0o640)
        d = self.dir
        (d / "danted.conf").write_text(f"""\
logoutput: {d}/danted.out
internal: {SOCKS_IP} port = 1080
external: {SOCKS_IP}
socksmethod: username
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 }}
socks pass {{
  from: 0.0.0.0/0 to: 0.0.0.0/0
  command: connect udpassociate udpreply
  socksmethod: username
  log: connect error
}}
""")
        (d / "tinyproxy.conf").write_text(f"""\
Port 8888
Listen {HTTP_IP}
Bind {HTTP_IP}
Timeout 60
LogFile "{d}/tinyproxy.out"
LogLevel Connect
MaxClients 200
Allow 203.0.113.0/24
BasicAuth {USER} {PASSWORD}
DisableViaHeader Yes
""")
        os.chmod(d, 0o755)
        self.spawn("web", "internet", [PYTHON, "-m", "appliance.lab.web", "--port", "80"])
        self.spawn("testserver", "internet", [PYTHON, "-m", "appliance.lab.relaylab", "serve"])
        self.spawn("dnsmasq", "internet", ["dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                                           f"--listen-address={WEB_IP}", "--bind-interfaces",
                                           "--address=/test/" + WEB_IP, "--user=root",
                                           f"--pid-file={d}/dnsmasq.pid"])
        self.spawn("danted", "internet", ["danted", "-f", str(d / "danted.conf"), "-N", "1",
                                          "-p", str(d / "danted.pid")])
        self.spawn("tinyproxy", "internet", ["tinyproxy", "-d", "-c", str(d / "tinyproxy.conf")])
        self.spawn("iperf3", "internet", ["iperf3", "-s", "-B", WEB_IP, "-p", str(IPERF_PORT)])
        for host, port in ((WEB_IP, 80), (WEB_IP, TEST_PORT), (WEB_IP, 53), (SOCKS_IP, 1080),
                           (HTTP_IP, 8888), (WEB_IP, IPERF_PORT)):
            self.wait_port("internet", host, port)

    def wait_port(self, role: str, host: str, port: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        probe = (f"import socket,sys\ns=socket.socket();s.settimeout(0.5)\n"
                 f"sys.exit(s.connect_ex(({host!r},{port})))")
        while time.monotonic() < deadline:
            if self.sh(role, [PYTHON, "-c", probe], check=False).returncode == 0:
                return
            time.sleep(0.1)
        logs = {n: (self.dir / f"{n}.log").read_text()[-500:] for n in self.procs
                if (self.dir / f"{n}.log").exists()}
        raise RuntimeError(f"{host}:{port} in {role} not listening after {timeout}s; logs: {logs}")

    ROUTES = {"direct.test": "direct", "socks.test": "socks", "http.test": "web-proxy",
              "reject.test": "reject", "dead.test": "dead", "udp.test": "direct",
              "pin.test": "direct", "nudp.test": "web-proxy"}

    def _dns_server(self) -> None:
        """The DNS server of issue 6, in vproxy: it hands out the fake addresses."""
        import yaml

        rules = [{"match": "exact", "value": d, "then": {"action": "fake-ip", "route": r}}
                 for d, r in self.ROUTES.items()]
        rules.append({"match": "suffix", "value": "fill.test",
                      "then": {"action": "fake-ip", "route": "direct"}})
        doc = {"listen": [f"{HOME_IP}:53"], "allow_clients": ["10.0.0.0/8"],
               "deny_clients": [f"{MODEM_IP}/32"], "upstreams": [{"url": f"udp://{WEB_IP}"}],
               "control_socket": self.dns_control,
               "fake_ip": {"network": FAKE_RANGE, "db_path": self.db, "max_entries": 16},
               "rules": rules}
        (self.dir / "dns.yaml").write_text(yaml.safe_dump(doc))
        self.spawn("dns", "vproxy", [PYTHON, "-m", "appliance.services.dns", "--config",
                                     str(self.dir / "dns.yaml")])
        etc = Path("/etc/netns") / self.ns["client"]
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {HOME_IP}\n")
        self.wait_port("vproxy", HOME_IP, 53)
        for domain in self.ROUTES:
            self.fake[domain] = self.resolve(domain)

    def resolve(self, domain: str) -> str:
        out = self.sh("client", ["dig", "+short", "+time=2", "+tries=2", domain]).stdout.split()
        if not out:
            raise RuntimeError(f"{domain}: no answer from the DNS server")
        return out[-1]

    def relay_settings(self) -> dict:
        data = {
            "listen": "127.0.0.1:7893",
            "fake_range": FAKE_RANGE,
            "allow_clients": ["10.0.0.0/8", "192.168.0.0/16"],
            "deny_clients": [f"{MODEM_IP}/32"],
            "resolvers": [WEB_IP],
            "fakeip_db": self.db,
            "dns_control": self.dns_control,
            "control_socket": self.control,
            "fast_path": {"interfaces": ["home"]},
            "proxies": [
                {"name": "socks", "type": "socks5", "address": SOCKS_IP, "port": 1080,
                 "username": USER, "password": PASSWORD, "udp": True},
                {"name": "web-proxy", "type": "http", "address": HTTP_IP, "port": 8888,
                 "username": USER, "password": PASSWORD},
                {"name": "dead", "type": "socks5", "address": WEB_IP, "port": DEAD_PORT},
            ],
        }
        data.update(self.relay_overrides)
        return data

    def write_config(self, **changes) -> None:
        data = self.relay_settings()
        data.update(changes)
        self.config.write_text(json.dumps(data, indent=1))

    def start_relay(self, timeout: float = 15) -> None:
        self.spawn("relay", "vproxy", [PYTHON, "-m", "appliance.services.relay", "--config",
                                       str(self.config)], log=self.relay_log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.query("stats")["pid"]:
                    return
            except (OSError, ValueError):
                time.sleep(0.05)
            if self.procs["relay"].poll() is not None:
                break
        raise RuntimeError(f"relay did not start: {self.relay_log.read_text()[-2000:]}")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def query(self, what: str, **params):
        from appliance.services.relay.control import query

        return query(self.control, what, **params)

    def close(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name)
            except (ProcessLookupError, PermissionError):
                pass
        for name in self.ns.values():
            # Anything still inside (a test's stray client) goes with the namespace.
            pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run(["ip", "netns", "del", name], check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RelayLab":
        return self.up()

    def __exit__(self, *exc) -> None:
        self.close()


# -- the internet namespace's test server ------------------------------------------

async def _tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Protocol: ``bytes N\\n`` -> N bytes then close; ``hold\\n`` -> ``ok\\n``, then
    idle until the client closes; ``sink\\n`` -> read to EOF, then answer
    ``<count> <sha256>\\n`` and 1 MiB of data, then close (half-close)."""
    import hashlib

    try:
        line = (await reader.readline()).decode().split()
        if line[:1] == ["bytes"]:
            n = int(line[1])
            block = b"x" * 65536
            while n > 0:
                writer.write(block[: min(n, len(block))])
                n -= min(n, len(block))
                await writer.drain()
        elif line[:1] == ["hold"]:
            writer.write(b"ok\n")  # then idle until the client closes
            await writer.drain()
            await reader.read()
        elif line[:1] == ["sink"]:
            digest, count = hashlib.sha256(), 0
            while chunk := await reader.read(65536):
                digest.update(chunk)
                count += len(chunk)
            writer.write(f"{count} {digest.hexdigest()}\n".encode() + b"y" * (1 << 20))
            await writer.drain()
    except (ConnectionError, IndexError, ValueError):
        pass
    finally:
        writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"echo:" + data, addr)


async def _serve() -> None:
    server = await asyncio.start_server(_tcp_client, WEB_IP, TEST_PORT, backlog=4096)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_UdpEcho, local_addr=(WEB_IP, UDP_ECHO_PORT))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
        asyncio.run(_serve())
