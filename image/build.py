#!/usr/bin/python3
"""Build the flashable disk image (`make image`): Debian 12 by debootstrap.

    python3 image/build.py [--out build/image] [--version V] [--lock]

Why debootstrap and not mkosi: Debian 12's mkosi (v14) predates the
features a disk with an A/B root and a data partition needs, and it wants
loop devices and its own idea of the partition table; debootstrap, mkfs's
`-d` and mtools build every partition as a plain file (no loop device, no
mount), so the build also works in a container, and every step is a command
this file names.

Stages, each cached under the output folder:

1. base: debootstrap the mirror this machine's apt uses, then install the
   packages (image/packages.txt minus image/lab-only.txt, plus
   image/image-packages.txt) at exactly the versions in image/versions.lock.
   `--lock` installs the newest instead and rewrites the lock.
2. appliance: the source tree in /opt/appliance with its venv (wheels made
   on this machine from pyproject.toml's pins, installed offline in the
   root), the files under image/rootfs/, units enabled, root locked, no
   host keys or machine-id (first boot makes them).
3. disk: GPT with ESP, root-a, root-b and appliance-data; systemd-boot
   boots slot a; raw and qcow2, each signed (`.sig` beside it) with the
   builder's ed25519 key, whose public half the root carries for
   `appliance-upgrade` (see signing_key()).

The plan (`plan()`) is pure data so tests can read it; `main()` runs it.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
IMAGE = TOP / "image"
SUITE = "bookworm"
MiB = 1 << 20

# GPT partition names are how the box finds its parts (PARTLABEL=), so an
# upgrade can replace a root slot and never touch the data.
ESP_SIZE = 256 * MiB
ROOT_SIZE = 2560 * MiB
DATA_SIZE = 512 * MiB
PARTITIONS = (  # (name, size, GPT type)
    ("esp", ESP_SIZE, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
    ("root-a", ROOT_SIZE, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
    ("root-b", ROOT_SIZE, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
    ("appliance-data", DATA_SIZE, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
)
FIRST_LBA_OFFSET = 1 * MiB


class BuildError(RuntimeError):
    pass


class _Upgrade:
    """image/upgrade.py, the verifier on the box, whose format the signer uses.

    Loaded on first use: it needs python3-cryptography, which need_tools()
    installs on a fresh build machine.
    """

    def __getattr__(self, name):
        mod = sys.modules.get("image_upgrade_for_build")
        if mod is None:
            spec = importlib.util.spec_from_file_location("image_upgrade_for_build", IMAGE / "upgrade.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod  # dataclasses look their module up
            spec.loader.exec_module(mod)
        return getattr(mod, name)


upgrade = _Upgrade()


# ---------------------------------------------------------------- inputs

def list_file(path: Path) -> list[str]:
    """Names, one a line; '#' starts a comment."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def image_packages(packages: list[str], lab_only: list[str], extras: list[str]) -> list[str]:
    unknown = sorted(set(lab_only) - set(packages))
    if unknown:
        raise BuildError(f"image/lab-only.txt: {', '.join(unknown)} not in image/packages.txt")
    seen, out = set(), []
    for p in [p for p in packages if p not in lab_only] + extras:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def apt_mirrors(sources: dict[str, str]) -> dict[str, str]:
    """Suite -> URI from this machine's apt sources (deb822 or one-line)."""
    found: dict[str, str] = {}
    for name, text in sorted(sources.items()):
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                    continue
                for suite in fields.get("suites", "").split():
                    found.setdefault(suite, fields.get("uris", "").split()[0])
        elif name.endswith(".list"):
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    found.setdefault(m.group(2), m.group(1))
    if SUITE not in found:
        raise BuildError(f"apt sources: no 'deb' entry for suite {SUITE}; cannot pick a Debian mirror")
    return {s: u for s, u in found.items() if s.startswith(SUITE)}


