"""Typed, validated settings of the transparent relay in netns `vproxy`.

`RelaySettings` says where the TPROXY socket listens, whom it serves, the
named upstream proxies a DNS `fake-ip` rule may route through, where the
fake-IP map lives, and the relay's limits. The box's settings document
embeds it as one field; the relay process reads it from a YAML or JSON file
(`load_settings_file`).

Route names: ``direct`` and ``reject`` are built in; every other route is a
proxy named in `proxies`. Validation happens here, once: every error names
the field path (``proxies.1.port``) and the problem.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

BUILTIN_ROUTES = ("direct", "reject")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"{value!r}: give address:port")
        host, port = value, str(default_port)
    host = host.strip("[]")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv4 address") from None
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"port {port!r} is not 1-65535")
    return host, int(port)


class _Model(BaseModel):
    # Unknown keys are typos; frozen so a validated document stays valid.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProxySettings(_Model):
    """A named upstream proxy: SOCKS5 (RFC 1928/1929) or HTTP CONNECT.

    The relay hands the proxy the *domain* (SOCKS5 ATYP 3, ``CONNECT
    host:port``), so the proxy resolves it where it stands.
    """

    name: str
    type: Literal["socks5", "http"]
    address: str = Field(description="IPv4 address of the proxy (the box needs no DNS to reach it)")
    port: int = Field(ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    udp: bool = Field(
        default=False, description="socks5 only: the proxy does UDP ASSOCIATE; else UDP gets ICMP"
    )
    connect_timeout: float = Field(default=5.0, gt=0, le=60)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a proxy name is letters, digits, _ . - (at most 63)")
        if value in BUILTIN_ROUTES:
            raise ValueError(f"{value!r} is a built-in route; pick another name")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            return str(ipaddress.IPv4Address(value.strip()))
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None

    @field_validator("username", "password")
    @classmethod
    def _credential(cls, value: str | None) -> str | None:
        # RFC 1929 carries each in one length byte.
        if value is not None and not 1 <= len(value.encode()) <= 255:
            raise ValueError("must be 1 to 255 bytes")
        return value

    @model_validator(mode="after")
    def _pairs(self) -> "ProxySettings":
        if (self.username is None) != (self.password is None):
            missing = "password" if self.password is None else "username"
            raise ValueError(f"{missing}: give both username and password, or neither")
        if self.udp and self.type != "socks5":
            raise ValueError("udp: only a socks5 proxy can carry UDP")
        return self


_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


class FastPathSettings(_Model):
    """The kernel fast path for `direct` routes (`fastpath.py`).

    After the relay has resolved a fake address for a direct route, later TCP
    connections to it are NATed by the kernel to the real address instead of
    being relayed: the relay's second TCP pass per byte costs a small box
    1.3-1.8x the CPU per byte of routing, and a new connection 4x.
    """

    enabled: bool = True
    interfaces: list[str] = Field(
        default_factory=list,
        description="home-side interfaces the fast path serves (those of the TPROXY rule); empty: any",
    )
    ttl: float = Field(
        default=300, ge=1, le=86400,
        description="seconds a fake address stays NATed after the relay resolved it; then the "
                    "next connection is relayed and resolves the name again",
    )
    table: str = Field(default="appliance_relay", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$",
                       description="the nftables tables (families ip and ip6) the relay owns in its namespace")
    poll: float = Field(default=2.0, gt=0, le=60,
                        description="seconds between conntrack reads for the connection table")
    shadow_range: str | None = Field(
        default="100.95.0.0/16",
        description="IPv4 addresses that stand for IPv6 clients inside the relay's namespace, so "
                    "the fast path carries their connections too, translated to IPv4 (`nat64.py`; "
                    "with fake_range6, without direct6, on one interface); they never leave the "
                    "namespace, but a real server in this range is unreachable through the fast "
                    "path; null: IPv6 clients' connections are always relayed",
    )

    @field_validator("interfaces")
    @classmethod
    def _interfaces(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _IFNAME.match(name):
                raise ValueError(f"{name!r} is not an interface name")
        return value

    @field_validator("shadow_range")
    @classmethod
    def _shadow(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 network: {exc}") from None
        if net.num_addresses < 4:
            raise ValueError(f"{value!r} has no room for a client (a /30 at least)")
        return str(net)


class RelaySettings(_Model):
    """The relay service of netns vproxy."""

    listen: str = Field(
        default="127.0.0.1:7893",
        description="the TPROXY target for TCP and UDP; loopback so nothing reaches it directly",
    )
    fake_range: str = "100.96.0.0/11"
    # The IPv6 twins of the fake range (the DNS server's fake_ip.network6):
    # connections to it are taken by a second TPROXY socket, from any IPv6
    # source on the home-side interfaces (None: IPv4 only).
    fake_range6: str | None = None
    direct6: bool = Field(
        default=False,
        description="IPv6 clients' `direct` connections go out over IPv6 (the name's AAAA; its A "
                    "when it has none), so the kernel fast path can map their fake IPv6 address "
                    "too; needs a routable IPv6 source address in the relay's namespace (the box has "
                    "none in vproxy and keeps this off)",
    )
    allow_clients: list[str] = Field(
        default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
        description="sources served; every other source is reset at once",
    )
    deny_clients: list[str] = Field(
        default_factory=list, description="sources refused even inside allow_clients (the modem)"
    )
    proxies: list[ProxySettings] = Field(default_factory=list)
    resolvers: list[str] = Field(
        default_factory=list,
        description="DNS servers (address[:port]) giving real addresses; empty: the system's",
    )
    dns_control: str | None = Field(
        default="/run/appliance/dns.sock",
        description="the DNS server's control socket: fake-address look-ups and pins",
    )
    fakeip_db: str | None = Field(
        default="/var/lib/appliance/dns-fakeip.sqlite3",
        description="the DNS server's fake-IP store, read while its control socket is down",
    )
    control_socket: str | None = "/run/appliance/relay.sock"
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    idle_timeout: float = Field(default=600, gt=0, description="seconds without a byte either way")
    udp_idle_timeout: float = Field(default=60, gt=0)
    history_size: int = Field(default=1000, ge=0, le=1_000_000)
    pipe_size: int = Field(default=262144, ge=4096, le=1 << 20)
    splice: bool = Field(default=True, description="zero-copy splice(); off: recv/send copies")
    fast_path: FastPathSettings = Field(default_factory=FastPathSettings)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _hostport(value)
        return value

    @field_validator("fake_range")
    @classmethod
    def _range(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv4 network: {exc}") from None
        return str(net)

    @field_validator("fake_range6")
    @classmethod
    def _range6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            net = ipaddress.IPv6Network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IPv6 network: {exc}") from None
        return str(net)

    @field_validator("allow_clients", "deny_clients")
    @classmethod
    def _nets(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            try:
                out.append(str(ipaddress.IPv4Network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IPv4 address or network") from None
        return out

    @field_validator("resolvers")
    @classmethod
    def _resolvers(cls, value: list[str]) -> list[str]:
        for item in value:
            _hostport(item, default_port=53)
        return value

    @model_validator(mode="after")
    def _unique(self) -> "RelaySettings":
        shadow = self.fast_path.shadow_range
        if shadow is not None and ipaddress.IPv4Network(shadow).overlaps(ipaddress.IPv4Network(self.fake_range)):
            raise ValueError(f"fast_path.shadow_range: {shadow} overlaps fake_range {self.fake_range}")
        seen: set[str] = set()
        for i, proxy in enumerate(self.proxies):
            if proxy.name in seen:
                raise ValueError(f"proxies.{i}.name: duplicate proxy name {proxy.name!r}")
            seen.add(proxy.name)
        return self

    # -- derived ------------------------------------------------------------
    def translates6(self) -> bool:
        """Whether the fast path carries IPv6 clients by translating them to IPv4 (`nat64.py`):
        they are relayed over IPv4 (no `direct6`) and the translator has its one device."""
        fp = self.fast_path
        return (fp.enabled and self.fake_range6 is not None and not self.direct6
                and fp.shadow_range is not None and len(fp.interfaces) == 1)

    def listen_address(self) -> tuple[str, int]:
        return _hostport(self.listen)

    def resolver_addresses(self) -> list[tuple[str, int]]:
        return [_hostport(item, default_port=53) for item in self.resolvers]

    def route_names(self) -> list[str]:
        return [*BUILTIN_ROUTES, *(p.name for p in self.proxies)]

    def proxy(self, name: str) -> ProxySettings | None:
        for proxy in self.proxies:
            if proxy.name == name:
                return proxy
        return None

    def unknown_routes(self, routes: Iterable[tuple[str, str]]) -> dict[str, str]:
        """For the box document: `(field_path, route)` pairs naming no route -> errors."""
        known = set(self.route_names())
        return {path: f"unknown route {route!r}; known: {', '.join(sorted(known))}"
                for path, route in routes if route not in known}


class SettingsError(ValueError):
    """Invalid relay settings; `errors` maps a field path to its problem."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _error_path(err: dict) -> tuple[str, str]:
    path = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    # Model-level validators name their field in the message ("proxies.1.name: ...").
    head, sep, rest = msg.partition(": ")
    if sep and re.fullmatch(r"[a-z_]+(\.[0-9a-z_]+)*", head):
        path = f"{path}.{head}" if path and not head.startswith(path.split(".")[0]) else head
        msg = rest
    return path or "(settings)", msg


def parse_settings(data: object) -> RelaySettings:
    """Validate a settings document; raise SettingsError keyed by field."""
    try:
        return RelaySettings.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            path, msg = _error_path(err)
            errors.setdefault(path, msg)
        raise SettingsError(errors) from None


def load_settings_file(path: str | Path) -> RelaySettings:
    """Read YAML (or JSON) from a file and validate it."""
    import yaml

    from appliance.yaml12 import load_yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsError({"(file)": f"{path}: {exc.strerror}"}) from None
    try:
        data = json.loads(text) if str(path).endswith(".json") else load_yaml(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SettingsError({"(file)": f"{path}: {exc}"}) from None
    return parse_settings(data or {})
