"""image/upgrade.py: the A/B plan never writes the data partition."""
import importlib.util
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("image_upgrade", TOP / "image/upgrade.py")
upgrade = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = upgrade  # dataclasses look their module up
spec.loader.exec_module(upgrade)
Part = upgrade.Part
M = upgrade.MiB

DISK = {"esp": Part("esp", 1 * M, 256 * M), "root-a": Part("root-a", 257 * M, 2560 * M),
        "root-b": Part("root-b", 2817 * M, 2560 * M), "appliance-data": Part("appliance-data", 5377 * M, 512 * M)}
ENTRY = "title appliance 2.0 (slot a)\nlinux /a/vmlinuz\ninitrd /a/initrd.img\noptions root=PARTLABEL=root-a rw quiet\n"


def test_writes_the_slot_not_booted_and_makes_it_default():
    up = upgrade.plan_upgrade(DISK, DISK, "default appliance-a.conf\ntimeout 1\n", ENTRY)
    assert up.target == "b"
    assert up.target_root == DISK["root-b"]
    assert up.source_root == DISK["root-a"]
    assert "root=PARTLABEL=root-b rw quiet" in up.entry and "linux /b/vmlinuz" in up.entry
    assert "appliance 2.0 (slot b)" in up.entry
    assert up.loader_conf == "default appliance-b.conf\ntimeout 1\n"
    back = upgrade.plan_upgrade(DISK, DISK, up.loader_conf, ENTRY)
    assert back.target == "a" and back.target_root == DISK["root-a"]


def test_refuses_a_target_overlapping_the_data():
    disk = dict(DISK, **{"appliance-data": Part("appliance-data", 3000 * M, 512 * M)})
    with pytest.raises(upgrade.UpgradeError, match="root-b overlaps appliance-data"):
        upgrade.plan_upgrade(disk, DISK, "default appliance-a.conf\n", ENTRY)


def test_refuses_a_root_too_big_for_the_slot():
    image = dict(DISK, **{"root-a": Part("root-a", 257 * M, 4096 * M)})
    with pytest.raises(upgrade.UpgradeError, match="root is 4096 MiB, slot root-b holds 2560 MiB"):
        upgrade.plan_upgrade(DISK, image, "default appliance-a.conf\n", ENTRY)


def test_errors_name_the_missing_part():
    disk = {k: v for k, v in DISK.items() if k != "appliance-data"}
    with pytest.raises(upgrade.UpgradeError, match="disk: no partition named appliance-data"):
        upgrade.plan_upgrade(disk, DISK, "default appliance-a.conf\n", ENTRY)
    with pytest.raises(upgrade.UpgradeError, match="loader.conf"):
        upgrade.plan_upgrade(DISK, DISK, "timeout 1\n", ENTRY)


def test_build_and_upgrade_agree_on_the_layout():
    bspec = importlib.util.spec_from_file_location("image_build2", TOP / "image/build.py")
    build = importlib.util.module_from_spec(bspec)
    sys.modules[bspec.name] = build
    bspec.loader.exec_module(build)
    parts, _ = build.disk_layout()
    disk = {p.name: Part(p.name, p.start, p.size) for p in parts}
    entry = build.loader_files("a", "3")["loader/entries/appliance-a.conf"]
    up = upgrade.plan_upgrade(disk, disk, build.loader_files("a", "3")["loader/loader.conf"], entry)
    assert up.target == "b"
    assert f"options {build.kernel_cmdline('b')}" in up.entry
