"""`Lab` on the shipped fake kernel: topology reconciled, processes tracked by
PID, a dead one restarted alone, a broken one named with its output, and
nothing left after `down` (the same machinery runs the home lab and the relay's)."""
import signal
import sys

import pytest

from appliance.kernel import FakeKernel, KernelError
from appliance.kernel.fake_process import FakeProgram
from appliance.lab.lab import Lab
from appliance.lab.topology import LabSpec

PROGRAMS = {
    sys.executable: FakeProgram(listens=("tcp/80", "udp/9001")),  # the lab's web server and its UDP echo
    "dnsmasq": FakeProgram(listens=("udp/53", "udp/67", "udp/547")),
}


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSpec(prefix="f", clients=2), FakeKernel(PROGRAMS), run_root=tmp_path / "run",
               netns_etc=tmp_path / "netns")


def test_up_builds_the_topology_and_starts_the_processes_then_a_second_up_changes_nothing(lab, tmp_path):
    changes = lab.up(progress=None)
    assert "+ netns f-modem" in changes
    assert {c.split(" (pid")[0] for c in changes if c.startswith("+ process")} == {
        "+ process web in f-internet", "+ process dns in f-internet", "+ process modem in f-modem"}
    st = lab.status()
    assert st["up"] and set(st["processes"]) == {"web", "dns", "modem"}
    for p in st["processes"].values():
        assert p["pid"] in lab.kernel.netns_pids(p["ns"])
    assert (tmp_path / "netns/f-client2/resolv.conf").read_text() == ""
    assert lab.up(progress=None) == []


def test_a_dead_process_is_started_again_alone(lab):
    lab.up(progress=None)
    pid = lab.pid("web")
    lab.kernel.signal(pid, signal.SIGKILL)
    assert not lab.status()["up"]
    changes = lab.up(progress=None)
    assert [c.split(" (pid")[0] for c in changes] == ["+ process web in f-internet"]
    assert lab.pid("web") != pid and lab.status()["up"]


def test_a_process_that_exits_at_once_fails_the_up_with_its_name(tmp_path):
    programs = {**PROGRAMS, "dnsmasq": FakeProgram(exit_code=1)}
    lab = Lab(LabSpec(prefix="f", clients=1), FakeKernel(programs), run_root=tmp_path / "run",
              netns_etc=tmp_path / "netns")
    with pytest.raises(RuntimeError, match=r"^lab: dns in f-internet: exited; its output"):
        lab.up(progress=None)


def test_a_program_that_is_not_installed_is_named(tmp_path):
    lab = Lab(LabSpec(prefix="f", clients=1), FakeKernel({"dnsmasq": PROGRAMS["dnsmasq"]}),
              run_root=tmp_path / "run", netns_etc=tmp_path / "netns")
    with pytest.raises(KernelError, match=r": not installed"):
        lab.up(progress=None)


def test_one_process_is_restarted_signalled_and_stopped_by_name(lab):
    lab.up(progress=None)
    old = lab.pid("modem")
    lab.start(LabSpec(prefix="f").processes(str(lab.rundir))[2])
    assert lab.pid("modem") != old and not lab.kernel.alive(old)
    assert lab.signal("modem", signal.SIGHUP) is True
    assert (lab.pid("modem"), signal.SIGHUP) in lab.kernel.signals
    pid = lab.pid("modem")
    lab.stop("modem", signal.SIGKILL)
    assert lab.pid("modem") is None and not lab.kernel.alive(pid)
    assert lab.signal("modem", signal.SIGHUP) is False


def test_down_leaves_nothing(lab, tmp_path):
    lab.up(progress=None)
    pids = [p["pid"] for p in lab.status()["processes"].values()]
    lab.down(progress=None)
    assert lab.kernel.list_netns() == []
    assert not any(lab.kernel.alive(p) for p in pids)
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "netns/f-client1").exists()
