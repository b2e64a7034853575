"""SOCKS5 replies the relay must read: any address type RFC 1928 allows.

The proxy is the other end of a real socket pair, written byte by byte as a
proxy would.
"""
import asyncio
import socket

import pytest

from appliance.services.relay.settings import ProxySettings
from appliance.services.relay.upstream import UpstreamError, socks5_handshake

PROXY = ProxySettings(name="p", type="socks5", address="192.0.2.1", port=1080)


def handshake(reply: bytes, command: int = 1):
    async def go():
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            theirs.sendall(b"\x05\x00" + reply)  # method "no auth", then the request's reply
            return await socks5_handshake(asyncio.get_running_loop(), ours, PROXY, command, "www.example.com", 443)
    return asyncio.run(go())


def test_a_bound_address_given_as_a_name_is_read():
    # Found by `make fuzz` (relay_reply): every ATYP 3 reply raised UnicodeError
    # out of the handshake (the idna codec takes no "replace"), past the relay's handlers.
    assert handshake(b"\x05\x00\x00\x03\x0eproxy.example.\x04\x38") == ("proxy.example.", 1080)


def test_a_bound_name_with_bytes_that_are_not_ascii_is_read_not_raised():
    host, port = handshake(b"\x05\x00\x00\x03\x04\xffx\x00y\x00\x35")
    assert port == 53 and host.endswith("y")


def test_ipv4_and_ipv6_bound_addresses():
    assert handshake(b"\x05\x00\x00\x01\xc0\x00\x02\x07\x00\x35") == ("192.0.2.7", 53)
    assert handshake(b"\x05\x00\x00\x04" + bytes(15) + b"\x01\x00\x35") == ("::1", 53)


def test_an_unknown_address_type_is_an_upstream_error_naming_it():
    with pytest.raises(UpstreamError, match="unknown address type 9"):
        handshake(b"\x05\x00\x00\x09")
