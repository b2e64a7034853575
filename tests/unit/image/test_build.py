"""image/build.py: its inputs (package lists, lock, mirror) and its plan."""
import importlib.util
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[3]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"image_{name}", TOP / "image" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


build = _load("build")


def test_image_packages_reuse_the_shared_list_minus_lab_only():
    pkgs = build.image_packages(["python3", "chromium", "kea-dhcp4-server"], ["chromium"], ["linux-image-amd64", "python3"])
    assert pkgs == ["python3", "kea-dhcp4-server", "linux-image-amd64"]


def test_lab_only_must_name_packages_of_the_shared_list():
    with pytest.raises(build.BuildError, match="lab-only.txt: nosuch not in image/packages.txt"):
        build.image_packages(["python3"], ["nosuch"], [])


def test_the_real_lists_give_the_image_what_the_issue_names():
    pkgs = build.image_packages(build.list_file(TOP / "image/packages.txt"),
                                build.list_file(TOP / "image/lab-only.txt"),
                                build.list_file(TOP / "image/image-packages.txt"))
    for p in ("linux-image-amd64", "systemd", "kea-dhcp4-server", "redis-server", "nftables", "clang",
              "libbpf-dev", "bpftool", "openssh-server", "novnc", "websockify", "python3-venv"):
        assert p in pkgs
    for p in ("chromium", "openvswitch-switch"):
        assert p not in pkgs


def test_mirror_comes_from_deb822_sources_and_ignores_other_types():
    sources = {"debian.sources": (
        "Types: deb\n# http://snapshot.debian.org/x\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"),
        "other.sources": "Types: deb\nURIs: https://vendor.example/apt\nSuites: nodistro\n"}
    assert build.apt_mirrors(sources) == {
        "bookworm": "http://mirror.example/debian",
        "bookworm-updates": "http://mirror.example/debian",
        "bookworm-security": "http://mirror.example/debian-security"}


def test_mirror_from_one_line_sources():
    assert build.apt_mirrors({"sources.list": "deb [arch=amd64] http://m.example/debian bookworm main\n"}) == \
        {"bookworm": "http://m.example/debian"}


def test_no_bookworm_source_is_an_error_naming_the_suite():
    with pytest.raises(build.BuildError, match="suite bookworm"):
        build.apt_mirrors({"x.list": "deb http://m.example/debian trixie main\n"})


def test_lock_round_trip_and_errors_name_the_line():
    text = build.format_lock({"zlib1g:amd64": "1:1.2.13.dfsg-1", "bash": "5.2.15-2+b2"}, "http://m/debian")
    assert build.parse_lock(text) == {"bash": "5.2.15-2+b2", "zlib1g:amd64": "1:1.2.13.dfsg-1"}
    assert text.splitlines()[-2:] == ["bash=5.2.15-2+b2", "zlib1g:amd64=1:1.2.13.dfsg-1"]
    with pytest.raises(build.BuildError, match="line 2: 'bash 5.2' is not name=version"):
        build.parse_lock("# head\nbash 5.2\n")
    with pytest.raises(build.BuildError, match="line 2: bash is locked twice"):
        build.parse_lock("bash=1\nbash=2\n")


def test_committed_lock_parses_and_covers_the_image_packages():
    lock_path = TOP / "image/versions.lock"
    if not lock_path.exists():
        pytest.skip("image/versions.lock not generated yet (make image-lock)")
    lock = build.parse_lock(lock_path.read_text())
    pkgs = build.image_packages(build.list_file(TOP / "image/packages.txt"),
                                build.list_file(TOP / "image/lab-only.txt"),
                                build.list_file(TOP / "image/image-packages.txt"))
    assert [p for p in pkgs if p not in lock] == []


def test_lock_diff_names_each_difference():
    assert build.lock_diff({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "9", "d": "4"}) == [
        "b: locked 2, installed 9", "c: locked 3 but not installed", "d: installed 4 but not in the lock"]


def test_disk_layout_aligned_and_data_last():
    parts, size = build.disk_layout()
    assert [p.name for p in parts] == ["esp", "root-a", "root-b", "appliance-data"]
    for a, b in zip(parts, parts[1:]):
        assert a.start + a.size == b.start
    assert all(p.start % build.MiB == 0 for p in parts)
    assert size >= parts[-1].start + parts[-1].size
    script = build.sfdisk_script(parts)
    assert "label: gpt" in script and "name=appliance-data" in script
    assert f"start={build.MiB // 512}, size={build.ESP_SIZE // 512}" in script


def test_boot_entries_name_the_slot():
    files = build.loader_files("a", "1.2")
    assert files["loader/loader.conf"].startswith("default appliance-a.conf")
    entry = files["loader/entries/appliance-a.conf"]
    assert "root=PARTLABEL=root-a" in entry and "linux /a/vmlinuz" in entry and "1.2" in entry


def test_plan_pins_every_package_and_uses_the_machines_mirror(tmp_path):
    cfg = build.Config(out=tmp_path, version="9", mirrors={"bookworm": "http://m.example/debian",
                                                           "bookworm-security": "http://m.example/sec"},
                       packages=["bash", "kea-dhcp4-server"], lock={"bash": "5.2", "kea-dhcp4-server": "2.2.0-6"})
    steps = build.plan(cfg)
    boot = steps["base"][0].argv
    assert boot[0] == "debootstrap" and boot[-1] == "http://m.example/debian"
    assert "deb http://m.example/sec bookworm-security main" in steps["base"][1].stdin
    install = next(s for s in steps["base"] if s.what == "packages").argv
    assert "bash=5.2" in install and "kea-dhcp4-server=2.2.0-6" in install
    unlocked = build.plan(build.Config(out=tmp_path, version="9", mirrors=cfg.mirrors,
                                       packages=["bash"], lock=None))
    assert "bash" in next(s for s in unlocked["base"] if s.what == "packages").argv
    # The base's cache changes with the lock.
    assert build.Config(tmp_path, "9", cfg.mirrors, cfg.packages, {"bash": "5.3"}).base_key != cfg.base_key
    app = [s.what for s in steps["appliance"]]
    assert app.index("wheels") < app.index("pip install") < app.index("configure")
    pip = next(s for s in steps["appliance"] if s.what == "pip install").argv
    assert "--no-index" in pip


def test_image_configure_script_locks_root_and_makes_no_secret():
    text = (TOP / "image/rootfs/usr/local/sbin/appliance-image-configure").read_text()
    assert "passwd -l root" in text
    assert "rm -f /etc/ssh/ssh_host_*" in text
    assert ": > /etc/machine-id" in text
    sshd = (TOP / "image/rootfs/etc/ssh/sshd_config.d/appliance.conf").read_text()
    assert "PasswordAuthentication no" in sshd and "KbdInteractiveAuthentication no" in sshd
