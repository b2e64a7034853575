"""The interpreter the box's services run under is spelled one way, whoever applies.

The console's worker is started by `celery` (its script says `python3`), the
CLI and the boot by `python`: a service's command line is part of its
revision, so two spellings made every console apply after a CLI apply
restart every service (4.5 s instead of 0.7 s for a DHCP-pool change, and the
home's DNS down meanwhile).
"""
import subprocess
import sys
from pathlib import Path

PRINT = "from appliance.box.layout import Layout; print(Layout().python)"


def test_every_name_of_the_interpreter_gives_the_services_one_command_line():
    bindir = Path(sys.prefix) / "bin"
    names = [n for n in ("python", "python3", f"python3.{sys.version_info.minor}") if (bindir / n).exists()]
    assert len(names) >= 2, f"{bindir} has one name for python only: {names}"
    spelled = {n: subprocess.run([str(bindir / n), "-c", PRINT], capture_output=True, text=True, check=True)
               .stdout.strip() for n in names}
    assert len(set(spelled.values())) == 1, spelled
    # and that spelling runs this interpreter, with the box's code importable
    out = subprocess.run([spelled[names[0]], "-c", "import sys, appliance; print(sys.prefix)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == sys.prefix
