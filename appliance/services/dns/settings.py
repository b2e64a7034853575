"""Typed, validated settings of the DNS service.

`DnsSettings` is the whole configuration of the server in netns `vproxy`:
where it listens and whom it serves, its upstreams, cache, rate limit,
fake-IP pool, rules, rule lists, client groups, local names and query log.
The box's global settings document embeds it as one field; the server
process reads it from a YAML or JSON file (`load_settings_file`).

Validation happens here, once: every error names the field path
(`rules.2.value`) and the problem. Rule *lists* (files, URLs) are parsed
later by `rules.parse_list`, which names the line.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .pattern import compile_pattern

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def normalize_domain(text: str) -> str:
    """Lower-case a domain, drop one trailing dot, check its labels.

    Raises ValueError naming the bad label; used by settings and list parsers.
    """
    name = text.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise ValueError("empty domain")
    if len(name) > 253:
        raise ValueError(f"domain longer than 253 characters: {name[:40]}...")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValueError(f"invalid label {label!r} in domain {name!r}")
    return name


class _Model(BaseModel):
    # Unknown keys are typos; reject them instead of silently ignoring them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSettings(_Model):
    """One upstream resolver.

    url forms: ``udp://192.168.1.1``, ``tcp://192.168.1.1:53``,
    ``tls://1.1.1.1:853`` (DNS-over-TLS), ``https://dns.example/dns-query``
    (DNS-over-HTTPS). For tls/https with a host name, ``address`` is the
    bootstrap IP to connect to (the box must not need DNS to reach DNS).
    """

    url: str
    name: str | None = None
    address: str | None = None
    server_name: str | None = Field(
        default=None, description="TLS name to verify; default: the URL's host"
    )
    ca_file: str | None = Field(
        default=None, description="CA bundle for tls/https; default: the system's"
    )
    timeout: float = Field(default=1.0, gt=0, le=10)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from .upstream import parse_upstream_url  # one parser for both places

        parse_upstream_url(value)
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _bootstrap(self) -> "UpstreamSettings":
        from .upstream import parse_upstream_url

        target = parse_upstream_url(self.url)
        if self.address is None and not target.host_is_ip:
            raise ValueError(
                f"upstream {self.url!r} names a host; give its IP in 'address'"
            )
        return self


class CacheSettings(_Model):
    size: int = Field(default=20000, ge=0, le=10_000_000)
    min_ttl: int = Field(default=0, ge=0, le=86400)
    max_ttl: int = Field(default=86400, ge=1, le=7 * 86400)
    negative_ttl: int = Field(
        default=300, ge=0, le=86400,
        description="cap on caching NXDOMAIN/NODATA (RFC 2308 uses the SOA minimum)",
    )
    serve_stale: bool = True
    stale_answer_ttl: int = Field(default=30, ge=1, le=3600)
    stale_max_age: int = Field(
        default=86400, ge=0, description="seconds after expiry an answer may still be served"
    )
    stale_after: float = Field(
        default=0.4, gt=0, le=5,
        description="seconds to wait for a slow upstream before answering from stale cache",
    )
    servfail_after: float = Field(
        default=1.5, gt=0, le=10,
        description="overall deadline of an upstream resolution; then SERVFAIL",
    )


class RateLimitSettings(_Model):
    """Per-client token bucket. 0 disables.

    The default is generous on purpose: a home device opening a news page can
    fire a hundred lookups in a second (AdGuard Home's 20 q/s is a complaint).
    With several processes (`workers`) each allows a client its share of the
    rate and the burst; a client's queries spread over them by source port,
    as stub resolvers choose a new port per query.
    """

    per_client_qps: float = Field(default=300, ge=0)
    burst: int = Field(default=2000, ge=1)


class FakeIpSettings(_Model):
    network: str = "100.96.0.0/11"
    # AAAA of fake-ip names: each name's fake IPv4 address's offset in this
    # range (None: fake-ip names get no AAAA, as before).
    network6: str | None = None
    ttl: int = Field(
        default=1, ge=0, le=3600,
        description="TTL of fake answers; a client may still use an address this long after a"
                    " flush forgot it (some applications keep answers longer)",
    )
    db_path: str = Field(
        default="/var/lib/appliance/dns-fakeip.sqlite3",
        description="the mappings, kept across restarts: after a restart or a reboot a client's"
                    " cached fake address still reaches its site; after a flush (console, API)"
                    " it is refused until the name is asked again, and never given to another"
                    " name for a day",
    )
    max_entries: int | None = Field(
        default=65536, ge=1,
        description="mappings kept (the least recently used is recycled); null: every address of"
                    " the pool (2 million for a /11)",
    )
    new_per_client: float = Field(
        default=20, ge=0,
        description="new mappings a client may cause a second (0: no limit); past it, and its"
                    " burst, a name is answered with its real address",
    )
    new_burst: int = Field(default=500, ge=1)
    builtin_filter: bool = Field(
        default=True,
        description="keep NTP, STUN, connectivity-check and game-console domains real",
    )
    keep_real: list[str] = Field(default_factory=list, description="extra suffixes never faked")

    @field_validator("network")
    @classmethod
    def _network(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=True)
        if net.version != 4:
            raise ValueError("the fake-IP pool must be IPv4")
        if net.num_addresses < 4:
            raise ValueError("the fake-IP pool needs at least a /30")
        return str(net)

    @field_validator("network6")
    @classmethod
    def _network6(cls, value: str | None) -> str | None:
        if value is None:
            return None
        net = ipaddress.ip_network(value, strict=True)
        if net.version != 6:
            raise ValueError("the IPv6 fake-IP range must be IPv6")
        return str(net)

    @model_validator(mode="after")
    def _twins_fit(self) -> "FakeIpSettings":
        if self.network6 is not None and ipaddress.ip_network(self.network6).num_addresses \
                < ipaddress.ip_network(self.network).num_addresses:
            raise ValueError(f"network6 {self.network6} is smaller than network {self.network}")
        return self

    @field_validator("keep_real")
    @classmethod
    def _keep(cls, value: list[str]) -> list[str]:
        return [normalize_domain(v) for v in value]


Match = Literal["exact", "suffix", "keyword", "regex"]


class BlockAction(_Model):
    action: Literal["block"]
    mode: Literal["nxdomain", "null"] | None = Field(
        default=None, description="default: the service's block_mode"
    )


class DirectAction(_Model):
    action: Literal["direct"]


class FakeIpAction(_Model):
    action: Literal["fake-ip"]
    route: str = Field(default="direct", description="'direct' or a named upstream proxy")

    @field_validator("route")
    @classmethod
    def _route(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("route must be a name (letters, digits, _ . -)")
        return value


class RewriteAction(_Model):
    action: Literal["rewrite"]
    answer: list[str] = Field(min_length=1, description="IPv4/IPv6 addresses or one CNAME target")
    ttl: int = Field(default=300, ge=0, le=86400)

    @field_validator("answer")
    @classmethod
    def _answer(cls, value: list[str]) -> list[str]:
        addresses, names = [], []
        for item in value:
            try:
                addresses.append(str(ipaddress.ip_address(item)))
            except ValueError:
                names.append(normalize_domain(item))
        if names and (addresses or len(names) > 1):
            raise ValueError("a rewrite is either addresses or exactly one CNAME target")
        return addresses or names


Action = Annotated[
    Union[BlockAction, DirectAction, FakeIpAction, RewriteAction],
    Field(discriminator="action"),
]


class RuleSettings(_Model):
    """`match` `value` -> `then` (an action)."""

    match: Match
    value: str
    then: Action

    @model_validator(mode="after")
    def _value(self) -> "RuleSettings":
        if self.match == "regex":
            try:
                compile_pattern(self.value)
            except ValueError as exc:
                raise ValueError(f"value: {exc}") from None
        elif self.match == "keyword":
            if not self.value.strip() or any(c.isspace() for c in self.value):
                raise ValueError("value: a keyword is one word")
            object.__setattr__(self, "value", self.value.lower())
        else:
            object.__setattr__(self, "value", normalize_domain(self.value))
        return self


class RuleListSettings(_Model):
    """A rule set or blocklist loaded from a file or URL.

    Formats: ``hosts`` (``0.0.0.0 ads.example``, exact names), ``adblock``
    (``||ads.example^``, the name and its subdomains; ``@@||x^`` excepts;
    ``||ads*.example^`` with ``*`` for any characters, as AdGuard matches it),
    ``plain`` (one domain a line, matched as ``plain_match``), ``rules``
    (``suffix example.com`` / ``exact`` / ``keyword`` / ``regex`` a line),
    ``auto`` (guess per line among hosts, adblock, plain).
    """

    name: str
    source: str = Field(description="an https URL, an http URL pinned by `sha256`, or a file in"
                                    " the lists directory (`lists_dir`)")
    sha256: str | None = Field(
        default=None, description="the list's SHA-256 (hex): any other content is refused")
    format: Literal["auto", "hosts", "adblock", "plain", "rules"] = "auto"
    plain_match: Literal["exact", "suffix"] = "suffix"
    then: Action = Field(default_factory=lambda: BlockAction(action="block"))
    refresh: int = Field(default=86400, ge=0, description="seconds; 0: load once")
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a list name is letters, digits, _ . -")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty source")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("a SHA-256 is 64 hexadecimal digits")
        return value.lower() if value else value


def _client_id(value: str) -> str:
    text = value.strip().lower().replace("-", ":")
    if _MAC.match(text):
        return text
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is neither a MAC, an IPv4/IPv6 address nor a network"
                         " (192.168.1.0/24, 2001:db8:1::/64)") from None


# One client of a group; its own type so that an error names the entry (groups.0.clients.2).
ClientId = Annotated[str, AfterValidator(_client_id)]


class ClientGroupSettings(_Model):
    """A policy for some clients (by MAC, IPv4 or IPv6 address or network).

    A query over IPv6 is matched by its source address, and by the MAC the
    box's neighbour table holds for that address (`neighbours.py`), so a
    group of MACs covers its devices' SLAAC and privacy addresses too.

    Its own rules and lists are consulted first, in order; then, unless
    ``inherit`` is off, those of the default group.
    """

    name: str
    clients: list[ClientId] = Field(
        default_factory=list,
        description="MACs, IPv4/IPv6 addresses and networks; a MAC wins, then the longest prefix")
    rules: list[RuleSettings] = Field(default_factory=list)
    lists: list[str] = Field(default_factory=list, description="names of rule lists")
    inherit: bool = True
    block_mode: Literal["nxdomain", "null"] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value) or value == "default":
            raise ValueError("a group name is letters, digits, _ . - and not 'default'")
        return value


class StaticHost(_Model):
    hostname: str
    ip: str
    mac: str | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))


class LocalNamesSettings(_Model):
    domain: str = "lan"
    ttl: int = Field(default=60, ge=0, le=86400)
    leases_file: str | None = Field(
        default=None, description="Kea memfile lease CSV to read hostnames from"
    )
    static: list[StaticHost] = Field(default_factory=list)
    refresh: float = Field(default=10, gt=0, description="seconds between lease re-reads")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return normalize_domain(value)


class RebindSettings(_Model):
    """Rebinding protection (dnsmasq's `--stop-dns-rebind`): an upstream answer carrying a
    private, CGNAT, loopback, link-local or ULA address (IPv4-mapped ones included), or one in
    `networks` or the prefixes of `prefixes_file`, is refused, except for the local domain and the
    names in `allow`."""

    enabled: bool = True
    allow: list[str] = Field(default_factory=list, description="suffixes whose answers may be private")
    networks: list[str] = Field(
        default_factory=list, description="more networks never answered for public names (the LAN's)")
    prefixes_file: str | None = Field(
        default=None,
        description="the modem's last Router Advertisement (JSON with `prefixes`), re-read every few"
                    " seconds: the home's IPv6 prefixes are rebinding networks too, followed without"
                    " an apply")

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        return [normalize_domain(v) for v in value]

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(v, strict=False)) for v in value]


class QueryLogSettings(_Model):
    max_entries: int = Field(default=20000, ge=0, le=5_000_000, description="entries kept in memory")
    max_age: int = Field(default=86400, ge=0, description="seconds an entry is kept in memory")
    max_mb: int = Field(
        default=64, ge=0, le=65536,
        description="megabytes the log on disk may take (0: no log on disk); it never takes the"
                    " data partition's last 5% or 64 MB either: the oldest files go first")
    max_days: int = Field(default=7, ge=1, le=366, description="days an entry is kept on disk")
    dir: str | None = Field(default=None, description="where the log on disk is written (the box sets it)")


def _hostport(value: str, default_port: int = 53) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, str(default_port)
    host = host.strip("[]")
    ipaddress.ip_address(host)
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range")
    return host, number


class DnsSettings(_Model):
    """The DNS service of netns vproxy."""

    listen: list[str] = Field(default_factory=lambda: ["0.0.0.0:53"])
    allow_clients: list[str] = Field(
        default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"],
        description="sources served; everything else gets no answer",
    )
    deny_clients: list[str] = Field(
        default_factory=list, description="sources refused even inside allow_clients (the modem)"
    )
    upstreams: list[UpstreamSettings] = Field(min_length=1)
    edns_udp_size: int = Field(default=1232, ge=512, le=4096)
    block_mode: Literal["nxdomain", "null"] = "nxdomain"
    block_ttl: int = Field(default=300, ge=0, le=86400)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    fake_ip: FakeIpSettings = Field(default_factory=FakeIpSettings)
    rules: list[RuleSettings] = Field(default_factory=list, description="the default group's rules")
    lists: list[RuleListSettings] = Field(default_factory=list)
    lists_dir: str = Field(default="/var/lib/appliance/dns-lists",
                           description="the one directory list files are read from")
    default_lists: list[str] | None = Field(
        default=None, description="lists the default group uses; default: all enabled"
    )
    groups: list[ClientGroupSettings] = Field(default_factory=list)
    intercept: Literal["gateway", "all"] = Field(
        default="gateway",
        description="'gateway': the box answers DNS sent to the gateway (the modem's addresses);"
                    " 'all': also port-53 queries to any address past the modem (a device that"
                    " hard-codes 8.8.8.8 is answered by the box as 8.8.8.8), DNS over TLS and"
                    " QUIC (port 853) is refused, and well-known DNS-over-HTTPS names are blocked"
                    " unless a rule or list says otherwise")
    local_names: LocalNamesSettings = Field(default_factory=LocalNamesSettings)
    query_log: QueryLogSettings = Field(default_factory=QueryLogSettings)
    rebind: RebindSettings = Field(default_factory=RebindSettings)
    control_socket: str | None = "/run/appliance/dns.sock"
    series_file: str | None = Field(
        default=None, description="the per-minute counts for the console's charts (the box sets it)")
    tcp_idle_timeout: float = Field(default=10, gt=0)
    tcp_max_clients: int = Field(default=512, ge=1, description="open TCP connections, all clients")
    tcp_max_per_client: int = Field(default=16, ge=1, description="open TCP connections of one address")
    max_inflight: int = Field(
        default=4096, ge=1,
        description="questions waiting for an upstream at once, per process; past it, SERVFAIL"
                    " (or the stale answer)",
    )
    open_files: int = Field(default=65536, ge=1024, description="descriptor limit the server asks for")
    kernel_cache: Literal["on", "off"] = Field(
        default="on",
        description="'on': the server's answers to plain UDP queries (IPv4 and IPv6) are replayed"
                    " by a BPF program at tc ingress of kernel_cache_device, per client group:"
                    " cached forwarded answers while the cache keeps them (TTLs counted down),"
                    " fake addresses, local names and rewrites 10 s at a time, never blocks (they"
                    " are logged one by one); dropped on every policy change and, for a fake"
                    " address, when the pool recycles or flushes it; where it cannot load the"
                    " server answers everything and its stats say why")
    kernel_cache_device: str | None = Field(
        default=None, description="the device the home's queries reach this namespace on (the box"
                                  " sets it); none: no kernel cache")
    kernel_cache_answer_as: list[str] = Field(
        default_factory=list, max_length=6,
        description="destinations (networks) the kernel answers as: the gateway's address, or"
                    " 0.0.0.0/0 with dns.intercept all (at most 4); over IPv6 (at most 2), ::/0 where every"
                    " IPv6 query reaching the device is meant for this server (never the fake-IP"
                    " ranges)")
    paused_files: list[str] = Field(
        default_factory=list, max_length=4,
        description="files of devices that are off now ({\"macs\": [...]}: the console's paused"
                    " devices, the ones a schedule has off; the box sets them): every question of"
                    " such a device is answered as blocked (block_mode), local names included;"
                    " re-read within half a second of a change")
    workers: int | None = Field(
        default=None, ge=1, le=16,
        description="processes answering UDP queries on the same address (SO_REUSEPORT);"
                    " default: one per CPU, at most 4",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: list[str]) -> list[str]:
        for item in value:
            _hostport(item)
        if not value:
            raise ValueError("listen on at least one address")
        return value

    @field_validator("kernel_cache_answer_as")
    @classmethod
    def _answer_as(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        if sum(1 for n in out if ":" in n) > 2:
            raise ValueError("at most 2 IPv6 networks")
        if sum(1 for n in out if ":" not in n) > 4:
            raise ValueError("at most 4 IPv4 networks")
        return out

    @field_validator("allow_clients", "deny_clients")
    @classmethod
    def _nets(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(v, strict=False)) for v in value]

    @model_validator(mode="after")
    def _references(self) -> "DnsSettings":
        names = [item.name for item in self.lists]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"lists: duplicate name {sorted(dup)[0]!r}")
        known = set(names)
        for i, group in enumerate(self.groups):
            for name in group.lists:
                if name not in known:
                    raise ValueError(f"groups.{i}.lists: unknown list {name!r}")
        for name in self.default_lists or []:
            if name not in known:
                raise ValueError(f"default_lists: unknown list {name!r}")
        gnames = [g.name for g in self.groups]
        dup = {n for n in gnames if gnames.count(n) > 1}
        if dup:
            raise ValueError(f"groups: duplicate name {sorted(dup)[0]!r}")
        return self

    def listen_addresses(self) -> list[tuple[str, int]]:
        return [_hostport(item) for item in self.listen]


class SettingsError(ValueError):
    """Invalid DNS settings; `errors` maps a field path to its problem."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def _field_path(loc: tuple) -> str:
    # Pydantic puts the discriminator tag into loc (e.g. "rules.0.then.block");
    # drop the tag names so the path is the user's field path.
    tags = {"block", "direct", "fake-ip", "rewrite"}
    return ".".join(str(p) for p in loc if p not in tags) or "(settings)"


def parse_settings(data: object) -> DnsSettings:
    """Validate a settings document; raise SettingsError keyed by field."""
    try:
        return DnsSettings.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            path = _field_path(err["loc"])
            # Model-level checks name their sub-field as "field: problem".
            sub = re.match(r"^([a-z_][a-z0-9_.]*): (.*)$", msg, re.S)
            if sub:
                base = "" if path == "(settings)" else path + "."
                path, msg = base + sub.group(1), sub.group(2)
            errors.setdefault(path, msg)
        raise SettingsError(errors) from None


def load_settings_file(path: str | Path) -> DnsSettings:
    """Read YAML (or JSON, a subset) from a file and validate it."""
    import yaml

    from appliance.yaml12 import load_yaml

    text = Path(path).read_text()
    try:
        data = load_yaml(text) if not str(path).endswith(".json") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SettingsError({"(file)": f"{path}: {exc}"}) from None
    return parse_settings(data or {})
