"""dhcpkit on Python 3.11: its config from the DHCPv6 settings, the fixes our wrapper applies
(each shown failing upstream first), the static leases matched by the MAC in a client's DUID,
and the leases read back from its leasequery store."""
import sqlite3
import time
from ipaddress import IPv6Address

import pytest

from appliance.services.dhcp import dhcpkit_fixes  # first: it undoes dhcpkit's replacement of `typing`
from dhcpkit.ipv6.duids import EnterpriseDUID, LinkLayerDUID, LinkLayerTimeDUID
from dhcpkit.ipv6.messages import RelayForwardMessage, SolicitMessage
from dhcpkit.ipv6.options import ClientIdOption, IANAOption
from dhcpkit.ipv6.server.extensions.leasequery.sqlite import LeasequerySqliteStore
from dhcpkit.ipv6.server.extensions.static_assignments.csv import CSVStaticAssignmentHandler
from dhcpkit.ipv6.server.nonblocking_pool import NonBlockingPool
from dhcpkit.ipv6.server.transaction_bundle import TransactionBundle

from appliance.services.dhcp.dhcpkit_config import (
    Dhcp6Paths, Dhcp6Settings, StaticLease6, assignments_csv, dhcpkit_config, duid_ll,
)
from appliance.services.dhcp.leases6 import mac_of_duid, read_leases

MAC = "02:00:00:00:aa:01"
MODEM_MAC = "18:00:00:00:00:e8"
MODEM_LL = "fe80::1a00:ff:fe00:e8"


def paths(tmp_path) -> Dhcp6Paths:
    return Dhcp6Paths(config=str(tmp_path / "dhcp6.json"), dhcpkit=str(tmp_path / "dhcpkit.conf"),
                      assignments=str(tmp_path / "static6.csv"), leases=str(tmp_path / "leases6.sqlite"),
                      ra=str(tmp_path / "ra.json"), status=str(tmp_path / "status.json"),
                      socket=str(tmp_path / "dhcp6.sock"), pid_file=str(tmp_path / "dhcp6.pid"))


def settings(tmp_path, **kw) -> Dhcp6Settings:
    base = dict(server_mac=MODEM_MAC, reply_from=MODEM_LL, dns_servers=("2001:db8:1::1",), paths=paths(tmp_path),
                link_address="2001:db8:1::1", domain="home.arpa")
    return Dhcp6Settings(**{**base, **kw})


# ---------------------------------------------------------------- config

def test_the_server_answers_as_the_modem_with_the_modems_dns_and_the_search_domain(tmp_path):
    text = dhcpkit_config(settings(tmp_path))
    assert "<duid-ll server-id>\n  hardware-type 1\n  link-layer-address 18:00:00:00:00:e8\n</duid-ll>" in text
    assert f"<listen-interface gw0>\n  reply-from {MODEM_LL}\n  link-address 2001:db8:1::1\n" in text
    assert "link-address" not in dhcpkit_config(settings(tmp_path, link_address="::"))
    assert "<recursive-name-servers>\n  address 2001:db8:1::1\n</recursive-name-servers>" in text
    assert "<domain-search-list>\n  domain-name home.arpa\n</domain-search-list>" in text
    assert f"<lq-sqlite {tmp_path}/leases6.sqlite />" in text
    assert f"control-socket {tmp_path}/dhcp6.sock" in text
    assert duid_ll(MODEM_MAC) == "0003000118000000" "00e8"


def test_stateless_ignores_solicits_and_serves_no_addresses(tmp_path):
    text = dhcpkit_config(settings(tmp_path, static_leases=(StaticLease6(MAC, "2001:db8:1::20"),)))
    assert "<ignore-request>\n  message-type solicit\n</ignore-request>" in text
    assert "static-csv" not in text


def test_stateful_serves_the_static_leases(tmp_path):
    text = dhcpkit_config(settings(tmp_path, stateful=True, static_leases=(StaticLease6(MAC, "2001:db8:1::20"),)))
    assert f"<static-csv {tmp_path}/static6.csv>" in text
    assert "ignore-request" not in text


@pytest.mark.parametrize("count", [1, 3])
def test_dhcpkit_reads_the_static_leases_csv(tmp_path, count):
    leases = tuple(StaticLease6(f"02:00:00:00:aa:0{i}", f"2001:db8:1::2{i}") for i in range(count))
    csv_file = tmp_path / "static6.csv"
    csv_file.write_text(assignments_csv(settings(tmp_path, stateful=True, static_leases=leases)))
    mapping = dict(CSVStaticAssignmentHandler.parse_csv_file(str(csv_file)))
    assert {k: str(v.address) for k, v in mapping.items()} == {
        f"linklayer-id:1:02000000aa0{i}": f"2001:db8:1::2{i}" for i in range(count)}


