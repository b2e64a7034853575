"""`make demo`: the lab plus the box plus the console, until Ctrl-C.

Brings the lab up, applies the box in the lab's box namespace with
`demo-settings.yaml` (clients then take their leases from the box, as a
home's devices would), applies the database migrations, and starts Redis, a
Celery worker and the console's ASGI server (uvicorn workers,
`appliance.web.serve`) as children of this process, through the kernel
boundary; the console manages that same box. Ctrl-C (or SIGTERM) stops every
child it started (and the workers they forked), tears the box down and takes
the lab down.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from appliance.box import locate
from appliance.box.settings import load_settings
from appliance.kernel.base import Processes
from appliance.lab.lab import Lab
from appliance.lab.topology import LabSpec

SETTINGS = Path(__file__).with_name("demo-settings.yaml")
REPO = Path(__file__).resolve().parents[2]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, what: str, processes: Processes, pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        code = processes.wait(pid, 0)
        if code is not None:
            raise RuntimeError(f"{what} exited with code {code}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} does not listen on 127.0.0.1:{port}")
        time.sleep(0.1)


def run(prefix: str, clients: int, port: int, redis_port: int, out=print, apply: bool = True) -> int:
    spec = LabSpec(prefix=prefix, clients=clients)
    lab = Lab(spec)
    processes: Processes = lab.kernel
    children: list[tuple[str, int]] = []
    state = Path(os.environ.get("APPLIANCE_STATE_DIR", REPO / "var"))
    state.mkdir(parents=True, exist_ok=True)
    # Where every tool looks for the box of this namespace (`--netns lab-box`).
    box = locate.box(spec.box)
    env = {**os.environ, "APPLIANCE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "DJANGO_SETTINGS_MODULE": "appliance.web.settings",
           # The console manages the demo's box, inside the lab.
           locate.HOST_NETNS: spec.box}
    bindir = Path(sys.executable).parent

    def start(name, argv) -> int:
        pid = processes.spawn(None, argv, log=str(state / f"demo-{name}.log"), env=env)
        children.append((name, pid))
        return pid

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        out(f"demo: lab {prefix} up")
        lab.up(progress=None)
        if apply:
            res = box.apply(load_settings(SETTINGS), progress=None)
            if not res.ok:
                raise RuntimeError(f"the box did not apply: {res.error}")
            out(f"demo: box applied in {spec.box} ({SETTINGS.name})")
        for c in spec.client_names:
            lease = lab.dhcp(c)
            out(f"demo: {c} leased {lease.address} from {lease.server_identifier}")
        migrate = processes.run(None, [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env=env,
                                cwd=str(REPO))
        if migrate.returncode != 0:
            raise RuntimeError(f"manage.py migrate failed:\n{(migrate.stderr or migrate.stdout)[-2000:]}")
        # The first run's one-time code (none once the admin exists): /setup/ asks for it.
        code = processes.run(None, [sys.executable, "manage.py", "setupcode"], env=env, cwd=str(REPO))
        if code.returncode != 0:
            raise RuntimeError(f"manage.py setupcode failed:\n{(code.stderr or code.stdout)[-2000:]}")
        setup_code = code.stdout.strip()
        if _port_open(redis_port):
            out(f"demo: using the Redis already on 127.0.0.1:{redis_port}")
        else:
            redis = start("redis", [shutil.which("redis-server") or "/usr/bin/redis-server",
                                    "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                                    "--appendonly", "no"])
            _wait_port(redis_port, "redis-server", processes, redis)
        start("celery", [str(bindir / "celery"), "-A", "appliance.web.celery", "worker",
                         "--concurrency", "1", "--loglevel", "INFO"])
        web = start("web", [sys.executable, "-m", "appliance.web.serve", "--bind", f"127.0.0.1:{port}"])
        _wait_port(port, "the console (appliance.web.serve)", processes, web)
        out(f"demo: console at http://127.0.0.1:{port}/  (logs in {state}/demo-*.log)")
        if setup_code:
            out(f"demo: setup code {setup_code}  (the first visit, /setup/, asks for it; it works once)")
        out(f"demo: try  ip netns exec {spec.client(1)} curl http://www.proxied.test/   (relayed by the box)")
        out(f"demo:      ip netns exec {spec.client(1)} dig @192.168.1.1 www.blocked.test   (blocked)")
        out(f"demo:      ./manage.py ofctl dump-flows vswitch --netns={spec.box}   (the box's flows, live counters)")
        out(f"demo:      ./manage.py dhcp leases --netns={spec.box}   (the box's leases)")
        out("demo: Ctrl-C stops everything")
        while not stopping:
            for name, pid in children:
                code = processes.wait(pid, 0)
                if code is not None:
                    raise RuntimeError(f"{name} exited with code {code}; see {state}/demo-{name}.log")
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as e:
        out(f"demo: {e}")
        return 1
    finally:
        out("demo: stopping")
        for name, pid in reversed(children):
            if processes.alive(pid):
                processes.stop(pid, timeout=10, group=True)
        box.teardown()
        # The lab's box goes with the lab: its state (leases, fake IPs, learned modem) is of
        # namespaces that no longer exist, and a host must not keep a stray box directory.
        shutil.rmtree(box.layout.state_dir, ignore_errors=True)
        lab.down(progress=None)
        out("demo: stopped, box torn down with its state, lab down")
