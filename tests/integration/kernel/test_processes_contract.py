"""The process half of the kernel boundary: the same assertions on the shipped
fake and on Linux.

Each test runs twice: on `FakeKernel` (told what the programs used here do,
as `FakeProgram`s) and on `LinuxKernel` in a uniquely named namespace that
the fixture removes. A test that passes on one side only is a fake that lies.
Also here: reading a namespace that does not exist is an error and creates
nothing (pyroute2 would create it).
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time

import pytest

from appliance.kernel import FakeKernel, KernelError, LinuxKernel
from appliance.kernel.fake_process import FakeProgram

PY = sys.executable
PORT = 47123
SLEEPER = ("sleep", "300")
# Catches SIGHUP (a reload), then listens: once it listens, the handler is in place.
LISTENER = (PY, "-c", "import signal, socket, time\n"
                      "signal.signal(signal.SIGHUP, lambda *a: None)\n"
                      f"s = socket.socket(); s.bind(('127.0.0.1', {PORT})); s.listen()\n"
                      "while True: time.sleep(60)\n")
FAILING = ("sh", "-c", "echo oops >&2; exit 3")
CAT = ("cat",)
FAMILY = ("bash", "-c", "sleep 300 & sleep 300")  # a process with a child in its group

PROGRAMS = {
    "sleep": FakeProgram(),
    PY: FakeProgram(listens=(f"tcp/{PORT}",), catches=frozenset({signal.SIGHUP})),
    "sh": FakeProgram(exit_code=3, stderr="oops\n"),
    "cat": FakeProgram(handler=lambda argv, stdin: (0, stdin or "", "")),
    "bash": FakeProgram(),
}


@pytest.fixture(params=["fake", "linux"])
def kernel(request):
    ns = "kp" + secrets.token_hex(4)
    k = FakeKernel(programs=PROGRAMS) if request.param == "fake" else LinuxKernel()
    k.add_netns(ns)
    try:
        yield k, ns
    finally:
        for pid in k.netns_pids(ns):
            k.stop(pid)
        k.del_netns(ns)
    assert ns not in k.list_netns()


def wait_for(predicate, what: str, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def test_a_program_runs_in_its_namespace_until_stopped(kernel):
    k, ns = kernel
    pid = k.spawn(ns, SLEEPER)
    assert k.alive(pid) and pid in k.netns_pids(ns)
    assert k.cmdline(pid) == SLEEPER
    assert k.wait(pid, 0) is None  # still running
    k.stop(pid)
    assert not k.alive(pid) and pid not in k.netns_pids(ns)
    assert k.cmdline(pid) == ()
    assert k.signal(pid, signal.SIGTERM) is False  # gone: nothing to signal


def test_a_program_that_ends_reports_its_status(kernel):
    k, ns = kernel
    pid = k.spawn(ns, FAILING)
    assert wait_for(lambda: k.wait(pid, 0.1), "the exit status") == 3
    assert not k.alive(pid)
    res = k.run(ns, FAILING)
    assert (res.returncode, res.stdout, res.stderr.strip()) == (3, "", "oops")
    assert k.run(ns, CAT, input="hello\n").stdout == "hello\n"


def test_a_socket_listens_while_its_process_runs_and_a_caught_signal_keeps_it(kernel):
    k, ns = kernel
    assert not k.listening(ns, "tcp", PORT)
    pid = k.spawn(ns, LISTENER)
    wait_for(lambda: k.listening(ns, "tcp", PORT), f"tcp/{PORT} listening in {ns}")
    assert not k.listening(ns, "udp", PORT)
    assert k.signal(pid, signal.SIGHUP) is True
    assert k.alive(pid) and k.listening(ns, "tcp", PORT)
    assert k.signal(pid, signal.SIGKILL) is True
    assert k.wait(pid, 10) == -signal.SIGKILL
    assert not k.listening(ns, "tcp", PORT)


def test_stopping_a_group_ends_the_children_too(kernel):
    k, ns = kernel
    pid = k.spawn(ns, FAMILY)
    assert pid in k.netns_pids(ns)
    k.stop(pid, group=True)
    wait_for(lambda: k.netns_pids(ns) == [], "nothing left in the namespace", seconds=5)


def test_a_detached_program_is_nobodys_child_here(kernel):
    k, ns = kernel
    assert k.spawn_detached(ns, SLEEPER) is None
    pid = wait_for(lambda: next((p for p in k.netns_pids(ns) if k.cmdline(p) == SLEEPER), None),
                   "the detached program in the namespace")
    with pytest.raises(KernelError, match="not started here"):
        k.wait(pid, 0)
    k.stop(pid)
    assert not k.alive(pid)


def test_a_missing_program_or_namespace_is_an_error_at_once(kernel):
    k, ns = kernel
    missing = ns + "-gone"
    with pytest.raises(KernelError, match=r"^no-such-program-kproc: not installed"):
        k.spawn(ns, ("no-such-program-kproc",))
    with pytest.raises(KernelError, match=r"^no-such-program-kproc: not installed"):
        k.run(ns, ("no-such-program-kproc",))
    for start in (k.spawn, k.run, k.spawn_detached):
        with pytest.raises(KernelError, match=rf"^netns {missing}: no such network namespace"):
            start(missing, SLEEPER)
    assert k.netns_pids(ns) == []
    assert missing not in k.list_netns()


def test_reading_a_namespace_that_does_not_exist_is_an_error_and_creates_nothing(kernel):
    k, ns = kernel
    missing = ns + "-gone"
    reads = [
        lambda: k.links(missing),
        lambda: k.addresses(missing, "lo"),
        lambda: k.routes(missing),
        lambda: k.get_sysctls(missing, ["net.ipv4.ip_forward"]),
        lambda: k.nft_tables(missing),
        lambda: k.nft_table(missing, "ip", "relay"),
        lambda: k.listening(missing, "tcp", 80),
        lambda: k.arp_probe(missing, "lo", "192.0.2.1", timeout=0.1),
    ]
    for read in reads:
        with pytest.raises(KernelError, match=rf"^netns {missing}: no such network namespace"):
            read()
    assert k.netns_pids(missing) == []  # a namespace that is not there has no processes
    assert missing not in k.list_netns()
    assert not os.path.exists(f"/run/netns/{missing}")
    # The namespace that is there reads as usual.
    assert [link.name for link in k.links(ns)] == ["lo"]
