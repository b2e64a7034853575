"""The settings document as JSON Schema: what the OpenAPI schema says and what the API checks first.

The document's own models (`appliance.box.settings`, with the DNS and relay
sections) give the shape: types, required keys, ranges, enums. Their value
types are Python validators that pydantic cannot write down (an interface
name, a MAC, a network without host bits ...), so `_VALUES` says each one
as JSON Schema, exactly or stricter, never looser: a body the schema allows
is refused only by a rule across fields (`CROSS_FIELD_RULES`), which is
written into the operation's description and its `x-cross-field-rules`.

Every API body that carries settings is checked against these schemas
before anything else (`body_errors`): a wrong type, format, range or enum
is a 400 naming the field, never coerced (DRF would take 5 for "5").
"""
from __future__ import annotations

import copy
import functools
import re
from typing import Any, Iterable, Mapping

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError as SchemaError
from rest_framework import status
from rest_framework.exceptions import ValidationError

from appliance.box.layout import RESERVED_LINK_NAMES
from appliance.box.settings import VERSION, Settings

# ---------------------------------------------------------------- value types

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4 = {"type": "string", "format": "ipv4"}
IP = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}


def network(max_prefix: int = 32, min_addresses_note: str = "") -> dict:
    """An IPv4 network in CIDR form with no host bits set, /0../max_prefix, as one regular expression.

    Per prefix length: the whole octets are any, the split octet a multiple
    of its block size, the rest 0 ("192.168.1.0/24", "10.0.0.128/25").
    """
    alternatives = []
    for p in range(max_prefix + 1):
        whole, bits = divmod(p, 8)
        octets = [_OCTET] * whole
        if bits:
            step = 1 << (8 - bits)
            octets.append("(" + "|".join(str(v) for v in range(0, 256, step)) + ")")
        octets += ["0"] * (4 - len(octets))
        alternatives.append(r"\.".join(octets) + f"/{p}")
    return {"type": "string", "pattern": "^(" + "|".join(alternatives) + ")$",
            "description": f"an IPv4 network, host bits zero, /0 to /{max_prefix} "
                           f"(192.168.1.0/24){min_addresses_note}"}


# "Not one of these" is written into the pattern (a lookahead), not as `not`: a generator that
# draws from the pattern alone then still draws only valid values.
def _none_of(words) -> str:
    return "(?!(" + "|".join(re.escape(w) for w in sorted(words)) + ")$)"


_HEX2 = "[0-9A-Fa-f]{2}"
MAC = {"type": "string",
       "pattern": rf"^(?!00([:-]00){{5}}$)[0-9A-Fa-f][02468AaCcEe]((:{_HEX2}){{5}}|(-{_HEX2}){{5}})$",
       "description": "a unicast MAC address, six hex octets (02:00:5e:10:00:01), not all zero"}
IFNAME = {"type": "string", "pattern": "^" + _none_of({".", "..", *RESERVED_LINK_NAMES}) + r"[!-.0-9;-~]{1,15}$",
          "description": "a network interface name: 1 to 15 printable ASCII characters, no '/', ':' or space, "
                         f"not one the box gives its own links ({', '.join(sorted(RESERVED_LINK_NAMES))})"}
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN = {"type": "string", "maxLength": 253, "pattern": rf"^{_LABEL}(\.{_LABEL})*\.?$",
          "description": "a domain name: dot-separated labels of letters, digits and '-' (home.arpa)"}
_DNS_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
DNS_DOMAIN = {"type": "string", "maxLength": 253, "pattern": rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*\.?$",
              "description": "a domain name: labels of letters, digits, '_' and '-'"}
NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        "description": "a name: letters, digits, _ . - (at most 63, starting with a letter or digit)"}
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)"
HOSTPORT = {"type": "string", "anyOf": [{"format": "ipv4"}, {"pattern": rf"^{_OCTET}(\.{_OCTET}){{3}}:{_PORT}$"}],
            "description": "an IPv4 address, with :port or without (192.168.1.9:53)"}
