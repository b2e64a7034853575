"""appliance-upgrade on disk files: a signed image is written, anything else
is refused before one byte of the disk changes.

Small but real disks: GPT by sfdisk, a FAT ESP by mkfs.vfat and mtools, the
tool run as a program (as on the box), the image signed by build.py's signer.
"""
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TOP = Path(__file__).resolve().parents[3]
UPGRADE = TOP / "image/upgrade.py"
M = 1 << 20
# (name, start MiB, size MiB): the build's layout, shrunk.
LAYOUT = (("esp", 1, 8), ("root-a", 9, 4), ("root-b", 13, 4), ("appliance-data", 17, 2))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"image_{name}_sig", TOP / "image" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


build = _load("build")


def _disk(path: Path, esp_files: dict[str, str], fill: dict[str, bytes]) -> Path:
    with open(path, "wb") as f:
        f.truncate(20 * M)
    script = "label: gpt\nunit: sectors\n\n" + "".join(
        f"start={s * M // 512}, size={n * M // 512}, name={name}\n" for name, s, n in LAYOUT)
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True)
    esp = path.with_suffix(".esp")
    subprocess.run(["mkfs.vfat", "-n", "ESP", "-C", str(esp), str(8 * 1024)], check=True, capture_output=True)
    for rel, text in esp_files.items():
        parts = rel.split("/")
        for i in range(1, len(parts)):
            subprocess.run(["mmd", "-D", "s", "-i", str(esp), "::" + "/".join(parts[:i])], capture_output=True)
        src = path.with_suffix(".tmp")
        src.write_text(text)
        subprocess.run(["mcopy", "-o", "-i", str(esp), str(src), f"::{rel}"], check=True)
        src.unlink()
    with open(path, "r+b") as f:
        f.seek(1 * M)
        f.write(esp.read_bytes())
        for name, s, n in LAYOUT:
            if name in fill:
                f.seek(s * M)
                f.write(fill[name] * (n * M // len(fill[name])))
    esp.unlink()
    return path


@pytest.fixture
def box(tmp_path):
    """A box booted from slot a, a signed new image, the builder's key pair."""
    key = Ed25519PrivateKey.generate()
    pub = tmp_path / "image-signing.pub"
    pub.write_bytes(build.public_pem(key))
    disk = _disk(tmp_path / "box.raw", build.loader_files("a", "1.0"), {"root-a": b"OLD-ROOT", "root-b": b"OLD-ROOT", "appliance-data": b"SETTINGS"})
    files = dict(build.loader_files("a", "2.0"), **{"a/vmlinuz": "kernel 2.0", "a/initrd.img": "initrd 2.0"})
    files.pop("loader/loader.conf")
    new = _disk(tmp_path / "new.raw", files, {"root-a": b"NEW-ROOT"})
    build.sign_image(new, key, "2.0")
    return tmp_path, disk, new, pub


def _upgrade(disk, new, pub, *extra):
    return subprocess.run([sys.executable, str(UPGRADE), "--disk", str(disk), "--public-key", str(pub),
                           *extra, str(new)], capture_output=True, text=True)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _slot_b(disk: Path) -> bytes:
    with open(disk, "rb") as f:
        f.seek(13 * M)
        return f.read(8)


def test_a_signed_image_is_written_to_the_other_slot(box):
    _, disk, new, pub = box
    res = _upgrade(disk, new, pub)
    assert res.returncode == 0, res.stderr
    assert "signature good" in res.stdout
    assert _slot_b(disk) == b"NEW-ROOT"
    esp = f"{disk}@@{1 * M}"
    loader = subprocess.run(["mtype", "-i", esp, "::loader/loader.conf"], capture_output=True, text=True).stdout
    assert loader.startswith("default appliance-b.conf")


def _refused(box, res):
    assert res.returncode == 1
    assert _slot_b(box[1]) == b"OLD-ROOT"


def test_a_tampered_image_is_refused_before_a_byte_is_written(box):
    tmp, disk, new, pub = box
    before = _sha(disk)
    with open(new, "r+b") as f:  # one byte of the new root changed after signing
        f.seek(10 * M + 5)
        f.write(b"X")
    res = _upgrade(disk, new, pub)
    _refused(box, res)
    assert "does not match its signature" in res.stderr and "changed after it was built" in res.stderr
    assert _sha(disk) == before


def test_an_image_signed_by_another_key_is_refused(box):
    tmp, disk, new, pub = box
    before = _sha(disk)
    build.sign_image(new, Ed25519PrivateKey.generate(), "2.0")
    res = _upgrade(disk, new, pub)
    _refused(box, res)
    assert "bad signature: not signed by this box's image key" in res.stderr
    assert _sha(disk) == before


def test_an_edited_signature_file_is_refused(box):
    tmp, disk, new, pub = box
    sig = new.with_name("new.raw.sig")
    sig.write_text(sig.read_text().replace('"version": "2.0"', '"version": "9.9"'))
    res = _upgrade(disk, new, pub)
    _refused(box, res)
    assert "bad signature" in res.stderr


def test_an_unsigned_image_is_refused(box):
    tmp, disk, new, pub = box
    new.with_name("new.raw.sig").unlink()
    res = _upgrade(disk, new, pub)
    _refused(box, res)
    assert "no signature; refusing an unsigned image" in res.stderr


def test_an_image_others_may_rewrite_is_refused(box):
    # Checked then copied: a file another user can change in between proves nothing.
    tmp, disk, new, pub = box
    os.chmod(new, 0o666)
    res = _upgrade(disk, new, pub)
    _refused(box, res)
    assert "writable by other users" in res.stderr


def test_the_signing_key_is_made_once_0600_outside_the_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("IMAGE_SIGNING_KEY", raising=False)
    assert not build.default_signing_key().is_relative_to(TOP)
    path = tmp_path / "conf/image-signing.key"
    said = []
    key = build.signing_key(path, out=said.append)
    assert path.stat().st_mode & 0o777 == 0o600
    assert "made the image signing key" in said[0]
    again = build.signing_key(path, out=said.append)
    assert build.public_pem(again) == build.public_pem(key) and len(said) == 1
    os.chmod(path, 0o644)
    with pytest.raises(build.BuildError, match="readable by others"):
        build.signing_key(path)


def test_the_root_carries_the_public_key(tmp_path):
    cfg = build.Config(out=tmp_path, version="1", mirrors={"bookworm": "http://m/debian"}, packages=[],
                       lock={}, public_key=b"PEM")
    steps = {s.what: s for s in build.plan(cfg)["appliance"]}
    step = steps["image signing key"]
    assert step.argv[-1].endswith("/etc/appliance/image-signing.pub") and step.stdin == "PEM"
