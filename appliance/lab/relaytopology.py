"""The fake-IP relay's lab as data: the same kind of topology as the home lab's.

    client --home-- vproxy --wan-- internet          modem --up-- vproxy

- ``client`` (10.77.0.2) routes everything to ``vproxy`` (10.77.0.1), its
  resolver too;
- ``vproxy`` holds the relay's real nft TPROXY rule (home interface only)
  and the local route for the fake range; ``ip_forward`` is on for the
  relay's kernel fast path (direct routes NATed, `fastpath.py`) and so the
  bench can compare with plain routing; it runs the DNS server of issue 6
  (fake addresses, the relay asks its control socket, as in the box) and
  the relay;
- ``internet`` (203.0.113.0/24) runs the lab web server, a test server
  (sized replies, half-close echo, UDP echo: `testserver.py`), dnsmasq
  answering ``*.test``, Dante (SOCKS5, username/password from the
  namespace's own /etc/passwd + shadow) and tinyproxy (HTTP CONNECT, basic
  auth), and iperf3;
- ``modem`` (192.168.1.1, inside the home allow list on purpose) stands for
  the uplink side and must not reach the relay.

Client, vproxy and internet speak IPv6 too (fd77::/64 at home, 2001:db8:113::/64
on the wan side; the modem does not): the fake IPv6 range (`FAKE_RANGE6`)
is TPROXYed to the relay as in the box, dnsmasq answers AAAA as well, and
the relay connects IPv6 clients over IPv6 (`direct6`), so the kernel fast
path's ip6 table has something to map.

`RelaySpec` gives the kernel objects (built by `appliance.kernel.reconcile`),
the files and the processes; `relaylab.RelayLab` brings it up with `Lab`.
Pure: no I/O here.
"""
from __future__ import annotations

import secrets
import sys
import warnings
from dataclasses import dataclass

import yaml

from appliance.kernel.base import Route
from appliance.kernel.desired import Address, Namespace, NftTable, Object, RouteEntry, Sysctls, Veth
from appliance.lab.topology import LabFile, LabProcess
from appliance.services.relay import nft
from appliance.services.relay.settings import RelaySettings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # gone in 3.13 (this is 3.11); Dante wants a crypt(3) hash

PYTHON = sys.executable

CLIENT_IP, HOME_IP = "10.77.0.2", "10.77.0.1"
WAN_IP, WEB_IP, SOCKS_IP, HTTP_IP = "203.0.113.1", "203.0.113.10", "203.0.113.20", "203.0.113.21"
MODEM_IP, UP_IP = "192.168.1.1", "192.168.1.8"
FAKE_RANGE = "100.96.0.0/11"
CLIENT_IP6, HOME_IP6 = "fd77::2", "fd77::1"
WAN_IP6, WEB_IP6 = "2001:db8:113::1", "2001:db8:113::10"
FAKE_RANGE6 = "2001:2::/48"
TEST_PORT, UDP_ECHO_PORT, IPERF_PORT, DEAD_PORT = 9000, 9001, 5201, 1081
RELAY_PORT = 7893
USER, PASSWORD = "relayuser", "s3cret-" + secrets.token_hex(4)

ROLES = ("client", "vproxy", "internet", "modem")
# The DNS server's rules: each test domain gets a fake address and this route.
ROUTES = {"direct.test": "direct", "socks.test": "socks", "http.test": "web-proxy",
          "reject.test": "reject", "dead.test": "dead", "udp.test": "direct",
          "pin.test": "direct", "nudp.test": "web-proxy"}
_SITES = ("direct", "socks", "http", "reject", "dead", "pin", "other", "udp")


