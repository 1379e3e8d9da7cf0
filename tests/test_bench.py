"""The benchmark script runs and its side-by-side checks hold (both sides computed the same losses, greedy
answers and judgements). No timing is asserted: speed is measured by `python bench/run.py`, not by tests."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_bench_sides_compute_the_same_thing(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import run as bench

    out = tmp_path / "results.json"
    assert bench.main(["--only", "sft,dpo,hs,fabe", "--repeats", "1", "--steps", "3", "--batch-size", "4", "--prompts", "6",
                       "--max-new-tokens", "8", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    for key in ("sft", "dpo", "dpo_precomputed", "hs", "fabe"):
        assert results[key]["same"], (key, results[key])
    assert results["dpo"]["same_tokens"] and results["hs"]["identical_answers"] == "6/6"
    sys.modules.pop("run", None)