@pytest.mark.parametrize("field,kw", [
    ("reply_from", {"reply_from": "2001:db8:1::1"}),
    ("reply_from", {"reply_from": "fe80::zz"}),
    ("dns_servers", {"dns_servers": ("192.168.1.1",)}),
])
def test_bad_addresses_are_refused_naming_the_field(tmp_path, field, kw):
    with pytest.raises(ValueError, match=field):
        settings(tmp_path, **kw)


# ---------------------------------------------------------------- the fixes

def _double(x):
    return 2 * x


@pytest.fixture
def pool():
    p = NonBlockingPool(processes=1)
    try:
        yield p
    finally:
        p.terminate()
        p.join()


def test_upstream_apply_async_fails_on_every_packet(pool):
    with pytest.raises(AttributeError, match="_cache"):
        dhcpkit_fixes.UPSTREAM["apply_async"](pool, _double, args=(21,))


def test_fixed_apply_async_hands_the_packet_to_a_worker(pool):
    result = dhcpkit_fixes.apply_async(pool, _double, args=(21,))
    assert result.get(timeout=30) == 42
    pool.close()  # no job left behind: close and join return
    pool.join()


def test_upstream_leasequery_store_cannot_start(tmp_path, monkeypatch):
    monkeypatch.setattr(LeasequerySqliteStore, "open_database", dhcpkit_fixes.UPSTREAM["open_database"])
    with pytest.raises(sqlite3.OperationalError, match="VACUUM from within a transaction"):
        LeasequerySqliteStore(str(tmp_path / "lq.sqlite"))


def test_fixed_leasequery_store_starts_twice_and_vacuums(tmp_path, monkeypatch):
    monkeypatch.setattr(LeasequerySqliteStore, "open_database", dhcpkit_fixes.open_database)
    LeasequerySqliteStore(str(tmp_path / "lq.sqlite"))
    LeasequerySqliteStore(str(tmp_path / "lq.sqlite"))  # the cleanup with tables present
    db = sqlite3.connect(tmp_path / "lq.sqlite")
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} >= {"clients", "addresses"}


def _solicit(duid) -> TransactionBundle:
    solicit = SolicitMessage(transaction_id=b"abc", options=[ClientIdOption(duid), IANAOption(iaid=b"\0\0\0\1")])
    relayed = RelayForwardMessage(hop_count=0, link_address=IPv6Address("2001:db8:1::1"),
                                  peer_address=IPv6Address("fe80::2"), options=[])
    relayed.relayed_message = solicit
    return TransactionBundle(relayed, received_over_multicast=True)


@pytest.mark.parametrize("duid", [
    LinkLayerDUID(hardware_type=1, link_layer_address=bytes.fromhex(MAC.replace(":", ""))),
    LinkLayerTimeDUID(hardware_type=1, time=700000000, link_layer_address=bytes.fromhex(MAC.replace(":", ""))),
], ids=["DUID-LL", "DUID-LLT"])
def test_a_static_lease_is_found_by_the_mac_in_the_duid(tmp_path, duid):
    csv_file = tmp_path / "static6.csv"
    csv_file.write_text(assignments_csv(settings(tmp_path, stateful=True,
                                                 static_leases=(StaticLease6(MAC, "2001:db8:1::20"),))))
    upstream = CSVStaticAssignmentHandler(str(csv_file), 100, 200, 100, 200)
    assert upstream.get_assignment(_solicit(duid)).address is None  # dhcpkit alone: only a relay's option
    ours = dhcpkit_fixes.LinkLayerStaticAssignments(str(csv_file), 100, 200, 100, 200)
    assert ours.get_assignment(_solicit(duid)).address == IPv6Address("2001:db8:1::20")
    other = LinkLayerDUID(hardware_type=1, link_layer_address=bytes.fromhex("020000000099"))
    assert ours.get_assignment(_solicit(other)).address is None
    assert ours.get_assignment(_solicit(EnterpriseDUID(enterprise_number=9, identifier=b"x"))).address is None


# ---------------------------------------------------------------- leases from the store