CLIENT_NET4 = {"type": "string", "anyOf": [
    {"format": "ipv4"}, {"pattern": rf"^{_OCTET}(\.{_OCTET}){{3}}/(3[0-2]|[12]?[0-9])$"}],
    "description": "an IPv4 address or network (10.0.0.0/8)"}
CLIENT_NET = {"type": "string", "anyOf": [*CLIENT_NET4["anyOf"], {"format": "ipv6"}],
              "description": "an IPv4 address or network, or an IPv6 address"}
_H16 = "[0-9A-Fa-f]{1,4}"
# An IPv6 address as Python's ipaddress reads it, less the forms with a dotted IPv4 tail or a zone.
_IPV6 = ("(" + "|".join([
    rf"({_H16}:){{7}}{_H16}", rf"({_H16}:){{1,7}}:",
    *(rf"({_H16}:){{{n}}}(:{_H16}){{1,{7 - n}}}" for n in range(1, 7)),
    rf":((:{_H16}){{1,7}}|:)"]) + ")")
NETWORK6 = {"type": "string", "pattern": rf"^{_IPV6}/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$",
            "description": "an IPv6 network (2001:2::/48); its host bits must be zero, or the settings "
                           "refuse it (409)"}
IP_NETWORK = {"type": "string", "anyOf": [
    {"format": "ipv4"}, {"pattern": rf"^{_OCTET}(\.{_OCTET}){{3}}/(3[0-2]|[12]?[0-9])$"},
    {"format": "ipv6"}, {"pattern": rf"^{_IPV6}/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$"}],
    "description": "an IP address or network, IPv4 or IPv6 (10.0.0.0/8, fd00::/8)"}
# Python's str.strip() whitespace, spelled out: ECMA's \s and Python's differ.
_NOT_SPACE = r"[^\t-\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_UPSTREAM_HOST = rf"({_OCTET}(\.{_OCTET}){{3}})"
UPSTREAM_URL = {"type": "string", "anyOf": [
    {"pattern": rf"^((udp|tcp)://)?{_UPSTREAM_HOST}(:{_PORT})?$"},
    {"pattern": rf"^(tls|https)://({_UPSTREAM_HOST}|{_LABEL}(\.{_LABEL})*)(:{_PORT})?(/[!-~]*)?$"}],
    "description": "udp://IP[:port], tcp://IP[:port], tls://HOST[:port] or https://HOST[:port]/path; "
                   "a bare IP is UDP"}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _items(schema: dict, **kw) -> dict:
    return {"type": "array", "items": schema, **kw}