@dataclass(frozen=True)
class RelaySpec:
    prefix: str

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    @property
    def namespaces(self) -> list[str]:
        return [self.ns(r) for r in ROLES]

    @property
    def client_names(self) -> list[str]:
        return [self.ns("client")]

    def objects(self) -> list[Object]:
        client, vproxy, internet, modem = (self.ns(r) for r in ROLES)
        objs: list[Object] = [Namespace(n) for n in self.namespaces]
        # IPv6 with fixed addresses: no DAD (usable at once), no RAs; none for the modem.
        objs += [Sysctls(n, (("net.ipv6.conf.all.accept_dad", "0"), ("net.ipv6.conf.default.accept_dad", "0"),
                             ("net.ipv6.conf.all.accept_ra", "0"), ("net.ipv6.conf.default.accept_ra", "0")))
                 for n in (client, vproxy, internet)]
        objs.append(Sysctls(modem, (("net.ipv6.conf.all.disable_ipv6", "1"),)))
        objs += [
            Veth(vproxy, "home", client, "eth0"),
            Veth(vproxy, "wan", internet, "eth0"),
            Veth(vproxy, "modem0", modem, "eth0"),
            Address(vproxy, "home", f"{HOME_IP}/24"),
            Address(vproxy, "wan", f"{WAN_IP}/24"),
            Address(vproxy, "modem0", f"{UP_IP}/24"),
            Address(client, "eth0", f"{CLIENT_IP}/24"),
            *(Address(internet, "eth0", f"{ip}/24") for ip in (WEB_IP, SOCKS_IP, HTTP_IP)),
            Address(modem, "eth0", f"{MODEM_IP}/24"),
            Address(vproxy, "home", f"{HOME_IP6}/64"),
            Address(vproxy, "wan", f"{WAN_IP6}/64"),
            Address(client, "eth0", f"{CLIENT_IP6}/64"),
            Address(internet, "eth0", f"{WEB_IP6}/64"),
            RouteEntry(client, Route("default", via=HOME_IP)),
            RouteEntry(internet, Route("default", via=WAN_IP)),
            RouteEntry(client, Route("::/0", via=HOME_IP6)),
            RouteEntry(internet, Route("::/0", via=WAN_IP6)),
            RouteEntry(modem, Route("default", via=UP_IP)),
        ]
        # vproxy as the box's plan makes it (`services/relay/nft.py`): the
        # fake range local, TPROXY from the home side only.
        settings = RelaySettings(fake_range=FAKE_RANGE, fake_range6=FAKE_RANGE6)
        objs += [
            RouteEntry(vproxy, Route(FAKE_RANGE, dev="lo", type="local", table="local")),
            RouteEntry(vproxy, Route(FAKE_RANGE6, dev="lo", type="local", table="local")),
            NftTable(vproxy, "ip", "relay", nft.chain(settings, ["home"])),
            NftTable(vproxy, "ip6", "relay", nft.chain6(settings, ["home"], FAKE_RANGE6)),
            Sysctls(vproxy, (("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1"),
                             ("net.ipv4.conf.all.rp_filter", "2"),
                             ("net.ipv4.conf.default.rp_filter", "2"),
                             ("net.ipv4.ip_local_port_range", "{} {}".format(*nft.LOCAL_PORTS)))),
        ]
        return objs

    # -- files ------------------------------------------------------------
    def paths(self, rundir: str) -> dict[str, str]:
        return {"db": f"{rundir}/fakeip.sqlite3", "control": f"{rundir}/relay.sock",
                "dns_control": f"{rundir}/dns.sock", "config": f"{rundir}/relay.yaml",
                "dns_config": f"{rundir}/dns.yaml"}

    def files(self, rundir: str) -> list[LabFile]:
        internet = self.ns("internet")
        names = " ".join(f"{n}.test" for n in _SITES)
        # Dante's username method checks the system password database: the
        # internet namespace has its own, so the host's is never touched.
        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_SHA512))
        return [
            LabFile("hosts", f"127.0.0.1 localhost\n{WEB_IP} {names}\n", ns=internet),
            LabFile("resolv.conf", f"nameserver {WEB_IP}\n", ns=internet),
            LabFile("passwd", f"{USER}:x:4777:65534::/nonexistent:/usr/sbin/nologin\n", ns=internet,
                    base="/etc/passwd"),
            LabFile("shadow", f"{USER}:{hashed}:19000:0:99999:7:::\n", ns=internet, mode=0o640,
                    base="/etc/shadow"),
            LabFile("resolv.conf", f"nameserver {HOME_IP}\n", ns=self.ns("client")),
            LabFile(f"{rundir}/danted.conf", _DANTED.format(d=rundir, SOCKS_IP=SOCKS_IP)),
            LabFile(f"{rundir}/tinyproxy.conf", _TINYPROXY.format(d=rundir, HTTP_IP=HTTP_IP, USER=USER,
                                                                  PASSWORD=PASSWORD)),
            LabFile(self.paths(rundir)["dns_config"], yaml.safe_dump(self.dns_settings(rundir))),
        ]

    def dns_settings(self, rundir: str) -> dict:
        """The DNS server of issue 6, in vproxy: it hands out the fake addresses."""
        p = self.paths(rundir)
        rules = [{"match": "exact", "value": d, "then": {"action": "fake-ip", "route": r}}
                 for d, r in ROUTES.items()]
        rules.append({"match": "suffix", "value": "fill.test", "then": {"action": "fake-ip", "route": "direct"}})
        return {"listen": [f"{HOME_IP}:53"], "allow_clients": ["10.0.0.0/8"],
                "deny_clients": [f"{MODEM_IP}/32"], "upstreams": [{"url": f"udp://{WEB_IP}"}],
                "control_socket": p["dns_control"],
                "fake_ip": {"network": FAKE_RANGE, "network6": FAKE_RANGE6, "db_path": p["db"],
                            "max_entries": 16},
                "rules": rules}

    def relay_settings(self, rundir: str) -> dict:
        p = self.paths(rundir)
        return {
            "listen": f"127.0.0.1:{RELAY_PORT}",
            "fake_range": FAKE_RANGE,
            "fake_range6": FAKE_RANGE6,
            "direct6": True,
            "allow_clients": ["10.0.0.0/8", "192.168.0.0/16"],
            "deny_clients": [f"{MODEM_IP}/32"],
            "resolvers": [WEB_IP],
            "fakeip_db": p["db"],
            "dns_control": p["dns_control"],
            "control_socket": p["control"],
            "fast_path": {"interfaces": ["home"]},
            "proxies": [
                {"name": "socks", "type": "socks5", "address": SOCKS_IP, "port": 1080,
                 "username": USER, "password": PASSWORD, "udp": True},
                {"name": "web-proxy", "type": "http", "address": HTTP_IP, "port": 8888,
                 "username": USER, "password": PASSWORD},
                {"name": "dead", "type": "socks5", "address": WEB_IP, "port": DEAD_PORT},
            ],
        }

    # -- processes ----------------------------------------------------------
    def processes(self, rundir: str) -> list[LabProcess]:
        """What runs for the whole life of the lab; the relay is started apart (`relay`)."""
        internet, d = self.ns("internet"), rundir
        return [
            LabProcess("web", internet, (PYTHON, "-m", "appliance.lab.web", "--port", "80"), ready=("tcp/80",)),
            LabProcess("testserver", internet, (PYTHON, "-m", "appliance.lab.testserver"),
                       ready=(f"tcp/{TEST_PORT}", f"udp/{UDP_ECHO_PORT}")),
            LabProcess("dnsmasq", internet, (
                "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", f"--listen-address={WEB_IP}",
                "--bind-interfaces", "--address=/test/" + WEB_IP, "--address=/test/" + WEB_IP6, "--user=root", f"--pid-file={d}/dnsmasq.pid",
            ), ready=("udp/53", "tcp/53")),
            LabProcess("danted", internet, ("danted", "-f", f"{d}/danted.conf", "-N", "1", "-p", f"{d}/danted.pid"),
                       ready=("tcp/1080",)),
            LabProcess("tinyproxy", internet, ("tinyproxy", "-d", "-c", f"{d}/tinyproxy.conf"), ready=("tcp/8888",)),
            LabProcess("iperf3", internet, ("iperf3", "-s", "-B", WEB_IP, "-p", str(IPERF_PORT)),
                       ready=(f"tcp/{IPERF_PORT}",)),
            LabProcess("dns", self.ns("vproxy"), (PYTHON, "-m", "appliance.services.dns", "--config",
                                                  self.paths(rundir)["dns_config"]), ready=("udp/53", "tcp/53")),
        ]

    def relay(self, rundir: str) -> LabProcess:
        return LabProcess("relay", self.ns("vproxy"), (PYTHON, "-m", "appliance.services.relay", "--config",
                                                       self.paths(rundir)["config"]), ready=(f"tcp/{RELAY_PORT}",))


_DANTED = """\
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
"""

_TINYPROXY = """\
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
"""
