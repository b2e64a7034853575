"""The kernel answer cache (`dns.kernel_cache`): the server's cached answers replayed at tc ingress.

```
 query --> tc ingress of the device (c/kernel_cache.c)
             plain UDP query (IPv4/6), client placed, fresh entry --> answer built in the skb,
                                                                  sent back out (bpf_redirect)
             anything else -----------------------------------> up to the server, untouched
 server (each process, its own writer id):
   answered a cacheable forwarded question from its cache --> kc_answers[(group, qtype, qclass,
                                                               wire name)] = records, TTL offsets,
                                                               stored/expiry (CLOCK_MONOTONIC)
   placed a client in a group                              --> kc_clients[ip] = group, expiry
   policy, local names, prefixes, relay, flush changed     --> kc_gens[writer] += 1: every entry
                                                               it wrote is dead at once
```

Policy stays in the server: the kernel answers only what the server
answered, and only while the process that wrote the entry has not changed
its mind since (its generation). `KernelCache` (main process) builds,
loads and attaches the program and holds its maps; `Writer` is what every
process (main and workers, which get the map fds when they start) writes
through. Where the program cannot be loaded (no clang, an old kernel, no
privilege), `KernelCache.start` raises `Unavailable` and the server answers
everything itself, saying why in its stats.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
from pathlib import Path

from .wire import NOERROR, NXDOMAIN, QR, RA, Prepared

log = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "c" / "kernel_cache.c"
PROGRAM = "kernel_cache"

# As in kernel_cache.c.
NAME_MAX = 255
BODY_MAX = 1024
TTLS = 64
WRITERS = 64
# The main process's second writer: the answers it makes itself (fake IPs, local names,
# rewrites), forgotten on their own when the fake-IP pool recycles an address. Workers are
# writers 1 to FIXED_WRITER - 1.
FIXED_WRITER = WRITERS - 1
DESTS = 4
DESTS6 = 2
STATS = ("hits", "misses", "expired", "client_unplaced", "not_plain", "too_big")

KEY = struct.Struct(f"<IHH{NAME_MAX + 1}s")
_ANSWER_HEAD = struct.Struct("<QQIIHHHHHHHHII")
ANSWER_SIZE = _ANSWER_HEAD.size + 2 * TTLS + 4 * TTLS + BODY_MAX
CLIENT = struct.Struct("<IIIIQ")
CONFIG = struct.Struct(f"<{DESTS}I{DESTS}IIIII" + "16s" * (2 * DESTS6 + 2) + "II")
# kc_addr: an IPv6 address, or an IPv4 one mapped (::ffff:a.b.c.d).
ADDR = 16
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

# A filter priority of its own on 6.1 (no tcx): beside the datapath's 0xC001.
FILTER_PRIO = 0xC00D
FILTER_NAME = "appliance-dns-cache"


class Unavailable(RuntimeError):
    """The program could not be built, loaded or attached: the server answers everything."""


def _word_sum(data: bytes) -> int:
    """One's complement sum of big-endian 16-bit words (a last odd byte as a high half), folded."""
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def answer_value(answer: Prepared, opt: bytes, edns_max: int, writer: int, gen: int,
                 until: float | None = None, now: float = 0.0) -> bytes | None:
    """The map value for an answer as `wire.render` sends it, or None where the kernel cannot send it.

    A cached answer lives as long as the server's cache keeps it; an answer the server made
    itself (no TTL ages) is replayed from `now` until `until`.
    """
    body = answer.body
    if len(answer.ttls) > TTLS or len(body) + len(opt) > BODY_MAX or not body:
        return None
    zeroed = bytearray(body)
    for offset, _ in answer.ttls:
        zeroed[offset:offset + 4] = b"\0\0\0\0"
    stored = answer.stored if until is None else now
    stored_ns = int(stored * 1e9)
    expires_ns = int((answer.stored + answer.lifetime if until is None else until) * 1e9)
    offs = [o for o, _ in answer.ttls] + [0] * (TTLS - len(answer.ttls))
    ttls = [t for _, t in answer.ttls] + [0] * (TTLS - len(answer.ttls))
    head = _ANSWER_HEAD.pack(stored_ns, expires_ns, writer, gen, QR | RA | answer.rcode,
                             answer.an, answer.ns, answer.ar, len(body), len(answer.ttls),
                             edns_max, 0, _word_sum(bytes(zeroed)), _word_sum(bytes(zeroed) + opt))
    return (head + struct.pack(f"<{TTLS}H", *offs) + struct.pack(f"<{TTLS}I", *ttls)
            + (body + opt).ljust(BODY_MAX, b"\0"))


