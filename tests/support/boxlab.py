"""A lab home with the box applied in its box namespace, for end-to-end tests."""
import contextlib
import os
import secrets
import shutil
import tempfile

from appliance.box.locate import box as box_for
from appliance.box.settings import parse_settings
from appliance.kernel import LinuxKernel
from appliance.lab import topology
from appliance.lab.lab import Lab
from appliance.lab.topology import LabSpec

STATIC_IP = "192.168.1.10"
POOL = ("192.168.1.20", "192.168.1.99")  # apart from the modem's .100-.200


def settings_data(**changes):
    data = {
        "ports": {"uplink": topology.UPLINK_NIC, "downlink": topology.DOWNLINK_NIC},
        "gateway": {"ip": "192.168.1.1"},  # the MAC is found by ARP
        "lan": {"prefix": "192.168.1.0/24"},
        "admin": {"address": "192.168.1.8"},
        "vproxy": {"address": "192.168.1.9", "mac": "d6:00:00:00:00:bf"},
        "dhcp": {"pools": [{"start": POOL[0], "end": POOL[1]}], "lease_time": 600,
                 "static_leases": [{"mac": topology.client_mac(3), "ip": STATIC_IP, "hostname": "printer"}]},
    }
    data.update(changes)
    return data


def service_dir(prefix: str) -> str:
    """A fresh directory the box's unprivileged services (DNS, relay, Kea) can reach, as a
    box's /var/lib/appliance: not under pytest's temporary root, which is 0700 and made so
    again by every pytest session that starts."""
    path = tempfile.mkdtemp(prefix=f"appliance-{prefix}-", dir="/tmp")
    os.chmod(path, 0o711)
    return path


@contextlib.contextmanager
def box_in_lab(tmp_dir, letter: str, clients: int = 3, apply: dict | None = None):
    """Yield (lab, box); the box is applied with `apply` (settings data) if given.

    Everything is removed afterwards, even on failure, and the test fails if
    a namespace or a BPF pin of this lab is left.
    """
    spec = LabSpec(prefix=letter + secrets.token_hex(3), clients=clients)
    lab = Lab(spec)
    work = service_dir(spec.prefix)
    box = box_for(spec.box, state=f"{work}/state", run=f"{work}/run")
    try:
        lab.up(progress=None)
        if apply is not None:
            res = box.apply(parse_settings(apply))
            assert res.ok, res.error
        yield lab, box
    finally:
        try:
            box.teardown()
        finally:
            try:
                lab.down(progress=None)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    assert [n for n in LinuxKernel().list_netns() if n.startswith(spec.prefix + "-")] == []
    assert not os.path.exists(f"/sys/fs/bpf/appliance/{spec.box}")
    # ...nor the shared pin root, once no other box (another test's) uses it.
    leftover = os.listdir("/sys/fs/bpf/appliance") if os.path.exists("/sys/fs/bpf/appliance") else []
    assert leftover or not os.path.exists("/sys/fs/bpf/appliance")