# (pydantic model, field) -> the field's schema, where pydantic's own is looser than the validator.
_VALUES: dict[tuple[str, str], dict] = {
    ("Ports", "uplink"): IFNAME,
    ("Ports", "downlink"): IFNAME,
    ("Gateway", "mac"): _nullable(MAC),
    ("Lan", "prefix"): network(30, "; /31 and /32 leave no room for hosts"),
    ("Admin", "guarded_ports"): _items({"type": "integer", "minimum": 1, "maximum": 65535}, uniqueItems=True),
    ("VProxy", "mac"): MAC,
    ("VProxy", "fake_range"): network(32),
    ("VProxy", "fake_range6"): NETWORK6,
    ("StaticLease", "mac"): MAC,
    ("StaticLease", "hostname"): _nullable(DOMAIN),
    ("DhcpOptions", "domain"): _nullable(DOMAIN),
    # The DNS service's section.
    ("DnsSettings", "listen"): _items(HOSTPORT, minItems=1),
    ("DnsSettings", "allow_clients"): _items(CLIENT_NET),
    ("DnsSettings", "deny_clients"): _items(CLIENT_NET),
    ("UpstreamSettings", "url"): UPSTREAM_URL,
    ("UpstreamSettings", "address"): _nullable(IP),
    ("FakeIpSettings", "network"): network(30, "; at least a /30"),
    ("FakeIpSettings", "keep_real"): _items(DNS_DOMAIN),
    ("FakeIpAction", "route"): NAME,
    ("RewriteAction", "answer"): _items({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"},
                                                                      DNS_DOMAIN]}, minItems=1),
    ("RuleListSettings", "name"): NAME,
    ("RuleListSettings", "source"): {"type": "string", "pattern": _NOT_SPACE,
                                     "description": "a file path or an http(s) URL"},
    ("RuleListSettings", "sha256"): _nullable({"type": "string", "pattern": "^[0-9A-Fa-f]{64}$",
                                               "description": "a SHA-256, 64 hex digits"}),
    ("FakeIpSettings", "network6"): _nullable(NETWORK6),
    ("RebindSettings", "allow"): _items(DNS_DOMAIN),
    ("RebindSettings", "networks"): _items(IP_NETWORK),
    ("ClientGroupSettings", "name"): {**NAME, "pattern": "^" + _none_of(["default"]) + NAME["pattern"][1:]},
    ("ClientGroupSettings", "clients"): _items({"type": "string", "anyOf": [MAC, *CLIENT_NET["anyOf"]],
                                                "description": "a MAC, an IP address or an IPv4 network"}),
    ("StaticHost", "ip"): IP,
    ("LocalNamesSettings", "domain"): DNS_DOMAIN,
    # The relay's section.
    ("ProxySettings", "name"): {**NAME, "pattern": "^" + _none_of(["direct", "reject"]) + NAME["pattern"][1:]},
    ("ProxySettings", "address"): IPV4,
    ("ProxySettings", "username"): _nullable({"type": "string", "minLength": 1, "maxLength": 63}),
    ("ProxySettings", "password"): _nullable({"type": "string", "minLength": 1, "maxLength": 63}),
    ("FastPathSettings", "interfaces"): _items({"type": "string", "pattern": r"^[A-Za-z0-9_.:@-]{1,15}$"}),
    ("RelaySettings", "listen"): HOSTPORT,
    ("RelaySettings", "fake_range"): network(32),
    ("RelaySettings", "fake_range6"): _nullable(NETWORK6),
    ("RelaySettings", "allow_clients"): _items(CLIENT_NET4),
    ("RelaySettings", "deny_clients"): _items(CLIENT_NET4),
    ("RelaySettings", "resolvers"): _items(HOSTPORT),
}

# A rule value depends on its match: a domain, one word, or a regular expression.
_RULE = {"anyOf": [
    {"properties": {"match": {"enum": ["exact", "suffix"]}, "value": DNS_DOMAIN}},
    # The whitespace the settings refuse in a keyword (Python's str.isspace), spelled out: ECMA's
    # \S and Python's differ (U+0085 is space to Python only), so a generator drew 400s.
    {"properties": {"match": {"const": "keyword"}, "value": {"type": "string", "pattern": f"^{_NOT_SPACE}+$"}}},
    {"properties": {"match": {"const": "regex"}}},
]}

