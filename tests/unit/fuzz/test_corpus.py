"""The fuzzers' saved corpus (fuzz/corpus/TARGET/), replayed: every input that
once reached new code, and every input that once crashed, still passes.

No atheris needed: the targets are plain functions (fuzz/targets.py).
"""
from pathlib import Path

import pytest

from fuzz import targets

TOP = Path(__file__).resolve().parents[3]
CORPUS = TOP / "fuzz/corpus"


@pytest.mark.parametrize("target", sorted(targets.TARGETS))
def test_the_saved_corpus_replays_without_a_crash(target):
    inputs = sorted((CORPUS / target).iterdir())
    assert inputs, f"fuzz/corpus/{target} is empty"
    fn = targets.TARGETS[target]
    for path in inputs:
        try:
            fn(path.read_bytes())
        except Exception as e:  # noqa: BLE001 - which input, then the error itself
            raise AssertionError(f"{path.relative_to(TOP)}: {type(e).__name__}: {e}") from e
