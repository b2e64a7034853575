"""Load the datapath objects of this worktree into Debian 12's 6.1 kernel, in the built image under qemu.

    .venv/bin/python tests/image/dp_load_61.py build/image/appliance.raw   (as root)

The production and the test build of the box's own table (failsafe open, so the
health register too) are loaded with the image's libbpf through the verifier
of its kernel and closed again; nothing is attached. Prints the kernel and
"loaded <object>" for each; exits non-zero when the verifier refuses one.
The image boots under TCG as in tests/image (about 7 minutes here; with
IMAGE_TEST_KVM=1 the guest never answered SSH on this machine).
"""
import base64
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import vm  # noqa: E402

from appliance.box.plan import Observed, plan
from appliance.box.settings import default_settings
from appliance.box.switchload import DatapathLoader
from appliance.switch.datapath.build import build
from appliance.switch.datapath.compiler import compile_table

LOAD = """
import sys
from appliance.kernel.libbpf import LinuxBpf
for path in sys.argv[1:]:
    obj = LinuxBpf().load(path, ("dp_ingress",))
    print("loaded", path, flush=True)
    obj.close()
"""


def objects(out: Path) -> list[Path]:
    s = default_settings("enp5s0", "enp1s0", gateway={"ip": "192.168.1.1", "mac": "18:00:00:00:00:e8"},
                         failsafe="open")
    p = plan(s, Observed.of({"enp5s0": "5c:00:00:00:00:7d", "enp1s0": "5c:00:00:00:00:7c"}))
    br = DatapathLoader.bridge_of(p.switch)
    prog = compile_table(br.flows, br.port_names)
    return [build(prog.source, out), build(prog.source, out, test=True)]


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="dp-load-61-"))
    work.mkdir(parents=True, exist_ok=True)
    objs = objects(work / "obj")
    key = vm.keypair(work)
    disk = vm.copy_disk(Path(sys.argv[1]), work / "box.raw")
    seed = vm.make_seed(work / "seed.img", {"settings.yaml": vm.settings(3600),
                                            "authorized_keys": key.with_suffix(".pub").read_text()})
    machine = vm.VM(disk=disk, workdir=work, key=key, seed=seed)
    t0 = time.monotonic()
    machine.start()
    try:
        took = machine.wait_console(1500)
        print("console after", round(took), "s", flush=True)
        machine.wait_ssh(300)
        print("ssh after", round(time.monotonic() - t0), "s;", machine.ssh("uname -r").stdout.strip(), flush=True)
        remote = []
        for o in objs:
            path = f"/tmp/{o.name}"
            machine.ssh(f"base64 -d > {path}", stdin=base64.b64encode(o.read_bytes()).decode())
            remote.append(path)
        machine.put("/tmp/load.py", LOAD)
        res = machine.ssh("cd /opt/appliance && .venv/bin/python /tmp/load.py " + " ".join(remote), check=False)
        print(res.stdout, res.stderr[-4000:], "rc", res.returncode, flush=True)
        return res.returncode
    except BaseException:
        print(machine.serial_log.read_text(errors="replace")[-3000:], flush=True)
        raise
    finally:
        machine.stop()
        vm.clean(work)


if __name__ == "__main__":
    sys.exit(main())