# What a schema cannot say: rules between fields, by document path, with the paths their errors name.
CROSS_FIELD_RULES: dict[str, list[str]] = {
    "ports": ["uplink and downlink are two different NICs"],
    "gateway": ["ip is inside lan.prefix, not its network or broadcast address",
                "mac is not vproxy.mac; no static lease uses it"],
    "lan": ["the gateway, admin, vproxy addresses, the pools and the static leases stay inside it; "
            "it does not overlap vproxy.fake_range"],
    "admin": ["address is inside lan.prefix and is not gateway.ip; no pool or static lease holds it"],
    "vproxy": ["address is inside lan.prefix and is neither gateway.ip nor admin.address; "
               "mac is not gateway.mac; fake_range does not overlap lan.prefix and equals "
               "dns.fake_ip.network when the DNS section is set"],
    "dhcp": ["router, when set, is inside lan.prefix"],
    "dhcp.pools": ["start and end are inside lan.prefix, start <= end",
                   "a pool overlaps no other pool and holds neither gateway.ip, admin.address, "
                   "vproxy.address nor a static lease's ip", "at least one pool (the last is not deleted)"],
    "dhcp.static_leases": ["ip is inside lan.prefix, not an address of the box nor inside a pool",
                           "mac, ip and hostname are each used by one static lease only; mac is not the "
                           "gateway's or vproxy's"],
    "flows": ["custom is ovs-ofctl add-flow syntax, one flow a line (a grammar a JSON schema cannot hold)"],
    "dns": ["fake_ip.network equals vproxy.fake_range",
            "a fake-ip route names 'direct' or one of relay.proxies",
            "list and group names are unique; groups[].lists and default_lists name lists that exist",
            "an upstream url naming a host (tls, https) has its IP in address",
            "a rule with match 'regex' has a value Python's re compiles",
            "a rewrite answer is addresses, or exactly one CNAME target",
            "the value of a rule: exact/suffix a domain, keyword one word"],
    "relay": ["proxy names are unique", "username and password come together; udp only for socks5",
              "every fake-ip route of the DNS section names one of its proxies or 'direct'"],
}


