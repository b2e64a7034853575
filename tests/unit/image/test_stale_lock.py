"""A lock whose versions left the mirror: the cache of the last good build,
else the mirror's version of that package only, said, and the lock updated.

The mirror is a fake `Packages` index and the cache a folder of empty files
named as apt names .debs: no network. (Run for real: see image/README.md.)
"""
import importlib.util
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("image_build_stale", TOP / "image/build.py")
build = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = build
spec.loader.exec_module(build)


def packages(*entries: tuple[str, str]) -> str:
    return "".join(f"Package: {n}\nArchitecture: amd64\nVersion: {v}\nPriority: optional\n\n" for n, v in entries)


# The mirror eight days after the lock: the kernel point release replaced
# 6.1.192-2 (the issue's `E: Version '6.1.192-2' for 'linux-image-amd64' was not found`).
MIRROR = build.mirror_index({
    "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages": packages(
        ("bash", "5.2.15-2+b13"), ("linux-image-amd64", "6.1.176-1"), ("bpftool", "7.1.0+6.1.176-1"),
        ("linux-libc-dev", "6.1.176-1"), ("libc6", "2.36-9+deb12u13"), ("zlib1g", "1:1.2.13.dfsg-1")),
    "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages": packages(
        ("linux-image-amd64", "6.1.192-3"), ("linux-image-6.1.0-57-amd64", "6.1.192-3"),
        ("bpftool", "7.1.0+6.1.192-3"), ("linux-libc-dev", "6.1.192-3")),
    "deb.debian.org_debian_dists_bookworm_Release": "Package: not-an-index\nVersion: 1\n",
})
LOCK = {"bash": "5.2.15-2+b13", "linux-image-amd64": "6.1.192-2", "linux-image-6.1.0-56-amd64": "6.1.192-2",
        "bpftool": "7.1.0+6.1.192-2", "linux-libc-dev": "6.1.192-2", "zlib1g:amd64": "1:1.2.13.dfsg-1"}
WANTED = ["bash", "linux-image-amd64", "bpftool"]


def test_the_mirror_index_has_every_version_of_every_suite():
    assert MIRROR["linux-image-amd64"] == {"6.1.176-1", "6.1.192-3"}
    assert "not-an-index" not in MIRROR


def test_without_a_cache_only_the_gone_packages_take_the_mirrors_version():
    res = build.resolve(LOCK, WANTED, MIRROR, cache={})
    # Still on the mirror: pinned as locked (the arch-qualified name too).
    assert "bash=5.2.15-2+b13" in res.install and "zlib1g:amd64=1:1.2.13.dfsg-1" in res.install
    # Gone: the bare name, i.e. apt's candidate (the mirror's newest), nothing else moves.
    assert {"linux-image-amd64", "bpftool", "linux-libc-dev"} <= set(res.install)
    assert res.from_mirror == {"linux-image-amd64": "6.1.192-2", "bpftool": "7.1.0+6.1.192-2",
                               "linux-libc-dev": "6.1.192-2"}
    # The old kernel's ABI package is gone altogether; only a dependency, so left to apt.
    assert res.dropped == {"linux-image-6.1.0-56-amd64": "6.1.192-2"}
    assert not any(a.startswith("linux-image-6.1.0-56") for a in res.install)
    report = "\n".join(res.report())
    assert "linux-image-amd64 6.1.192-2: left the mirror and is not in the cache; taking the mirror's version" \
        in report
    assert res.changed


def test_a_package_built_with_one_that_moved_is_left_to_apt():
    # As on the real mirror: linux-image-6.1.0-56-amd64 6.1.192-2 is still there, but the
    # linux-image-amd64 it came with moved to 6.1.192-3 (which needs 6.1.0-57): pinning 56
    # would put two kernels in the image.
    lists = {
        "security_Packages": packages(("linux-image-amd64", "6.1.192-3"), ("linux-image-6.1.0-57-amd64", "6.1.192-3"))
        .replace("Package: linux-image-amd64\n", "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.192+3)\n")
        + "Package: linux-image-6.1.0-56-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\n\n"
        + "Package: bash\nVersion: 5.2.15-2+b13\n\n"}
    lock = {"bash": "5.2.15-2+b13", "linux-image-amd64": "6.1.192-2", "linux-image-6.1.0-56-amd64": "6.1.192-2"}
    sources = build.source_index(lists)
    assert sources["linux-image-6.1.0-56-amd64"] == "linux-signed-amd64" and sources["bash"] == "bash"
    res = build.resolve(lock, ["bash", "linux-image-amd64"], build.mirror_index(lists), {}, sources=sources)
    assert res.dropped == {"linux-image-6.1.0-56-amd64": "6.1.192-2"}
    assert res.install == ["bash=5.2.15-2+b13", "linux-image-amd64"]
    # Without the sources (or asked for by name), it stays pinned.
    assert "linux-image-6.1.0-56-amd64=6.1.192-2" in build.resolve(lock, ["bash"], build.mirror_index(lists), {}).install


