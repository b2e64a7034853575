"""The transparent relay for fake-IP traffic (netns vproxy, issue 7).

`Relay` (relay.py) takes every connection the TPROXY rule steers to it,
finds the domain by the fake address, and relays by the route the DNS rule
chose: `direct`, a named SOCKS5 or HTTP proxy, or `reject`. `RelaySettings`
(settings.py) is its part of the settings document; `control.query` asks a
running relay for its connection table and counters.

    python -m appliance.services.relay --config FILE   (SIGHUP reloads)
"""
