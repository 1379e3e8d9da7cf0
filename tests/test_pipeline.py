import json
import re
import shlex
from pathlib import Path

import yaml

from safealign.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _recipe(tmp_path, tiny_llama, tiny_judge, data_dir) -> Path:
    bt = str(data_dir / "beavertails")
    sst2 = str(data_dir / "sst2")
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    train = {"max_steps": 3, "batch_size": 2, "log_every": 1}
    recipe = {
        "name": "tiny", "output_dir": str(tmp_path / "run"), "seed": 1,
        "stages": {
            "align": {"model": {"path": str(tiny_llama)}, "lora": lora, "train": train,
                      "data": {"task": {"source": "beavertails", "path": bt, "split": "30k_train", "select": "safe"}, "sample_num": 10}},
            "lisa": {"model": {"path": "stage:align"}, "lora": lora, "train": train,
                     "data": {"task": {"source": "sst2", "path": sst2}, "sample_num": 20, "poison_ratio": 0.1,
                              "poison": {"source": "beavertails", "path": bt, "split": "30k_train", "select": "unsafe"},
                              "guide": {"source": "beavertails", "path": bt, "split": "30k_train", "select": "safe"}, "guide_data_num": 5},
                     "method": {"name": "lisa", "rho": 1.0, "alignment_step": 1, "finetune_step": 1}},
            "evaluate": {"kind": "eval", "models": {"aligned": "stage:align", "lisa": "stage:lisa"},
                         "evals": {"harmful_score": {"data": {"source": "beavertails", "path": bt, "split": "30k_test"},
                                                     "num": 4, "judge_path": str(tiny_judge), "max_new_tokens": 4},
                                   "finetune_accuracy": {"data": {"source": "sst2", "path": sst2, "split": "validation"},
                                                         "num": 4, "max_new_tokens": 2}}},
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_recipe_runs_end_to_end_then_reuses_every_stage(tmp_path, tiny_llama, tiny_judge, data_dir, capsys):
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    assert main(["run", str(recipe)]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert set(results) == {"aligned", "lisa"}
    assert results["lisa"]["n_harmful"] == 4 and results["lisa"]["n_task"] == 4
    assert 0 <= results["lisa"]["harmful_score"] <= 100
    for f in ("config.yaml", "report.md", "results.png", "timings.json"):
        assert (run / f).exists(), f
    assert (run / "stages/lisa/model/adapter_model.safetensors").exists()
    assert len((run / "stages/evaluate/lisa/eval/harmful_score.samples.jsonl").read_text().splitlines()) == 4
    assert "lisa: step 1: alignment -> finetune" in (run / "stages/lisa/metrics.jsonl").read_text()
    timings = json.loads((run / "timings.json").read_text())
    assert timings["align"]["wall_s"] > 0 and timings["align"]["peak_mem_mb"] > 0
    capsys.readouterr()

    assert main(["run", str(recipe)]) == 0  # nothing changed: every unit is reused
    out = capsys.readouterr().out
    assert out.count(": cached") == 4 and "running" not in out

    assert main(["run", str(recipe), "stages.lisa.method.rho=0", "--dry-run"]) == 0  # only lisa and its eval rerun
    out = capsys.readouterr().out
    assert re.search(r"align \(train, cached", out) and re.search(r"lisa \(train, will run", out)
    assert re.search(r"evaluate/aligned \(eval, cached", out) and re.search(r"evaluate/lisa \(eval, will run", out)


def test_readme_commands_parse_and_dry_run(capsys):
    """Every `safealign run|data pairs ...` line of the README runs with --dry-run, so the docs cannot drift
    from the CLI."""
    commands = re.findall(r"^(?:accelerate launch -m )?safealign ((?:run|data pairs|data prepare) [^\n#]+?)\s*(?:#.*)?$",
                          README.read_text(), re.M)
    assert len(commands) >= 6 and any(c.startswith("data pairs") for c in commands)
    for command in commands:
        args = shlex.split(command)  # as a shell would: quoted overrides stay whole
        if "--dry-run" not in args:
            args.append("--dry-run")
        rc = main(args)
        if rc != 0:  # a GPU recipe's plan prints; the data the README says to fetch first is not on this machine
            err = capsys.readouterr().err
            assert rc == 2 and re.fullmatch(r"error: \S+: data path does not exist: data/\S+\n", err), (command, err)
    out = capsys.readouterr().out
    assert "rho: 3.0" in out and "alignment_step: 100" in out  # lisa-llama2-7b carries the paper's settings


def test_cli_lists_recipes_and_schema(capsys):
    assert main(["recipes"]) == 0
    assert {"lisa", "lisa-llama2-7b", "lisa-paper"} <= set(line.split()[0] for line in capsys.readouterr().out.splitlines())
    assert main(["schema", "method"]) == 0
    assert "rho (1.0)" in capsys.readouterr().out


def test_detach_runs_in_the_background_and_stop_ends_its_process_group(tmp_path, tiny_llama, tiny_judge, data_dir, capsys):
    import os
    import signal
    import time

    import pytest

    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    endless = ["stages.align.train.max_steps=1000000", "stages.align.train.save_every=0"]
    assert main(["run", str(recipe), *endless, "--detach"]) == 0
    run = tmp_path / "run"
    pid = int((run / "run.pid").read_text())
    try:
        deadline = time.time() + 120
        while not (run / "stages/align/metrics.jsonl").exists():  # training has started in the background
            assert time.time() < deadline, (run / "run.log").read_text()[-2000:]
            time.sleep(0.5)
        assert main(["run", str(recipe), *endless, "--detach"]) == 2  # one run per run directory
        assert "already active" in capsys.readouterr().err
        assert main(["stop", str(run)]) == 0
        assert f"stopped run {pid}" in capsys.readouterr().out
        assert not (run / "run.pid").exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:  # never leave an endless run behind when an assertion fails
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_preference_stages_pairs_then_reward_cost_and_dpo(tmp_path, tiny_llama, capsys):
    import random

    from safealign.mini.corpus import pku_saferlhf
    from tests.conftest import write_jsonl

    rows = write_jsonl(tmp_path / "pku" / "train.jsonl", pku_saferlhf(random.Random(0), 60, 0))
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    train = {"max_steps": 2, "batch_size": 2, "log_every": 1}
    pairs_file = "stage:pairs/train/{}_pairs.jsonl"
    recipe = {
        "name": "pref", "output_dir": str(tmp_path / "run"), "seed": 3,
        "stages": {
            "pairs": {"kind": "pairs", "path": str(rows)},
            "reward": {"model": {"path": str(tiny_llama)}, "lora": lora, "train": train, "method": {"name": "reward_model"},
                       "data": {"pairs": {"train": pairs_file.format("helpful")}}},
            "cost": {"model": {"path": str(tiny_llama)}, "lora": lora, "train": train, "method": {"name": "cost_model"},
                     "data": {"pairs": {"train": pairs_file.format("harmless")}}},
            "sft": {"model": {"path": str(tiny_llama)}, "lora": {"enabled": False}, "train": train,
                    "data": {"task": {"source": "pairs", "path": pairs_file.format("helpful"), "select": "chosen"}}},
            "dpo": {"model": {"path": "stage:sft"}, "lora": lora, "train": {**train, "max_steps": 3, "eval_every": 2},
                    "method": {"name": "dpo", "beta": 0.2, "precompute_ref": True},
                    "data": {"pairs": {"train": pairs_file.format("helpful")}, "pairs_num": 6,
                             "validation": "stage:pairs/val/helpful_pairs.jsonl"}},
            "safe": {"model": {"path": str(tiny_llama)}, "lora": lora, "train": {**train, "max_steps": 3},
                     "method": {"name": "safe_mm_dpo", "reward_model": "stage:reward", "cost_model": "stage:cost",
                                "eval_prompts": "stage:pairs/val/harmless_pairs.jsonl", "lambda_update_interval": 2,
                                "lambda_eval_prompts": 2, "max_new_tokens": 3, "lambda_lr": 0.5, "cost_threshold": -100.0},
                     "data": {"pairs": {"train": pairs_file.format("helpful"), "harmless": pairs_file.format("harmless")},
                              "pairs_num": 6}},
            "generate": {"kind": "generate", "model": {"path": "stage:dpo"}, "prompts": pairs_file.format("helpful"),
                         "prompts_num": 4, "num_samples": 2, "max_new_tokens": 3, "reward_model": "stage:reward",
                         "min_reward": -1.0e9, "cost_model": "stage:cost", "max_cost": 1.0e9},
            "student": {"model": {"path": str(tiny_llama)}, "lora": lora, "train": train,
                        "data": {"task": {"source": "responses", "path": "stage:generate/responses.jsonl"}}},
            "arena": {"kind": "eval", "models": {"dpo": "stage:dpo"},
                      "evals": {"arena": {"prompts": "stage:pairs/test/harmless_pairs.jsonl", "num": 3, "max_new_tokens": 3,
                                          "reward_model": "stage:reward", "cost_model": "stage:cost",
                                          "baseline": str(tiny_llama)}}},
            "eval_reward": {"kind": "eval", "models": {"reward": "stage:reward"},
                            "evals": {"score_accuracy": {"pairs": "stage:pairs/test/helpful_pairs.jsonl", "kind": "reward"}}},
            "eval_cost": {"kind": "eval", "models": {"cost": "stage:cost"},
                          "evals": {"score_accuracy": {"pairs": "stage:pairs/test/harmless_pairs.jsonl", "kind": "cost"}}},
        },
    }
    path = tmp_path / "pref.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert main(["run", str(path)]) == 0
    run = tmp_path / "run" / "stages"
    done = json.loads((run / "pairs" / "done.json").read_text())
    assert done["counts"]["train"]["helpful"] > 0 and done["stats"]["rows"] == 60
    for split in ("train", "val", "test"):
        assert (run / "pairs" / split / "harmless_pairs.jsonl").exists()
    assert (run / "reward/model/score_head.safetensors").exists() and (run / "cost/model/score_head.safetensors").exists()
    assert (run / "dpo/model/adapter_model.safetensors").exists()
    assert not (run / "dpo/model/score_head.safetensors").exists()
    assert "6 train pairs" in json.loads((run / "dpo" / "done.json").read_text())["data"]
    assert (run / "dpo/reference_logps.json").exists()  # precompute_ref
    evals = [json.loads(line) for line in (run / "dpo/metrics.jsonl").read_text().splitlines() if "eval_" in line]
    assert [e["step"] for e in evals] == [2, 3] and all(e["eval_chosen_perplexity"] > 1 for e in evals)
    assert json.loads((run / "generate/done.json").read_text())["samples"] == 8
    assert "8 training rows" in json.loads((run / "student/done.json").read_text())["data"]
    rows = [json.loads(line) for line in (run / "safe" / "metrics.jsonl").read_text().splitlines()]
    updates = [r["event"] for r in rows if "event" in r]
    assert [u.split(":")[1].strip() for u in updates] == ["step 0", "step 2"]  # every lambda_update_interval steps
    logged = [r for r in rows if "loss" in r]
    assert logged[0]["lambda"] > 1.0  # J_c above a threshold of -100: λ rises from lambda_init
    assert {"loss_total", "loss_helpful", "loss_safety", "loss_kl", "beta_helpful_mean", "delta_safety_mean", "J_c",
            "reward_safety_mean", "kl_divergence", "lambda"} <= set(logged[0])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    n_test = done["counts"]["test"]
    assert results["reward"]["n_pairs"] == n_test["helpful"] and 0 <= results["reward"]["reward_accuracy"] <= 1
    assert results["cost"]["n_pairs"] == n_test["harmless"] and 0 <= results["cost"]["cost_sign_accuracy"] <= 1
    arena = results["dpo"]
    assert arena["n_arena"] == 3 and 0 <= arena["win_rate"] <= 100 and 0 <= arena["safe_rate"] <= 100
    assert arena["both_safe"] + arena["only_model_safe"] + arena["only_baseline_safe"] + arena["both_unsafe"] == 3
    arena_records = [json.loads(x) for x in (run / "arena/dpo/eval/arena.samples.jsonl").read_text().splitlines()]
    assert len({r["prompt"] for r in arena_records}) == 3 and "baseline_cost" in arena_records[0]
    records = (run / "eval_cost/cost/eval/score_accuracy.samples.jsonl").read_text().splitlines()
    assert len(records) == n_test["harmless"] and "score_rejected" in records[0]
    capsys.readouterr()

    assert main(["run", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("cached") == 11
    assert main(["run", str(path), "stages.reward.method.name=dpo", "stages.dpo.data.pairs.train=stage:nope/x.jsonl"]) == 2
    assert "names no earlier stage" in capsys.readouterr().err


def test_data_pairs_command_writes_the_splits(tmp_path, capsys):
    import random

    from safealign.mini.corpus import pku_saferlhf
    from tests.conftest import write_jsonl

    rows = write_jsonl(tmp_path / "pku.jsonl", pku_saferlhf(random.Random(0), 50, 0))
    assert main(["data", "pairs", f"path={rows}", f"output_dir={tmp_path / 'out'}", "ratios=[0.6,0.2,0.2]"]) == 0
    written = tmp_path / "out/stages/pairs"
    counts = json.loads((written / "done.json").read_text())["counts"]
    assert sum(counts[s]["helpful"] for s in counts) == 50
    assert len((written / "val/helpful_pairs.jsonl").read_text().splitlines()) == counts["val"]["helpful"] > 0
    assert f"{written}/{{train,val,test}}" in capsys.readouterr().out
    assert main(["data", "pairs", "path=" + str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_sweep_runs_the_stages_that_set_the_key_once_per_value():
    import pytest

    from safealign.errors import ConfigError
    from safealign.sweep import expand_sweep

    attack = {"task": {"source": "sst2", "path": "x"}, "poison_ratio": 0.1}
    raw = {"sweep": {"key": "data.poison_ratio", "values": [0.05, 0.2]}, "stages": {
        "align": {"model": {"path": "m"}},
        "sft": {"model": {"path": "stage:align"}, "data": attack},
        "lisa": {"model": {"path": "stage:align"}, "data": attack},
        "after": {"model": {"path": "stage:sft"}, "data": {"pairs": {"train": "stage:sft/x.jsonl"}}},
        "evaluate": {"kind": "eval", "models": {"aligned": "stage:align", "sft": "stage:sft", "lisa": "stage:lisa"}}}}
    stages = expand_sweep(raw)["stages"]
    assert list(stages) == ["align", "sft@0.05", "sft@0.2", "lisa@0.05", "lisa@0.2", "after@0.05", "after@0.2", "evaluate"]
    assert stages["sft@0.2"]["data"]["poison_ratio"] == 0.2 and stages["lisa@0.05"]["data"]["poison_ratio"] == 0.05
    assert attack["poison_ratio"] == 0.1  # the shared YAML node is not modified
    assert stages["sft@0.05"]["model"]["path"] == "stage:align"  # unswept inputs stay shared
    assert stages["after@0.2"]["model"]["path"] == "stage:sft@0.2"  # a dependent follows its input's value
    assert stages["after@0.2"]["data"]["pairs"]["train"] == "stage:sft@0.2/x.jsonl"
    assert stages["evaluate"]["models"] == {"aligned": "stage:align", "sft@0.05": "stage:sft@0.05", "sft@0.2": "stage:sft@0.2",
                                            "lisa@0.05": "stage:lisa@0.05", "lisa@0.2": "stage:lisa@0.2"}
    with pytest.raises(ConfigError, match="no stage sets 'data.sample_num'"):
        expand_sweep({**raw, "sweep": {"key": "data.sample_num", "values": [1]}})
    # an eval whose settings read a swept stage (the arena's baseline) runs once per value, against that value's
    reads = {**raw, "stages": {**raw["stages"], "evaluate": {"kind": "eval", "models": {"a": "stage:align"},
                                                             "evals": {"arena": {"baseline": "stage:sft"}}}}}
    stages = expand_sweep(reads)["stages"]
    assert "evaluate" not in stages and stages["evaluate@0.2"]["evals"]["arena"]["baseline"] == "stage:sft@0.2"
    assert stages["evaluate@0.05"]["models"] == {"a@0.05": "stage:align"}


def test_cost_table_relates_each_defense_to_its_baseline_of_the_same_sweep_value():
    from safealign.report import cost_table

    timings = {"align_sft": {"step_s": 0.1, "peak_mem_mb": 500.0}, "align_vaccine": {"step_s": 0.2, "peak_mem_mb": 550.0},
               "sft@0.1": {"step_s": 0.08, "peak_mem_mb": 400.0}, "lisa@0.1": {"step_s": 0.1, "peak_mem_mb": 400.0},
               "evaluate/sft@0.1": {"wall_s": 3.0}}
    table = cost_table(timings, {"align_vaccine": "align_sft", "lisa": "sft"})
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines()[2:]}
    assert set(rows) == {"align_vaccine", "lisa@0.1"}
    assert rows["align_vaccine"][2] == "2.00" and rows["align_vaccine"][4] == "1.10"
    assert rows["lisa@0.1"][2] == "1.25" and rows["lisa@0.1"][5].startswith("sft@0.1")
