"""The image tests boot the built image in qemu: minutes each, so `make test`
skips them (unless IMAGE_TEST=1, which `make image-test` sets)."""
import os
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
IMAGE = TOP / "build/image/appliance.raw"


def pytest_collection_modifyitems(config, items):
    reason = None
    if os.environ.get("IMAGE_TEST") != "1":
        reason = "boots the OS image in qemu (minutes): run `make image-test`"
    elif os.geteuid() != 0:
        reason = "needs root"
    elif not IMAGE.exists():
        reason = f"{IMAGE} not built: run `make image`"
    if reason:
        for item in items:
            if "tests/image" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))
