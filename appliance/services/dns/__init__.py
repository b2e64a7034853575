"""The box's DNS server, run in netns vproxy: ``python -m appliance.services.dns --config FILE``.

Modules: `settings` (the validated `DnsSettings` the global settings embed),
`server` (`DnsService`, the main process: sockets, access, rate limit,
reload, and the Python interface for the console and the relay), `control`
(the same interface over a Unix socket: `DnsControl`), `workers` and
`worker` (more processes answering UDP on the same address), `steer` (which
process answers a query: by its name), `resolver` (what to answer, and the
per-query path), `wire` (DNS wire format by hand: queries read, answers
kept as record bytes and rendered per client), `policy` and `rules`
(groups, rules, lists, the keep-real list), `lists` (fetching lists),
`fakeip` (`FakeIpPool` with `pin`/`unpin` for the relay, its SQLite store
written behind), `localnames` (leases as ``host.lan``), `cache` (answers by
question, TTLs, serve-stale), `upstream` (UDP pipelined over a few sockets,
TCP, DoT, DoH; failover), `querylog`, `ratelimit`.
"""
