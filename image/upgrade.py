#!/usr/bin/python3
"""Upgrade a box's disk to a new image, keeping everything (A/B root slots).

    appliance-upgrade [--disk /dev/sda] NEW.raw        # on the box
    python3 image/upgrade.py --disk box.raw NEW.raw    # on a disk image file

The disk has two root slots (GPT names root-a, root-b) and a data partition
(appliance-data: settings, leases, fake-IP store, console users, SSH keys
and host keys, TLS certificate). The upgrade writes the new image's root
into the slot that is *not* booted, copies its kernel and initrd to the ESP
under that slot's folder, adds a boot entry for it and makes it the default.
The data partition is never opened. The old slot's entry stays in the boot
menu, so going back is one choice at boot. Unlike OpenWrt's sysupgrade,
nothing the person set up is lost, because nothing of theirs lives on a root.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

SLOTS = ("a", "b")
MiB = 1 << 20


class UpgradeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Part:
    name: str
    start: int  # bytes
    size: int


def partitions(path: str) -> dict[str, Part]:
    res = subprocess.run(["sfdisk", "--json", path], capture_output=True, text=True)
    if res.returncode != 0:
        raise UpgradeError(f"{path}: no partition table ({res.stderr.strip()})")
    table = json.loads(res.stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    return {p["name"]: Part(p["name"], p["start"] * sector, p["size"] * sector)
            for p in table["partitions"] if p.get("name")}


def active_slot(loader_conf: str) -> str:
    m = re.search(r"^default\s+appliance-([ab])\.conf\s*$", loader_conf, re.M)
    if not m:
        raise UpgradeError("ESP loader/loader.conf: no 'default appliance-a.conf' or '-b' line")
    return m.group(1)


@dataclass(frozen=True)
class Upgrade:
    target: str  # the slot written
    source_root: Part  # in the new image
    target_root: Part  # on the disk
    entry: str  # the boot entry's text
    loader_conf: str


def plan_upgrade(disk: dict[str, Part], image: dict[str, Part], loader_conf: str, image_entry: str) -> Upgrade:
    """What to write where; pure, so the rule "never the data" is tested."""
    for name in ("esp", "root-a", "root-b", "appliance-data"):
        if name not in disk:
            raise UpgradeError(f"disk: no partition named {name}; is this an appliance disk?")
    for name in ("esp", "root-a"):
        if name not in image:
            raise UpgradeError(f"new image: no partition named {name}; is this an appliance image?")
    current = active_slot(loader_conf)
    target = "b" if current == "a" else "a"
    dst = disk[f"root-{target}"]
    src = image["root-a"]
    if src.size > dst.size:
        raise UpgradeError(f"new image: root is {src.size // MiB} MiB, slot root-{target} holds "
                           f"{dst.size // MiB} MiB")
    data = disk["appliance-data"]
    if dst.start < data.start + data.size and data.start < dst.start + dst.size:
        raise UpgradeError(f"disk: root-{target} overlaps appliance-data; refusing to write")
    m = re.search(r"^title\s+(.*)$", image_entry, re.M)
    title = re.sub(r"\(slot [ab]\)", f"(slot {target})", m.group(1)) if m else f"appliance (slot {target})"
    opts = re.search(r"^options\s+(.*)$", image_entry, re.M)
    options = re.sub(r"root=PARTLABEL=root-[ab]", f"root=PARTLABEL=root-{target}",
                     opts.group(1) if opts else f"root=PARTLABEL=root-{target} rw")
    entry = (f"title {title}\nlinux /{target}/vmlinuz\ninitrd /{target}/initrd.img\noptions {options}\n")
    conf = re.sub(r"^default\s+.*$", f"default appliance-{target}.conf", loader_conf, flags=re.M)
    return Upgrade(target, src, dst, entry, conf)


def _esp(path: str, part: Part) -> str:
    return f"{path}@@{part.start}"


def _mtype(path: str, part: Part, name: str) -> str:
    res = subprocess.run(["mtype", "-i", _esp(path, part), f"::{name}"], capture_output=True, text=True)
    if res.returncode != 0:
        raise UpgradeError(f"{path}: ESP has no {name}")
    return res.stdout


def upgrade(disk_path: str, image_path: str, out=print) -> Upgrade:
    disk, image = partitions(disk_path), partitions(image_path)
    if "esp" not in disk or "esp" not in image:
        raise UpgradeError("disk or new image: no partition named esp")
    loader = _mtype(disk_path, disk["esp"], "loader/loader.conf")
    new_entry = _mtype(image_path, image["esp"], "loader/entries/appliance-a.conf")
    up = plan_upgrade(disk, image, loader, new_entry)
    out(f"upgrade: writing the new root into slot {up.target} (root-{up.target})")
    subprocess.run(["dd", f"if={image_path}", f"of={disk_path}", "bs=1M", "conv=notrunc,sparse,fsync",
                    "iflag=skip_bytes,count_bytes", "oflag=seek_bytes", f"skip={up.source_root.start}",
                    f"seek={up.target_root.start}", f"count={up.source_root.size}", "status=none"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("vmlinuz", "initrd.img"):
            subprocess.run(["mcopy", "-n", "-i", _esp(image_path, image["esp"]), f"::a/{f}", f"{tmp}/{f}"],
                           check=True)
        esp = _esp(disk_path, disk["esp"])
        subprocess.run(["mmd", "-D", "s", "-i", esp, f"::{up.target}"], capture_output=True)
        for f in ("vmlinuz", "initrd.img"):
            subprocess.run(["mcopy", "-o", "-i", esp, f"{tmp}/{f}", f"::{up.target}/{f}"], check=True)
        for name, text in ((f"loader/entries/appliance-{up.target}.conf", up.entry),
                           ("loader/loader.conf", up.loader_conf)):
            with open(f"{tmp}/file", "w") as fh:
                fh.write(text)
            subprocess.run(["mcopy", "-o", "-i", esp, f"{tmp}/file", f"::{name}"], check=True)
    os.sync()
    out(f"upgrade: slot {up.target} is the default at the next boot; the data partition was not touched")
    return up


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--disk", help="the box's disk (default: the disk holding appliance-data)")
    ap.add_argument("image", help="the new image (raw)")
    opts = ap.parse_args(argv)
    disk = opts.disk
    if disk is None:
        res = subprocess.run(["lsblk", "-no", "PKNAME", "/dev/disk/by-partlabel/appliance-data"],
                             capture_output=True, text=True)
        if res.returncode != 0 or not res.stdout.strip():
            print("upgrade: --disk: cannot find the disk with the appliance-data partition", file=sys.stderr)
            return 2
        disk = "/dev/" + res.stdout.split()[0]
    try:
        upgrade(disk, opts.image)
    except (UpgradeError, subprocess.CalledProcessError) as e:
        print(f"upgrade: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
