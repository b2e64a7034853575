"""One way to find the box: the CLI, the console, `dhcp leases` and the demo agree on where it is."""
import io
import json
import socket
import threading

import pytest
from django.core.management import call_command

from appliance.box import locate
from appliance.box.layout import Layout
from appliance.box.placement import Placement
from appliance.services.supervisor import Supervisor
from appliance.services.units import SystemdUnits


def test_the_machine_and_a_lab_namespace_by_default():
    assert locate.layout(env={}) == Layout("/var/lib/appliance", "/run/appliance")
    assert locate.placement(env={}) == Placement()
    assert locate.layout("lab-box", env={}) == Layout("/var/lib/appliance/lab-box", "/run/appliance/lab-box")
    assert locate.placement("lab-box", env={}) == Placement.inside("lab-box")


def test_variables_name_the_box_and_options_win():
    env = {"APPLIANCE_HOST_NETNS": "k-box", "APPLIANCE_BOX_STATE": "/s", "APPLIANCE_BOX_RUN": "/r"}
    assert locate.placement(env=env) == Placement.inside("k-box")
    assert locate.layout(env=env) == Layout("/s", "/r")
    assert locate.layout(env={"APPLIANCE_HOST_NETNS": "k-box"}) == Layout("/var/lib/appliance/k-box",
                                                                          "/run/appliance/k-box")
    assert locate.layout("other", "/s2", "/r2", env=env) == Layout("/s2", "/r2")
    assert locate.placement("other", env=env) == Placement.inside("other")


def test_systemd_runs_the_services_only_when_the_environment_says_so():
    box = locate.box("lab-box", "/s", "/r", env={"APPLIANCE_SERVICES": "systemd"})
    assert isinstance(box.services, SystemdUnits) and box.applier.services is box.services
    box = locate.box("lab-box", "/s", "/r", env={})
    assert isinstance(box.services, Supervisor) and str(box.services.dir) == "/r/services"


class FakeKea:
    """Kea's control socket answering `lease4-get-all` with one lease, as kea-dhcp4 does."""

    LEASE = {"ip-address": "192.168.1.70", "hw-address": "02:00:00:00:00:70", "hostname": "tv",
             "cltt": 1000, "valid-lft": 3600, "state": 0, "subnet-id": 1}

    def __init__(self, path: str):
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                assert json.loads(conn.recv(65536))["command"] == "lease4-get-all"
                conn.sendall(json.dumps({"result": 0, "arguments": {"leases": [self.LEASE]}}).encode())

    def close(self):
        self.server.close()


@pytest.fixture
def lab_box_env(tmp_path, monkeypatch, settings):
    """The environment `make demo` gives its console: the box in a lab namespace."""
    monkeypatch.setenv("APPLIANCE_HOST_NETNS", "lab-box")
    monkeypatch.setenv("APPLIANCE_BOX_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("APPLIANCE_BOX_RUN", str(tmp_path / "run"))
    settings.APPLIANCE_BOX_FACTORY = ""
    (tmp_path / "run" / "dhcp").mkdir(parents=True)
    kea = FakeKea(locate.box().layout.kea.socket)
    yield
    kea.close()


def test_dhcp_leases_reads_the_box_the_console_and_the_demo_manage(lab_box_env):
    from appliance.web import boxes

    demo_box = locate.box("lab-box")  # as appliance/lab/demo.py makes it
    assert boxes.get_box().layout == demo_box.layout and boxes.get_box().placement == demo_box.placement
    out = io.StringIO()
    call_command("dhcp", "leases", stdout=out)
    assert "02:00:00:00:00:70" in out.getvalue() and "192.168.1.70" in out.getvalue(), out.getvalue()
    out = io.StringIO()
    call_command("dhcp", "leases", "--netns", "lab-box", "--json", stdout=out)
    assert json.loads(out.getvalue())[0]["hostname"] == "tv"
