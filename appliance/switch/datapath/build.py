"""Turn generated C into a BPF object with `clang -O2 -target bpf`.

The production build and the test build (`-DDP_TEST`: outputs recorded in
the dp_trace map instead of sent, input port from skb->cb[0]) come from the
same C.  A clang failure raises `BuildError` with clang's message.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

C_DIR = Path(__file__).resolve().parent / "c"
CLANG = os.environ.get("APPLIANCE_CLANG", "clang")
# Debian keeps asm/types.h under the multiarch directory, which -target bpf
# does not search.
_ARCH_INCLUDE = f"/usr/include/{os.uname().machine}-linux-gnu"


class BuildError(RuntimeError):
    """clang rejected the generated C."""


def clang_command(src: str, obj: str, test: bool = False,
                  defines: tuple[str, ...] = ()) -> list[str]:
    cmd = [CLANG, "-O2", "-g", "-target", "bpf", "-Wall", "-Wno-unused-label",
           "-Wno-unused-function",
           "-I", str(C_DIR), "-I", _ARCH_INCLUDE, "-c", src, "-o", obj]
    flags = (["-DDP_TEST"] if test else []) + [f"-D{d}" for d in defines]
    cmd[1:1] = flags
    return cmd


def _runtime_digest() -> bytes:
    """The fixed half of the C: an object built from older headers is stale."""
    h = hashlib.sha256()
    for path in sorted(C_DIR.glob("*.h")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.digest()


def build(source: str, out_dir: str | Path, test: bool = False,
          defines: tuple[str, ...] = ()) -> Path:
    """Compile `source` into `<out_dir>/dp-<hash>[-test].o`; returns the path.

    `defines` are extra -D macros of the runtime (e.g. DP_PARSE_COPY).  The
    hash covers the source, the runtime headers and the flags, so an object
    is reused only when all three are the same."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    flavour = hashlib.sha256(_runtime_digest() + repr((test, defines)).encode()).hexdigest()[:8]
    stem = f"dp-{digest}-{flavour}{'-test' if test else ''}"
    src = out_dir / f"dp-{digest}.c"
    obj = out_dir / f"{stem}.o"
    if obj.exists():
        return obj
    src.write_text(source)
    tmp = tempfile.mktemp(dir=out_dir, suffix=".o")
    proc = subprocess.run(clang_command(str(src), tmp, test, defines), capture_output=True, text=True)
    if proc.returncode != 0:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise BuildError(f"clang failed on {src}:\n{proc.stderr.strip()}")
    os.replace(tmp, obj)
    return obj


def scratch_dir(prefix: str) -> Path:
    """A fresh `<tmp>/<prefix><pid>-*` directory to build in, for a process that removes it when
    built. A process killed during its clang run (the fault tests kill services mid-start) cannot;
    the next caller with the same prefix takes away those of processes no longer alive."""
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"{prefix}*-*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
