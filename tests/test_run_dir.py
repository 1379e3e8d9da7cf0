"""The run directory keeps work and touches nothing outside itself (issue 18): plain names, hashes over what
changes results, stale units moved aside instead of deleted, one run per directory, `stop` that signals only
its own run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from safealign.cli import main
from safealign.run_lock import run_lock
from tests.test_errors import _one_error_line
from tests.test_pipeline import _recipe


def _edit(path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("where, bad", [("stage", "../../victim"), ("stage", "/abs/stage"), ("label", "/tmp/abs-label"),
                                        ("label", "a/../../b"), ("name", "../../x"), ("name", ".hidden")])
def test_names_that_would_leave_the_run_directory_are_one_error_line(tmp_path, tiny_llama, tiny_judge, data_dir,
                                                                      capsys, where, bad):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)

    def rename(data):
        if where == "stage":
            data["stages"][bad] = data["stages"].pop("lisa")
            data["stages"]["evaluate"]["models"]["lisa"] = f"stage:{bad}"
        elif where == "label":
            data["stages"]["evaluate"]["models"][bad] = data["stages"]["evaluate"]["models"].pop("lisa")
        else:
            data["name"] = bad
            del data["output_dir"]

    _edit(recipe, rename)
    for extra in (["--dry-run"], []):
        line = _one_error_line(capsys, main(["run", str(recipe), *extra]))
        assert "not a plain name" in line and repr(bad) in line
    assert (victim / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "run").exists()


def test_logging_edits_rerun_nothing_and_a_changed_stage_is_moved_aside_not_deleted(tmp_path, tiny_llama, tiny_judge,
                                                                                   data_dir, capsys):
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    run = tmp_path / "run"
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()
    quiet = ["stages.align.train.log_every=2", "stages.lisa.train.save_every=1", "stages.lisa.train.eval_every=5",
             "stages.align.train.report_to=[]"]
    assert main(["run", str(recipe), *quiet]) == 0
    out = capsys.readouterr().out
    assert out.count(": cached") == 4 and "running" not in out

    old_hash = yaml.safe_load((run / "stages/align/unit.json").read_text())["hash"]
    old_adapter = (run / "stages/align/model/adapter_model.safetensors").read_bytes()
    assert main(["run", str(recipe), "stages.align.train.lr=3e-4", "--dry-run"]) == 0
    stale = run / "stages" / ".stale" / f"align-{old_hash}"
    assert f"moves the old directory (hash {old_hash}) to {stale}" in capsys.readouterr().out
    assert main(["run", str(recipe), "stages.align.train.lr=3e-4"]) == 0
    assert (stale / "model/adapter_model.safetensors").read_bytes() == old_adapter  # the finished model is kept
    assert (stale / "done.json").exists() and (run / "stages/align/done.json").exists()
    assert (run / "stages/align/model/adapter_model.safetensors").read_bytes() != old_adapter
    assert any(p.name.startswith("evaluate--lisa-") for p in (run / "stages" / ".stale").iterdir())


def test_a_second_run_into_a_busy_run_directory_says_who_holds_it(tmp_path, tiny_llama, tiny_judge, data_dir, capsys):
    import os

    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    with run_lock(tmp_path / "run"):
        line = _one_error_line(capsys, main(["run", str(recipe)]))
    assert "is in use by safealign pid" in line and str(os.getpid()) in line
    assert not (tmp_path / "run" / "stages").exists()  # nothing ran
    assert main(["run", str(recipe)]) == 0  # the lock went with its holder


def test_stop_does_not_signal_a_process_that_reused_the_runs_pid(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / "run.pid").write_text(str(stranger.pid))
        assert main(["stop", str(run)]) == 0
        assert "not signalled" in capsys.readouterr().out
        assert stranger.poll() is None  # still running
        assert not (run / "run.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_checkpoints_are_written_by_default():
    from safealign.loop import TrainConfig

    assert TrainConfig().save_every > 0


def test_rows_cut_to_nothing_by_max_length_are_counted(tmp_path, tiny_llama, capsys):
    from tests.conftest import write_jsonl
    from tests.test_errors import _train_config

    rows = [{"sentence": "the film is good " * (30 if i % 2 else 1), "label": i % 2} for i in range(8)]
    data = write_jsonl(tmp_path / "sst2.jsonl", rows)
    from safealign.data.files import load_rows
    from safealign.data.formats import tokenize_example
    from safealign.data.prompts import ALPACA
    from safealign.data.sst2 import examples
    from safealign.models import load_tokenizer

    short = examples(load_rows(str(data), "train"), "all")[0]
    fits = len(tokenize_example(load_tokenizer(str(tiny_llama)), short, 10_000, ALPACA)["input_ids"])  # a short row whole
    cfg = _train_config(tmp_path, tiny_llama, {"task": {"source": "sst2", "path": str(data)}})
    assert main(["train", str(cfg), f"model.max_length={fits}"]) == 0
    assert f"warning: 4 of 8 'train' rows keep no response token within model.max_length={fits}" in capsys.readouterr().out


def test_a_non_finite_loss_stops_the_stage_with_its_step(tmp_path, tiny_llama):
    from safealign.errors import SafealignError
    from safealign.loop import TrainConfig, make_accelerator, train
    from safealign.methods.base import Method, StepOutput, causal_lm_loss
    from safealign.models import load_tokenizer
    from tests.helpers import lora_model, stream

    class BlowsUp(Method):
        def step(self, model, streams, step):
            loss = causal_lm_loss(model, next(streams["train"]))
            return StepOutput(loss * float("nan") if step == 2 else loss)

    cfg = TrainConfig(lr=1e-3, max_steps=5, batch_size=2)
    with pytest.raises(SafealignError, match="the loss is nan at step 3"):
        train(lora_model(tiny_llama), BlowsUp(None), {"train": stream(load_tokenizer(str(tiny_llama)), 6, 2)}, cfg,
              tmp_path / "run", make_accelerator(cfg), seed=0)
    assert not any((tmp_path / "run").glob("checkpoints/step-*"))


def test_results_name_inputs_as_the_recipe_writes_them():
    from safealign.pipeline import _as_written

    written = {"/cache/mini-v16-seed0/data/beavertails": "mini:beavertails", "/cache/mini-v16-seed0/judge": "mini:judge",
               "/runs/x/stages/align/model": "stage:align"}
    result = {"metrics": {"harmful_protocol": {"data": "/cache/mini-v16-seed0/data/beavertails[30k_test]",
                                               "judge_path": "/cache/mini-v16-seed0/judge", "num": 200}},
              "files": ["/runs/x/stages/align/model/adapter_config.json", "/cache/mini-v16-seed0/judge_other"]}
    assert _as_written(result, written) == {
        "metrics": {"harmful_protocol": {"data": "mini:beavertails[30k_test]", "judge_path": "mini:judge", "num": 200}},
        "files": ["stage:align/adapter_config.json", "/cache/mini-v16-seed0/judge_other"]}


def test_a_copied_or_moved_run_directory_uses_its_own_models(tmp_path, tiny_llama, tiny_judge, data_dir, capsys):
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    run = tmp_path / "run"
    assert main(["run", str(recipe)]) == 0
    chain = yaml.safe_load((run / "stages/lisa/model/safealign_model.json").read_text())
    assert chain["base"] == "../../align/model" and chain["chain"] == [str(tiny_llama.resolve()), "../../align/model", "."]
    results = (run / "results.json").read_text()
    copy, moved = tmp_path / "copy", tmp_path / "moved"
    shutil.copytree(run, copy)
    run.rename(moved)  # the original is gone: nothing may still point into it
    for where in (copy, moved):
        assert not [p for p in where.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".jsonl")
                    and str(run) + "/" in p.read_text()], "a file still names the original run directory"
        capsys.readouterr()
        # the eval reruns (more rows); it must load this directory's align + lisa chain, not the original's
        assert main(["run", str(recipe), f"output_dir={where}", "stages.evaluate.evals.finetune_accuracy.num=5"]) == 0
        out = capsys.readouterr().out
        assert out.count(": cached") == 2 and "== evaluate/lisa: running" in out
        now = json.loads((where / "results.json").read_text())
        assert now["lisa"]["n_task"] == 5 and now["lisa"]["harmful_score"] == json.loads(results)["lisa"]["harmful_score"]


def test_a_seed_sweep_runs_the_recipe_per_seed_and_reports_mean_and_std(tmp_path, tiny_llama, tiny_judge, data_dir,
                                                                       capsys):
    import statistics

    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    assert main(["run", str(recipe), "sweep.key=seed", "sweep.values=[1,2]"]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert {"align@1", "align@2", "lisa@2"} <= {p.name for p in (run / "stages").iterdir()}
    assert yaml.safe_load((run / "stages/lisa@2/config.yaml").read_text())["seed"] == 2
    assert yaml.safe_load((run / "stages/lisa@2/config.yaml").read_text())["model"]["path"] == "stage:align@2"
    per_seed = [results[f"lisa@{s}"]["finetune_accuracy"] for s in (1, 2)]
    lisa = results["lisa"]
    assert lisa["seeds"] == [1, 2] and "n_task" not in lisa
    assert lisa["finetune_accuracy"] == statistics.fmean(per_seed)
    assert lisa["finetune_accuracy_std"] == statistics.stdev(per_seed)
    report = (run / "report.md").read_text()
    assert "| model (mean ± std over seeds 1, 2) |" in report
    assert f"| lisa | {lisa['harmful_score']:.2f} ± {lisa['harmful_score_std']:.2f} |" in report
    # seed 2 of the sweep is the recipe run at seed 2: the same units, so the same numbers
    assert main(["run", str(recipe), "seed=2", f"output_dir={tmp_path / 'seed2'}"]) == 0
    alone = json.loads((tmp_path / "seed2/results.json").read_text())
    assert alone["lisa"] == results["lisa@2"] and alone["aligned"] == results["aligned@2"]
