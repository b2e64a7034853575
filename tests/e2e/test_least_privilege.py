"""The box's services in the lab run as their own unprivileged users with only
the capabilities they need, and the files holding secrets are their owner's
alone (issue 14, least privilege)."""
import subprocess
from pathlib import Path

import pytest

from appliance.services.identity import DEVICES, DHCP6, DNS, KEA, RELAY
from tests.support.boxlab import box_in_lab, settings_data

# Bits of CapEff (linux/capability.h).
CAP_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_BPF": 39}


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def mask(caps) -> int:
    return sum(1 << CAP_BITS[c] for c in caps)


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lp")
    with box_in_lab(tmp, "lp", clients=1, apply=settings_data()) as (lab, box):
        yield lab, box


@pytest.mark.parametrize("name, identity", [("dns", DNS), ("relay", RELAY), ("dhcp4", KEA), ("dhcp6", DHCP6),
                                            ("devices", DEVICES)])
def test_each_service_runs_as_its_own_user_with_its_capabilities(applied, name, identity):
    lab, box = applied
    pid = box.services.status(name).pid
    assert pid, f"{name} is not running"
    st = proc_status(pid)
    assert st["Uid"].split() == [str(identity.uid)] * 4, st["Uid"]
    assert st["Gid"].split() == [str(identity.gid)] * 4, st["Gid"]
    assert st["Groups"].strip() == ""
    assert int(st["CapEff"], 16) == mask(identity.capabilities), st["CapEff"]
    assert int(st["CapBnd"], 16) == mask(identity.capabilities), st["CapBnd"]
    assert st["NoNewPrivs"].strip() == "1"


def test_the_dns_workers_inherit_no_more(applied):
    lab, box = applied
    pid = box.services.status("dns").pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        st = proc_status(int(child))
        assert st["Uid"].split()[1] == str(DNS.uid)
        assert int(st["CapEff"], 16) & ~mask(DNS.capabilities) == 0


def test_the_services_still_answer_as_non_root(applied):
    lab, box = applied
    client = lab.spec.client(1)
    lab.dhcp(client)  # Kea, unprivileged, leases
    out = subprocess.run(["ip", "netns", "exec", client, "dig", "+time=2", "+tries=2", "+short",
                          "@192.168.1.1", "www.example.test"], capture_output=True, text=True, timeout=20)
    assert out.stdout.split() == ["198.51.100.10"]  # the DNS server, unprivileged, answers


def test_secret_files_are_their_owners_alone(applied):
    lab, box = applied
    for path, owner in ((box.layout.state_file, 0), (box.layout.relay_config, RELAY.uid)):
        st = Path(path).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, owner), path
    # The DNS server's config and state: its group (the relay), nobody else.
    for path in (box.layout.dns_config, box.layout.dns_dir):
        assert Path(path).stat().st_mode & 0o007 == 0, path
