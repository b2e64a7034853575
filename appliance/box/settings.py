"""The box's settings document: one typed, validated, frozen model.

A person edits this document (through the console, the API or a file); its
JSON and YAML forms are also the backup and export format. Validation
happens here, once: type errors and cross-field errors (an address outside
the LAN, a pool that swallows the gateway, a MAC used twice ...) come back
as `{field_path: [messages]}` with paths such as `dhcp.pools[0].start`, so
the Django forms, the REST API and the CLI all show the same words. A
`Settings` object that exists is valid; nothing invalid reaches the planner.

The DNS service's and the relay's own settings
(`appliance.services.dns.settings`, `appliance.services.relay.settings`) are
embedded as the `dns` and `relay` sections.
"""
from __future__ import annotations

import json
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Callable, Collection, Literal, Mapping

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from appliance.box.flows import custom_flow_errors
from appliance.box.layout import RESERVED_LINK_NAMES
from appliance.services.dns.settings import DnsSettings
from appliance.services.relay.settings import RelaySettings
from appliance.yaml12 import load_yaml

NON_FIELD = "__all__"  # Django's key for errors that belong to no one field


class SettingsError(Exception):
    """Invalid settings; `errors` maps a field path to its messages."""

    def __init__(self, errors: Mapping[str, list[str]]):
        self.errors = {k: list(v) for k, v in errors.items()}
        super().__init__("\n".join(f"{k}: {m}" for k, msgs in self.errors.items() for m in msgs))


# ---------------------------------------------------------------- value types