def read_apt_sources(root: Path = Path("/etc/apt")) -> dict[str, str]:
    files = {}
    for p in [root / "sources.list", *sorted((root / "sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in (".list", ".sources"):
            files[p.name] = p.read_text()
    return files


LOCK_LINE = re.compile(r"^([a-z0-9][a-z0-9+.-]+)(?::([a-z0-9]+))?=(\S+)$")


def parse_lock(text: str) -> dict[str, str]:
    """`name=version` (or `name:arch=version`) a line; errors name the line."""
    lock: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = LOCK_LINE.match(line)
        if not m:
            raise BuildError(f"versions.lock line {n}: {line!r} is not name=version")
        name = m.group(1) + (f":{m.group(2)}" if m.group(2) else "")
        if name in lock:
            raise BuildError(f"versions.lock line {n}: {name} is locked twice")
        lock[name] = m.group(3)
    return lock


def format_lock(installed: dict[str, str], mirror: str) -> str:
    head = (f"# Every Debian package in the image at its exact version (from {mirror}\n"
            f"# {SUITE} by `make image-lock`, or by `make image` when a locked version had left\n"
            f"# the mirror and was not in the local .deb cache: then that package only\n"
            f"# moved to the mirror's version, and the build said so).\n")
    return head + "".join(f"{k}={v}\n" for k, v in sorted(installed.items()))


def lock_diff(lock: dict[str, str], installed: dict[str, str]) -> list[str]:
    """What differs between the lock and what dpkg says is installed."""
    out = []
    for name in sorted(set(lock) | set(installed)):
        want, got = lock.get(name), installed.get(name)
        if want == got:
            continue
        if want is None:
            out.append(f"{name}: installed {got} but not in the lock")
        elif got is None:
            out.append(f"{name}: locked {want} but not installed")
        else:
            out.append(f"{name}: locked {want}, installed {got}")
    return out


# ---------------------------------------------------------------- the disk

@dataclass(frozen=True)
class Part:
    name: str
    start: int  # bytes
    size: int
    type: str


def disk_layout(parts=PARTITIONS) -> tuple[list[Part], int]:
    """Partitions at fixed offsets (1 MiB aligned) and the disk size."""
    out, offset = [], FIRST_LBA_OFFSET
    for name, size, ptype in parts:
        out.append(Part(name, offset, size, ptype))
        offset += size
    return out, offset + FIRST_LBA_OFFSET  # room for the backup GPT


def sfdisk_script(parts: list[Part]) -> str:
    lines = ["label: gpt", "unit: sectors", ""]
    for p in parts:
        lines.append(f"start={p.start // 512}, size={p.size // 512}, type={p.type}, name={p.name}")
    return "\n".join(lines) + "\n"


def kernel_cmdline(slot: str) -> str:
    return f"root=PARTLABEL=root-{slot} rw console=tty0 console=ttyS0,115200 quiet"


def loader_files(slot: str, version: str) -> dict[str, str]:
    """systemd-boot's config on the ESP: one entry per slot, kernels in /SLOT/."""
    return {
        "loader/loader.conf": f"default appliance-{slot}.conf\ntimeout 1\neditor no\n",
        f"loader/entries/appliance-{slot}.conf": (
            f"title appliance {version} (slot {slot})\n"
            f"linux /{slot}/vmlinuz\ninitrd /{slot}/initrd.img\noptions {kernel_cmdline(slot)}\n"),
    }


# ---------------------------------------------------------------- signing

def default_signing_key() -> Path:
    """Outside the repository, so no clone, tarball or CI log carries it.

    The builder's home (root's, as `make image` runs as root), not $HOME, which
    sudo may leave pointing at someone else's.
    """
    env = os.environ.get("IMAGE_SIGNING_KEY")
    if env:
        return Path(env)
    return Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".config/appliance/image-signing.key"


def signing_key(path: Path, out=print):
    """The ed25519 key images are signed with, made (0600) on the first build."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # O_EXCL and the mode at creation: the key is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        out(f"image: made the image signing key {path} (0600); keep it: boxes built from it "
            "take upgrades signed by it only")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise BuildError(f"{path}: the image signing key is readable by others (mode {mode:o}); chmod 600 it")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as e:
        raise BuildError(f"{path}: not a PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BuildError(f"{path}: not an ed25519 key")
    return key


def public_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def sign_image(image: Path, key, version: str) -> Path:
    """IMAGE.sig: what upgrade.verify_image() checks before writing a byte."""
    with open(image, "rb") as fh:
        size, digest = upgrade.file_digest(fh)
    meta = {"format": upgrade.SIGNATURE_FORMAT, "version": version, "size": size, "sha256": digest}
    meta["signature"] = base64.b64encode(key.sign(upgrade.signed_bytes(meta))).decode()
    meta["key"] = upgrade.key_id(key.public_key())
    sig = image.with_name(image.name + ".sig")
    sig.write_text(json.dumps(meta, indent=1) + "\n")
    return sig


# ---------------------------------------------------------------- the plan

@dataclass
class Config:
    out: Path
    version: str
    mirrors: dict[str, str]
    packages: list[str]
    lock: dict[str, str] | None  # None: resolve the newest and write the lock
    public_key: bytes = b""  # PEM, shipped in the root for appliance-upgrade

    @property
    def base_key(self) -> str:
        data = json.dumps([self.mirrors, self.packages, self.lock, SUITE, _base_source()], sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()[:12]


def _base_source() -> str:
    # The base stage's own code is part of its cache key.
    text = (IMAGE / "build.py").read_text()
    start, end = text.index("\ndef base_steps("), text.index("\n# end base\n")
    return hashlib.sha256(text[start:end].encode()).hexdigest()


@dataclass
class Step:
    what: str
    argv: list[str] = field(default_factory=list)
    stdin: str | None = None


def chroot(root: Path, *argv: str) -> list[str]:
    return ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", *argv]


def base_steps(cfg: Config, root: Path, install: list[str] | None = None) -> list[Step]:
    """debootstrap, sources, apt update, then the install of `install` (apt-get
    arguments from resolve(); by default every lock pin as it stands)."""
    main = cfg.mirrors[SUITE]
    sources = "".join(f"deb {uri} {suite} main\n" for suite, uri in sorted(cfg.mirrors.items()))
    if install is None:
        install = [f"{p}={cfg.lock[p]}" for p in sorted(cfg.lock)] if cfg.lock else cfg.packages
    return [
        Step("debootstrap", ["debootstrap", "--variant=minbase", "--arch=amd64",
                             "--include=ca-certificates", SUITE, str(root), main]),
        Step("apt sources", ["tee", str(root / "etc/apt/sources.list")], sources),
        # No daemon starts inside the build root.
        Step("policy-rc.d", ["install", "-m755", "/dev/stdin", str(root / "usr/sbin/policy-rc.d")],
             "#!/bin/sh\nexit 101\n"),
        Step("apt update", chroot(root, "apt-get", "update", "-qq")),
        *install_steps(root, install),
    ]


PREP_STEPS = 4  # the base steps before the install: resolve() reads their apt lists


def install_steps(root: Path, install: list[str]) -> list[Step]:
    return [
        Step("packages", chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                                "--allow-downgrades", *install)),
        # build_base() keeps this build's .debs for the cache before they go.
        Step("apt clean", chroot(root, "apt-get", "clean")),
    ]


# A pinned version that left the mirror: Debian's mirrors keep only the
# newest version of a package in a suite, so a lock goes stale within days (a
# kernel point release drops the locked linux-image). The build then takes,
# in order: the locked version from the mirror; the same version from the
# local cache of the last good build's .debs; the mirror's version of that
# package only, said and written into the lock. No snapshot archive is
# reachable from the build machines.

DEB_CACHE = Path(os.environ.get("IMAGE_DEB_CACHE", "/var/cache/appliance-image/debs"))
CACHED_IN_ROOT = "tmp/appliance-debs"  # where cached .debs are put for apt inside the root


def mirror_index(lists: dict[str, str]) -> dict[str, set[str]]:
    """Package -> the versions the mirror has, from apt's `*_Packages` lists."""
    index: dict[str, set[str]] = {}
    for name, text in lists.items():
        if not name.endswith("_Packages"):
            continue
        pkg = None
        for line in text.splitlines():
            if line.startswith("Package:"):
                pkg = line[8:].strip()
            elif line.startswith("Version:") and pkg:
                index.setdefault(pkg, set()).add(line[8:].strip())
            elif not line.strip():
                pkg = None
    return index


def source_index(lists: dict[str, str]) -> dict[str, str]:
    """Package -> the source package it is built from, from the same lists."""
    sources: dict[str, str] = {}
    for name, text in lists.items():
        if not name.endswith("_Packages"):
            continue
        for stanza in text.split("\n\n"):
            pkg = src = None
            for line in stanza.splitlines():
                if line.startswith("Package:"):
                    pkg = line[8:].strip()
                elif line.startswith("Source:"):
                    src = line[7:].split()[0] if line[7:].split() else None
            if pkg:
                sources.setdefault(pkg, src or pkg)
    return sources


def read_mirror_lists(root: Path) -> dict[str, str]:
    lists = root / "var/lib/apt/lists"
    return {p.name: p.read_text(errors="replace") for p in sorted(lists.glob("*_Packages"))}


def deb_name(filename: str) -> tuple[str, str] | None:
    """(package, version) of apt's `name_version_arch.deb` (':' as '%3a')."""
    if not filename.endswith(".deb"):
        return None
    parts = filename[:-4].split("_")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], urllib.parse.unquote(parts[1])


def cache_index(folder: Path) -> dict[tuple[str, str], Path]:
    out = {}
    if folder.is_dir():
        for p in sorted(folder.glob("*.deb")):
            key = deb_name(p.name)
            if key:
                out[key] = p
    return out


@dataclass
class Resolution:
    install: list[str]  # apt-get install arguments
    kept: dict[str, str] = field(default_factory=dict)  # to be installed at the locked version
    from_cache: dict[str, Path] = field(default_factory=dict)  # of those, from the cache
    from_mirror: dict[str, str] = field(default_factory=dict)  # left the mirror: name -> the locked version
    dropped: dict[str, str] = field(default_factory=dict)  # gone from the mirror, only a dependency

    @property
    def changed(self) -> bool:
        return bool(self.from_mirror or self.dropped)

    def report(self) -> list[str]:
        out = [f"{n} {self.kept[n]}: no longer on the mirror; from the cache of the last good build"
               for n in sorted(self.from_cache)]
        out += [f"{n} {v}: left the mirror and is not in the cache; taking the mirror's version of {n}"
                for n, v in sorted(self.from_mirror.items())]
        out += [f"{n} {v}: gone from the mirror, or built with a package that moved; only a dependency, "
                "left to apt" for n, v in sorted(self.dropped.items())]
        return out


def resolve(lock: dict[str, str], wanted: list[str], mirror: dict[str, set[str]],
            cache: dict[tuple[str, str], Path], cache_in_root=lambda p: p,
            sources: dict[str, str] | None = None) -> Resolution:
    """What to install for the lock, given what the mirror and the cache hold.

    `sources` (package -> source package): a locked package built from the
    same source at the same version as one that moved is left to apt too, so
    the old kernel ABI package does not stay beside the new one.
    """
    res = Resolution(install=[])
    for name in sorted(lock):
        version, pkg = lock[name], name.split(":", 1)[0]
        if version in mirror.get(pkg, ()):
            res.install.append(f"{name}={version}")
            res.kept[name] = version
        elif (pkg, version) in cache:
            res.from_cache[name] = cache[(pkg, version)]
            res.install.append(str(cache_in_root(cache[(pkg, version)])))
            res.kept[name] = version
        elif pkg in mirror:
            res.from_mirror[name] = version
            res.install.append(name)
        elif pkg in wanted:
            raise BuildError(f"{pkg}: locked {version}, but the mirror has no {pkg} at all any more and the "
                             f"cache of the last good build has no copy; drop it from the package lists or "
                             "name what replaced it")
        else:
            res.dropped[name] = version
    if sources:
        moved = {(sources.get(n.split(":", 1)[0]), v) for n, v in res.from_mirror.items()}
        for name in [n for n in res.kept if n not in res.from_cache]:
            pkg = name.split(":", 1)[0]
            if (sources.get(pkg), lock[name]) in moved and pkg not in wanted:
                res.dropped[name] = res.kept.pop(name)
                res.install.remove(f"{name}={lock[name]}")
    return res


def updated_lock(res: Resolution, installed: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The new lock (what is installed) and what changed; an error if a kept pin moved."""
    moved = [f"{n}: locked {v}, installed {installed.get(n, 'nothing')}"
             for n, v in sorted(res.kept.items()) if installed.get(n) != v]
    if moved:
        raise BuildError("the root does not match image/versions.lock:\n  " + "\n  ".join(moved))
    before = {**res.kept, **res.from_mirror, **res.dropped}
    changes = [f"{n} {before.get(n, '(new)')} -> {installed.get(n, '(gone)')}"
               for n in sorted(set(before) | set(installed)) if before.get(n) != installed.get(n)]
    return dict(installed), changes


def save_debs(kept: Path, installed: dict[str, str], cache: Path) -> int:
    """Make the cache exactly the .debs of this (good) build's packages."""
    want = {(n.split(":", 1)[0], v) for n, v in installed.items()}
    new = cache.with_name(cache.name + ".new")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    count = 0
    for p in sorted(kept.glob("*.deb")):
        if deb_name(p.name) in want:
            shutil.copy2(p, new / p.name)
            count += 1
    old = cache.with_name(cache.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if cache.exists():
        cache.rename(old)
    new.rename(cache)
    shutil.rmtree(old, ignore_errors=True)
    return count
# end base


def appliance_steps(cfg: Config, root: Path, wheels: Path) -> list[Step]:
    app = root / "opt/appliance"
    return [
        # Wheels are made here (this machine's pip reaches PyPI; the root may not)
        # with a throwaway venv's pip, then installed offline in the root.
        Step("pip venv", ["/usr/bin/python3", "-m", "venv", str(cfg.out / "work/pip")]),
        Step("wheels", [str(cfg.out / "work/pip/bin/pip"), "wheel", "-q", "--wheel-dir", str(wheels), str(TOP)]),
        Step("source", ["cp", "-a", "--parents", *sorted(_source_files()), str(app)]),
        Step("venv", chroot(root, "python3", "-m", "venv", "/opt/appliance/.venv")),
        Step("pip install", chroot(root, "/opt/appliance/.venv/bin/pip", "install", "-q", "--no-index",
                                   "--find-links", "/tmp/wheels", "appliance")),
        Step("rootfs files", ["cp", "-a", "--no-preserve=ownership", f"{IMAGE}/rootfs/.", str(root)]),
        Step("upgrade tool", ["install", "-m755", str(IMAGE / "upgrade.py"),
                              str(root / "usr/local/sbin/appliance-upgrade")]),
        Step("release", ["tee", str(root / "etc/appliance-release")], f"VERSION={cfg.version}\n"),
        Step("image signing key", ["install", "-D", "-m644", "/dev/stdin", str(root / "etc/appliance/image-signing.pub")],
             cfg.public_key.decode()),
        Step("configure", chroot(root, "/usr/local/sbin/appliance-image-configure")),
    ]


def _source_files() -> list[str]:
    res = subprocess.run(["git", "ls-files", "appliance", "manage.py", "pyproject.toml"],
                         cwd=TOP, capture_output=True, text=True, check=True)
    return [f for f in res.stdout.split() if (TOP / f).is_file()]


def plan(cfg: Config) -> dict[str, list[Step]]:
    work = cfg.out / "work"
    return {
        "base": base_steps(cfg, work / f"base-{cfg.base_key}"),
        "appliance": appliance_steps(cfg, work / "root", work / "root/tmp/wheels"),
    }


# ---------------------------------------------------------------- running

def run(step: Step, log) -> None:
    print(f"image: {step.what}", flush=True)
    log.write(f"$ {' '.join(step.argv)}\n")
    log.flush()
    res = subprocess.run(step.argv, input=step.stdin, text=True, stdout=log, stderr=subprocess.STDOUT,
                         cwd=TOP)
    if res.returncode != 0:
        raise BuildError(f"{step.what}: `{' '.join(step.argv[:6])} ...` failed with status "
                         f"{res.returncode}; see {log.name}")


class Mounts:
    """/proc, /sys, /dev and resolv.conf for package scripts inside the root."""

    def __init__(self, root: Path):
        self.root = root
        self.done: list[Path] = []

    def __enter__(self):
        for src, kind in (("/proc", "proc"), ("/sys", "sysfs"), ("/dev", "bind"), ("/dev/pts", "bind")):
            dst = self.root / src.lstrip("/")
            dst.mkdir(parents=True, exist_ok=True)
            argv = ["mount", "--bind", src, str(dst)] if kind == "bind" else ["mount", "-t", kind, kind, str(dst)]
            subprocess.run(argv, check=True)
            self.done.append(dst)
        return self

    def __exit__(self, *exc):
        for dst in reversed(self.done):
            subprocess.run(["umount", "-l", str(dst)], check=False)


def installed_versions(root: Path) -> dict[str, str]:
    res = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f",
                          "${db:Status-Abbrev}${Package}=${Version}\n"],
                         capture_output=True, text=True, check=True)
    out = {}
    for line in res.stdout.splitlines():
        if line.startswith("ii "):
            name, _, ver = line[3:].strip().partition("=")
            out[name] = ver
    return out


def with_resolv(root: Path, fn):
    resolv = root / "etc/resolv.conf"
    saved = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    link = os.readlink(resolv) if resolv.is_symlink() else None
    resolv.unlink(missing_ok=True)
    shutil.copy("/etc/resolv.conf", resolv)
    try:
        return fn()
    finally:
        resolv.unlink(missing_ok=True)
        if link:
            resolv.symlink_to(link)
        elif saved is not None:
            resolv.write_bytes(saved)


def build_base(cfg: Config, steps: list[Step], log, deb_cache: Path = DEB_CACHE) -> Path:
    root = Path(steps[0].argv[-2])
    done = root.with_suffix(".done")
    if done.exists():
        print(f"image: base {root.name} (cached)")
        return root
    for leftover in (root, root.with_suffix(".debs")):
        if leftover.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(leftover)], check=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    run(steps[0], log)
    res = None
    with Mounts(root):
        def rest():
            nonlocal res
            for s in steps[1:PREP_STEPS]:
                run(s, log)
            install = steps[PREP_STEPS:]
            if cfg.lock is not None:
                res = resolve_in_root(cfg, root, deb_cache)
                install = install_steps(root, res.install)
            for s in install:
                if s.what == "apt clean":
                    keep_debs(root)
                run(s, log)
        with_resolv(root, rest)
    shutil.rmtree(root / CACHED_IN_ROOT, ignore_errors=True)
    installed = installed_versions(root)
    lock_path = IMAGE / "versions.lock"
    if cfg.lock is None or res.changed:
        if cfg.lock is None:
            lock_path.write_text(format_lock(installed, cfg.mirrors[SUITE]))
            print(f"image: wrote {lock_path.relative_to(TOP)} ({len(installed)} packages)")
        else:
            new, changes = updated_lock(res, installed)
            lock_path.write_text(format_lock(new, cfg.mirrors[SUITE]))
            print(f"image: updated {lock_path.relative_to(TOP)} ({len(changes)} changes; commit it):")
            for line in changes:
                print(f"image:   {line}")
        # This root is what the new lock describes: the next locked build reuses it.
        cfg.lock = parse_lock(lock_path.read_text())
        locked = root.with_name(f"base-{cfg.base_key}")
        for old in (locked, locked.with_suffix(".debs")):
            if old.exists():
                subprocess.run(["rm", "-rf", "--one-file-system", str(old)], check=True)
        root.with_suffix(".debs").rename(locked.with_suffix(".debs"))
        root.rename(locked)
        root, done = locked, locked.with_suffix(".done")
    else:
        problems = lock_diff(cfg.lock, installed)
        if problems:
            raise BuildError("the root does not match image/versions.lock:\n  " + "\n  ".join(problems)
                             + "\n(run `make image-lock` to re-resolve)")
    kept = root.with_suffix(".debs")
    n = save_debs(kept, installed, deb_cache)
    shutil.rmtree(kept, ignore_errors=True)
    print(f"image: kept the {n} .debs of this build in {deb_cache} (for locked versions the mirror drops)")
    done.touch()
    return root


def resolve_in_root(cfg: Config, root: Path, deb_cache: Path) -> Resolution:
    lists = read_mirror_lists(root)
    if not lists:
        raise BuildError(f"{root}/var/lib/apt/lists: no Packages lists after apt update")
    res = resolve(cfg.lock, cfg.packages, mirror_index(lists), cache_index(deb_cache),
                  cache_in_root=lambda p: Path("/") / CACHED_IN_ROOT / p.name, sources=source_index(lists))
    if res.from_cache:
        (root / CACHED_IN_ROOT).mkdir(parents=True, exist_ok=True)
        for p in res.from_cache.values():
            shutil.copy2(p, root / CACHED_IN_ROOT / p.name)
    for line in res.report():
        print(f"image: {line}", flush=True)
    return res


def keep_debs(root: Path) -> None:
    """This build's .debs, before `apt clean`: the cache, once the build is good."""
    kept = root.with_suffix(".debs")
    kept.mkdir(exist_ok=True)
    for folder in (root / "var/cache/apt/archives", root / CACHED_IN_ROOT):
        for p in folder.glob("*.deb"):
            if not (kept / p.name).exists():
                os.link(p, kept / p.name)


def build_root(cfg: Config, base: Path, steps: list[Step], log) -> Path:
    root = cfg.out / "work/root"
    if root.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)
    subprocess.run(["cp", "-a", str(base), str(root)], check=True)
    (root / "opt/appliance").mkdir(parents=True, exist_ok=True)
    for s in steps[:2]:  # wheels, on this machine
        run(s, log)
    with Mounts(root):
        with_resolv(root, lambda: [run(s, log) for s in steps[2:]])
    shutil.rmtree(root / "tmp/wheels", ignore_errors=True)
    return root