def test_leases_are_read_from_the_leasequery_store(tmp_path, monkeypatch):
    monkeypatch.setattr(LeasequerySqliteStore, "open_database", dhcpkit_fixes.open_database)
    path = tmp_path / "lq.sqlite"
    assert read_leases(path) == []  # no store yet: no leases
    LeasequerySqliteStore(str(path))
    now = int(time.time())
    relay = bytes([12, 0]) + IPv6Address("2001:db8:1::1").packed + IPv6Address("fe80::2").packed
    db = sqlite3.connect(path)
    with db:
        db.execute("INSERT INTO clients (id, client_id, link_address, last_interaction, relay_data) "
                   "VALUES (1, ?, '', ?, ?)", ("0001000129a7e0a0" + MAC.replace(":", ""), now, relay))
        db.execute("INSERT INTO clients (id, client_id, link_address, last_interaction) VALUES (2, '0002', '', ?)",
                   (now,))
        db.execute("INSERT INTO addresses VALUES (1, '2001:0db8:0001:0000:0000:0000:0000:0020', ?, ?, '')",
                   (now + 50, now + 100))
        db.execute("INSERT INTO addresses VALUES (2, '2001:0db8:0001:0000:0000:0000:0000:0030', ?, ?, '')",
                   (now - 100, now - 50))  # expired
    db.close()
    (lease,) = read_leases(path)
    assert lease.ip == IPv6Address("2001:db8:1::20")
    assert lease.mac == MAC and lease.client_address == "fe80::2"
    assert lease.expires == now + 100 and lease.preferred_until == now + 50
    assert lease.to_json()["ip"] == "2001:db8:1::20"


def test_dhcpkit_leaves_pythons_typing_in_place():
    import sys
    import typing

    assert sys.modules["typing"] is typing and hasattr(typing, "_GenericAlias")


def test_the_mac_of_a_duid():
    mac = bytes.fromhex(MAC.replace(":", ""))
    assert mac_of_duid(bytes.fromhex("00030001") + mac) == MAC
    assert mac_of_duid(bytes.fromhex("000100010000abcd") + mac) == MAC
    assert mac_of_duid(bytes.fromhex("0002000000090102")) == ""
    assert mac_of_duid(bytes.fromhex("00030006") + mac) == ""  # not Ethernet


def test_the_health_probes_information_request_is_one_dhcpkit_reads():
    from dhcpkit.ipv6.messages import InformationRequestMessage, Message
    from dhcpkit.ipv6.options import OptionRequestOption

    from appliance.services.health.probes import information_request

    _, message = Message.parse(information_request(b"xyz"))
    assert isinstance(message, InformationRequestMessage) and message.transaction_id == b"xyz"
    assert message.get_option_of_type(OptionRequestOption).requested_options == [23]
    message.validate()


# ---------------------------------------------------------------- following the modem's RA

def test_an_ra_is_read_back_as_it_was_sent():
    from appliance.services.dhcp.ra import parse_ra, router_advert

    ra = parse_ra(MODEM_LL + "%gw0", router_advert(managed=True, other=True, prefixes=("2001:db8:1::/64",),
                                                  dns=("2001:db8:1::1", "2001:db8:1::2")))
    assert (ra.source, ra.managed, ra.other) == (MODEM_LL, True, True)
    assert ra.prefixes == ("2001:db8:1::/64",) and ra.dns == ("2001:db8:1::1", "2001:db8:1::2")
    assert ra.lifetime == 1800


@pytest.mark.parametrize("message", [b"", b"\x87" + bytes(15), b"\x86\x00" + bytes(14) + b"\x03\x00"])
def test_what_is_not_an_ra_is_refused(message):
    from appliance.services.dhcp.ra import NotAnAdvert, parse_ra

    with pytest.raises(NotAnAdvert):
        parse_ra(MODEM_LL, message)


def test_the_server_follows_the_modems_ra(tmp_path):
    from appliance.services.dhcp.dhcpkit_config import following
    from appliance.services.dhcp.ra import RouterAdvert

    lease = (StaticLease6(MAC, "2001:db8:1::20"),)
    base = settings(tmp_path, dns_servers=(), static_leases=lease)
    assert following(base, None) == (base, None)
    served, aside = following(base, RouterAdvert(MODEM_LL, managed=True, other=True, dns=("2001:db8:1::1",)))
    assert (served.stateful, served.dns_servers, aside) == (True, ("2001:db8:1::1",), None)
    served, aside = following(base, RouterAdvert(MODEM_LL, managed=False, other=True, dns=("2001:db8:1::1",)))
    assert served.stateful is False and aside is None
    # M set and nothing to give: the modem's DHCPv6 serves the home.
    none = settings(tmp_path, dns_servers=(), static_leases=())
    served, aside = following(none, RouterAdvert(MODEM_LL, managed=True, other=True))
    assert served.stateful is False and "M flag" in aside and "modem's DHCPv6 serves the home" in aside
    # Servers in the settings win over the RA's.
    served, _ = following(settings(tmp_path), RouterAdvert(MODEM_LL, managed=False, other=True, dns=("2001:db8::9",)))
    assert served.dns_servers == ("2001:db8:1::1",)


