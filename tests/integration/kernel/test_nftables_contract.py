"""`Nftables`: the same assertions on `FakeNftables` and on nft in a scratch namespace.

The scripts are the ones the relay's fast path writes (`relay/nft.py`), so
the fake is held to running what its caller actually sends.
"""
from __future__ import annotations

import asyncio

import pytest

from appliance.kernel.base import KernelError
from appliance.kernel.fake_nftables import FakeNftables
from appliance.kernel.nftables import Counter, LinuxNftables
from appliance.services.relay import nft
from appliance.services.relay.settings import parse_settings
from tests.support.scratchns import ScratchNamespaces


SETTINGS = parse_settings({"fast_path": {"table": "kc_relay", "interfaces": ["home"]}})
FAKE, REAL, OTHER = "100.96.0.7", "203.0.113.10", "203.0.113.11"


@pytest.fixture(params=["fake", "linux"])
def nftables(request):
    if request.param == "fake":
        yield FakeNftables()
        return
    with ScratchNamespaces("kcn") as (ns,):
        yield LinuxNftables(ns)


def run(coro):
    return asyncio.run(coro)


def elements(nftables):
    return run(nftables.map_elements("ip", "kc_relay", "fast"))


def test_the_relays_table_starts_empty_and_replaces_a_predecessors(nftables):
    run(nftables.run(nft.fast_path_table(SETTINGS)))
    run(nftables.run(nft.add_entry(SETTINGS, FAKE, REAL, 60)))
    run(nftables.run(nft.fast_path_table(SETTINGS)))        # a new relay: the old entries go
    assert elements(nftables) == {}
    assert run(nftables.set_counters("ip", "kc_relay", nft.COUNTER_SETS)) == \
        {name: {} for name in nft.COUNTER_SETS}


def test_map_elements_are_added_replaced_and_removed(nftables):
    run(nftables.run(nft.fast_path_table(SETTINGS)))
    run(nftables.run(nft.add_entry(SETTINGS, FAKE, REAL, 60)))
    assert elements(nftables) == {FAKE: REAL}
    with pytest.raises(KernelError, match="File exists"):
        run(nftables.run(nft.add_entry(SETTINGS, FAKE, OTHER, 60)))
    run(nftables.run(nft.add_entry(SETTINGS, FAKE, OTHER, 60, replace=True)))
    assert elements(nftables) == {FAKE: OTHER}
    run(nftables.run(nft.remove_entry(SETTINGS, FAKE)))
    assert elements(nftables) == {}
    with pytest.raises(KernelError, match="No such file or directory"):
        run(nftables.run(nft.remove_entry(SETTINGS, FAKE)))


def test_a_script_is_one_transaction(nftables):
    run(nftables.run(nft.fast_path_table(SETTINGS)))
    both = nft.add_entry(SETTINGS, FAKE, REAL, 60) + nft.remove_entry(SETTINGS, "100.96.0.8")
    with pytest.raises(KernelError):
        run(nftables.run(both))
    assert elements(nftables) == {}


def test_set_counters_by_element(nftables):
    run(nftables.run(nft.fast_path_table(SETTINGS)))
    run(nftables.run(f"add element ip kc_relay conns {{ 192.168.1.50 . {FAKE} counter packets 3 bytes 180 }}\n"
                     f"add element ip kc_relay down {{ 192.168.1.50 . {FAKE} counter packets 9 bytes 9000,"
                     f" 192.168.1.51 . {FAKE} counter packets 1 bytes 60 }}\n"))
    got = run(nftables.set_counters("ip", "kc_relay", nft.COUNTER_SETS))
    assert got == {"conns": {("192.168.1.50", FAKE): Counter(3, 180)}, "up": {},
                   "down": {("192.168.1.50", FAKE): Counter(9, 9000), ("192.168.1.51", FAKE): Counter(1, 60)}}


def test_deleting_the_table_twice_is_harmless_and_then_it_is_gone(nftables):
    run(nftables.run(nft.fast_path_table(SETTINGS)))
    run(nftables.run(nft.delete_table(SETTINGS)))
    run(nftables.run(nft.delete_table(SETTINGS)))
    with pytest.raises(KernelError):
        elements(nftables)
    with pytest.raises(KernelError):
        run(nftables.set_counters("ip", "kc_relay", nft.COUNTER_SETS))


SETTINGS6 = parse_settings({"fake_range6": "2001:2::/48", "direct6": True,
                            "fast_path": {"table": "kc_relay", "interfaces": ["home"]}})
FAKE6, REAL6, CLIENT6 = "2001:2::7", "2001:db8:113::10", "fd77::2"


def test_the_ip6_table_maps_counts_and_goes_with_the_ip_one(nftables):
    run(nftables.run(nft.fast_path_table(SETTINGS6)))
    run(nftables.run(nft.add_entry(SETTINGS6, FAKE6, REAL6, 60) + nft.add_entry(SETTINGS6, FAKE, REAL, 60)))
    assert run(nftables.map_elements("ip6", "kc_relay", "fast")) == {FAKE6: REAL6}
    assert elements(nftables) == {FAKE: REAL}
    run(nftables.run(f"add element ip6 kc_relay down {{ {CLIENT6} . {FAKE6} counter packets 9 bytes 9000 }}\n"))
    got = run(nftables.set_counters("ip6", "kc_relay", nft.COUNTER_SETS))
    assert got == {"conns": {}, "up": {}, "down": {(CLIENT6, FAKE6): Counter(9, 9000)}}
    run(nftables.run(nft.remove_entry(SETTINGS6, FAKE6)))
    assert run(nftables.map_elements("ip6", "kc_relay", "fast")) == {}
    # A relay started without direct6 leaves no ip6 table of a predecessor behind.
    run(nftables.run(nft.fast_path_table(SETTINGS)))
    with pytest.raises(KernelError):
        run(nftables.map_elements("ip6", "kc_relay", "fast"))
    run(nftables.run(nft.fast_path_table(SETTINGS6)))
    run(nftables.run(nft.delete_table(SETTINGS)))
    for family in ("ip", "ip6"):
        with pytest.raises(KernelError):
            run(nftables.map_elements(family, "kc_relay", "fast"))
