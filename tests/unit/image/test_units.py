"""Services as systemd units (the image) and the image's own unit files."""
import configparser
from pathlib import Path

import pytest

from appliance.kernel.fake_process import FakeProcesses, FakeProgram, FakeSystemd
from appliance.services.supervisor import ServiceSpec
from appliance.services.units import SystemdUnits, unit_name, unit_text

TOP = Path(__file__).resolve().parents[3]
UNITS = TOP / "image/rootfs/etc/systemd/system"


def spec(**kw):
    base = dict(name="dhcp4", argv=("kea-dhcp4", "-c", "/var/lib/appliance/box/dhcp/kea.json"), netns="gw",
                env=(("KEA_LOCKFILE_DIR", "/run/appliance/kea"),), revision="r1", ready=())
    base.update(kw)
    return ServiceSpec(**base)


def test_unit_joins_the_namespace_and_restarts():
    text = unit_text(spec())
    assert text.startswith("# appliance spec ")
    assert "NetworkNamespacePath=/run/netns/gw" in text
    assert "Restart=always" in text
    assert "Environment=KEA_LOCKFILE_DIR=/run/appliance/kea" in text


def test_start_writes_the_unit_then_unchanged_then_restart_on_new_revision(tmp_path):
    systemd = FakeSystemd()
    procs = FakeProcesses({"systemctl": FakeProgram(handler=systemd)})
    units = SystemdUnits(tmp_path, processes=procs)
    assert units.start(spec()) == "started"
    assert (tmp_path / unit_name("dhcp4")).read_text() == unit_text(spec())
    assert ("run", None, ("systemctl", "restart", "appliance-svc-dhcp4.service")) in procs.calls
    first = systemd.active["appliance-svc-dhcp4.service"]
    assert units.start(spec()) == "unchanged"
    assert units.start(spec(revision="r2")) == "restarted"
    st = units.status("dhcp4")
    assert st.state == "running" and st.pid == systemd.active["appliance-svc-dhcp4.service"] != first
    assert units.names() == ["dhcp4"]
    units.remove("dhcp4")
    assert not (tmp_path / unit_name("dhcp4")).exists()
    assert units.status("dhcp4").state == "stopped"


def test_image_units_parse_and_order_apply_before_the_network_services():
    for path in UNITS.glob("*.service"):
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.read_string(path.read_text())
        assert cp.has_section("Service"), path.name
    apply = configparser.ConfigParser(strict=False, interpolation=None)
    apply.read_string((UNITS / "appliance-apply.service").read_text())
    before = apply["Unit"]["Before"].split()
    for unit in ("network.target", "ssh.service", "appliance-console.service"):
        assert unit in before
    assert apply["Service"]["Type"] == "oneshot"
    assert "appliance-boot-apply" in apply["Service"]["ExecStart"]
    console = configparser.ConfigParser(strict=False, interpolation=None)
    console.read_string((UNITS / "appliance-console.service").read_text())
    argv = console["Service"]["ExecStart"].replace("\\\n", " ").split()
    # The development tree's server (uvicorn workers), HTTPS on 443 with the first boot's certificate.
    assert argv[:3] == ["/opt/appliance/.venv/bin/python", "-m", "appliance.web.serve"]
    opts = dict(zip(argv[3::2], argv[4::2]))
    # Where appliance-sshd-listen says: the admin address once applied (test_image checks it live).
    assert opts["--bind"] == "${APPLIANCE_CONSOLE_BIND}" and int(opts["--workers"]) >= 1
    assert opts["--certfile"] == "/var/lib/appliance/tls/console.crt"
    assert opts["--keyfile"] == "/var/lib/appliance/tls/console.key"
    assert "daphne" not in console["Service"]["ExecStart"]
    for dep in ("appliance-prepare.service", "redis-server.service"):
        assert dep in console["Unit"]["Requires"] and dep in console["Unit"]["After"]
    assert "appliance-apply.service" in console["Unit"]["After"]
    novnc = (UNITS / "appliance-novnc.service").read_text()
    assert "--web-auth" in novnc and "--ssl-only" in novnc and "appliance_vnc_auth.ConsoleSession" in novnc
    assert "--unix-target=/run/appliance/vnc/x11vnc.sock" in novnc  # no VNC port to reach
    assert "-localhost" in (TOP / "image/rootfs/usr/local/sbin/appliance-vnc-session").read_text()


