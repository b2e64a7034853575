"""The console as deployed, for browser tests and the bench: Redis, a Celery worker and the ASGI server.

Each on a free port, against a temporary database and state directory, with
the Box on persistent fakes (`tests.support.fakebox`). Every process is started
in its own session and killed by its process group on stop.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} does not listen on {port}")
        time.sleep(0.1)


def web_argv(server: str, workers: int, port: int, tls: tuple[Path, Path] | None = None) -> list[str]:
    """The console's ASGI server as the box runs it (uvicorn, N workers, HTTPS with `tls`); daphne for comparison."""
    if server == "daphne":
        return [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "appliance.web.asgi:application"]
    https = ["--certfile", str(tls[0]), "--keyfile", str(tls[1])] if tls else []
    return [sys.executable, "-m", "appliance.web.serve", "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
            *https]


def self_signed(into: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made as the image's first boot makes its own."""
    crt, key = into / "console.crt", into / "console.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


class Stack:
    def __init__(self, confirm_timeout: float = 8, step_delay: float = 0.4, fakes: bool = True,
                 server: str = "uvicorn", workers: int = 2, env: dict | None = None, root: Path = ROOT,
                 https: bool = False):
        self.server, self.workers, self.root = server, workers, Path(root)
        self.tmp = Path(tempfile.mkdtemp(prefix="appliance-web-e2e-"))
        self.tmp.chmod(0o711)  # the box's unprivileged services reach their directories inside
        self.redis_port, self.port = free_port(), free_port()
        self.tls = self_signed(self.tmp) if https else None
        self.url = f"{'https' if https else 'http'}://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.setup_code = ""
        self.env = {**os.environ,
                    "DJANGO_SETTINGS_MODULE": "appliance.web.settings",
                    "APPLIANCE_STATE_DIR": str(self.tmp),
                    "APPLIANCE_DB": str(self.tmp / "db.sqlite3"),
                    "APPLIANCE_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                    "APPLIANCE_BOX_STATE": str(self.tmp / "box"),
                    "APPLIANCE_BOX_RUN": str(self.tmp / "run"),
                    "APPLIANCE_CONFIRM_TIMEOUT": str(confirm_timeout),
                    "APPLIANCE_FAKE_STEP_DELAY": str(step_delay),
                    "DJANGO_SECRET_KEY": "e2e-" + self.tmp.name,
                    "PYTHONPATH": str(self.root)}
        self.env.update(env or {})
        if fakes:
            self.env["APPLIANCE_BOX_FACTORY"] = "tests.support.fakebox:make_box"
            self.env["APPLIANCE_SOURCES"] = "tests.support.fakebox:make_sources"
        (self.tmp / "box").mkdir()

    def _start(self, name, argv):
        log = open(self.tmp / f"{name}.log", "ab")
        env = self.env
        if name == "redis":
            # Redis hangs at start under libfaketime (recursive clock_gettime); its clock
            # is not what a clock-jump test moves.
            env = {k: v for k, v in env.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}
        p = subprocess.Popen(argv, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs[name] = p
        return p

    def start(self) -> "Stack":
        try:
            redis = self._start("redis", [shutil.which("redis-server") or "/usr/bin/redis-server", "--bind",
                                          "127.0.0.1", "--port", str(self.redis_port), "--save", "",
                                          "--appendonly", "no"])
            wait_port(self.redis_port, redis, "redis-server")
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], env=self.env, cwd=self.root,
                           check=True)
            self.setup_code = self.read_setup_code()
            self.start_worker()
            web = self._start("web", web_argv(self.server, self.workers, self.port, self.tls))
            wait_port(self.port, web, self.server)
        except BaseException:
            self.stop()
            raise
        return self

    def read_setup_code(self) -> str:
        """The first run's code as `make demo` shows it to its user (`manage.py setupcode`); "" if none."""
        out = subprocess.run([sys.executable, "manage.py", "setupcode"], env=self.env, cwd=self.root,
                             capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    def start_worker(self) -> subprocess.Popen:
        p = self._start("celery", [str(BIN / "celery"), "-A", "appliance.web.celery", "worker", "--pool", "solo",
                                   "--concurrency", "1", "--loglevel", "INFO", "--without-heartbeat",
                                   "--without-gossip", "--without-mingle"])
        # Ready when it logs so (the startup check has run by then).
        deadline = time.monotonic() + 60
        while b"ready." not in (self.tmp / "celery.log").read_bytes():
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("celery worker did not start:\n" + (self.tmp / "celery.log").read_text()[-3000:])
            time.sleep(0.2)
        return p

    def kill(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        # The log is appended to by the next one; mark the cut.
        with open(self.tmp / f"{name}.log", "ab") as f:
            f.write(b"\n--- killed ---\n")
        if name == "celery":
            (self.tmp / "celery.log").rename(self.tmp / f"celery-killed-{time.time_ns()}.log")

    def stop(self) -> None:
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(10)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait()
        self.procs.clear()

    def manage(self, *args) -> str:
        return subprocess.run([sys.executable, "manage.py", *args], env=self.env, cwd=self.root, check=True,
                              capture_output=True, text=True).stdout

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
