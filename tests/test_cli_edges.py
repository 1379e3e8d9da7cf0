"""The CLI's edges (issue 18): flags anywhere among the overrides, a dry run that makes the checks a run makes,
`~` and environment variables in paths, and an override of one key of a defaulted section keeping the rest."""

from __future__ import annotations

import yaml

from safealign.cli import _flags_first, main
from safealign.pipeline import load_recipe
from tests.test_errors import _one_error_line
from tests.test_pipeline import _recipe
from tests.test_run_dir import _edit


def test_flags_may_come_after_the_overrides(tmp_path, tiny_llama, tiny_judge, data_dir, capsys):
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    assert main(["run", str(recipe), "--dry-run", "seed=7", "stages.align.train.lr=3e-4"]) == 0
    out = capsys.readouterr().out
    assert "[1] align (train, will run" in out and "lr: 0.0003" in out and "seed: 7" in out
    assert not (tmp_path / "run").exists()  # a dry run changes nothing
    assert _flags_first(["data", "prepare", "a.yaml", "--dry-run", "k=1"]) == ["data", "prepare", "--dry-run", "a.yaml", "k=1"]
    assert _flags_first(["export", "m", "o", "--merge", "--dtype", "bfloat16"]) == ["export", "--merge", "m", "o", "--dtype", "bfloat16"]


def test_a_dry_run_fails_on_a_missing_model_as_the_run_would(tmp_path, tiny_llama, tiny_judge, data_dir, capsys):
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    missing = tmp_path / "no-such-model"
    line = _one_error_line(capsys, main(["run", str(recipe), f"stages.align.model.path={missing}", "--dry-run"]))
    assert "stages.align.model.path" in line and str(missing) in line
    _edit(recipe, lambda data: data["stages"]["align"]["data"]["task"].update(path=str(tmp_path / "gone")))
    assert "data path does not exist" in _one_error_line(capsys, main(["run", str(recipe), "--dry-run"]))


def test_home_and_environment_variables_are_expanded_in_paths(tmp_path, tiny_llama, tiny_judge, data_dir, capsys,
                                                               monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "model").symlink_to(tiny_llama)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SAFEALIGN_TEST_DATA", str(data_dir))
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)

    def use_variables(data):
        data["stages"]["align"]["model"]["path"] = "~/model"
        data["stages"]["align"]["data"]["task"]["path"] = "$SAFEALIGN_TEST_DATA/beavertails"
        data["stages"]["align"]["train"]["max_steps"] = 1

    _edit(recipe, use_variables)
    assert main(["run", str(recipe), "output_dir=~/runs/tiny"]) == 0
    assert (home / "runs/tiny/stages/align/model/adapter_model.safetensors").exists()
    assert not any(p.name == "~" for p in tmp_path.rglob("*"))  # no folder named '~' anywhere
    unit_config = yaml.safe_load((home / "runs/tiny/stages/align/config.yaml").read_text())
    assert unit_config["model"]["path"] == "~/model"  # the unit as written, so it hashes the same on every machine


def test_an_override_of_one_key_keeps_the_defaults_of_its_section():
    recipe = load_recipe("lisa", ["stages.evaluate.evals.harmful_score.data.path=/data/bt.jsonl"])
    data = recipe.stages["evaluate"].evals["harmful_score"].data
    assert (data.source, data.path, data.split) == ("beavertails", "/data/bt.jsonl", "30k_test")
    # a section the recipe writes out is taken as written: only the key overridden changes
    recipe = load_recipe("lisa", ["stages.sft.data.task.split=validation"])
    task = recipe.stages["sft"].data.task
    assert (task.source, task.path, task.split) == ("sst2", "mini:sst2", "validation")
