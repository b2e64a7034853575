"""Every settings object's endpoint, through the generic mixins."""
import pytest

from appliance.web.dhcp import models as dhcp
from appliance.web.network import models as net
from appliance.web.switch import models as sw
from appliance.web.system import models as system
from tests.unit.web.api_mixins import ListAPITests, SingletonAPITests

pytestmark = pytest.mark.django_db


class TestPorts(SingletonAPITests):
    url, model = "/api/network/ports/", net.Ports
    update_data = {"uplink": "enp6s0"}
    bad_data = {"uplink": "admin"}  # a reserved name
    conflicting_data = {"downlink": "enp5s0"}  # the uplink twice


class TestGateway(SingletonAPITests):
    url, model = "/api/network/gateway/", net.Gateway
    update_data = {"ip": "192.168.1.254"}
    bad_data = {"mac": "01:00:5e:00:00:01", "ip": 17}  # multicast; not text
    conflicting_data = {"ip": "10.0.0.1"}  # outside the LAN


class TestLan(SingletonAPITests):
    url, model = "/api/network/lan/", net.Lan
    update_data = {"prefix": "192.168.0.0/23"}
    bad_data = {"prefix": "192.168.1.1/24"}  # host bits set


class TestAdmin(SingletonAPITests):
    url, model = "/api/network/admin/", net.Admin
    update_data = {"address": "192.168.1.7", "guarded_ports": [22, 443]}
    bad_data = {"guarded_ports": [22, 22]}  # twice
    conflicting_data = {"address": "192.168.1.1"}  # the gateway's


class TestVProxy(SingletonAPITests):
    url, model = "/api/network/vproxy/", net.VProxy
    update_data = {"address": "192.168.1.10"}
    bad_data = {"fake_range": "100.96.0.1/11", "fake_range6": "2001:2::/129"}  # host bits; no such prefix
    conflicting_data = {"address": "192.168.1.8", "fake_range": "192.168.0.0/16",  # admin's; overlaps LAN
                        "fake_range6": "2001:2::1/48"}  # host bits (the schema says it in words)


class TestIpv6(SingletonAPITests):
    url, model = "/api/network/ipv6/", net.Ipv6
    update_data = {"policy": "drop"}
    bad_data = {"policy": "forward"}  # not one of the policies (the schema's enum)


class TestFailsafe(SingletonAPITests):
    url, model = "/api/network/failsafe/", net.Failsafe
    update_data = {"failsafe": "closed"}
    bad_data = {"failsafe": "ajar"}


class TestAlerts(SingletonAPITests):
    url, model = "/api/system/alerts/", system.Alerts
    update_data = {"urls": ["ntfy://ntfy.example/home", "json://192.168.1.50:8080/hook"], "events": ["service"]}
    bad_data = {"events": ["weather"], "urls": "ntfy://ntfy.example/home"}  # not a kind; not a list
    conflicting_data = {"urls": ["ftp://example.com/"]}  # a string, but no notification URL Apprise knows


class TestDhcpServer(SingletonAPITests):
    url, model = "/api/dhcp/server/", dhcp.DhcpServer
    update_data = {"lease_time": 3600, "domain": "home.arpa"}
    bad_data = {"lease_time": 5, "domain": "-bad-", "pool_warn_percent": "90"}
    conflicting_data = {"router": "10.1.1.1"}


class TestCustomFlows(SingletonAPITests):
    url, model = "/api/switch/custom-flows/", sw.CustomFlows
    update_data = {"custom": "priority=10,udp,tp_dst=9999,actions=drop"}
    bad_data = {"custom": True}
    conflicting_data = {"custom": "priority=10,udp,tp_dst=99999,actions=drop"}


class TestDhcpPools(ListAPITests):
    url, model = "/api/dhcp/pools/", dhcp.DhcpPool
    create_data = {"start": "192.168.1.200", "end": "192.168.1.220"}
    update_data = {"end": "192.168.1.230"}
    bad_data = {"start": "192.168.1.300"}
    conflicting_data = {"end": "10.0.0.9"}


class TestStaticLeases(ListAPITests):
    url, model = "/api/dhcp/static-leases/", dhcp.StaticLease
    create_data = {"mac": "02:00:00:00:00:42", "ip": "192.168.1.42", "hostname": "printer"}
    update_data = {"hostname": "printer2"}
    bad_data = {"mac": "zz", "hostname": "no_underscores!"}
    conflicting_data = {"ip": "192.168.1.8"}


def test_deleting_the_last_pool_is_refused_with_the_documents_words(api):
    pk = dhcp.DhcpPool.objects.get().pk
    r = api.delete(f"/api/dhcp/pools/{pk}/")
    assert r.status_code == 409
    assert "dhcp.pools" in str(r.data)
    assert dhcp.DhcpPool.objects.count() == 1


def test_pool_overlap_names_the_other_pool(api):
    r = api.post("/api/dhcp/pools/", {"start": "192.168.1.100", "end": "192.168.1.210"}, format="json")
    assert r.status_code == 409
    assert any("overlaps dhcp.pools[0]" in m for m in r.data["non_field_errors"])


def test_static_lease_in_a_pool_is_refused_and_says_which(api):
    r = api.post("/api/dhcp/static-leases/", {"mac": "02:00:00:00:00:43", "ip": "192.168.1.70"}, format="json")
    assert r.status_code == 409
    assert "contains the static lease 192.168.1.70" in str(r.data)
