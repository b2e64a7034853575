"""The box's DNS server, run in netns vproxy: ``python -m appliance.services.dns --config FILE``.

Modules: `settings` (the validated `DnsSettings` the global settings embed),
`server` (`DnsService`: sockets, access, rate limit, reload, and the Python
interface for the console and the relay), `control` (the same interface over
a Unix socket: `DnsControl`), `resolver` (what to answer), `policy` and
`rules` (groups, rules, lists), `lists` (fetching lists), `fakeip`
(`FakeIpPool` with `pin`/`unpin` for the relay, its SQLite store written
behind), `localnames` (leases as ``host.lan``), `cache`, `upstream` (UDP,
TCP, DoT, DoH), `querylog`, `ratelimit`, `wire` (the cache-hit fast path's
parsing).
"""
