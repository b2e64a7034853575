"""Coverage-guided fuzzing of fuzz/targets.py with atheris (libFuzzer): `make fuzz`.

    .venv/bin/python fuzz/run.py [--runs N] [--max-time S] [TARGET ...]

Each target runs in its own process from its saved corpus (fuzz/corpus/T/);
what it finds goes to build/fuzz/T/ and, once the run ends, only the inputs
that reach new code are merged back into fuzz/corpus/T/ (commit them: CI
replays that corpus). A crash is saved as build/fuzz/T/crash-*, and an input
taking longer than --hang-ms (the fastest of three runs) as build/fuzz/T/hang-* (replay one with
`fuzz/run.py --replay FILE T`). The table at the end is the report.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))
CORPUS = TOP / "fuzz/corpus"
WORK = TOP / "build/fuzz"


def _one(target: str, hang_ms: float, libfuzzer_args: list[str]) -> None:
    """Inside the child: instrument the target's code and hand over to libFuzzer."""
    import atheris

    from fuzz import targets

    with atheris.instrument_imports(include=[m.split(".")[0] if not m.startswith("appliance") else m
                                             for m in targets.MODULES[target]]):
        for module in targets.MODULES[target]:
            __import__(module)
    fn = targets.TARGETS[target]
    work = WORK / target

    def one_input(data: bytes) -> None:
        t0 = time.perf_counter()
        fn(data)
        took = (time.perf_counter() - t0) * 1000
        if took > hang_ms:
            # Twice more before it counts: on a shared machine one slow run is
            # often the machine (another process, a page fault, a GC pass).
            for _ in range(2):
                t0 = time.perf_counter()
                fn(data)
                took = min(took, (time.perf_counter() - t0) * 1000)
        if took > hang_ms:
            path = work / f"hang-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            print(f"fuzz: HANG {took:.0f} ms > {hang_ms:g} ms: {path}", file=sys.stderr, flush=True)

    # libFuzzer runs argv[0] again for -merge: a script that comes back here.
    again = work / "child.sh"
    again.write_text(f"#!/bin/sh\nexec {sys.executable} {__file__} --child {target} --hang-ms {hang_ms} -- \"$@\"\n")
    again.chmod(0o755)
    atheris.Setup([str(again), *libfuzzer_args], one_input)
    atheris.Fuzz()


def fuzz(target: str, runs: int, max_time: int, hang_ms: float) -> dict:
    work = WORK / target
    (work / "new").mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / target
    seeds.mkdir(parents=True, exist_ok=True)
    for old in work.glob("hang-*"):
        old.unlink()
    args = [f"-runs={runs}", f"-max_total_time={max_time}", f"-artifact_prefix={work}/",
            "-timeout=10", "-rss_limit_mb=4096", "-max_len=4096", "-print_final_stats=1",
            str(work / "new"), str(seeds)]
    t0, started = time.monotonic(), time.time()
    res = subprocess.run([sys.executable, __file__, "--child", target, "--hang-ms", str(hang_ms), "--", *args],
                         capture_output=True, text=True, cwd=TOP)
    took = time.monotonic() - t0
    (work / "log.txt").write_text(res.stdout + res.stderr)
    text = res.stderr
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", text) or re.search(r"Done (\d+) runs", text)
    # Only this run's: a crash kept from an earlier run (to replay it while fixing) is not found again.
    crashes = sorted(p.name for pattern in ("crash-*", "timeout-*") for p in work.glob(pattern)
                     if p.stat().st_mtime >= started)
    hangs = len(list(work.glob("hang-*")))
    before = len(list(seeds.iterdir()))
    # Only the inputs that reach code the saved corpus does not: a corpus that stays small.
    merge = subprocess.run([sys.executable, __file__, "--child", target, "--hang-ms", "1e9", "--", "-merge=1",
                            str(seeds), str(work / "new")], capture_output=True, text=True, cwd=TOP)
    if merge.returncode != 0:
        print(f"fuzz: {target}: merge failed (see {work}/merge.txt)", file=sys.stderr)
    (work / "merge.txt").write_text(merge.stderr)
    return {"target": target, "inputs": int(m.group(1)) if m else None, "seconds": took,
            "crashes": crashes, "hangs": hangs,
            "corpus": f"{before} -> {len(list(seeds.iterdir()))}", "status": res.returncode}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        target, hang_ms = argv[1], float(argv[3])
        _one(target, hang_ms, argv[5:])
        return 0
    from fuzz import targets
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", default=list(targets.TARGETS))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("FUZZ_RUNS", 1_000_000)))
    ap.add_argument("--max-time", type=int, default=int(os.environ.get("FUZZ_TIME", 1800)),
                    help="seconds per target at most")
    ap.add_argument("--hang-ms", type=float, default=100.0, help="an input slower than this is a hang")
    ap.add_argument("--replay", type=Path, help="run one input through the target, uninstrumented")
    opts = ap.parse_args(argv)
    unknown = [t for t in opts.targets if t not in targets.TARGETS]
    if unknown:
        ap.error(f"no target {', '.join(unknown)} (have: {', '.join(targets.TARGETS)})")
    if opts.replay:
        fn, data = targets.TARGETS[opts.targets[0]], opts.replay.read_bytes()
        took = []
        for _ in range(3):  # the first call also builds what the target keeps (a resolver...)
            t0 = time.perf_counter()
            fn(data)
            took.append((time.perf_counter() - t0) * 1000)
        print(f"fuzz: {opts.replay}: no crash; {' / '.join(f'{t:.1f}' for t in took)} ms (3 runs)")
        return 0
    rows = [fuzz(t, opts.runs, opts.max_time, opts.hang_ms) for t in opts.targets]
    print(f"\n| target | inputs | seconds | crashes | hangs > {opts.hang_ms:g} ms | corpus |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['target']} | {r['inputs']} | {r['seconds']:.0f} | {len(r['crashes'])} "
              f"{' '.join(r['crashes'])} | {r['hangs']} | {r['corpus']} |")
    print(f"\n(--runs {opts.runs} --max-time {opts.max_time}; logs in {WORK.relative_to(TOP)}/TARGET/log.txt)")
    return 1 if any(r["crashes"] or r["hangs"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
