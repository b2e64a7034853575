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

Nothing is written before the image's signature is checked: `make image`
signs every image with the builder's ed25519 key (`NEW.raw.sig` beside it)
and ships the public half in the root as /etc/appliance/image-signing.pub,
so a box takes only images from the builder that made its running root.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Debian's python3-cryptography on the box (system Python, like this tool).
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SLOTS = ("a", "b")
MiB = 1 << 20


PUBLIC_KEY = "/etc/appliance/image-signing.pub"
SIGNATURE_FORMAT = "appliance-image-signature/1"


class UpgradeError(RuntimeError):
    pass


# ---------------------------------------------------------------- signatures
# The signature file is JSON: what was signed (format, version, size and
# SHA-256 of the whole image file) and the ed25519 signature of exactly those
# fields in canonical JSON. Signing a digest keeps a 6 GiB image out of memory.

SIGNED_FIELDS = ("format", "version", "size", "sha256")


def signed_bytes(meta: dict) -> bytes:
    return json.dumps({k: meta[k] for k in SIGNED_FIELDS}, sort_keys=True, separators=(",", ":")).encode()


def file_digest(fh) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    fh.seek(0)
    while chunk := fh.read(4 * MiB):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(pem: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as e:
        raise UpgradeError(f"{where}: not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UpgradeError(f"{where}: not an ed25519 public key")
    return key


def _only_root_can_change(path: str) -> None:
    # What is checked is what is written: a file someone else may rewrite
    # between the check and the copy would make the check worthless.
    st = os.stat(path)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UpgradeError(f"{path}: writable by other users (owner uid {st.st_uid}, mode "
                           f"{stat.S_IMODE(st.st_mode):o}); copy it somewhere only root can write first")


def verify_image(image_path: str, sig_path: str, public: Ed25519PublicKey) -> dict:
    """The signature's fields, once the image is proven to be what was signed."""
    _only_root_can_change(image_path)
    try:
        with open(sig_path, "rb") as fh:
            meta = json.loads(fh.read(64 * 1024))
    except FileNotFoundError:
        raise UpgradeError(f"{sig_path}: no signature; refusing an unsigned image") from None
    except ValueError as e:
        raise UpgradeError(f"{sig_path}: not a signature file ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != SIGNATURE_FORMAT:
        raise UpgradeError(f"{sig_path}: format is not {SIGNATURE_FORMAT}")
    missing = [k for k in (*SIGNED_FIELDS, "signature") if k not in meta]
    if missing:
        raise UpgradeError(f"{sig_path}: no {', '.join(missing)}")
    try:
        public.verify(base64.b64decode(meta["signature"], validate=True), signed_bytes(meta))
    except (InvalidSignature, ValueError, TypeError):
        raise UpgradeError(f"{sig_path}: bad signature: not signed by this box's image key "
                           f"{key_id(public)} (signed by {meta.get('key', 'an unknown key')})") from None
    with open(image_path, "rb") as fh:
        size, digest = file_digest(fh)
    if (size, digest) != (meta["size"], meta["sha256"]):
        raise UpgradeError(f"{image_path}: does not match its signature (size {size}, sha256 {digest[:16]}..., "
                           f"signed size {meta['size']}, sha256 {str(meta['sha256'])[:16]}...); "
                           "the image was changed after it was built")
    return meta


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


def upgrade(disk_path: str, image_path: str, public: Ed25519PublicKey, sig_path: str | None = None,
            out=print) -> Upgrade:
    meta = verify_image(image_path, sig_path or image_path + ".sig", public)
    out(f"upgrade: {image_path}: version {meta['version']}, signature good (key {key_id(public)})")
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
    ap.add_argument("--signature", help="its signature (default: IMAGE.sig)")
    ap.add_argument("--public-key", default=PUBLIC_KEY,
                    help=f"the key images must be signed with (default: {PUBLIC_KEY}, the running root's)")
    opts = ap.parse_args(argv)
    try:
        with open(opts.public_key, "rb") as fh:
            public = load_public_key(fh.read(), opts.public_key)
    except (OSError, UpgradeError) as e:
        print(f"upgrade: --public-key: {e}", file=sys.stderr)
        return 2
    disk = opts.disk
    if disk is None:
        res = subprocess.run(["lsblk", "-no", "PKNAME", "/dev/disk/by-partlabel/appliance-data"],
                             capture_output=True, text=True)
        if res.returncode != 0 or not res.stdout.strip():
            print("upgrade: --disk: cannot find the disk with the appliance-data partition", file=sys.stderr)
            return 2
        disk = "/dev/" + res.stdout.split()[0]
    try:
        upgrade(disk, opts.image, public, opts.signature)
    except (UpgradeError, OSError, subprocess.CalledProcessError) as e:
        print(f"upgrade: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
