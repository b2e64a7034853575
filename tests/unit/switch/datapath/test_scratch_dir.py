"""Build directories of services killed during their clang run are taken away by the next one."""
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from appliance.switch.datapath.build import scratch_dir


def test_a_dead_process_build_directory_goes_and_a_living_one_stays():
    prefix = f"appliance-test-{uuid.uuid4().hex[:8]}-"
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is no longer alive
    base = Path(tempfile.gettempdir())
    killed = base / f"{prefix}{dead.pid}-abc"
    (killed / "sub").mkdir(parents=True)
    (killed / "sub" / "dp.c").write_text("int x;")
    alive = base / f"{prefix}{os.getppid()}-def"  # the shell or pytest's parent: alive
    alive.mkdir()
    made = None
    try:
        made = scratch_dir(prefix)
        assert made.is_dir() and made.name.startswith(f"{prefix}{os.getpid()}-")
        assert not killed.exists()
        assert alive.is_dir()
    finally:
        for d in (killed, alive, made):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)
