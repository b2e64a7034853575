"""Domain rules: parsing rule lists and matching a name, first match wins.

A `DomainMatcher` holds rules in order (exact, suffix, keyword, regex) and
returns the first one, in that order, that matches a name. Exact and suffix
rules are dictionary look-ups (one per label of the name), so a 100,000-line
blocklist costs no more per query than a ten-line one. Regex rules are
searched together, in RE2 sets of up to 2,000 (`pattern.PatternSet`): a
list's hundred `/.../` or `*` lines cost about what one does.

`parse_list` turns the text of a rule set or blocklist (hosts, AdBlock
``||domain^``, plain, or ``rules`` lines) into entries, and rejects the whole
text with a `ListError` naming the line and the reason, so a broken download
never replaces a working list.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Iterable

from .pattern import PatternSet, compile_pattern
from .settings import normalize_domain

MATCHES = ("exact", "suffix", "keyword", "regex")


@dataclass(frozen=True, slots=True)
class Rule:
    match: str
    value: str
    action: Any  # a settings action model (BlockAction, FakeIpAction, ...)
    origin: str  # where it came from, for the query log: "rules.3", "list ads"


class DomainMatcher:
    """Ordered rules; `match(name)` returns the first rule that matches."""

    def __init__(self, rules: Iterable[Rule]):
        self.rules: list[Rule] = []
        self._exact: dict[str, int] = {}
        self._suffix: dict[str, int] = {}
        self._keyword: list[tuple[int, str]] = []
        self._regex: list[tuple[int, str]] = []  # (rule index, text): checked when read
        self._regex_at: list[int] = []  # their rule indexes, in order
        self._regexes: PatternSet | None = None  # all of them in one automaton
        for rule in rules:
            self.add(rule)
        self._combine()

    def _combine(self) -> None:
        if self._regex and self._regexes is None:
            self._regexes = PatternSet([text for _, text in self._regex])

    def add(self, rule: Rule) -> None:
        index = len(self.rules)
        self.rules.append(rule)
        if rule.match == "exact":
            self._exact.setdefault(rule.value, index)
        elif rule.match == "suffix":
            self._suffix.setdefault(rule.value, index)
        elif rule.match == "keyword":
            self._keyword.append((index, rule.value))
        elif rule.match == "regex":
            self._regex.append((index, rule.value))
            self._regex_at.append(index)
            self._regexes = None
        else:
            raise ValueError(f"unknown match {rule.match!r}")

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, name: str) -> Rule | None:
        best = self._exact.get(name, len(self.rules))
        if self._suffix:
            suffix = name
            while True:
                index = self._suffix.get(suffix)
                if index is not None and index < best:
                    best = index
                dot = suffix.find(".")
                if dot < 0:
                    break
                suffix = suffix[dot + 1 :]
        for index, word in self._keyword:
            if index >= best:
                break
            if word in name:
                best = index
                break
        if self._regex_at and self._regex_at[0] < best:
            self._combine()  # after an `add`
            found = self._regexes.first(name, bisect_left(self._regex_at, best))
            if found is not None:
                best = self._regex_at[found]
        return self.rules[best] if best < len(self.rules) else None


class ListError(ValueError):
    """A rule list that cannot be used; names the line and the reason."""

    def __init__(self, source: str, line: int, reason: str, text: str = ""):
        self.source, self.line, self.reason, self.text = source, line, reason, text
        shown = f": {text[:80]!r}" if text else ""
        super().__init__(f"{source} line {line}: {reason}{shown}")


@dataclass
class ParsedList:
    """Entries of a list as (match, value); exceptions are AdBlock `@@` lines.

    AdBlock lines with `$important` are kept apart: they win over the
    list's plain exceptions, and an important exception over them, as in
    AdGuard (`list_matchers` orders them so).
    """

    entries: list[tuple[str, str]] = field(default_factory=list)
    exceptions: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0  # valid lines this DNS server has no use for (cosmetic rules)
    important: list[tuple[str, str]] = field(default_factory=list)
    important_exceptions: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return (len(self.entries) + len(self.exceptions) + len(self.important)
                + len(self.important_exceptions))


# Names a hosts file maps that are not blocking entries.
_HOSTS_IGNORED = {
    "localhost", "localhost.localdomain", "local", "broadcasthost",
    "ip6-localhost", "ip6-loopback", "ip6-localnet", "ip6-mcastprefix",
    "ip6-allnodes", "ip6-allrouters", "ip6-allhosts", "0.0.0.0",
}
_ADBLOCK_OK_MODIFIERS = {"important"}


def _domain(text: str) -> str:
    try:
        text = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise ValueError(f"not a valid international domain: {text!r}") from None
    return normalize_domain(text)


def _parse_hosts(line: str) -> list[tuple[str, str]]:
    parts = line.split("#", 1)[0].split()
    if len(parts) < 2:
        raise ValueError("a hosts line is an address and at least one name")
    try:
        ipaddress.ip_address(parts[0])
    except ValueError:
        raise ValueError(f"{parts[0]!r} is not an IP address") from None
    return [("exact", _domain(n)) for n in parts[1:] if n.lower() not in _HOSTS_IGNORED]


def _parse_adblock(line: str) -> tuple[bool, bool, tuple[str, str] | None]:
    """Returns (is_exception, is_important, entry or None when the line is skipped)."""
    if "##" in line or "#@#" in line or "#?#" in line or "#$#" in line:
        return False, False, None  # cosmetic (element hiding): nothing to do for DNS
    exception = line.startswith("@@")
    body = line[2:] if exception else line
    body, _, modifiers = body.partition("$")
    names = {m.strip().split("=")[0] for m in modifiers.split(",")} if modifiers else set()
    if names - _ADBLOCK_OK_MODIFIERS:
        return exception, False, None  # client-, type- or page-specific: not for a DNS server
    return (exception, "important" in names, _adblock_entry(body))


def _adblock_entry(body: str) -> tuple[str, str] | None:
    """(match, value) of an AdBlock mask, its `@@` and `$` taken off; None: nothing for DNS."""
    if body.startswith("/") and body.endswith("/") and len(body) > 2:
        pattern = body[1:-1]
        compile_pattern(pattern)
        return ("regex", pattern)
    if body in ("", "|", "||", "*") or len(body) < 3:
        return None  # AdGuard refuses masks this wide
    if body.endswith("/*"):
        body = body[:-2] + "^"  # "example.org/*": the whole host, as AdGuard reads it
    if "*" in body:
        pattern = _wildcard_regex(body)
        return None if pattern is None else ("regex", pattern)
    if body.startswith("||"):
        body = body[2:]
        match = "suffix"
    elif body.startswith("|"):
        body = body[1:]
        match = "exact"
    else:
        match = "suffix"
    body = body.rstrip("|")
    if body.endswith("^"):
        body = body[:-1]
    if "/" in body:
        return None  # a URL path: nothing a DNS server sees
    return (match, _domain(body))


_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")


def _wildcard_regex(mask: str) -> str | None:
    """The RE2 regex of an AdBlock mask with `*`, as AdGuard's DNS filter matches it.

    AdGuard (urlfilter's DNS engine) matches a `||` mask against
    "http://<name>" with `||` read as "a scheme, then any subdomains", and
    any other mask against the name alone, anywhere in it unless `|` anchors
    an end; `*` is any run of characters, dots included, and `^` a separator
    or the end. None for a mask with a character no host name has (a URL's
    port or query): it could never match. `||*^` matches every name, as in
    AdGuard: lists use it to block all but their `@@` exceptions.
    """
    mask = mask.lower()
    start = end = ""
    if mask.startswith("||"):
        mask, start = mask[2:], r"^(?:[a-z0-9_.-]+\.)?"
    elif mask.startswith("|"):
        mask, start = mask[1:], "^"
    if mask.endswith("|"):
        mask, end = mask[:-1], "$"
    literal = mask.replace("*", "").replace("^", "")
    if not _HOST_CHARS.issuperset(literal):
        return None
    parts = []
    for char in mask:
        if char == "*":
            parts.append(".*")
        elif char == "^":
            parts.append(r"(?:[^ a-z0-9.%_-]|$)")
        else:
            parts.append("\\." if char == "." else char)
    pattern = start + "".join(parts) + end
    compile_pattern(pattern)
    return pattern


def _parse_rule_line(line: str) -> tuple[str, str]:
    kind, _, value = line.partition(" ")
    kind = kind.strip().lower()
    value = value.strip()
    if kind not in MATCHES:
        raise ValueError(f"unknown match {kind!r}; expected one of {', '.join(MATCHES)}")
    if not value:
        raise ValueError("missing value")
    if kind == "regex":
        compile_pattern(value)
        return kind, value
    if kind == "keyword":
        if any(c.isspace() for c in value):
            raise ValueError("a keyword is one word")
        return kind, value.lower()
    return kind, _domain(value)


def _guess(line: str) -> str:
    if line.startswith(("||", "@@", "|")) or "^" in line or "##" in line:
        return "adblock"
    if "*" in line.lstrip("*."):
        return "adblock"  # "ads*.example.com": an AdBlock mask ("*.example.com" is a plain wildcard)
    first = line.split(None, 1)[0]
    try:
        ipaddress.ip_address(first)
        return "hosts"
    except ValueError:
        return "plain"


def parse_list(text: str, fmt: str = "auto", plain_match: str = "suffix",
               source: str = "list") -> ParsedList:
    """Parse a whole list; raise ListError at the first bad line."""
    parsed = ParsedList()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")) or (line.startswith("[") and line.endswith("]")):
            continue
        kind = _guess(line) if fmt == "auto" else fmt
        try:
            if kind == "hosts":
                parsed.entries.extend(_parse_hosts(line))
            elif kind == "adblock":
                exception, important, entry = _parse_adblock(line)
                if entry is None:
                    parsed.skipped += 1
                elif important:
                    (parsed.important_exceptions if exception else parsed.important).append(entry)
                else:
                    (parsed.exceptions if exception else parsed.entries).append(entry)
            elif kind == "plain":
                value = line.split("#", 1)[0].strip()
                match = plain_match
                if value.startswith("*."):
                    value, match = value[2:], "suffix"
                if " " in value or "\t" in value:
                    raise ValueError("a plain list has one domain a line")
                parsed.entries.append((match, _domain(value)))
            elif kind == "rules":
                parsed.entries.append(_parse_rule_line(line.split(" #", 1)[0]))
            else:
                raise ValueError(f"unknown list format {kind!r}")
        except ValueError as exc:
            raise ListError(source, number, str(exc), raw.strip()) from None
    return parsed


# Fake IPs break things that need the real address or that check the network
# before using it (Clash users' reports): time sync, captive-portal and
# connectivity checks, STUN, local names, and game consoles, whose
# connection tests and NAT-type tests send UDP to their servers and compare
# addresses (a console behind a relay reports "NAT type failed" and refuses
# online play). These stay real whatever the rules.
GAME_CONSOLE_SUFFIXES = (
    # Nintendo Switch: connection test (ctest.cdn.nintendo.net, conntest.nintendowifi.net),
    # NAT test (nncs1/nncs2-lp1.n.n.srv.nintendo.net), online play.
    "nintendo.net", "nintendowifi.net",
    # PlayStation: PSN sign-in, connection and NAT tests, STUN (stun.*.playstation.net).
    # "psn": issue 17 names *.psn; not a public TLD, so it costs nothing.
    "playstation.net", "playstation.com", "sonyentertainmentnetwork.com", "psn",
    # Xbox: Xbox Live services, the console's network test (xbox.com), its NAT
    # test over Teredo (teredo.ipv6.microsoft.com and the other Teredo servers
    # under ipv6.microsoft.com); xbox.*.microsoft.com is BUILTIN_KEEP_REAL_REGEX.
    "xboxlive.com", "xbox.com", "teredo.ipv6.microsoft.com", "ipv6.microsoft.com",
)
BUILTIN_KEEP_REAL_SUFFIXES = GAME_CONSOLE_SUFFIXES + (
    "pool.ntp.org", "ntp.org", "time.windows.com", "time.apple.com", "time-ios.apple.com",
    "time.google.com", "time.cloudflare.com", "time.android.com", "ntp.ubuntu.com",
    "time.nist.gov", "ntp.aliyun.com", "ntp.tencent.com",
    "connectivitycheck.gstatic.com", "connectivitycheck.android.com", "clients3.google.com",
    "clients1.google.com", "msftconnecttest.com", "msftncsi.com", "captive.apple.com",
    "captive.g.aaplimg.com", "detectportal.firefox.com", "nmcheck.gnome.org",
    "network-test.debian.org", "connectivity-check.ubuntu.com", "networkcheck.kde.org",
    "conncheck.opensuse.org", "connect.rom.miui.com", "connectivitycheck.platform.hicloud.com",
    "wifi.vivo.com.cn", "localhost", "local", "lan", "home.arpa", "in-addr.arpa", "ip6.arpa",
)
# Xbox's services under microsoft.com are named xbox.<service>[.<region>].microsoft.com
# (fake-IP filters of Clash users list xbox.*.microsoft.com and xbox.*.*.microsoft.com).
BUILTIN_KEEP_REAL_REGEX = r"^(ntp|time|stun)[0-9]*\.|^xbox\.([a-z0-9-]+\.){1,2}microsoft\.com$"


# `dns.intercept: all`: the names of well-known public DNS-over-HTTPS services, which would carry
# a device's DNS past the box inside HTTPS. Blocked after every rule and list of a group (a rule
# that says `direct` for one of them wins). The browsers' own resolvers are on these names
# (Chrome and Edge upgrade to the DoH of the system's resolver only when it is one of them).
BUILTIN_DOH_SUFFIXES = (
    "dns.google", "dns.google.com", "dns64.dns.google",
    "cloudflare-dns.com", "mozilla.cloudflare-dns.com", "one.one.one.one", "1dot1dot1dot1.cloudflare-dns.com",
    "security.cloudflare-dns.com", "family.cloudflare-dns.com", "chrome.cloudflare-dns.com",
    "dns.quad9.net", "dns9.quad9.net", "dns10.quad9.net", "dns11.quad9.net",
    "doh.opendns.com", "doh.familyshield.opendns.com", "dns.umbrella.com",
    "dns.adguard.com", "dns.adguard-dns.com", "dns-family.adguard.com", "unfiltered.adguard-dns.com",
    "doh.cleanbrowsing.org", "dns.nextdns.io", "doh.mullvad.net", "dns.mullvad.net",
    "doh.dns.sb", "dns.sb", "doh.libredns.gr", "dns.controld.com", "freedns.controld.com",
    "doh.xfinity.com", "dns.alidns.com", "doh.pub", "doh.360.cn", "dns.twnic.tw",
    "ordns.he.net", "dns.switch.ch", "doh.ffmuc.net", "dns0.eu", "doh.applied-privacy.net",
    "dns.digitale-gesellschaft.ch", "doh.quickline.ch", "private.canadianshield.cira.ca",
)
# Firefox's canary: an NXDOMAIN here tells it the network filters DNS, and it keeps its
# DNS-over-HTTPS off by default.
DOH_CANARY = "use-application-dns.net"


def doh_matcher(block_action: Any, nxdomain_action: Any) -> DomainMatcher:
    """The built-in DoH names blocked (`block_action`) and Firefox's canary answered NXDOMAIN."""
    rules = [Rule("exact", DOH_CANARY, nxdomain_action, "builtin intercept: Firefox's DoH canary")]
    rules += [Rule("suffix", s, block_action, "builtin intercept: DNS-over-HTTPS") for s in BUILTIN_DOH_SUFFIXES]
    return DomainMatcher(rules)


def keep_real_matcher(extra_suffixes: Iterable[str], builtin: bool = True,
                      local_domain: str | None = None) -> DomainMatcher:
    keep = object()
    rules = [Rule("suffix", s, keep, "fake_ip.keep_real") for s in extra_suffixes]
    if local_domain:
        rules.append(Rule("suffix", local_domain, keep, "local_names.domain"))
    if builtin:
        rules += [Rule("suffix", s, keep, "builtin keep-real") for s in BUILTIN_KEEP_REAL_SUFFIXES]
        rules.append(Rule("regex", BUILTIN_KEEP_REAL_REGEX, keep, "builtin keep-real"))
    return DomainMatcher(rules)
