"""How full the pools are, and who Kea turned away by MAC (from its own log lines)."""
from appliance.box.settings import DhcpPool
from appliance.services.dhcp import pool

POOLS = (DhcpPool(start="192.168.1.20", end="192.168.1.23"), DhcpPool(start="192.168.1.30", end="192.168.1.30"))
# As kea-dhcp4 2.2 writes them (stderr, INFO and above).
KEA_LOG = """\
2026-12-04 04:31:02.114 INFO  [kea-dhcp4.leases/4120.140] DHCP4_LEASE_ALLOC [hwtype=1 02:00:00:00:00:01], cid=[no info], tid=0x1: lease 192.168.1.20 has been allocated for 600 seconds
2026-12-04 04:31:09.530 WARN  [kea-dhcp4.alloc-engine/4120.140] ALLOC_ENGINE_V4_ALLOC_FAIL_SUBNET [hwtype=1 02:00:00:00:00:0a], cid=[no info], tid=0x2a: failed to allocate an IPv4 address in the subnet 192.168.1.0/24, subnet-id 1, shared network (none)
2026-12-04 04:31:09.530 WARN  [kea-dhcp4.alloc-engine/4120.140] ALLOC_ENGINE_V4_ALLOC_FAIL [hwtype=1 02:00:00:00:00:0A], cid=[no info], tid=0x2a: failed to allocate an IPv4 address after 5 attempt(s)
2026-12-04 04:31:12.001 WARN  [kea-dhcp4.alloc-engine/4120.140] ALLOC_ENGINE_V4_ALLOC_FAIL [hwtype=1 02:00:00:00:00:0b], cid=[no info], tid=0x2b: failed to allocate an IPv4 address after 5 attempt(s)
2026-12-04 04:31:13.700 WARN  [kea-dhcp4.alloc-engine/4120.140] ALLOC_ENGINE_V4_ALLOC_FAIL [hwtype=1 02:00:00:00:00:0a], cid=[no info], tid=0x2c: failed to allocate an IPv4 address after 5 attempt(s)
"""


def leases(*ips, state=0):
    return [{"ip": ip, "mac": f"02:00:00:00:01:{i:02x}", "state": state} for i, ip in enumerate(ips)]


def test_usage_counts_assigned_leases_in_the_pools_only():
    got = pool.usage(POOLS, leases("192.168.1.20", "192.168.1.30", "192.168.1.10")
                     + leases("192.168.1.21", state=1), warn_percent=90)
    assert (got["size"], got["leased"], got["free"], got["percent"]) == (5, 2, 3, 40.0)
    assert got["warning"] == "" and not got["exhausted"]


def test_the_warning_comes_at_the_threshold_before_the_pool_is_full():
    got = pool.usage(POOLS, leases("192.168.1.20", "192.168.1.21", "192.168.1.22", "192.168.1.23"), warn_percent=80)
    assert not got["exhausted"] and "nearly full: 4 of 5 addresses leased (80%, the warning is at 80%)" in got["warning"]


def test_a_full_pool_says_so_and_names_the_last_client_turned_away():
    full = leases("192.168.1.20", "192.168.1.21", "192.168.1.22", "192.168.1.23", "192.168.1.30")
    got = pool.usage(POOLS, full, warn_percent=90, log_text=KEA_LOG)
    assert got["exhausted"] and got["free"] == 0
    assert "The DHCP pool is full: 5 of 5" in got["warning"]
    assert "02:00:00:00:00:0a at 2026-12-04 04:31:13" in got["warning"]
    # One entry per client, by the last time it was refused.
    assert got["no_lease"] == [{"mac": "02:00:00:00:00:0b", "at": "2026-12-04 04:31:12"},
                               {"mac": "02:00:00:00:00:0a", "at": "2026-12-04 04:31:13"}]


def test_journal_lines_without_kea_time_stamps_still_name_the_client():
    line = "ALLOC_ENGINE_V4_ALLOC_FAIL [hwtype=1 02:00:00:00:00:0c], cid=[no info], tid=0x1: failed\n"
    assert pool.no_lease(line) == [{"mac": "02:00:00:00:00:0c", "at": ""}]
