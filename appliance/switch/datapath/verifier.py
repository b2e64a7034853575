"""Name the flow behind a verifier rejection.

The verifier's log ends at the instruction it refused, and its source
annotations point into `dp_runtime.h` when that instruction belongs to an
inlined helper (an action such as `dp_controller`); the generated C, where
each flow is a comment, is never named.  The object's DWARF knows more:
for an inlined instruction it keeps the whole inline chain, and the frame
in the generated C is the line that called the helper — a line the compiler
mapped to its flows (`Program.line_flows`).  `llvm-symbolizer --inlining`
reads that chain; its innermost frame must be the line the verifier names
last, or the answer is not trusted.

`explain(error, program, object_path)` turns the loader's `BpfError` into a
`VerifierError` that says which flows, where, and why (the verifier's last
line), with the log's tail; the whole log stays in `.log`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from appliance.kernel.bpf import BpfError

from ..flows import Flow
from .compiler import Program

SYMBOLIZER = os.environ.get("APPLIANCE_LLVM_SYMBOLIZER") or next(
    (p for p in ("llvm-symbolizer", "llvm-symbolizer-14") if shutil.which(p)), "llvm-symbolizer")
PROGRAM_SECTION = "tc"
LOG_TAIL = 40

_INSN = re.compile(r"^(\d+): \(", re.M)
_SOURCE = re.compile(r"^; .* @ (\S+):(\d+)$", re.M)


class VerifierError(BpfError):
    """The kernel refused the compiled program; `flows` are the flows it was
    compiling at the refused instruction (empty when that cannot be told)."""

    def __init__(self, error: BpfError, flows: tuple[Flow, ...], where: str,
                 port_names=None):
        self.flows = flows
        self.where = where
        reason = _reason(error.log)
        if flows:
            named = "; ".join(repr(f.to_ofctl(port_names)) + (f" (line {f.line})" if f.line else "")
                              for f in flows)
            head = f"the verifier rejected the program in flow {named}"
        else:
            head = "the verifier rejected the program (no single flow to blame)"
        if where:
            head += f", at {where}"
        if reason:
            head += f": {reason}"
        tail = "\n".join(error.log.splitlines()[-LOG_TAIL:])
        OSError.__init__(self, error.errno, f"{error.what}: {head}\n{tail}")
        self.what = error.what
        self.log = error.log


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int


def _reason(log: str) -> str:
    """The verifier's complaint: the first line after the last instruction."""
    lines = log.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if _INSN.match(lines[i]) or lines[i].startswith(";"):
            for after in lines[i + 1:]:
                if after.strip() and not after.startswith("processed "):
                    return after.strip()
            break
    return ""


def refused_instruction(log: str) -> int | None:
    found = _INSN.findall(log)
    return int(found[-1]) if found else None


def inline_chain(object_path: str | Path, insn: int) -> list[Frame]:
    """Innermost first: the functions (with file:line) instruction `insn` of
    the program section belongs to, through every inlined call."""
    try:
        out = subprocess.run([SYMBOLIZER, "--obj", str(object_path), "--inlining",
                              "--relative-address", f"0x{insn * 8:x}"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    frames = []
    for fn, loc in zip(lines[0::2], lines[1::2]):
        parts = loc.rsplit(":", 2)
        if len(parts) == 3 and parts[1].isdigit():
            frames.append(Frame(fn, os.path.basename(parts[0]), int(parts[1])))
    return frames


def _section_size(object_path: str | Path) -> int:
    try:
        out = subprocess.run(["llvm-objdump", "-h", str(object_path)],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == PROGRAM_SECTION:
            return int(parts[2], 16)
    return 0


# A BPF jump reaches 32,767 instructions; the kernel checks that before the verifier runs.
TOO_LONG = ("the program is longer than a BPF jump reaches (32,767 instructions): a resubmit in "
            "the middle of an action list copies the tables it calls at each such resubmit, and "
            "resubmits nested in those copy again; end action lists with goto_table (or a resubmit "
            "as the last action), which the datapath compiles once, where the flows allow")


def explain(error: BpfError, program: Program, object_path: str | Path,
            port_names=None) -> BpfError:
    """`error` as a VerifierError naming the flows (or `error` itself when
    it is not a verifier rejection)."""
    insn = refused_instruction(error.log or "")
    if insn is None:
        if "jump out of range" in (error.log or ""):
            return BpfError(error.what, error.errno, f"{TOO_LONG}\n{error.log}")
        return error
    source = os.path.basename(str(object_path)).split("-")[:2]
    c_name = "-".join(source) + ".c"           # dp-<digest>.c, see build.build
    flows: tuple[Flow, ...] = ()
    where = ""
    named = _SOURCE.findall(error.log)
    # Instructions past the program section belong to subprograms libbpf
    # appended (the FLOOD loop body): their offsets are not the section's.
    if insn * 8 < _section_size(object_path):
        chain = inline_chain(object_path, insn)
        inner_ok = chain and named and (chain[0].file, chain[0].line) == \
            (os.path.basename(named[-1][0]), int(named[-1][1]))
        if inner_ok:
            for fr in chain:
                if fr.file == c_name and program.flows_at(fr.line):
                    flows = program.flows_at(fr.line)
                    where = f"{c_name}:{fr.line} ({chain[0].function}, {chain[0].file}:{chain[0].line})"
                    break
    if not flows and named and os.path.basename(named[-1][0]) == c_name:
        # The refused instruction is the generated C's own (a match, say).
        line = int(named[-1][1])
        flows, where = program.flows_at(line), f"{c_name}:{line}"
    return VerifierError(error, flows, where, port_names)
