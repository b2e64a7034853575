"""Upstream transports against real servers on loopback: UDP with TCP
fallback and DNS-over-TLS against Unbound, DNS-over-HTTPS against a small
HTTP/1.1 server here, with certificate checks (a wrong name is refused)."""

import asyncio
import random
import ssl
import subprocess
import time

import dns.message
import dns.rrset
import pytest

from tests.support.ports import free_port

from appliance.services.dns.upstream import Upstream, UpstreamError, UpstreamSet



@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dnscert")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", tmp / "key.pem", "-out", tmp / "cert.pem", "-subj", "/CN=dns.test",
                    "-addext", "subjectAltName=DNS:dns.test,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return tmp


@pytest.fixture(scope="module")
def unbound(certs):
    port = free_port(2)  # DNS and DoT
    conf = certs / "unbound.conf"
    big = "\n".join(f'  local-data: "big.dot.test. 300 IN A 192.0.2.{i}"' for i in range(1, 101))
    conf.write_text(f"""server:
  interface: 127.0.0.1@{port}
  interface: 127.0.0.1@{port + 1}
  tls-port: {port + 1}
  tls-service-key: "{certs}/key.pem"
  tls-service-pem: "{certs}/cert.pem"
  do-daemonize: no
  use-syslog: no
  logfile: ""
  username: ""
  chroot: ""
  directory: "{certs}"
  pidfile: "{certs}/unbound.pid"
  module-config: "iterator"
  interface-automatic: no
  local-zone: "dot.test." static
  local-data: "www.dot.test. 300 IN A 192.0.2.85"
{big}
""")
    proc = subprocess.Popen(["unbound", "-d", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            r = subprocess.run(["dig", "-p", str(port), "@127.0.0.1", "www.dot.test", "+short",
                                "+time=1", "+tries=1"], capture_output=True, text=True)
            if "192.0.2.85" in r.stdout:
                break
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def query(name, rtype="A"):
    q = dns.message.make_query(name, rtype, use_edns=0, payload=1232)
    q.id = random.getrandbits(16)
    return q.to_wire()


def message(wire):
    return dns.message.from_wire(wire)


def addresses(wire):
    return sorted(rd.to_text() for rrset in message(wire).answer for rd in rrset)


def test_udp_falls_back_to_tcp_on_truncation(unbound):
    up = Upstream(f"udp://127.0.0.1:{unbound}")
    answer = asyncio.run(up.exchange(query("big.dot.test"), 2))
    assert len(addresses(answer)) == 100  # > 1232 bytes: unbound truncated the UDP answer
    assert addresses(asyncio.run(Upstream(f"tcp://127.0.0.1:{unbound}").exchange(
        query("www.dot.test"), 2))) == ["192.0.2.85"]


def test_dns_over_tls_verifies_and_reuses(unbound, certs):
    up = Upstream(f"tls://dns.test:{unbound + 1}", address="127.0.0.1",
                  ca_file=str(certs / "cert.pem"))

    async def two():
        first = await up.exchange(query("www.dot.test"), 2)
        second = await up.exchange(query("big.dot.test"), 2)
        return first, second, len(up._idle)

    first, second, idle = asyncio.run(two())
    assert addresses(first) == ["192.0.2.85"] and len(message(second).answer[0]) == 100
    assert idle == 1  # one connection carried both
    wrong = Upstream(f"tls://other.test:{unbound + 1}", address="127.0.0.1",
                     ca_file=str(certs / "cert.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(wrong.exchange(query("www.dot.test"), 2))


async def doh_server(certs, port):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / "cert.pem", certs / "key.pem")

    async def handle(reader, writer):
        try:
            while True:
                request = await reader.readline()
                if not request:
                    return
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    k, _, v = line.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers["content-length"]))
                q = dns.message.from_wire(body)
                r = dns.message.make_response(q)
                r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.86"))
                wire = r.to_wire()
                ok = request.startswith(b"POST /dns-query ") and \
                    headers.get("content-type") == "application/dns-message"
                status = b"200 OK" if ok else b"415 Unsupported"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/dns-message\r\n"
                             b"Content-Length: " + str(len(wire)).encode() + b"\r\n\r\n" + wire)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)


def test_dns_over_https(certs):
    port = free_port()

    async def run():
        server = await doh_server(certs, port)
        try:
            up = Upstream(f"https://dns.test:{port}/dns-query", address="127.0.0.1",
                          ca_file=str(certs / "cert.pem"))
            a = await up.exchange(query("one.example"), 2)
            b = await up.exchange(query("two.example"), 2)
            return a, b
        finally:
            server.close()

    a, b = asyncio.run(run())
    assert addresses(a) == addresses(b) == ["192.0.2.86"]


def test_failover_to_second_upstream(unbound):
    # The first upstream is a closed port on loopback: refused at once.
    ups = UpstreamSet([Upstream("udp://127.0.0.1:9"), Upstream(f"udp://127.0.0.1:{unbound}")])

    async def run():
        loop = asyncio.get_running_loop()
        return await ups.resolve(query("www.dot.test"), loop.time() + 2)

    assert addresses(asyncio.run(run())) == ["192.0.2.85"]
    health = ups.health()
    assert not health[0]["up"] and health[1]["up"]
    single = UpstreamSet([Upstream("udp://127.0.0.1:9")])
    with pytest.raises(UpstreamError):
        asyncio.run(single.resolve(query("www.dot.test"), time.monotonic() + 1))
