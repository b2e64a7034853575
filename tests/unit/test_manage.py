"""`./manage.py` as the README types it: started by the system's python3, which has no Django."""
import os
import subprocess
from pathlib import Path

import django
import pytest

TOP = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON) or not (TOP / ".venv" / "bin" / "python").exists(),
                    reason="needs the system's python3 and the checkout's .venv (make setup)")
def test_manage_py_started_by_the_system_python_runs_in_the_checkouts_venv():
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = "/usr/bin:/bin"
    r = subprocess.run([SYSTEM_PYTHON, str(TOP / "manage.py"), "version"], cwd=TOP, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == django.get_version()
