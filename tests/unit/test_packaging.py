"""The installed package carries every file the appliance reads at run time.

The image installs the wheel and the box's services run from it: a file of
`appliance/` that the wheel leaves out is missing on the box only (the DNS
kernel cache's C source was, and the cache fell back to the server on every
image). Each tracked non-Python file must match a `package-data` pattern of
pyproject.toml, expanded as setuptools expands it (a glob from a package's
directory)."""
import glob
import os
import subprocess
import tomllib
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
DOCS = (".md",)   # read by people, not by the appliance


def packaged() -> set[str]:
    patterns = tomllib.loads((TOP / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    out = set()
    for directory, _, _ in os.walk(TOP / "appliance"):
        for pattern in patterns:
            out.update(os.path.relpath(p, TOP) for p in glob.glob(os.path.join(directory, pattern), recursive=True)
                       if os.path.isfile(p))
    return out


def test_every_data_file_of_the_package_is_in_the_wheel():
    tracked = subprocess.run(["git", "ls-files", "appliance"], cwd=TOP, capture_output=True, text=True,
                             check=True).stdout.split()
    data = {f for f in tracked if not f.endswith(".py") and not f.endswith(DOCS)}
    assert {"appliance/services/dns/c/kernel_cache.c", "appliance/switch/datapath/c/dp_runtime.h"} <= data
    assert data - packaged() == set()