def test_only_the_modems_ra_is_followed_and_the_status_says_why_it_stands_aside(tmp_path):
    import json

    from appliance.services.dhcp.dhcp6 import Follower
    from appliance.services.dhcp.ra import router_advert

    follower = Follower(settings(tmp_path, dns_servers=(), static_leases=()))
    follower.render()
    assert json.loads((tmp_path / "status.json").read_text())["aside"] is None
    assert not follower.heard("fe80::99", router_advert(managed=True))  # a home device's RA
    assert follower.heard(MODEM_LL, router_advert(managed=False, dns=("2001:db8:1::1",)))
    assert "address 2001:db8:1::1" in (tmp_path / "dhcpkit.conf").read_text()
    assert not follower.heard(MODEM_LL, router_advert(managed=False, dns=("2001:db8:1::1",)))  # no news
    follower.heard(MODEM_LL, router_advert(managed=True, dns=("2001:db8:1::1",)))
    assert "M flag" in json.loads((tmp_path / "status.json").read_text())["aside"]
    assert Follower(follower.settings).ra.managed is True  # the last RA is kept across restarts


def test_the_modems_ra_is_kept_readable_by_the_dns_service(tmp_path):
    import os
    import stat

    from appliance.services.dhcp.dhcp6 import Follower
    from appliance.services.dhcp.ra import router_advert

    old = os.umask(0o077)  # as the service runs: files for its own user
    try:
        follower = Follower(settings(tmp_path, dns_servers=(), static_leases=()))
        follower.heard(MODEM_LL, router_advert(managed=False, prefixes=("2001:db8:1::/64",)))
        ra = follower.settings.paths.ra
        assert stat.S_IMODE(os.stat(ra).st_mode) == 0o644  # the DNS service's user reads its prefixes
    finally:
        os.umask(old)


def test_an_ra_kept_beside_the_settings_by_a_root_version_is_taken_over(tmp_path):
    import json
    import os

    from appliance.services.dhcp.dhcp6 import Follower
    from appliance.services.dhcp.ra import parse_ra, router_advert

    from dataclasses import replace

    s = settings(tmp_path, dns_servers=(), static_leases=())
    os.makedirs(tmp_path / "v6")
    s = replace(s, paths=replace(s.paths, ra=str(tmp_path / "v6" / "ra.json")))
    kept = parse_ra(MODEM_LL, router_advert(managed=False, prefixes=("2001:db8:7::/64",)))
    (tmp_path / "modem-ra.json").write_text(json.dumps(kept.to_json()))
    assert Follower(s).ra == kept


def test_the_console_reads_why_the_server_stands_aside(tmp_path):
    import json

    from appliance.box.status import dhcp6_aside

    status = tmp_path / "status.json"
    assert dhcp6_aside(str(status)) is None  # not running: nothing to say
    status.write_text(json.dumps({"aside": None}))
    assert dhcp6_aside(str(status)) is None
    status.write_text(json.dumps({"aside": "the modem's RA asks for DHCPv6 addresses (M flag) ..."}))
    assert dhcp6_aside(str(status)).startswith("the modem's RA asks")


# ---------------------------------------------------------------- running as its own user (fix 5)

def test_the_config_names_the_running_user_by_number(tmp_path):
    text = dhcpkit_config(settings(tmp_path), 64535, 64535)
    assert "user 64535\ngroup 64535\ncontrol-socket-user 64535\ncontrol-socket-group 64535\n" in text


def test_a_user_id_without_a_passwd_entry_stands_for_itself():
    import pwd

    from dhcpkit.common.server import config_datatypes

    free = next(uid for uid in range(64900, 65000) if not _has_passwd(uid))
    with pytest.raises(ValueError, match="not found"):
        dhcpkit_fixes.UPSTREAM["user_name"](str(free))  # upstream: a name only
    dhcpkit_fixes.apply()
    user = config_datatypes.user_name(str(free))
    assert (user.pw_uid, user.pw_name) == (free, str(free))
    assert config_datatypes.group_name(str(free)).gr_gid == free
    assert config_datatypes.user_name("root") == pwd.getpwnam("root")  # names still resolve


def _has_passwd(uid: int) -> bool:
    import pwd
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False