def answer_key(group: int, question_key: bytes) -> bytes | None:
    """(group, qtype, qclass, name) from a lower-cased question (name + qtype + qclass)."""
    name = question_key[:-4]
    if len(name) > NAME_MAX:
        return None
    qtype, qclass = struct.unpack(">HH", question_key[-4:])
    return KEY.pack(group, qtype, qclass, name)


def cacheable(answer: Prepared) -> bool:
    """What the kernel may replay: an answer, or a negative answer with its SOA's TTL (RFC 2308)."""
    if answer.lifetime <= 0:
        return False
    if answer.rcode == NOERROR and answer.an:
        return True
    return answer.rcode in (NOERROR, NXDOMAIN) and answer.negative_ttl is not None


class Writer:
    """One process's writes into the kernel's maps (its own generation)."""

    FILLED_MAX = 50000

    def __init__(self, answers_fd: int, clients_fd: int, gens_fd: int, writer: int):
        from appliance.kernel import libbpf

        self._bpf = libbpf
        self.answers_fd, self.clients_fd, self.gens_fd = answers_fd, clients_fd, gens_fd
        self.writer = writer
        self.gen = 0
        self.fills = 0
        self.errors = 0
        self._filled: dict[bytes, tuple[Prepared, float | None]] = {}
        self._tagged: dict[int, set[bytes]] = {}  # tag (a fake address) -> the keys filled with it
        self._clients: dict[str, tuple[int, float]] = {}
        self.forget()

    def forget(self) -> None:
        """Every entry this process wrote is dead from the next packet on."""
        self.gen += 1
        self._filled = {}
        self._tagged = {}
        self._clients = {}
        self._update(self.gens_fd, U32.pack(self.writer), U32.pack(self.gen))

    def _update(self, fd: int, key: bytes, value: bytes) -> bool:
        try:
            self._bpf.map_update(fd, key, value)
            return True
        except OSError as exc:
            self.errors += 1
            if self.errors < 5:
                log.warning("kernel cache: write failed: %s", exc)
            return False

    def fill(self, group: int, question_key: bytes, answer: Prepared, opt: bytes, edns_max: int,
             until: float | None = None, now: float = 0.0, tag: int | None = None) -> None:
        """The kernel replays `answer` to `group`'s clients: while the cache keeps it, or, for
        an answer the server made itself, until `until` (monotonic seconds). `tag`: what
        `forget_tag` takes it away by (a fake address)."""
        key = answer_key(group, question_key)
        if key is None:
            return
        known = self._filled.get(key)
        if known is not None and known[0] is answer and (until is None or known[1] > now):
            return
        if len(self._filled) >= self.FILLED_MAX:
            if self._tagged:
                self.forget()  # a tagged entry no longer known could never be taken away
            else:
                self._filled = {}
        value = answer_value(answer, opt, edns_max, self.writer, self.gen, until, now)
        if value is None:
            return
        if self._update(self.answers_fd, key, value):
            self._filled[key] = (answer, until)
            self.fills += 1
            if tag is not None:
                # A set: a fake answer is filled again every FIXED_KERNEL_FOR while it is asked.
                self._tagged.setdefault(tag, set()).add(key)

    def forget_tag(self, tag: int) -> None:
        """The entries filled with `tag` are dead from the next packet on (the others stay)."""
        for key in self._tagged.pop(tag, ()):
            self._filled.pop(key, None)
            try:
                self._bpf.map_delete(self.answers_fd, key)
            except OSError as exc:
                log.warning("kernel cache: delete failed (%s): forgetting every answer", exc)
                self.forget()
                return

    def client(self, client: str, group: int, expires: float) -> None:
        """`client` (an IPv4 or IPv6 address) is in `group` until `expires` (monotonic seconds)."""
        if self._clients.get(client) == (group, expires):
            return
        raw = addr_key(client)
        if raw is None:
            return
        if len(self._clients) >= self.FILLED_MAX:
            self._clients = {}
        if self._update(self.clients_fd, raw, CLIENT.pack(group, self.writer, self.gen, 0,
                                                          int(expires * 1e9))):
            self._clients[client] = (group, expires)