def test_the_cache_of_the_last_good_build_keeps_the_locked_versions(tmp_path):
    cache = tmp_path / "debs"
    cache.mkdir()
    for name in ("linux-image-amd64_6.1.192-2_amd64.deb", "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb",
                 "bpftool_7.1.0+6.1.192-2_amd64.deb", "linux-libc-dev_6.1.192-2_amd64.deb",
                 "zlib1g_1%3a1.2.13.dfsg-1_amd64.deb", "not-a-deb.txt"):
        (cache / name).write_bytes(b"")
    index = build.cache_index(cache)
    assert index[("zlib1g", "1:1.2.13.dfsg-1")].name == "zlib1g_1%3a1.2.13.dfsg-1_amd64.deb"
    res = build.resolve(LOCK, WANTED, MIRROR, index, cache_in_root=lambda p: f"/tmp/appliance-debs/{p.name}")
    assert "/tmp/appliance-debs/linux-image-amd64_6.1.192-2_amd64.deb" in res.install
    assert "/tmp/appliance-debs/linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb" in res.install
    assert "zlib1g:amd64=1:1.2.13.dfsg-1" in res.install  # the mirror still has it: from there
    assert not res.changed and res.from_mirror == {} and res.dropped == {}
    assert res.kept == LOCK
    assert "from the cache of the last good build" in res.report()[0]


def test_the_lock_is_rewritten_from_what_was_installed_and_says_what_moved():
    res = build.resolve(LOCK, WANTED, MIRROR, cache={})
    installed = {**{n: v for n, v in LOCK.items() if n in res.kept},
                 "linux-image-amd64": "6.1.192-3", "linux-image-6.1.0-57-amd64": "6.1.192-3",
                 "bpftool": "7.1.0+6.1.192-3", "linux-libc-dev": "6.1.192-3"}
    lock, changes = build.updated_lock(res, installed)
    assert lock == installed
    assert changes == ["bpftool 7.1.0+6.1.192-2 -> 7.1.0+6.1.192-3",
                       "linux-image-6.1.0-56-amd64 6.1.192-2 -> (gone)",
                       "linux-image-6.1.0-57-amd64 (new) -> 6.1.192-3",
                       "linux-image-amd64 6.1.192-2 -> 6.1.192-3",
                       "linux-libc-dev 6.1.192-2 -> 6.1.192-3"]
    text = build.format_lock(lock, "http://deb.debian.org/debian")
    assert build.parse_lock(text) == lock


def test_a_kept_pin_that_moved_anyway_is_an_error_naming_it():
    res = build.resolve(LOCK, WANTED, MIRROR, cache={})
    installed = dict(res.kept, bash="5.2.21-1")
    with pytest.raises(build.BuildError, match="bash: locked 5.2.15-2\\+b13, installed 5.2.21-1"):
        build.updated_lock(res, installed)


def test_a_wanted_package_gone_from_the_mirror_is_an_error_naming_it():
    with pytest.raises(build.BuildError, match="kea-dhcp4-server: locked 2.2.0-6, but the mirror has no"):
        build.resolve({"kea-dhcp4-server": "2.2.0-6"}, ["kea-dhcp4-server"], MIRROR, cache={})


def test_the_cache_becomes_exactly_the_last_good_builds_debs(tmp_path):
    kept, cache = tmp_path / "kept", tmp_path / "cache/debs"
    kept.mkdir()
    cache.mkdir(parents=True)
    (cache / "bash_5.1-1_amd64.deb").write_bytes(b"old build")
    for name in ("bash_5.2.15-2+b13_amd64.deb", "zlib1g_1%3a1.2.13.dfsg-1_amd64.deb", "gone_1.0_amd64.deb"):
        (kept / name).write_bytes(name.encode())
    n = build.save_debs(kept, {"bash": "5.2.15-2+b13", "zlib1g:amd64": "1:1.2.13.dfsg-1"}, cache)
    assert n == 2
    assert sorted(p.name for p in cache.iterdir()) == ["bash_5.2.15-2+b13_amd64.deb",
                                                        "zlib1g_1%3a1.2.13.dfsg-1_amd64.deb"]
    assert sorted(p.name for p in cache.parent.iterdir()) == ["debs"]


def test_the_base_install_is_what_the_resolution_says(tmp_path):
    cfg = build.Config(out=tmp_path, version="9", mirrors={"bookworm": "http://m/debian"}, packages=WANTED,
                       lock=LOCK)
    res = build.resolve(LOCK, WANTED, MIRROR, cache={})
    steps = build.base_steps(cfg, tmp_path / "root", res.install)
    assert [s.what for s in steps[:build.PREP_STEPS]] == ["debootstrap", "apt sources", "policy-rc.d", "apt update"]
    install = next(s for s in steps if s.what == "packages").argv
    assert "linux-image-amd64" in install and "bash=5.2.15-2+b13" in install