def build_disk(cfg: Config, root: Path, log) -> tuple[Path, Path]:
    out = cfg.out
    parts, disk_size = disk_layout()
    by = {p.name: p for p in parts}
    work = out / "work"
    esp, rootimg, data = work / "esp.img", work / "root-a.img", work / "data.img"
    for f in (esp, rootimg, data):
        f.unlink(missing_ok=True)
    boot = root / "boot"
    kernel = sorted(boot.glob("vmlinuz-*"))[-1]
    initrd = boot / ("initrd.img-" + kernel.name[len("vmlinuz-"):])
    if not initrd.exists():
        raise BuildError(f"no initrd for {kernel.name} in the root")
    efi = root / "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
    esp_tree = work / "esp"
    shutil.rmtree(esp_tree, ignore_errors=True)
    (esp_tree / "EFI/BOOT").mkdir(parents=True)
    (esp_tree / "a").mkdir()
    shutil.copy(efi, esp_tree / "EFI/BOOT/BOOTX64.EFI")
    shutil.copy(kernel, esp_tree / "a/vmlinuz")
    shutil.copy(initrd, esp_tree / "a/initrd.img")
    for rel, text in loader_files("a", cfg.version).items():
        (esp_tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (esp_tree / rel).write_text(text)
    steps = [
        Step("esp", ["mkfs.vfat", "-F", "32", "-n", "ESP", "-C", str(esp), str(by["esp"].size // 1024)]),
        Step("esp files", ["mcopy", "-s", "-i", str(esp), *[str(p) for p in sorted(esp_tree.iterdir())], "::"]),
        Step("root-a", ["mkfs.ext4", "-q", "-L", "root-a", "-E", "root_owner=0:0", "-d", str(root),
                        str(rootimg), f"{by['root-a'].size // 1024}k"]),
        Step("data", ["mkfs.ext4", "-q", "-L", "appliance-data", "-d", str(root / "var/lib/appliance"),
                      str(data), f"{by['appliance-data'].size // 1024}k"]),
    ]
    for s in steps:
        run(s, log)
    raw = out / f"appliance-{cfg.version}.raw"
    raw.unlink(missing_ok=True)
    with open(raw, "wb") as f:
        f.truncate(disk_size)
    run(Step("partition table", ["sfdisk", "-q", str(raw)], sfdisk_script(parts)), log)
    for name, img in (("esp", esp), ("root-a", rootimg), ("appliance-data", data)):
        run(Step(f"write {name}", ["dd", f"if={img}", f"of={raw}", "bs=1M", f"seek={by[name].start // MiB}",
                                   "conv=notrunc,sparse", "status=none"]), log)
    qcow = raw.with_suffix(".qcow2")
    run(Step("qcow2", ["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(qcow)]), log)
    for f in (esp, rootimg, data):
        f.unlink()
    return raw, qcow


def need_tools() -> None:
    wanted = list_file(IMAGE / "build-tools.txt")
    missing = [p for p in wanted if subprocess.run(["dpkg-query", "-W", "-f", "${Status}", p],
                                                   capture_output=True, text=True).stdout != "install ok installed"]
    if missing:
        print(f"image: installing build tools: {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def config(out: Path, version: str, relock: bool) -> Config:
    pkgs = image_packages(list_file(IMAGE / "packages.txt"), list_file(IMAGE / "lab-only.txt"),
                          list_file(IMAGE / "image-packages.txt"))
    lock_path = IMAGE / "versions.lock"
    lock = None if relock or not lock_path.exists() else parse_lock(lock_path.read_text())
    if lock is not None:
        missing = [p for p in pkgs if p not in lock]
        if missing:
            raise BuildError(f"image/versions.lock has no version for {', '.join(missing)}; "
                             "run `make image-lock`")
    return Config(out=out, version=version, mirrors=apt_mirrors(read_apt_sources()), packages=pkgs, lock=lock)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(TOP / "build/image"))
    ap.add_argument("--version", default=os.environ.get("IMAGE_VERSION") or _git_version())
    ap.add_argument("--lock", action="store_true", help="resolve the newest versions and rewrite versions.lock")
    ap.add_argument("--signing-key", type=Path, default=default_signing_key(),
                    help="the ed25519 key images are signed with, made on the first build "
                         "(default: $IMAGE_SIGNING_KEY or ~root/.config/appliance/image-signing.key)")
    ap.add_argument("--deb-cache", type=Path, default=DEB_CACHE,
                    help="the .debs of the last good build, used for locked versions the mirror no longer has "
                         "(default: $IMAGE_DEB_CACHE or /var/cache/appliance-image/debs)")
    ap.add_argument("--no-link", action="store_true",
                    help="leave appliance.raw/.qcow2 pointing at the previous build (the upgrade test's N+1)")
    opts = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("image: run as root (debootstrap and chroot)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    try:
        need_tools()
        out = Path(opts.out)
        out.mkdir(parents=True, exist_ok=True)
        key = signing_key(opts.signing_key)
        cfg = config(out, opts.version, opts.lock)
        cfg.public_key = public_pem(key)
        (out / "image-signing.pub").write_bytes(cfg.public_key)
        steps = plan(cfg)
        with open(out / "build.log", "a") as log:
            base = build_base(cfg, steps["base"], log, opts.deb_cache)
            root = build_root(cfg, base, steps["appliance"], log)
            raw, qcow = build_disk(cfg, root, log)
            for image in (raw, qcow):
                print(f"image: signing {image.name}", flush=True)
                sign_image(image, key, cfg.version)
    except BuildError as e:
        print(f"image: {e}", file=sys.stderr)
        return 1
    used = subprocess.run(["du", "-sm", str(root)], capture_output=True, text=True).stdout.split()[0]
    links = (("appliance.raw", raw), ("appliance.qcow2", qcow))
    links += tuple((f"{name}.sig", t.with_name(t.name + ".sig")) for name, t in links)
    for link, target in () if opts.no_link else links:
        (out / link).unlink(missing_ok=True)
        (out / link).symlink_to(target.name)
    print(f"image: version {cfg.version}: {raw} ({raw.stat().st_size // MiB} MiB raw, "
          f"{_allocated(raw) // MiB} MiB allocated), {qcow} ({qcow.stat().st_size // MiB} MiB); "
          f"root file system {used} MiB; signed by key {upgrade.key_id(key.public_key())} "
          f"({opts.signing_key}); built in {time.monotonic() - t0:.0f} s")
    return 0


def _allocated(p: Path) -> int:
    return p.stat().st_blocks * 512


def _git_version() -> str:
    res = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=TOP, capture_output=True, text=True)
    return "0.1.0-" + (res.stdout.strip() or "dev")


if __name__ == "__main__":
    sys.exit(main())
