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
    assert opts["--bind"] == "0.0.0.0:443" and int(opts["--workers"]) >= 1
    assert opts["--certfile"] == "/var/lib/appliance/tls/console.crt"
    assert opts["--keyfile"] == "/var/lib/appliance/tls/console.key"
    assert "daphne" not in console["Service"]["ExecStart"]
    for dep in ("appliance-prepare.service", "redis-server.service"):
        assert dep in console["Unit"]["Requires"] and dep in console["Unit"]["After"]
    assert "appliance-apply.service" in console["Unit"]["After"]
    novnc = (UNITS / "appliance-novnc.service").read_text()
    assert "--web-auth" in novnc and "--ssl-only" in novnc and "appliance_vnc_auth.ConsoleSession" in novnc
    # The VNC server has no TCP port (not even loopback): a unix socket in a root-only folder.
    assert "--unix-target /run/appliance-vnc/vnc.sock 6443" in novnc and ":5901" not in novnc
    session = (TOP / "image/rootfs/usr/local/sbin/appliance-vnc-session").read_text()
    x11vnc = next(line for line in session.splitlines() if line.startswith("exec x11vnc")).split()
    assert x11vnc[x11vnc.index("-rfbport") + 1] == "0" and "-no6" in x11vnc
    assert "sock=/run/appliance-vnc/vnc.sock" in session and '-unixsock "$sock"' in session
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string((UNITS / "appliance-vnc-session.service").read_text())
    assert unit["Service"]["RuntimeDirectory"] == "appliance-vnc"
    assert unit["Service"]["RuntimeDirectoryMode"] == "0700"


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