def test_units_do_not_wait_for_network_target():
    # apply-on-boot runs before network.target and waits for these units.
    assert "After=network.target" not in unit_text(spec())


def test_start_limit_is_in_the_unit_section():
    text = unit_text(spec())
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.read_string(text)
    assert cp["Unit"]["StartLimitBurst"] == "10" and "StartLimitIntervalSec" in cp["Unit"]
    assert "StartLimitBurst" not in cp["Service"]


def test_a_unit_that_fails_to_start_is_an_error_naming_it(tmp_path):
    systemd = FakeSystemd(failing={"appliance-svc-dhcp4.service"})
    units = SystemdUnits(tmp_path, processes=FakeProcesses({"systemctl": FakeProgram(handler=systemd)}))
    with pytest.raises(RuntimeError, match=r"^systemctl restart appliance-svc-dhcp4.service: Job .* failed"):
        units.start(spec())
    assert units.status("dhcp4").state == "failed"


def test_a_unit_with_an_identity_runs_unprivileged_and_sandboxed():
    from appliance.services.identity import DNS

    text = unit_text(spec(name="dns", identity=DNS, writable=("/var/lib/appliance/box/dns", "/run/appliance")))
    lines = text.splitlines()
    for line in ("User=appliance-dns", "Group=appliance-vproxy",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_BPF CAP_NET_ADMIN",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_BPF CAP_NET_ADMIN", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "SystemCallFilter=@system-service",
                 "ReadWritePaths=-/var/lib/appliance/box/dns -/run/appliance", "LimitNOFILE=65536"):
        assert line in lines, line
    # Root services (the watchdog enters namespaces) keep a read-only system all the same.
    root = unit_text(spec()).splitlines()
    assert "NoNewPrivileges=yes" in root and "ProtectSystem=strict" in root
    assert not any(line.startswith(("User=", "CapabilityBoundingSet=")) for line in root)


def test_the_image_makes_the_services_users_with_the_ids_the_code_uses():
    from appliance.services.identity import DNS, KEA, RELAY, VPROXY_GID

    text = (TOP / "image/rootfs/usr/lib/sysusers.d/appliance.conf").read_text()
    rows = {line.split()[1]: line.split()[2] for line in text.splitlines() if line and not line.startswith("#")}
    assert rows["appliance-vproxy"] == str(VPROXY_GID)
    assert rows["appliance-dns"] == f"{DNS.uid}:{DNS.gid}"
    assert rows["appliance-relay"] == f"{RELAY.uid}:{RELAY.gid}"
    assert rows["appliance-kea"] == str(KEA.uid) == str(KEA.gid)


def test_redis_listens_on_a_unix_socket_with_a_password_and_vnc_on_no_port():
    redis = (UNITS / "redis-server.service.d/appliance.conf").read_text()
    assert "--port 0" in redis and "--unixsocket /run/redis/redis-server.sock" in redis
    assert "--include /var/lib/appliance/redis/auth.conf" in redis
    vnc = (TOP / "image/rootfs/usr/local/sbin/appliance-vnc-session").read_text()
    assert "-unixsock /run/appliance/vnc/x11vnc.sock -rfbport 0 -no6 -rfbportv6 -1" in vnc
    novnc = (UNITS / "appliance-novnc.service").read_text()
    assert "--unix-target=/run/appliance/vnc/x11vnc.sock" in novnc


def test_celery_gets_the_unix_socket_url_in_its_own_spelling(monkeypatch):
    import importlib

    import appliance.web.settings as settings

    monkeypatch.setenv("APPLIANCE_REDIS_URL", "unix://:pw@/run/redis/redis-server.sock?db=0")
    try:
        s = importlib.reload(settings)
        assert s.CACHES["default"]["LOCATION"] == "unix://:pw@/run/redis/redis-server.sock?db=0"
        assert s.CELERY_BROKER_URL == "redis+socket://:pw@/run/redis/redis-server.sock?virtual_host=0"
    finally:
        monkeypatch.undo()
        importlib.reload(settings)