def _inline(node: Any, defs: Mapping[str, dict], name: str | None = None) -> Any:
    if isinstance(node, list):
        return [_inline(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = node["$ref"].rsplit("/", 1)[-1]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**_inline(defs[target], defs, target), **rest}
    out = {k: _inline(v, defs) for k, v in node.items() if k != "title"}
    if name is not None and "properties" in out:
        for prop, schema in list(out["properties"].items()):
            value = _VALUES.get((name, prop))
            if value is not None:
                keep = {k: v for k, v in schema.items() if k in ("default", "description")}
                out["properties"][prop] = {**copy.deepcopy(value), **keep}
        if name == "RuleSettings":
            out.update(copy.deepcopy(_RULE))
    return out


@functools.cache
def _document() -> dict:
    raw = Settings.model_json_schema()
    defs = raw.pop("$defs", {})
    return _inline(raw, defs, "Settings")


def document_schema() -> dict:
    """The whole settings document (GET and PUT /api/system/settings/, the backup file)."""
    return copy.deepcopy(_document())


def document_request_schema() -> dict:
    """The whole document as a PUT takes it: an older version too (the settings migrate it)."""
    schema = document_schema()
    schema["properties"]["version"] = {"type": "integer", "enum": [1, VERSION], "default": VERSION,
                                       "description": "the document's version; 1 is migrated to "
                                                      f"{VERSION} (IPv6 policy drop unless it says)"}
    return schema


def at(path: str) -> dict:
    """The schema of a document path: "dhcp.options.router", "dhcp.pools[]" (an item of the list)."""
    node = _document()
    for key in path.split(".") if path else []:
        item = key.endswith("[]")
        node = _object(node)["properties"][key.removesuffix("[]")]
        if item:
            node = _object(node)["items"]
    return copy.deepcopy(node)


def _object(node: dict) -> dict:
    # A nullable section is anyOf [the section, null]: look into the section.
    for option in node.get("anyOf", []):
        if option.get("type") in ("object", "array"):
            return option
    return node


def cross_field_rules(path: str) -> list[str]:
    return list(CROSS_FIELD_RULES.get(path, []))


# ---------------------------------------------------------------- checking bodies

class RuleConflict(ValidationError):
    """A body the schema allows, refused by the settings' own rules: between fields, against the
    rest of the document, or what a value means (a network's host bits). 409 rather than 400: a
    client that sent what the schema promised to accept is told the state refuses it, not that it
    spoke wrongly. The errors are keyed by field as a 400's are."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


@functools.cache
def ecma(pattern: str) -> re.Pattern:
    # JSON Schema's patterns are ECMA-262: `$` is the end of the text, where Python's also matches
    # before a final newline ("eth0\n" would pass). Each unescaped `$` outside a class becomes `\Z`.
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[":
            in_class = True
        elif c == "]":
            in_class = False
        out.append("\\Z" if c == "$" and not in_class else c)
        i += 1
    return re.compile("".join(out))


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not ecma(pattern).search(instance):
        yield SchemaError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})

def _where(error) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_FORMATS = {"ipv4": "an IPv4 address", "ipv6": "an IPv6 address"}


def _message(error) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator in ("pattern", "anyOf", "not", "format") and schema.get("description"):
        return f"{error.instance!r} is not {schema['description']}"
    if error.validator == "format" and error.validator_value in _FORMATS:
        return f"{error.instance!r} is not {_FORMATS[error.validator_value]}"
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown key")
    if error.validator == "required":
        return "required"
    return error.message


def body_errors(schema: dict, data: Any, by_field: bool = False) -> dict[str, list[str]]:
    """`{field path: [messages]}` for what in `data` the schema refuses; {} if it conforms.

    Keys are document paths (`dhcp.pools[0].start`); `by_field` keys an
    error by the body's top-level field instead (a serializer's), the
    message then starting with the path inside it.
    """
    errors: dict[str, list[str]] = {}
    validator = _Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        where = _where(error)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            where = f"{where}.{missing}" if where else missing
        msg = _message(error)
        key = where or "non_field_errors"
        if by_field and error.absolute_path:
            key = str(error.absolute_path[0])
            if len(error.absolute_path) > 1:
                msg = f"{where.removeprefix(key).lstrip('.')}: {msg}"
        if msg not in errors.get(key, []):
            errors.setdefault(key, []).append(msg)
    return errors


def section_field_schema(model, field: str) -> dict | None:
    """The schema of a section model's field as the API shows it (None: not a document field).

    Text fields keep "not set" as "" (the console's forms), so where the
    document takes null the API takes "" instead.
    """
    base = f"{model.doc_path}[]" if model.many else model.doc_path
    if field == "config" and not model.doc_fields:
        return at(base)
    doc_field = next((d for d, f in model.doc_fields.items() if f == field), None)
    if doc_field is None:
        return None
    schema = at(f"{base}.{doc_field}" if base else doc_field)
    model_field = model._meta.get_field(field)
    options = schema.get("anyOf", [])
    if not model_field.null and {"type": "null"} in options:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        options = [o for o in options if o != {"type": "null"}] + [{"type": "string", "maxLength": 0}]
        what = options[0].get("description") or _FORMATS.get(options[0].get("format"), "a value")
        schema = {**rest, "anyOf": options, "description": f"{what}, or blank (not set)"}
    return _nul_free(schema)


# Text without NUL: as a validator's Python pattern (`fields.StrictCharField`), and as the
# schema shows it (drf-spectacular writes the validator's so).
NO_NUL = "^[^\\x00]*$"
NO_NUL_SCHEMA = "^[^\\u0000]*$"


def _nul_free(schema: dict) -> dict:
    """The API's text fields refuse NUL (DRF's CharField does, before any rule of ours): a
    text schema without a pattern or format of its own says so, or a client the schema lets
    send NUL gets a 400 it was not told of (a schemathesis run found `custom`)."""
    if schema.get("type") == "string" and not {"pattern", "format", "enum"} & set(schema) \
            and schema.get("maxLength") != 0:
        return {**schema, "pattern": NO_NUL_SCHEMA}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_nul_free(o) for o in schema["anyOf"]]}
    return schema


def object_schema(properties: Mapping[str, dict], required: Iterable[str]) -> dict:
    return {"type": "object", "properties": dict(properties), "required": sorted(required)}
