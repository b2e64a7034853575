"""The image's VNC server as its unit files start it: a unix socket, no TCP.

Real Xvfb, x11vnc and websockify (Debian's), with the arguments read from
image/rootfs (the session script's x11vnc line, the noVNC unit's target);
only the display, the folder and websockify's port and TLS differ.
"""
import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import websockets

from tests.support.ports import free_port

TOP = Path(__file__).resolve().parents[3]
ROOTFS = TOP / "image/rootfs"
IMAGE_SOCK = "/run/appliance/vnc/x11vnc.sock"
TOOLS = ("Xvfb", "x11vnc", "websockify")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="needs x11vnc, xvfb and websockify (make setup installs them)")


def _x11vnc_argv(display: str, sock: str) -> list[str]:
    """The session script's x11vnc line, on our display and socket."""
    script = (ROOTFS / "usr/local/sbin/appliance-vnc-session").read_text()
    line = next(x for x in script.splitlines() if x.startswith("exec x11vnc"))
    return [display if a == ":1" else sock if a == IMAGE_SOCK else a
            for a in line.rstrip("\\").split()[1:] + _continued(script, line)]


def _continued(script: str, line: str) -> list[str]:
    """The arguments on the lines a trailing backslash continues."""
    lines = script.splitlines()
    out, i = [], lines.index(line)
    while lines[i].rstrip().endswith("\\"):
        i += 1
        out += lines[i].rstrip("\\").split()
    return out


def _wait(pred, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:g} s")


@pytest.fixture
def session(tmp_path):
    folder = tmp_path / "vnc"
    folder.mkdir(mode=0o700)
    sock = str(folder / "x11vnc.sock")
    display = f":{100 + uuid.uuid4().int % 400}"
    procs = []
    try:
        procs.append(subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: os.path.exists(f"/tmp/.X11-unix/X{display[1:]}"), "Xvfb up")
        argv = _x11vnc_argv(display, sock)
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: os.path.exists(sock), "x11vnc's socket")
        yield sock, procs[-1].pid, argv
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(10)


def test_x11vnc_answers_on_its_unix_socket_and_opens_no_tcp_port(session):
    sock, pid, argv = session
    assert "-display" in argv and argv[argv.index("-display") + 1] != ":1"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock)
        assert s.recv(12) == b"RFB 003.008\n"
    listening = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    assert f"pid={pid}," not in listening, listening  # no TCP port, v4 or v6


def test_websockify_reaches_it_through_the_units_unix_target(session):
    sock, _, _ = session
    unit = (ROOTFS / "etc/systemd/system/appliance-novnc.service").read_text()
    assert f"--unix-target={IMAGE_SOCK} " in unit
    port = free_port()
    proxy = subprocess.Popen(["websockify", "--unix-target", sock, f"127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        _wait(up, "websockify listening")

        async def banner():
            async with websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=["binary"]) as ws:
                return await asyncio.wait_for(ws.recv(), 10)
        assert asyncio.run(banner()) == b"RFB 003.008\n"
    finally:
        proxy.terminate()
        proxy.wait(10)
