"""One appliance VM in qemu for the image tests.

Two virtual NICs, each on its own qemu user network with `restrict=on`, so
nothing leaves the VM except through the forwarded ports on 127.0.0.1:

- uplink (first NIC): the "modem" is qemu's host at 192.168.1.1;
- downlink (second NIC): the home side; qemu's host there (192.168.1.2) is
  a home client, and 127.0.0.1:PORT forwards to the admin address's 443 and
  22, the way a person at home reaches the console and SSH.

The first boot is provisioned by a seed disk (FAT, label APPL-SEED)
carrying settings.yaml and the test's SSH public key, as a person would
provision a box from a USB stick.
"""
from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ADMIN = "192.168.1.8"
MODEM_MAC = "52:55:c0:a8:01:01"  # qemu's user-net host at 192.168.1.1
UPLINK_MAC, DOWNLINK_MAC = "52:54:00:a0:00:01", "52:54:00:a0:00:02"
UPLINK, DOWNLINK = "ens3", "ens4"  # pc machine, slots 3 and 4
OVMF = "/usr/share/ovmf/OVMF.fd"

SETTINGS = f"""\
version: 2
ports: {{uplink: {UPLINK}, downlink: {DOWNLINK}}}
gateway: {{ip: 192.168.1.1, mac: "{MODEM_MAC}"}}
lan: {{prefix: 192.168.1.0/24}}
admin: {{address: {ADMIN}, guarded_ports: [22, 80, 443, 6443]}}
vproxy: {{address: 192.168.1.9, mac: "02:00:5e:10:00:09"}}
dhcp:
  pools: [{{start: 192.168.1.100, end: 192.168.1.199}}]
  lease_time: {{lease_time}}
"""


def settings(lease_time: int = 3600) -> str:
    return SETTINGS.replace("{lease_time}", str(lease_time))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_seed(path: Path, files: dict[str, str]) -> Path:
    path.unlink(missing_ok=True)
    subprocess.run(["mkfs.vfat", "-n", "APPL-SEED", "-C", str(path), "4096"], check=True,
                   capture_output=True)
    for name, text in files.items():
        src = path.with_name(f"seed-{name}")
        src.write_text(text)
        subprocess.run(["mcopy", "-i", str(path), str(src), f"::{name}"], check=True)
    return path


@dataclass
class VM:
    disk: Path
    workdir: Path
    key: Path
    seed: Path | None = None
    https_port: int = field(default_factory=free_port)
    ssh_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    started: float = 0.0

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    def argv(self) -> list[str]:
        # Software emulation by default: nested KVM on CI machines fails in
        # odd ways (this one's rejects MSRs); IMAGE_TEST_KVM=1 opts in.
        accel = ["-accel", "kvm", "-cpu", "host"] if os.environ.get("IMAGE_TEST_KVM") == "1" \
            else ["-accel", "tcg,thread=multi", "-cpu", "max"]
        fwd = f"hostfwd=tcp:127.0.0.1:{self.https_port}-{ADMIN}:443," \
              f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-{ADMIN}:22"
        argv = ["qemu-system-x86_64", "-machine", "pc", *accel, "-smp", "2", "-m", "2048",
                "-bios", OVMF, "-nographic", "-serial", f"file:{self.serial_log}", "-monitor", "none",
                "-drive", f"file={self.disk},format=raw,if=virtio",
                "-netdev", "user,id=up,restrict=on,net=192.168.1.0/24,host=192.168.1.1,dhcpstart=192.168.1.200",
                "-device", f"virtio-net-pci,netdev=up,mac={UPLINK_MAC},addr=0x3",
                "-netdev", f"user,id=down,restrict=on,net=192.168.1.0/24,host=192.168.1.2,"
                           f"dhcpstart=192.168.1.210,{fwd}",
                "-device", f"virtio-net-pci,netdev=down,mac={DOWNLINK_MAC},addr=0x4"]
        if self.seed:
            argv += ["-drive", f"file={self.seed},format=raw,if=virtio,readonly=on"]
        return argv

    def start(self) -> None:
        self.serial_log.unlink(missing_ok=True)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / "qemu.stderr", "w"), start_new_session=True)

    def stop(self, timeout: float = 120) -> None:
        """Power off cleanly over SSH, or kill qemu."""
        if not self.proc or self.proc.poll() is not None:
            return
        try:
            self.ssh("systemctl poweroff", check=False, timeout=20)
            self.proc.wait(timeout)
        except Exception:  # noqa: BLE001 - a hung guest is killed below
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def login_page(self) -> tuple[int, str]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the box's certificate is self-signed at first boot
        req = urllib.request.Request(f"https://127.0.0.1:{self.https_port}/login/")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def wait_console(self, timeout: float) -> float:
        """Seconds from qemu's start until the console's login page answers."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"qemu exited; see {self.serial_log}")
            try:
                status, _ = self.login_page()
                if status == 200:
                    return time.monotonic() - self.started
                last = f"HTTP {status}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(1)
        raise AssertionError(f"console not answering after {timeout:.0f} s ({last}); see {self.serial_log}")

    def put(self, path: str, text: str) -> None:
        self.ssh(f"cat > {path}", stdin=text)

    def ssh(self, command: str, check: bool = True, timeout: float = 120,
            stdin: str | None = None) -> subprocess.CompletedProcess:
        argv = ["ssh", "-i", str(self.key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.workdir}/known_hosts",
                "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "root@127.0.0.1", command]
        for attempt in range(3):
            res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
            # 255 before the session began (sshd restarting): try again; never re-run a command.
            if res.returncode != 255 or "kex_exchange_identification" not in res.stderr:
                break
            time.sleep(3)
        if check and res.returncode != 0:
            raise AssertionError(f"ssh {command!r}: status {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res

    def wait_ssh(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ssh("true", check=False, timeout=30).returncode == 0:
                return
            time.sleep(2)
        raise AssertionError(f"SSH on {ADMIN}:22 not answering after {timeout:.0f} s")


def copy_disk(src: Path, dst: Path) -> Path:
    dst.unlink(missing_ok=True)
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    return dst


def keypair(workdir: Path) -> Path:
    key = workdir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def clean(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
