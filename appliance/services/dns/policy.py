"""The per-domain, per-client-group policy, compiled from settings and lists.

A `Policy` is immutable once built; a reload builds a new one and the server
swaps a single reference, so a query sees either the old policy or the new
one, never a mix. Building fails (and the old policy stays) if any rule or
list is invalid.

Order of decision for a client in group G: G's rules, G's lists (each list's
AdBlock ``@@`` exceptions before its entries, ``$important`` lines before
both, as AdGuard orders them), then - unless G does not
inherit - the default group's rules and lists. First match wins. A fake-ip
decision for a name the keep-real filter covers becomes direct.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from .rules import DomainMatcher, ParsedList, Rule, doh_matcher, keep_real_matcher
from .settings import BlockAction, DirectAction, DnsSettings, RuleSettings

DEFAULT_GROUP = "default"
_DIRECT = DirectAction(action="direct")


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str  # "block" | "direct" | "fake-ip" | "rewrite"
    action: Any  # the settings action model
    origin: str  # which rule or list decided; "" when no rule matched


NO_MATCH = Decision("direct", _DIRECT, "")


@dataclass(frozen=True)
class GroupPolicy:
    name: str
    chain: tuple[DomainMatcher, ...]
    block_mode: str


PAUSED_GROUP = "paused"
PAUSED_RULE = Rule("suffix", "", BlockAction(action="block"), "device paused")


class EveryName:
    """A matcher every name matches (the paused group's chain)."""

    def __init__(self, rule: Rule):
        self.rule = rule

    def match(self, name: str) -> Rule:
        return self.rule


def _rules_matcher(rules: list[RuleSettings], prefix: str) -> DomainMatcher:
    return DomainMatcher(
        Rule(r.match, r.value, r.then, f"{prefix}.{i}") for i, r in enumerate(rules)
    )


def list_matchers(name: str, parsed: ParsedList, action: Any) -> tuple[DomainMatcher, ...]:
    """A list's matchers in AdGuard's order: important exceptions, important lines, exceptions, lines."""
    origin = f"list {name}"
    parts = ((parsed.important_exceptions, _DIRECT, origin + " (important exception)"),
             (parsed.important, action, origin + " (important)"),
             (parsed.exceptions, _DIRECT, origin + " (exception)"))
    matchers = [DomainMatcher(Rule(m, v, then, said) for m, v in entries)
                for entries, then, said in parts if entries]
    matchers.append(DomainMatcher(Rule(m, v, action, origin) for m, v in parsed.entries))
    return tuple(matchers)


class Policy:
    """Which group a client is in, and what a group does with a name."""

    def __init__(self, settings: DnsSettings, lists: dict[str, ParsedList]):
        self.settings = settings
        by_name = {item.name: item for item in settings.lists}
        shared: dict[str, tuple[DomainMatcher, ...]] = {}
        for name, parsed in lists.items():
            if name in by_name and by_name[name].enabled:
                shared[name] = list_matchers(name, parsed, by_name[name].then)

        def lists_chain(names: list[str]) -> tuple[DomainMatcher, ...]:
            out: tuple[DomainMatcher, ...] = ()
            for n in names:
                out += shared.get(n, ())  # a list not loaded yet matches nothing
            return out

        default_names = settings.default_lists
        if default_names is None:
            default_names = [item.name for item in settings.lists if item.enabled]
        default_chain = (_rules_matcher(settings.rules, "rules"),) + lists_chain(default_names)
        # Last in every group's chain: a group's own rules and lists decide first.
        doh: tuple[DomainMatcher, ...] = ()
        if settings.intercept == "all":
            doh = (doh_matcher(BlockAction(action="block"), BlockAction(action="block", mode="nxdomain")),)
        self.groups: list[GroupPolicy] = [
            GroupPolicy(DEFAULT_GROUP, default_chain + doh, settings.block_mode)
        ]
        self._by_mac: dict[str, int] = {}
        self._by_net: list[tuple[Any, int]] = []
        for gi, group in enumerate(settings.groups):
            chain = (_rules_matcher(group.rules, f"groups.{gi}.rules"),) + lists_chain(group.lists)
            if group.inherit:
                chain += default_chain
            self.groups.append(GroupPolicy(group.name, chain + doh, group.block_mode or settings.block_mode))
            for client in group.clients:
                if ":" in client and "/" not in client:
                    self._by_mac.setdefault(client, gi + 1)
                else:
                    self._by_net.append((ipaddress.ip_network(client), gi + 1))
        # Most specific network first, so a host entry beats a subnet entry.
        self._by_net.sort(key=lambda item: -item[0].prefixlen)
        # Last: the devices that are off (paused, or by a schedule) get every name blocked.
        self.groups.append(GroupPolicy(PAUSED_GROUP, (EveryName(PAUSED_RULE),), settings.block_mode))
        self.paused = len(self.groups) - 1
        self.keep_real = keep_real_matcher(
            settings.fake_ip.keep_real, settings.fake_ip.builtin_filter,
            settings.local_names.domain,
        )
        self.list_counts = {name: parsed.count for name, parsed in lists.items()}

    def needs_mac(self) -> bool:
        return bool(self._by_mac)

    def group_of(self, ip: str, mac: str | None = None) -> int:
        """Index into `groups` (0 is the default group). MAC wins over IP."""
        if mac and self._by_mac:
            index = self._by_mac.get(mac.lower())
            if index is not None:
                return index
        if self._by_net:
            address = ipaddress.ip_address(ip)
            for net, index in self._by_net:
                if address.version == net.version and address in net:
                    return index
        return 0

    def decide(self, group: int, qname: str) -> Decision:
        for matcher in self.groups[group].chain:
            rule = matcher.match(qname)
            if rule is not None:
                kind = rule.action.action
                if kind == "fake-ip" and self.keep_real.match(qname) is not None:
                    return Decision("direct", _DIRECT, rule.origin + " (kept real)")
                return Decision(kind, rule.action, rule.origin)
        return NO_MATCH
