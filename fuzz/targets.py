"""Fuzz targets: the parsers that read what someone else wrote.

Each target takes the fuzzer's bytes and returns, or raises `Bug` (or any
exception the production caller would not handle): a raise is a crash. They
run under atheris (`make fuzz`, fuzz/run.py) and, on the saved corpus in
fuzz/corpus/<target>/, under pytest (tests/unit/fuzz), which needs no atheris.

- flow: flow text (`ovs-ofctl` syntax) as the console and the settings take it.
- dns_query: a client's query through the resolver, as the server's socket hands it over.
- dns_answer: an upstream's answer to a query, through the resolver to the client.
- settings: the settings document as YAML or JSON (structure, not only values);
  a document that loads must survive being stored and loaded again.
- kea_leases: Kea's memfile CSV (hostnames and MACs are what LAN clients sent).
- relay_reply: a SOCKS5 or HTTP proxy's replies to the relay, and SOCKS5 UDP datagrams.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
import traceback


# Files the targets write (the fake-IP store, a lease file) in memory: the
# time a disk takes to sync is not the parser's.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


def _scratch(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH)
    atexit.register(shutil.rmtree, path, True)
    return path


class Bug(AssertionError):
    """An input broke a promise the code makes (not only an unexpected exception)."""


class _LoggedErrors(logging.Handler):
    # The resolver logs, instead of raising, what it did not expect (one bad
    # answer must not starve the other clients): to the fuzzer that is a crash.
    def __init__(self):
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record):
        trace = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        self.seen.append(f"{record.getMessage()}\n{trace}")


# ---------------------------------------------------------------- flow

def flow(data: bytes) -> None:
    from appliance.switch.parser import FlowSyntaxError, parse_flows
    text = data.decode("utf-8", "replace")
    try:
        parse_flows(text, port_map={"uplink": 1, "downlink": 2, "vproxy": 3})
    except FlowSyntaxError as e:
        if e.line < 1 or e.column < 1:
            raise Bug(f"error located at line {e.line}, column {e.column}") from e


# ---------------------------------------------------------------- DNS

class _Dns:
    """One resolver for the whole run (building one per input would be the hot spot)."""

    def __init__(self):
        import dns.message
        import dns.rrset

        from appliance.services.dns.cache import AnswerCache
        from appliance.services.dns.fakeip import FakeIpPool
        from appliance.services.dns.localnames import LocalNames
        from appliance.services.dns.policy import Policy
        from appliance.services.dns.querylog import QueryLog
        from appliance.services.dns.resolver import Resolver
        from appliance.services.dns.settings import parse_settings
        from appliance.services.dns.upstream import Upstream, UpstreamSet

        outer = self
        self.t = 1000.0
        self.answer_bytes: bytes | None = None  # what the upstream sends back, else a plain answer

        class FuzzUpstream(Upstream):
            pipelined = False

            async def exchange(self, wire, timeout):
                if outer.answer_bytes is not None:
                    return outer.answer_bytes(wire)
                query = dns.message.from_wire(wire)
                r = dns.message.make_response(query)
                r.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", "192.0.2.1"))
                return r.to_wire()

        settings = parse_settings({
            "upstreams": [{"url": "udp://192.0.2.53"}],
            "rules": [
                {"match": "suffix", "value": "ads.example", "then": {"action": "block"}},
                {"match": "suffix", "value": "video.example", "then": {"action": "fake-ip", "route": "p"}},
                {"match": "exact", "value": "rw.example", "then": {"action": "rewrite", "answer": ["10.1.1.1"]}},
                {"match": "exact", "value": "cn.example", "then": {"action": "rewrite", "answer": ["x.example"]}},
            ],
        })
        clock = lambda: outer.t  # noqa: E731
        self.dir = _scratch("fuzz-dns-")
        self.resolver = Resolver(settings, Policy(settings, {}), UpstreamSet([FuzzUpstream("udp://192.0.2.53")],
                                                                             clock=clock),
                                 FakeIpPool(settings.fake_ip.network, os.path.join(self.dir, "f.db")),
                                 LocalNames("lan", static=[("nas", "192.168.1.20", None)]), QueryLog(),
                                 AnswerCache(clock=clock), clock=clock, neighbour_mac=lambda ip: None)
        self.loop = asyncio.new_event_loop()
        self.errors = _LoggedErrors()

    def ask(self, wire: bytes, udp: bool) -> bytes | None:
        self.t += 3600  # no cached answer or decision outlives one input
        logger = logging.getLogger("appliance")
        logger.addHandler(self.errors)
        try:
            reply = self.loop.run_until_complete(
                asyncio.wait_for(self.resolver.answer(wire, "192.168.1.10", udp), 5))
        finally:
            logger.removeHandler(self.errors)
        if self.errors.seen:
            seen, self.errors.seen = self.errors.seen, []
            raise Bug(f"logged: {seen}")
        return reply


_dns: _Dns | None = None


def _resolver() -> _Dns:
    global _dns
    if _dns is None:
        _dns = _Dns()
    return _dns


def _check_reply(query: bytes, reply: bytes | None) -> None:
    if reply is None:
        return
    if len(reply) < 12 or reply[:2] != query[:2] or not reply[2] & 0x80:
        raise Bug(f"reply is not an answer to the query: {reply[:16]!r}")


def dns_query(data: bytes) -> None:
    # Byte 0 picks UDP or TCP (TCP has no size limit, so no truncation).
    if not data:
        return
    r = _resolver()
    r.answer_bytes = None
    query = data[1:]
    _check_reply(query, r.ask(query, udp=not data[0] & 1))


_NAMES = ("www.example.com", "rw.example", "cn.example", "video.example", "nas.lan", "x.ads.example",
          "20.1.168.192.in-addr.arpa")


def dns_answer(data: bytes) -> None:
    # Byte 0: the question asked (name, type); bytes 1-10: the answer's header after
    # its ID; the rest: what follows the question (the records).
    import dns.message
    if len(data) < 11:
        return
    r = _resolver()
    name = _NAMES[data[0] % len(_NAMES)]
    rtype = ("A", "AAAA", "TXT", "MX", "CNAME", "PTR", "SOA", "HTTPS")[(data[0] >> 4) % 8]
    query = dns.message.make_query(name, rtype, use_edns=bool(data[0] & 8)).to_wire()

    def answer(wire: bytes) -> bytes:
        from appliance.services.dns.wire import question_end
        return wire[:2] + data[1:11] + wire[12:question_end(wire)] + data[11:]

    r.answer_bytes = answer
    _check_reply(query, r.ask(query, udp=True))


# ---------------------------------------------------------------- settings

def settings(data: bytes) -> None:
    from appliance.box.settings import SettingsError, from_json, from_yaml, to_json, to_yaml
    if not data:
        return
    text = data[1:].decode("utf-8", "replace")
    read = from_json if data[0] & 1 else from_yaml
    try:
        loaded = read(text)
    except SettingsError as e:
        if not e.errors or not all(isinstance(k, str) and v and all(isinstance(m, str) for m in v)
                                   for k, v in e.errors.items()):
            raise Bug(f"errors without a field and a message: {e.errors!r}") from e
        return
    # What the console stores must load again, as the same settings.
    for dump, load in ((to_yaml, from_yaml), (to_json, from_json)):
        try:
            again = load(dump(loaded))
        except SettingsError as e:
            raise Bug(f"stored settings do not load again: {e.errors}") from e
        if again != loaded:
            raise Bug("stored settings load as different settings")


# ---------------------------------------------------------------- Kea leases

_LEASES = None


def kea_leases(data: bytes) -> None:
    from appliance.services.dns.localnames import LocalNames, kea_lease_file
    global _LEASES
    if _LEASES is None:
        _LEASES = os.path.join(_scratch("fuzz-kea-"), "kea-leases4.csv")
    with open(_LEASES, "wb") as fh:
        fh.write(data)
    names = LocalNames("lan", [kea_lease_file(_LEASES, clock=lambda: 1000)],
                       static=[("nas", "192.168.1.20", None)])
    if names.errors:
        # One odd row (a client's odd hostname) must not cost every lease its name.
        raise Bug(f"the lease file broke the local names: {names.errors}")
    if names.forward("nas.lan") != ["192.168.1.20"]:
        raise Bug("a lease took the static name")
    for row in names.table():
        label = row["name"][:-len(".lan")]
        if not label or len(label) > 63 or not all(c.isascii() and (c.isalnum() or c == "-") for c in label):
            raise Bug(f"a lease gave the name {row['name']!r}, not one DNS label in .lan")


# ---------------------------------------------------------------- relay

class _ScriptedProxy:
    """The relay's event loop calls, answered from the fuzzer's bytes as the proxy's replies."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.sent = data, 0, []

    async def sock_sendall(self, sock, data):
        self.sent.append(data)

    async def sock_recv(self, sock, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def _run(coro):
    # Nothing here ever waits: the proxy's bytes are all there.
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise Bug("the handshake waited on nothing")


def relay_reply(data: bytes) -> None:
    from appliance.services.relay.settings import ProxySettings
    from appliance.services.relay.udp import parse_socks_udp
    from appliance.services.relay.upstream import UpstreamError, connect_accepted, socks5_handshake
    if not data:
        return
    kind, rest = data[0] % 3, data[1:]
    if kind == 0:
        auth = {"username": "u", "password": "p"} if data[0] & 4 else {}
        proxy = ProxySettings(name="p", type="socks5", address="192.0.2.1", port=1080, **auth)
        try:
            host, port = _run(socks5_handshake(_ScriptedProxy(rest), None, proxy, 1 + (data[0] >> 7) * 2,
                                               "www.example.com", 443))
        except UpstreamError:
            return
        if not isinstance(host, str) or not 0 <= port <= 65535:
            raise Bug(f"bound address {host!r}:{port!r}")
    elif kind == 1:
        try:
            connect_accepted(rest.partition(b"\r\n\r\n")[0], "p", "www.example.com:443")
        except UpstreamError:
            return
    else:
        payload = parse_socks_udp(rest)
        if payload is not None and len(payload) > len(rest):
            raise Bug("payload longer than the datagram")


TARGETS = {
    "flow": flow,
    "dns_query": dns_query,
    "dns_answer": dns_answer,
    "settings": settings,
    "kea_leases": kea_leases,
    "relay_reply": relay_reply,
}

# What each target's code is: atheris instruments these for coverage.
MODULES = {
    "flow": ["appliance.switch.parser", "appliance.switch.fields", "appliance.switch.flows"],
    "dns_query": ["appliance.services.dns.wire", "appliance.services.dns.resolver", "appliance.services.dns.policy",
                  "appliance.services.dns.rules", "dns.message", "dns.name", "dns.rdata", "dns.edns"],
    "dns_answer": ["appliance.services.dns.wire", "appliance.services.dns.resolver", "appliance.services.dns.upstream",
                   "appliance.services.dns.cache", "dns.message", "dns.name", "dns.rdata"],
    "settings": ["appliance.yaml12", "appliance.box.settings", "appliance.services.dns.settings", "appliance.services.relay.settings",
                 "appliance.switch.parser", "yaml", "json"],
    "kea_leases": ["appliance.services.dns.localnames", "csv"],
    "relay_reply": ["appliance.services.relay.upstream", "appliance.services.relay.udp"],
}
