"""Damaged files (issue 18): a damaged checkpoint is passed over for an earlier one or step 0, a resume cuts
metrics.jsonl back to its step, a cut last line is repaired before the next row, and a finished unit whose
output is damaged runs again instead of being reported cached."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from safealign.checkpoints import latest_checkpoint
from safealign.cli import main
from safealign.io import append_jsonl
from safealign.loop import TrainConfig, make_accelerator, train
from safealign.methods.base import trainable_parameters
from safealign.methods.sft import SFT, SFTConfig
from safealign.models import load_tokenizer
from tests.helpers import lora_model, stream
from tests.test_pipeline import _recipe

STEPS = 10


def _run(tiny_llama, out_dir, save_every=4, stop_after=None):
    tok = load_tokenizer(str(tiny_llama))
    cfg = TrainConfig(lr=5e-3, max_steps=STEPS, batch_size=2, log_every=1, save_every=save_every)
    model = lora_model(tiny_llama)  # dropout on: a resume that lost the RNG state would train differently
    result = train(model, SFT(SFTConfig(), STEPS), {"train": stream(tok, 6, 2)}, cfg, out_dir, make_accelerator(cfg),
                   seed=0, stop_after=stop_after)
    return result


def _rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def _final_weights(out_dir, tiny_llama):
    """Weights after rerunning the (finished) training in `out_dir` as a killed run would be rerun."""
    return {k: v.detach().clone() for k, v in trainable_parameters(_run(tiny_llama, out_dir)["model"]).items()}


@pytest.fixture(scope="module")
def full(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = _run(tiny_llama, out)
    return out, {k: v.detach().clone() for k, v in trainable_parameters(result["model"]).items()}


def _assert_same(a, b):
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_a_resume_after_a_kill_cuts_metrics_back_to_the_checkpoint(full, tiny_llama, tmp_path):
    full_dir, full_weights = full
    killed = tmp_path / "killed"
    shutil.copytree(full_dir, killed)  # killed after step 10, its last checkpoint at step 8
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"step": 11, "lo')  # and cut in the middle of a line
    assert latest_checkpoint(killed).name == "step-7"
    _assert_same(_final_weights(killed, tiny_llama), full_weights)
    assert [r["step"] for r in _rows(killed)] == list(range(1, STEPS + 1))  # steps 9 and 10 once, no cut line
    assert [r["loss"] for r in _rows(killed)] == [r["loss"] for r in _rows(full_dir)]


@pytest.mark.parametrize("damage", ["cut weights", "bad state.json", "no rng file"])
def test_a_damaged_checkpoint_falls_back_to_the_one_before(full, tiny_llama, tmp_path, capsys, damage):
    full_dir, full_weights = full
    run = tmp_path / "run"
    shutil.copytree(full_dir, run)
    early = tmp_path / "early"
    _run(tiny_llama, early, save_every=0, stop_after=3)  # a complete checkpoint after step 3
    shutil.copytree(latest_checkpoint(early), run / "checkpoints" / "step-2")
    newest = run / "checkpoints" / "step-7"
    if damage == "cut weights":
        weights = newest / "trainable.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "bad state.json":
        (newest / "state.json").write_text('{"step": 7, "str')
    else:
        (newest / "rng-0.pt").unlink()
    _assert_same(_final_weights(run, tiny_llama), full_weights)
    out = capsys.readouterr().out
    assert f"checkpoint {newest} is damaged" in out and "trying the one before" in out
    assert "resumed from" in out and "step-2 at step 3" in out
    assert (run / "checkpoints" / "damaged-step-7").is_dir()  # kept for a look, out of the rotation
    assert [r["step"] for r in _rows(run)] == list(range(1, STEPS + 1))


def test_the_only_checkpoint_damaged_restarts_the_stage(full, tiny_llama, tmp_path, capsys):
    full_dir, full_weights = full
    run = tmp_path / "run"
    shutil.copytree(full_dir, run)
    (run / "checkpoints/step-7/optimizer.pt").write_bytes(b"\0" * 10)
    _assert_same(_final_weights(run, tiny_llama), full_weights)
    assert "restarting the stage from step 0" in capsys.readouterr().out
    assert [r["step"] for r in _rows(run)] == list(range(1, STEPS + 1))


def test_append_repairs_a_cut_last_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b')
    append_jsonl(path, {"a": 3})
    assert path.read_text() == '{"a": 1}\n{"a": 3}\n'


@pytest.mark.parametrize("damage", ["cut adapter", "cut done.json", "cut unit.json", "cut eval record"])
def test_a_finished_unit_with_damaged_output_runs_again(tmp_path, tiny_llama, tiny_judge, data_dir, capsys, damage):
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    run = tmp_path / "run"
    assert main(["run", str(recipe)]) == 0
    adapter = run / "stages/align/model/adapter_model.safetensors"
    good = adapter.read_bytes()
    target = {"cut adapter": adapter, "cut done.json": run / "stages/align/done.json",
              "cut unit.json": run / "stages/align/unit.json",
              "cut eval record": run / "stages/evaluate/lisa/eval/harmful_score.json"}[damage]
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    capsys.readouterr()
    assert main(["run", str(recipe), "--dry-run"]) == 0  # a dry run reads the damage, no traceback
    plan = capsys.readouterr().out
    assert main(["run", str(recipe)]) == 0
    out = capsys.readouterr().out
    again = "evaluate/lisa" if damage == "cut eval record" else "align"
    assert f"[{1 if again == 'align' else 4}] {again} ({'train' if again == 'align' else 'eval'}, will run" in plan
    # only the damaged unit: the units that read it were made from its output before the damage, and the
    # rerun (seeded) makes that output again, byte for byte (the last assert)
    assert f"== {again}: running" in out and out.count(": cached") == 3
    if damage == "cut unit.json":  # who wrote the directory is unknown: it is moved aside, not reused or deleted
        assert any(p.name == "align-unknown" for p in (run / "stages/.stale").iterdir())
    assert json.loads((run / "results.json").read_text())["lisa"]["n_harmful"] == 4
    assert adapter.read_bytes() == good  # the rerun, seeded, trains the same adapter again