_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _mac(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a MAC address (write it as a quoted string)")
    text = value.strip().lower()
    if not _MAC_RE.match(text):
        raise ValueError(f"{value!r} is not a MAC address (expected six hex octets: 02:00:5e:10:00:01)")
    text = text.replace("-", ":")
    if int(text[:2], 16) & 1:
        raise ValueError(f"{text} is a multicast MAC; a port or host needs a unicast one")
    if text == "00:00:00:00:00:00":
        raise ValueError("00:00:00:00:00:00 is not a usable MAC")
    return text


def _ifname(value: str) -> str:
    # The kernel's rules (dev_valid_name): 1..15 bytes, no '/', ':' or space.
    if not 1 <= len(value.encode()) <= 15:
        raise ValueError(f"{value!r} is not an interface name (1 to 15 characters)")
    if value in (".", "..") or any(c in value for c in "/: \t\n"):
        raise ValueError(f"{value!r} is not an interface name")
    if value in RESERVED_LINK_NAMES:
        raise ValueError(f"{value!r} is a name the box gives its own links; pick the NIC's real name")
    return value


def _domain(value: str) -> str:
    name = value.strip().lower().removesuffix(".")
    if not name or len(name) > 253:
        raise ValueError(f"{value!r} is not a domain name")
    for label in name.split("."):
        if not _LABEL_RE.match(label):
            raise ValueError(f"{value!r} is not a domain name (bad label {label!r})")
    return name


def _network(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return IPv4Network(value)
    except ValueError:
        try:
            loose = IPv4Network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 network (write it as 192.168.1.0/24)") from None
        raise ValueError(f"{value} has host bits set; the network is {loose}") from None


def _network6(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return IPv6Network(value)
    except ValueError:
        try:
            loose = IPv6Network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv6 network (write it as 2001:2::/48)") from None
        raise ValueError(f"{value} has host bits set; the network is {loose}") from None


def _port_number(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port (1-65535)")
    return value


MacAddress = Annotated[str, BeforeValidator(_mac)]
IfName = Annotated[str, AfterValidator(_ifname)]
DomainName = Annotated[str, AfterValidator(_domain)]
Hostname = Annotated[str, AfterValidator(_domain)]
TcpPort = Annotated[int, AfterValidator(_port_number)]
Network = Annotated[IPv4Network, BeforeValidator(_network)]
Network6 = Annotated[IPv6Network, BeforeValidator(_network6)]


class _Model(BaseModel):
    # Unknown keys are typos; frozen so a validated document stays valid.
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- the document

class Ports(_Model):
    """The NICs: `uplink` goes to the modem, `downlink` to the home."""

    uplink: IfName
    downlink: IfName


class Gateway(_Model):
    """The modem: its LAN address and MAC (the MAC is found by ARP when left out)."""

    ip: IPv4Address
    mac: MacAddress | None = None


class Lan(_Model):
    prefix: Network


class Admin(_Model):
    """The box's own stack on the admin veth (it carries the uplink NIC's MAC)."""

    address: IPv4Address
    # SSH, console (HTTP, HTTPS) and noVNC: closed to anything arriving from the uplink.
    guarded_ports: tuple[TcpPort, ...] = (22, 80, 443, 6443)


class VProxy(_Model):
    """The DNS and traffic-processing namespace's port."""

    address: IPv4Address
    mac: MacAddress
    fake_range: Network = IPv4Network("100.96.0.0/11")
    # Fake IPv6 addresses (AAAA of fake-ip names), used with `ipv6.policy:
    # invisible`. 2001:2::/48 is IANA's benchmarking block (RFC 5180): global
    # unicast, never routed on the internet, and outside every range browsers
    # treat as local. A ULA default (fc00::/7, mihomo's) is "local" to
    # Chromium's Local Network Access, which then blocks a public page's
    # requests to it (mihomo issue 3064); since September 2025 Chromium also
    # counts the documentation prefix 2001:db8::/32 as local. A fake IPv6
    # address is the fake IPv4 address's offset in this range, so the range
    # must hold at least as many addresses as `fake_range`.
    fake_range6: Network6 = IPv6Network("2001:2::/48")


class DhcpPool(_Model):
    start: IPv4Address
    end: IPv4Address

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"

    def __contains__(self, ip: IPv4Address) -> bool:
        return self.start <= ip <= self.end


class StaticLease(_Model):
    mac: MacAddress
    ip: IPv4Address
    hostname: Hostname | None = None
    # The DHCPv6 address the virtual gateway gives this MAC (found in the
    # client's DUID-LL/LLT) when the modem's RA asks for DHCPv6 addresses.
    ip6: IPv6Address | None = None


class DhcpOptions(_Model):
    """What leases tell clients; router and DNS default to the gateway's IP."""

    router: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] | None = None
    domain: DomainName | None = None
    ntp: tuple[IPv4Address, ...] = ()


class Dhcp(_Model):
    pools: tuple[DhcpPool, ...] = Field(min_length=1)
    lease_time: int = Field(default=86400, ge=60, le=365 * 86400, description="seconds")
    static_leases: tuple[StaticLease, ...] = ()
    options: DhcpOptions = DhcpOptions()
    # The console warns when this share of the pools' addresses is leased (older documents: the default).
    pool_warn_percent: int = Field(default=90, ge=1, le=100, description="percent of the pools leased")


class Ipv6(_Model):
    """What the box does with the home's IPv6.

    invisible: IPv6 passes as if the box were not there (the modem's RAs,
    SLAAC, the internet), except what the box serves: DNS over IPv6 to the
    modem's addresses is answered by the box's DNS, fake-ip names get fake
    IPv6 addresses (`vproxy.fake_range6`) that the relay serves, and the
    guards hold for IPv6 too. drop: the vswitch drops every IPv6 frame
    (what version 1 of this document did).
    """

    policy: Literal["invisible", "drop"] = "invisible"


class Flows(_Model):
    """Flows added after the box's own, in `ovs-ofctl add-flow` syntax.

    Port names are the box's: uplink, downlink, admin, vgw, vproxy.
    """

    custom: str = ""


ALERT_EVENTS = ("service", "modem", "new-device", "data-budget")


def _notification_url(url: str) -> str:
    import apprise  # parses the URL only; nothing is sent

    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        raise ValueError("not a notification URL Apprise knows (e.g. ntfy://host/topic,"
                         " mailto://user:password@example.com, json://host:port/path)")
    return url


class Alerts(_Model):
    """Notifications of what a home should hear about, sent by the box (`appliance.services.notify`).

    `urls`: where to, as Apprise URLs (ntfy://, mailto://, tgram://, json:// for a webhook...;
    https://github.com/caronc/apprise/wiki); they may hold secrets, so the box keeps them in a
    file only the notifier reads. `events`: which: a service of the box became unhealthy or
    answers again (`service`), the modem changed (`modem`), a new device (`new-device`), a device
    over its data budget (`data-budget`).
    """

    urls: tuple[Annotated[str, AfterValidator(_notification_url)], ...] = ()
    events: tuple[Literal["service", "modem", "new-device", "data-budget"], ...] = ALERT_EVENTS


VERSION = 2


class Settings(_Model):
    version: Literal[2] = VERSION
    ports: Ports
    gateway: Gateway
    lan: Lan
    admin: Admin
    vproxy: VProxy
    dhcp: Dhcp
    ipv6: Ipv6 = Ipv6()
    flows: Flows = Flows()
    dns: DnsSettings | None = None
    relay: RelaySettings | None = None
    # open: while a service of the box does not answer, the home is served as
    # before the box (the modem's DNS and DHCP); closed: by the box or not at all.
    failsafe: Literal["open", "closed"] = "open"
    alerts: Alerts = Alerts()

    @property
    def router(self) -> IPv4Address:
        return self.dhcp.options.router or self.gateway.ip

    @property
    def dns_servers(self) -> tuple[IPv4Address, ...]:
        return self.dhcp.options.dns if self.dhcp.options.dns is not None else (self.gateway.ip,)

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        errors = _cross_field_errors(self)
        if errors:
            # Not a ValueError: pydantic lets it through untouched, keys and all.
            raise SettingsError(errors)
        return self


# ---------------------------------------------------------------- cross-field checks

def _cross_field_errors(s: Settings) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}

    def err(path: str, message: str) -> None:
        errors.setdefault(path, []).append(message)

    lan = s.lan.prefix
    if lan.prefixlen > 30:
        err("lan.prefix", f"{lan} leaves no room for hosts; use /30 or larger")
        return errors

    def in_lan(path: str, ip: IPv4Address) -> bool:
        if ip not in lan:
            err(path, f"{ip} is outside the LAN {lan}")
            return False
        if ip in (lan.network_address, lan.broadcast_address):
            what = "network" if ip == lan.network_address else "broadcast"
            err(path, f"{ip} is the LAN's {what} address")
            return False
        return True

    if s.ports.uplink == s.ports.downlink:
        err("ports.downlink", f"{s.ports.downlink} is also the uplink; they must be two NICs")

    # Addresses the box itself holds, by the field that sets them.
    taken: list[tuple[str, str, IPv4Address]] = [("gateway.ip", "the gateway", s.gateway.ip)]
    in_lan("gateway.ip", s.gateway.ip)
    if in_lan("admin.address", s.admin.address) and s.admin.address == s.gateway.ip:
        err("admin.address", f"{s.admin.address} is the gateway's address")
    taken.append(("admin.address", "the admin address", s.admin.address))
    if in_lan("vproxy.address", s.vproxy.address):
        for path, what, ip in taken:
            if s.vproxy.address == ip:
                err("vproxy.address", f"{ip} is {what} ({path})")
    taken.append(("vproxy.address", "the vproxy address", s.vproxy.address))

    if len(set(s.admin.guarded_ports)) != len(s.admin.guarded_ports):
        err("admin.guarded_ports", "a port is listed twice")

    if s.gateway.mac is not None and s.vproxy.mac == s.gateway.mac:
        err("vproxy.mac", f"{s.vproxy.mac} is the gateway's MAC")
    if s.vproxy.fake_range.overlaps(lan):
        err("vproxy.fake_range", f"{s.vproxy.fake_range} overlaps the LAN {lan}")
    if s.vproxy.fake_range6.num_addresses < s.vproxy.fake_range.num_addresses:
        err("vproxy.fake_range6", f"{s.vproxy.fake_range6} is smaller than vproxy.fake_range "
            f"{s.vproxy.fake_range}: each fake IPv4 address has its IPv6 twin at the same offset")
    if s.vproxy.fake_range6.is_link_local or s.vproxy.fake_range6.is_multicast:
        err("vproxy.fake_range6", f"{s.vproxy.fake_range6} is link-local or multicast; use a unicast range")

    pools = s.dhcp.pools
    for i, pool in enumerate(pools):
        p = f"dhcp.pools[{i}]"
        ok = in_lan(f"{p}.start", pool.start) & in_lan(f"{p}.end", pool.end)
        if pool.start > pool.end:
            err(p, f"start {pool.start} is after end {pool.end}")
            continue
        if not ok:
            continue
        for path, what, ip in taken:
            if ip in pool:
                err(p, f"{pool} contains {what} {ip} ({path})")
        for j in range(i):
            other = pools[j]
            if pool.start <= other.end and other.start <= pool.end:
                err(p, f"{pool} overlaps dhcp.pools[{j}] {other}")

    seen_mac: dict[str, int] = {}
    seen_ip: dict[IPv4Address, int] = {}
    seen_ip6: dict[IPv6Address, int] = {}
    seen_name: dict[str, int] = {}
    reserved_macs = {s.vproxy.mac: "vproxy.mac"}
    if s.gateway.mac:
        reserved_macs[s.gateway.mac] = "gateway.mac"
    for i, lease in enumerate(s.dhcp.static_leases):
        p = f"dhcp.static_leases[{i}]"
        if lease.mac in seen_mac:
            err(f"{p}.mac", f"{lease.mac} is already reserved by dhcp.static_leases[{seen_mac[lease.mac]}]")
        else:
            seen_mac[lease.mac] = i
        if lease.mac in reserved_macs:
            err(f"{p}.mac", f"{lease.mac} is the box's own MAC ({reserved_macs[lease.mac]})")
        if lease.ip in seen_ip:
            err(f"{p}.ip", f"{lease.ip} is already reserved by dhcp.static_leases[{seen_ip[lease.ip]}]")
        else:
            seen_ip[lease.ip] = i
        if lease.ip6 is not None:
            if not lease.ip6.is_global and not lease.ip6.is_private or lease.ip6.is_link_local \
                    or lease.ip6.is_multicast or lease.ip6.is_loopback or lease.ip6.is_unspecified:
                err(f"{p}.ip6", f"{lease.ip6} is not a unicast address a client can hold on the LAN")
            elif lease.ip6 in seen_ip6:
                err(f"{p}.ip6", f"{lease.ip6} is already reserved by dhcp.static_leases[{seen_ip6[lease.ip6]}]")
            else:
                seen_ip6[lease.ip6] = i
        if lease.hostname is not None:
            if lease.hostname in seen_name:
                err(f"{p}.hostname",
                    f"{lease.hostname} is already used by dhcp.static_leases[{seen_name[lease.hostname]}]")
            else:
                seen_name[lease.hostname] = i
        if in_lan(f"{p}.ip", lease.ip):
            for path, what, ip in taken:
                if lease.ip == ip:
                    err(f"{p}.ip", f"{ip} is {what} ({path})")
            for k, pool in enumerate(pools):
                if pool.start <= pool.end and lease.ip in pool:
                    err(f"dhcp.pools[{k}]", f"{pool} contains the static lease {lease.ip} ({p})")

    if s.dhcp.options.router is not None:
        in_lan("dhcp.options.router", s.dhcp.options.router)

    dns = s.dns
    if dns is not None:
        fake = dns.fake_ip.network
        if IPv4Network(fake) != s.vproxy.fake_range:
            err("dns.fake_ip.network", f"{fake} differs from vproxy.fake_range {s.vproxy.fake_range}")
        # Every fake-ip rule names a route the relay has.
        relay = s.relay or RelaySettings()
        for path, message in relay.unknown_routes(fake_ip_routes(dns)).items():
            err(path, message)

    for message in custom_flow_errors(s.flows.custom):
        err("flows.custom", message)
    return errors


def fake_ip_routes(dns: DnsSettings) -> list[tuple[str, str]]:
    """(field path, route) of every fake-ip action in the DNS section."""
    out = []

    def rules(prefix, items):
        for i, rule in enumerate(items):
            if rule.then.action == "fake-ip":
                out.append((f"{prefix}[{i}].then.route", rule.then.route))

    rules("dns.rules", dns.rules)
    for g, group in enumerate(dns.groups):
        rules(f"dns.groups[{g}].rules", group.rules)
    for i, lst in enumerate(dns.lists):
        if lst.then.action == "fake-ip":
            out.append((f"dns.lists[{i}].then.route", lst.then.route))
    return out


# ---------------------------------------------------------------- parsing and errors

def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or NON_FIELD


def _message(e: Mapping[str, Any]) -> str:
    kind = e["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    msg = e["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return msg
    value = e.get("input")
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return f"{msg} (got {value!r})"
    return msg


def _errors_from(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for e in exc.errors():
        errors.setdefault(_path(e["loc"]), []).append(_message(e))
    return errors


def settings_errors(data: Any, *, nics: Collection[str] | None = None) -> dict[str, list[str]]:
    """The problems in a settings document, `{field_path: [messages]}`; {} if valid.

    `nics`, when given, are the box's network interfaces: a port that is not
    one of them is an error.
    """
    try:
        parse_settings(data, nics=nics)
    except SettingsError as e:
        return e.errors
    return {}


def migrate(data: Mapping) -> dict:
    """A settings document of an older version, as the current version reads it.

    A document without `version` is taken as the current one. Version 1 ->
    2: IPv6 gained the `invisible` policy, the new default; a version-1
    document meant `drop` whether it said so or not, and keeps it (a box
    with stored settings boots as it ran; the admin opts in to IPv6).
    """
    data = dict(data)
    version = data.get("version", VERSION)
    if version == 1:
        data["ipv6"] = {"policy": "drop", **(data.get("ipv6") or {})}
        data["version"] = 2
    return data


def parse_settings(data: Any, *, nics: Collection[str] | None = None) -> Settings:
    """Validate a settings document (a mapping), migrating an older version;
    raise `SettingsError` if invalid."""
    if isinstance(data, Settings):
        data = data.model_dump(mode="json")
    if not isinstance(data, Mapping):
        raise SettingsError({NON_FIELD: [f"a settings document is a mapping, not {type(data).__name__}"]})
    data = migrate(data)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        raise SettingsError(_errors_from(e)) from None
    if nics is not None:
        errors: dict[str, list[str]] = {}
        known = ", ".join(sorted(nics)) or "none"
        for field in ("uplink", "downlink"):
            name = getattr(settings.ports, field)
            if name not in nics:
                errors[f"ports.{field}"] = [f"{name} is not a network interface of this box (it has: {known})"]
        if errors:
            raise SettingsError(errors)
    return settings


# ---------------------------------------------------------------- JSON and YAML

def from_yaml(text: str, *, nics: Collection[str] | None = None) -> Settings:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SettingsError({NON_FIELD: [f"{where}{getattr(e, 'problem', None) or e}"]}) from None
    return parse_settings(data, nics=nics)


def from_json(text: str, *, nics: Collection[str] | None = None) -> Settings:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SettingsError({NON_FIELD: [f"line {e.lineno}, column {e.colno}: {e.msg}"]}) from None
    return parse_settings(data, nics=nics)


def load_settings(path: str | Path, *, nics: Collection[str] | None = None) -> Settings:
    """Read a settings file; JSON if it ends in .json, YAML otherwise."""
    path = Path(path)
    text = path.read_text()
    return from_json(text, nics=nics) if path.suffix == ".json" else from_yaml(text, nics=nics)


def to_data(settings: Settings) -> dict:
    return settings.model_dump(mode="json")


def to_json(settings: Settings) -> str:
    return json.dumps(to_data(settings), indent=2) + "\n"


def to_yaml(settings: Settings) -> str:
    return yaml.safe_dump(to_data(settings), sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------- defaults and discovery

def default_settings(uplink: str, downlink: str, **overrides: Any) -> Settings:
    """The seed's numbers (192.168.1.0/24, modem .1, admin .8, vproxy .9, pool .65-.191)."""
    data: dict[str, Any] = {
        "ports": {"uplink": uplink, "downlink": downlink},
        "gateway": {"ip": "192.168.1.1"},
        "lan": {"prefix": "192.168.1.0/24"},
        "admin": {"address": "192.168.1.8"},
        "vproxy": {"address": "192.168.1.9", "mac": "d6:00:00:00:00:bf"},
        "dhcp": {"pools": [{"start": "192.168.1.65", "end": "192.168.1.191"}], "lease_time": 86400},
    }
    for key, value in overrides.items():
        data[key] = value
    return parse_settings(data)


ArpProber = Callable[[IPv4Address], "str | None"]


def discover_gateway_mac(settings: Settings, probe: ArpProber) -> Settings:
    """Fill in the gateway's MAC by ARP when the settings leave it out.

    `probe(ip)` asks who has `ip` from the admin port and returns the MAC of
    the reply, or None; the caller supplies it (the kernel boundary does the
    I/O). Settings that already name the MAC are returned as they are.
    """
    if settings.gateway.mac is not None:
        return settings
    mac = probe(settings.gateway.ip)
    if mac is None:
        raise SettingsError({"gateway.mac": [
            f"not given, and {settings.gateway.ip} did not answer ARP from the admin port"]})
    data = to_data(settings)
    data["gateway"]["mac"] = mac
    return parse_settings(data)

