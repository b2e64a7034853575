"""The relay lab's test server in the internet namespace (`relaytopology.py` starts it).

TCP on TEST_PORT: ``bytes N`` -> N bytes then close; ``hold`` -> ``ok``, then
idle until the client closes; ``sink`` -> read to EOF, then answer the count
and digest and 1 MiB (half-close). UDP on UDP_ECHO_PORT: echo with an
``echo:`` prefix.

    python -m appliance.lab.testserver
"""

from __future__ import annotations

import asyncio
import hashlib
import resource

from appliance.lab.relaytopology import TEST_PORT, UDP_ECHO_PORT, WEB_IP

async def _tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    asyncio.run(_serve())
