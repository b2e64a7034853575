"""The settings document: valid forms round-trip, every invalid case is
rejected with a message keyed by the field that is wrong."""
import copy
import json

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from appliance.box.settings import (
    NON_FIELD, Settings, SettingsError, default_settings, discover_gateway_mac, from_json, from_yaml,
    parse_settings, settings_errors, to_data, to_json, to_yaml,
)


def base() -> dict:
    return to_data(default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": "18:00:00:00:00:e8"}))


def with_(path: str, value) -> dict:
    data = base()
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    node[int(last) if last.isdigit() else last] = value
    return data


def test_defaults_are_the_seeds_numbers():
    s = default_settings("enp5s0", "enp1s0")
    assert str(s.gateway.ip) == "192.168.1.1" and s.gateway.mac is None
    assert str(s.admin.address) == "192.168.1.8"
    assert str(s.vproxy.address) == "192.168.1.9"
    assert [str(p) for p in s.dhcp.pools] == ["192.168.1.65-192.168.1.191"]
    assert s.router == s.gateway.ip and s.dns_servers == (s.gateway.ip,)


def test_json_and_yaml_round_trip():
    s = parse_settings(with_("dhcp.static_leases", [{"mac": "02:00:00:00:00:01", "ip": "192.168.1.20",
                                                      "hostname": "nas"}]))
    assert from_json(to_json(s)) == s
    assert from_yaml(to_yaml(s)) == s


def test_yaml_unquoted_mac_is_a_mac_not_a_base60_number():
    text = to_yaml(parse_settings(base())).replace("'18:00:00:00:00:e8'", "18:00:00:00:00:e8")
    assert "mac: 18:00:00:00:00:e8" in text
    assert from_yaml(text).gateway.mac == "18:00:00:00:00:e8"


def test_yaml_integers_are_yaml_1_2_and_a_bad_one_names_its_field():
    text = to_yaml(parse_settings(base()))
    assert "lease_time: 86400" in text
    assert from_yaml(text.replace("lease_time: 86400", "lease_time: 07200")).dhcp.lease_time == 7200
    assert from_yaml(text.replace("lease_time: 86400", "lease_time: 0o7020")).dhcp.lease_time == 3600
    assert from_yaml(text.replace("lease_time: 86400", "lease_time: 0xe10")).dhcp.lease_time == 3600
    with pytest.raises(SettingsError) as e:
        from_yaml(text.replace("prefix: 192.168.1.0/24", "prefix: 096"))
    assert "lan.prefix" in e.value.errors


def test_mac_is_normalised():
    s = parse_settings(with_("vproxy.mac", "D6-00-00-00-00-BF"))
    assert s.vproxy.mac == "d6:00:00:00:00:bf"


def test_frozen():
    s = parse_settings(base())
    with pytest.raises(Exception):
        s.lan = None  # type: ignore[misc]
    with pytest.raises(Exception):
        s.dhcp.pools[0].start = "192.168.1.2"  # type: ignore[misc]


INVALID = [
    # (change, field path, words in the message)
    (("dhcp.pools.0.start", "192.168.2.10"), "dhcp.pools[0].start", "192.168.2.10 is outside the LAN 192.168.1.0/24"),
    (("dhcp.pools.0.end", "192.168.1.255"), "dhcp.pools[0].end", "broadcast address"),
    (("admin.address", "10.0.0.8"), "admin.address", "10.0.0.8 is outside the LAN 192.168.1.0/24"),
    (("admin.address", "192.168.1.1"), "admin.address", "is the gateway's address"),
    (("vproxy.address", "192.168.1.8"), "vproxy.address", "the admin address"),
    (("gateway.ip", "192.168.1.0"), "gateway.ip", "network address"),
    (("dhcp.pools", [{"start": "192.168.1.1", "end": "192.168.1.50"}]), "dhcp.pools[0]",
     "contains the gateway 192.168.1.1 (gateway.ip)"),
    (("dhcp.pools", [{"start": "192.168.1.2", "end": "192.168.1.8"}]), "dhcp.pools[0]",
     "contains the admin address 192.168.1.8"),
    (("dhcp.pools", [{"start": "192.168.1.9", "end": "192.168.1.9"}]), "dhcp.pools[0]",
     "contains the vproxy address"),
    (("dhcp.pools", [{"start": "192.168.1.100", "end": "192.168.1.90"}]), "dhcp.pools[0]",
     "start 192.168.1.100 is after end 192.168.1.90"),
    (("dhcp.pools", [{"start": "192.168.1.100", "end": "192.168.1.150"},
                     {"start": "192.168.1.150", "end": "192.168.1.160"}]), "dhcp.pools[1]", "overlaps dhcp.pools[0]"),
    (("dhcp.pools", []), "dhcp.pools", "at least 1"),
    (("gateway.mac", "18:00:00:00:00"), "gateway.mac", "is not a MAC address"),
    (("gateway.mac", "01:00:5e:00:00:01"), "gateway.mac", "multicast"),
    (("vproxy.mac", "18:00:00:00:00:e8"), "vproxy.mac", "the gateway's MAC"),
    (("vproxy.fake_range", "192.168.0.0/16"), "vproxy.fake_range", "overlaps the LAN"),
    (("ports.downlink", "enp5s0"), "ports.downlink", "also the uplink"),
    (("ports.uplink", "a-name-too-long-for-linux"), "ports.uplink", "1 to 15 characters"),
    (("ports.uplink", "admin"), "ports.uplink", "the box gives its own links"),
    (("lan.prefix", "192.168.1.5/24"), "lan.prefix", "host bits"),
    (("lan.prefix", "192.168.1.0/31"), "lan.prefix", "no room"),
    (("dhcp.lease_time", 5), "dhcp.lease_time", "greater than or equal to 60"),
    (("dhcp.options.router", "10.1.1.1"), "dhcp.options.router", "outside the LAN"),
    (("dhcp.options.domain", "bad_domain!"), "dhcp.options.domain", "not a domain name"),
    (("admin.guarded_ports", [22, 70000]), "admin.guarded_ports[1]", "not a TCP port"),
    (("admin.guarded_ports", [22, 22]), "admin.guarded_ports", "listed twice"),
    (("ipv6.policy", "route"), "ipv6.policy", "'drop'"),
    (("dhcp.colour", "blue"), "dhcp.colour", "unknown key"),
]


@pytest.mark.parametrize("change,path,words", INVALID, ids=[c[1] + ":" + c[2][:20] for c in INVALID])
def test_invalid_values_are_keyed_by_field(change, path, words):
    errors = settings_errors(with_(*change))
    assert path in errors, errors
    assert any(words in m for m in errors[path]), errors[path]
    with pytest.raises(SettingsError) as exc:
        parse_settings(with_(*change))
    assert exc.value.errors == errors


def test_the_briefs_example_message():
    errors = settings_errors(with_("dhcp.pools.0.start", "192.168.2.10"))
    assert "dhcp.pools[0].start: 192.168.2.10 is outside the LAN 192.168.1.0/24" in str(
        SettingsError(errors)).splitlines()


LEASE = {"mac": "02:00:00:00:00:01", "ip": "192.168.1.20", "hostname": "nas"}


@pytest.mark.parametrize("second,path,words", [
    ({"mac": "02:00:00:00:00:01", "ip": "192.168.1.21", "hostname": "pc"}, "dhcp.static_leases[1].mac",
     "already reserved by dhcp.static_leases[0]"),
    ({"mac": "02:00:00:00:00:02", "ip": "192.168.1.20", "hostname": "pc"}, "dhcp.static_leases[1].ip",
     "already reserved by dhcp.static_leases[0]"),
    ({"mac": "02:00:00:00:00:02", "ip": "192.168.1.21", "hostname": "NAS"}, "dhcp.static_leases[1].hostname",
     "already used by dhcp.static_leases[0]"),
    ({"mac": "02:00:00:00:00:02", "ip": "192.168.1.70", "hostname": "pc"}, "dhcp.pools[0]",
     "contains the static lease 192.168.1.70 (dhcp.static_leases[1])"),
    ({"mac": "02:00:00:00:00:02", "ip": "192.168.1.8", "hostname": "pc"}, "dhcp.static_leases[1].ip",
     "the admin address"),
    ({"mac": "02:00:00:00:00:02", "ip": "172.16.0.5", "hostname": "pc"}, "dhcp.static_leases[1].ip",
     "outside the LAN"),
    ({"mac": "d6:00:00:00:00:bf", "ip": "192.168.1.21", "hostname": "pc"}, "dhcp.static_leases[1].mac",
     "the box's own MAC (vproxy.mac)"),
    ({"mac": "zz:00:00:00:00:02", "ip": "192.168.1.21"}, "dhcp.static_leases[1].mac", "not a MAC"),
])
def test_static_lease_conflicts(second, path, words):
    errors = settings_errors(with_("dhcp.static_leases", [LEASE, second]))
    assert any(words in m for m in errors.get(path, [])), errors


def test_several_errors_are_reported_at_once():
    data = with_("dhcp.static_leases", [LEASE, dict(LEASE, hostname="x")])
    data["admin"]["address"] = "10.0.0.8"
    errors = settings_errors(data)
    assert set(errors) >= {"admin.address", "dhcp.static_leases[1].mac", "dhcp.static_leases[1].ip"}


def test_missing_and_unknown_top_level_keys():
    data = base()
    del data["lan"]
    data["wifi"] = {}
    errors = settings_errors(data)
    assert errors["lan"] == ["required"] and errors["wifi"] == ["unknown key"]


def test_unknown_port_against_the_boxs_nics():
    errors = settings_errors(base(), nics={"enp5s0", "eth9"})
    assert errors == {"ports.downlink": ["enp1s0 is not a network interface of this box (it has: enp5s0, eth9)"]}
    assert settings_errors(base(), nics={"enp5s0", "enp1s0"}) == {}


def test_custom_flows_are_parsed_with_the_boxs_port_names():
    ok = with_("flows.custom", "priority=100,udp,in_port=downlink,tp_dst=123,actions=output:uplink\n")
    assert settings_errors(ok) == {}
    bad = with_("flows.custom", "priority=100,in_port=downlink,actions=output:uplink\npriority=5,in_port=eth7,actions=drop\n")
    errors = settings_errors(bad)
    assert list(errors) == ["flows.custom"]
    assert "line 2" in errors["flows.custom"][0]


def test_bad_documents():
    assert NON_FIELD in settings_errors(["not", "a", "mapping"])
    with pytest.raises(SettingsError) as e:
        from_yaml("ports: [unclosed\n")
    assert "line 2" in e.value.errors[NON_FIELD][0] or "line 1" in e.value.errors[NON_FIELD][0]
    with pytest.raises(SettingsError) as e:
        from_json("{\"ports\": ")
    assert e.value.errors[NON_FIELD][0].startswith("line 1, column")


def test_gateway_mac_discovery_uses_the_injected_prober():
    s = default_settings("enp5s0", "enp1s0")
    asked = []

    def probe(ip):
        asked.append(str(ip))
        return "18:00:00:00:00:E8"

    found = discover_gateway_mac(s, probe)
    assert asked == ["192.168.1.1"] and found.gateway.mac == "18:00:00:00:00:e8"
    assert discover_gateway_mac(found, lambda ip: pytest.fail("must not probe when the MAC is known")) is found
    with pytest.raises(SettingsError) as e:
        discover_gateway_mac(s, lambda ip: None)
    assert "gateway.mac" in e.value.errors
    with pytest.raises(SettingsError) as e:
        discover_gateway_mac(s, lambda ip: "ff:ff:ff:ff:ff:ff")
    assert "gateway.mac" in e.value.errors


octet = st.integers(min_value=2, max_value=254)


@hsettings(max_examples=60, deadline=None)
@given(start=octet, end=octet)
def test_pool_bounds_property(start, end):
    data = with_("dhcp.pools", [{"start": f"192.168.1.{start}", "end": f"192.168.1.{end}"}])
    errors = settings_errors(data)
    reserved = {1, 8, 9}
    if start > end:
        assert any("after end" in m for m in errors["dhcp.pools[0]"])
    elif any(start <= r <= end for r in reserved):
        assert any("contains" in m for m in errors["dhcp.pools[0]"])
    else:
        assert errors == {}
        s = parse_settings(data)
        assert parse_settings(json.loads(to_json(s))) == s


def test_settings_model_itself_enforces_cross_field_rules():
    # Nothing invalid can exist as a Settings object, whoever builds it.
    with pytest.raises(SettingsError):
        Settings.model_validate(with_("admin.address", "10.0.0.8"))
    data = base()
    assert parse_settings(copy.deepcopy(data)) == parse_settings(data)


def test_the_dns_section_is_embedded_and_agrees_on_the_fake_range():
    data = base()
    data["dns"] = {"upstreams": [{"url": "udp://192.168.1.1"}]}
    s = parse_settings(data)
    assert type(s.dns).__name__ == "DnsSettings"
    assert from_yaml(to_yaml(s)) == s
    data["dns"]["fake_ip"] = {"network": "100.64.0.0/16"}
    errors = settings_errors(data)
    assert errors == {"dns.fake_ip.network": ["100.64.0.0/16 differs from vproxy.fake_range 100.96.0.0/11"]}
    data["dns"] = {"upstreams": []}
    assert "dns.upstreams" in settings_errors(data)


def test_version_1_settings_migrate_to_2_and_keep_ipv6_dropped():
    from appliance.box.settings import default_settings, to_data
    old = to_data(default_settings("enp5s0", "enp1s0"))
    old["version"] = 1
    del old["ipv6"]
    del old["vproxy"]["fake_range6"]
    s = parse_settings(old)
    assert s.version == 2 and s.ipv6.policy == "drop"
    # A new document (no version: the current one) passes IPv6 invisibly.
    new = default_settings("enp5s0", "enp1s0")
    assert new.version == 2 and new.ipv6.policy == "invisible"
    assert str(new.vproxy.fake_range6) == "2001:2::/48"


@pytest.mark.parametrize("value,message", [
    ("2001:2::/120", "is smaller than vproxy.fake_range"),
    ("fe80::/64", "link-local or multicast"),
    ("2001:2::1/48", "has host bits set"),
    ("10.0.0.0/8", "is not an IPv6 network"),
])
def test_bad_fake_range6_names_the_field(value, message):
    from appliance.box.settings import default_settings, to_data
    data = to_data(default_settings("enp5s0", "enp1s0"))
    data["vproxy"]["fake_range6"] = value
    errors = settings_errors(data)
    assert any(message in m for m in errors["vproxy.fake_range6"]), errors