def addr_key(address: str) -> bytes | None:
    """The program's key for a client address; None for what is no address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    return b"\0" * 10 + b"\xff\xff" + ip.packed if ip.version == 4 else ip.packed


def addr_text(key: bytes) -> str:
    ip = ipaddress.IPv6Address(key)
    return str(ip.ipv4_mapped or ip)


def _name_text(wire: bytes) -> str:
    labels, pos = [], 0
    while pos < len(wire) and wire[pos]:
        length = wire[pos]
        labels.append(wire[pos + 1:pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    return ".".join(labels)


def config_value(answer_as: list[str], fake_network: str | None,
                 fake_network6: str | None = None, peer: bool = False) -> bytes:
    nets = [ipaddress.ip_network(item, strict=False) for item in answer_as]
    v4 = [n for n in nets if n.version == 4][:DESTS]
    v6 = [n for n in nets if n.version == 6][:DESTS6]
    dests = [U32.unpack(n.network_address.packed)[0] for n in v4] + [0] * (DESTS - len(v4))
    masks = [U32.unpack(n.netmask.packed)[0] for n in v4] + [0] * (DESTS - len(v4))
    dests6 = [n.network_address.packed for n in v6] + [bytes(16)] * (DESTS6 - len(v6))
    masks6 = [n.netmask.packed for n in v6] + [bytes(16)] * (DESTS6 - len(v6))
    fake = fake_mask = 0
    fake6 = fake6_mask = bytes(16)
    for item in (fake_network, fake_network6):
        if not item:
            continue
        net = ipaddress.ip_network(item, strict=False)
        if net.version == 4:
            fake = U32.unpack(net.network_address.packed)[0]
            fake_mask = U32.unpack(net.netmask.packed)[0]
        else:
            fake6, fake6_mask = net.network_address.packed, net.netmask.packed
    return CONFIG.pack(*dests, *masks, len(v4), fake, fake_mask, len(v6),
                       *dests6, *masks6, fake6, fake6_mask, int(peer), 0)


def build(out_dir: Path) -> Path:
    """The object for this source (reused while the source and clang's flags are the same)."""
    from appliance.switch.datapath.build import BuildError, build as clang_build

    try:
        return clang_build(SOURCE.read_text(), out_dir)
    except (BuildError, OSError) as exc:
        raise Unavailable(f"not built: {str(exc)[-500:]}") from None


class KernelCache:
    """The program and its maps, attached at tc ingress of `device` (in this process's netns)."""

    def __init__(self, device: str, answer_as: list[str], fake_network: str | None,
                 build_dir: Path, tcx: bool | None = None, fake_network6: str | None = None):
        self.device = device
        self.answer_as = answer_as
        self.fake_network = fake_network
        self.fake_network6 = fake_network6
        self.build_dir = build_dir
        self.tcx = tcx
        self._obj = None
        self._link_fd = -1
        self._filter = False
        self.ifindex = 0
        self.attach_mode = ""

    def start(self) -> None:
        from appliance.kernel import libbpf
        from appliance.kernel.tc import LinuxTc

        try:
            self.ifindex = socket.if_nametoindex(self.device)
        except OSError:
            raise Unavailable(f"no device {self.device}") from None
        obj_path = build(self.build_dir)
        try:
            self._obj = libbpf.LinuxBpf().load(str(obj_path), (PROGRAM,))
        except OSError as exc:
            # The verifier's log ends with its reason: that, not the log's first lines.
            log_tail = [ln for ln in (getattr(exc, "log", "") or "").splitlines() if ln.strip()][-4:]
            head = str(exc).splitlines()[0] if str(exc) else repr(exc)
            raise Unavailable(f"the kernel refused the program: {head[:200]}"
                              + (": " + " | ".join(log_tail) if log_tail else "")) from None
        prog = self._obj.prog_fd(PROGRAM)
        try:
            libbpf.map_update(self.map_fd("kc_config"), U32.pack(0),
                              config_value(self.answer_as, self.fake_network, self.fake_network6,
                                           self._peer_elsewhere()))
            tcx = LinuxTc(self.tcx).tcx_supported()
            if tcx:
                # A link held by this process only: it goes with the process, so a dead server
                # leaves no program answering for it.
                self._link_fd = libbpf.link_create(prog, self.ifindex, libbpf.BPF_TCX_INGRESS)
                self.attach_mode = "tcx"
            else:
                self._attach_filter(prog)
                self.attach_mode = "tc clsact"
        except Exception as exc:
            self.close()
            raise Unavailable(f"cannot attach to {self.device}: {exc}") from None
        log.info("kernel cache on %s (%s)", self.device, self.attach_mode)

    def _peer_elsewhere(self) -> bool:
        from appliance.kernel.devices import LinuxDevices
        from appliance.kernel.tc import outside_event_loop

        return any(d.ifindex == self.ifindex and d.peer_elsewhere
                   for d in outside_event_loop(lambda: LinuxDevices().devices(None)))

    def _attach_filter(self, prog_fd: int) -> None:
        from appliance.kernel.tc import LinuxTc

        LinuxTc(False).filter_attach(None, self.ifindex, prog_fd, FILTER_PRIO, FILTER_NAME)
        self._filter = True

    def _detach_filter(self) -> None:
        from appliance.kernel.tc import LinuxTc

        # (the clsact qdisc goes too when nothing else uses it)
        LinuxTc(False).filter_detach(None, self.ifindex, FILTER_PRIO)

    def map_fd(self, name: str) -> int:
        return self._obj.map_fd(name)

    def fds(self) -> tuple[int, int, int]:
        """What a writer needs: the answers', clients' and generations' map fds."""
        return self.map_fd("kc_answers"), self.map_fd("kc_clients"), self.map_fd("kc_gens")

    def writer(self, writer: int = 0) -> Writer:
        return Writer(*self.fds(), writer)

    def stats(self) -> dict:
        from appliance.kernel import libbpf

        return libbpf.percpu_counters(self.map_fd("kc_stats"), STATS)

    def client_hits(self) -> dict[str, int]:
        """Answers the kernel gave each client, since the program was loaded."""
        from appliance.kernel import libbpf

        ncpu = libbpf.num_possible_cpus()
        fd = self.map_fd("kc_client_hits")
        out = {}
        for key in libbpf.map_keys(fd, ADDR):
            raw = libbpf.map_lookup(fd, key, 8 * ncpu)
            if raw:
                out[addr_text(key)] = sum(U64.unpack_from(raw, i * 8)[0]
                                                 for i in range(len(raw) // 8))
        return out

    def name_hits(self) -> dict[tuple[str, int], int]:
        """Answers the kernel gave each (name, qtype), all groups together."""
        from appliance.kernel import libbpf

        ncpu = libbpf.num_possible_cpus()
        fd = self.map_fd("kc_name_hits")
        out: dict[tuple[str, int], int] = {}
        for key in libbpf.map_keys(fd, KEY.size):
            raw = libbpf.map_lookup(fd, key, 8 * ncpu)
            if not raw:
                continue
            _, qtype, _, wire = KEY.unpack(key)
            name = _name_text(wire)
            out[(name, qtype)] = out.get((name, qtype), 0) + sum(
                U64.unpack_from(raw, i * 8)[0] for i in range(len(raw) // 8))
        return out

    def close(self) -> None:
        from appliance.kernel import libbpf

        if self._link_fd >= 0:
            try:
                libbpf.link_detach(self._link_fd)
            except OSError:
                pass
            os.close(self._link_fd)
            self._link_fd = -1
        if self._filter:
            try:
                self._detach_filter()
            except Exception as exc:  # noqa: BLE001 - the device may be gone with its filter
                log.warning("kernel cache: filter not removed: %s", exc)
            self._filter = False
        if self._obj is not None:
            self._obj.close()
            self._obj = None
