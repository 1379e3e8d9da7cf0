"""User errors surface from the CLI as exactly one `error: ...` line on stderr, exit status 2, no traceback,
naming the file / line / key at fault. Errors raised while building the config and while loading data in the
run both count."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from safealign.cli import main
from tests.conftest import beavertails_rows, sst2_rows, write_jsonl


def _train_config(tmp_path: Path, model: Path | str, data: dict, **extra) -> Path:
    """A tiny single train stage (the fields of TrainStage plus top-level name/output_dir)."""
    cfg = {"name": "t", "output_dir": str(tmp_path / "run"),
           "model": {"path": str(model)},
           "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
           "data": data,
           "method": {"name": "sft"},
           "train": {"max_steps": 2, "batch_size": 2},
           **extra}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _one_error_line(capsys, rc: int) -> str:
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in out and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


def test_missing_model_path(tmp_path, data_dir, capsys):
    cfg = _train_config(tmp_path, "/nonexistent/model",
                        {"task": {"source": "sst2", "path": str(data_dir / "sst2"), "split": "train"}})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert "/nonexistent/model" in line
    assert "model.path" in line
    assert not (tmp_path / "run" / "stages").exists()  # preflight failed before anything ran


def test_malformed_jsonl_line(tmp_path, tiny_llama, capsys):
    data = write_jsonl(tmp_path / "sst2.jsonl", sst2_rows(6))
    lines = data.read_text().splitlines()
    lines[2] = "{bad json"
    data.write_text("\n".join(lines) + "\n")
    cfg = _train_config(tmp_path, tiny_llama, {"task": {"source": "sst2", "path": str(data)}})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert f"{data}:3" in line
    assert "malformed" in line


def test_missing_field_names_file_line_and_field(tmp_path, tiny_llama, capsys):
    rows = sst2_rows(6)
    del rows[3]["label"]  # line 4
    data = write_jsonl(tmp_path / "sst2" / "train.jsonl", rows)
    cfg = _train_config(tmp_path, tiny_llama, {"task": {"source": "sst2", "path": str(tmp_path / "sst2"), "split": "train"}})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert f"{data}:4" in line
    assert "'label'" in line


def test_poison_ratio_out_of_range(tmp_path, tiny_llama, data_dir, capsys):
    cfg = _train_config(tmp_path, tiny_llama, {
        "task": {"source": "sst2", "path": str(data_dir / "sst2"), "split": "train"},
        "poison": {"source": "beavertails", "path": str(data_dir / "beavertails"), "split": "30k_train", "select": "unsafe"},
        "sample_num": 10, "poison_ratio": 1.5})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert "poison_ratio" in line
    assert "1.5" in line
    assert not (tmp_path / "run").exists()  # a config error: nothing was written


def test_poison_ratio_out_of_range_as_override(tmp_path, tiny_llama, data_dir, capsys):
    cfg = _train_config(tmp_path, tiny_llama, {
        "task": {"source": "sst2", "path": str(data_dir / "sst2"), "split": "train"},
        "poison": {"source": "beavertails", "path": str(data_dir / "beavertails"), "split": "30k_train", "select": "unsafe"},
        "sample_num": 10})
    line = _one_error_line(capsys, main(["train", str(cfg), "data.poison_ratio=-0.1", "--dry-run"]))
    assert "poison_ratio" in line


def test_sample_num_larger_than_data(tmp_path, tiny_llama, data_dir, capsys):
    cfg = _train_config(tmp_path, tiny_llama, {
        "task": {"source": "sst2", "path": str(data_dir / "sst2" / "train.jsonl")},  # 40 rows
        "sample_num": 100})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert "sample_num" in line
    assert "100" in line and "40" in line


def test_too_few_poison_rows(tmp_path, tiny_llama, data_dir, capsys):
    cfg = _train_config(tmp_path, tiny_llama, {
        "task": {"source": "sst2", "path": str(data_dir / "sst2"), "split": "train"},  # 40 rows
        "poison": {"source": "beavertails", "path": str(data_dir / "beavertails"), "split": "30k_test",
                   "select": "unsafe"},  # 5 unsafe rows
        "sample_num": 40, "poison_ratio": 0.5})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert "sample_num" in line and "poison_ratio" in line


def test_unknown_recipe(capsys):
    line = _one_error_line(capsys, main(["run", "no-such-recipe"]))
    assert "no-such-recipe" in line


def test_missing_config_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    line = _one_error_line(capsys, main(["train", str(missing)]))
    assert str(missing) in line


def test_unknown_config_key_suggests_the_close_one(capsys):
    line = _one_error_line(capsys, main(["run", "lisa", "stages.align.train.lrr=1", "--dry-run"]))
    assert "did you mean" in line
    assert "'stages.align.train.lr'" in line
    assert "lrr" in line


def test_unknown_key_in_train_config(tmp_path, tiny_llama, data_dir, capsys):
    cfg = _train_config(tmp_path, tiny_llama, {"task": {"source": "sst2", "path": str(data_dir / "sst2")}})
    line = _one_error_line(capsys, main(["train", str(cfg), "train.batch_sise=4", "--dry-run"]))
    assert "did you mean" in line and "batch_size" in line


def test_unknown_data_source(tmp_path, tiny_llama, data_dir, capsys):
    cfg = _train_config(tmp_path, tiny_llama, {"task": {"source": "sst3", "path": str(data_dir / "sst2")}})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert "sst3" in line


def test_missing_split_in_directory(tmp_path, tiny_llama, data_dir, capsys):
    cfg = _train_config(tmp_path, tiny_llama, {"task": {"source": "sst2", "path": str(data_dir / "sst2"), "split": "dev"}})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert "dev" in line and str(data_dir / "sst2") in line


def test_select_on_source_without_safety_label(tmp_path, tiny_llama, data_dir, capsys):
    cfg = _train_config(tmp_path, tiny_llama,
                        {"task": {"source": "sst2", "path": str(data_dir / "sst2"), "select": "unsafe"}})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert "sst2" in line and "select" in line


@pytest.mark.parametrize("bad", ["is_safe", "prompt"])
def test_beavertails_missing_field(tmp_path, tiny_llama, bad, capsys):
    rows = beavertails_rows(6)
    del rows[1][bad]  # line 2
    data = write_jsonl(tmp_path / "bt.jsonl", rows)
    cfg = _train_config(tmp_path, tiny_llama, {"task": {"source": "beavertails", "path": str(data), "select": "safe"}})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert f"{data}:2" in line and f"'{bad}'" in line


def test_cost_model_on_pairs_without_safety_labels(tmp_path, tiny_llama, capsys):
    pairs = write_jsonl(tmp_path / "trl.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 4)
    cfg = _train_config(tmp_path, tiny_llama, {"pairs": {"train": str(pairs)}}, method={"name": "cost_model"})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert "cost_model" in line and "chosen_is_safe" in line


@pytest.mark.parametrize("rows, message", [([], "no pairs (empty file)"),
                                           ([{"prompt": "q", "chosen": "a"}], ":1: missing field 'rejected'")])
def test_bad_pair_data_for_dpo(tmp_path, tiny_llama, capsys, rows, message):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = _train_config(tmp_path, tiny_llama, {"pairs": {"train": str(pairs)}}, method={"name": "dpo"})
    line = _one_error_line(capsys, main(["train", str(cfg)]))
    assert str(pairs) in line and message in line


def test_a_renamed_key_still_works_with_one_warning_naming_the_new_key(capsys):
    from safealign.config import build
    from safealign.errors import ConfigError
    from safealign.evals.wmdp import WmdpConfig
    from safealign.stages.generate import GenerateStage

    assert build(WmdpConfig, {"limit": 7}, "evals.wmdp").num == 7
    assert build(GenerateStage, {"prompts": "p.jsonl", "num_prompts": 3}, "stages.gen").prompts_num == 3
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == ["warning: config key 'evals.wmdp.limit' is deprecated; use 'evals.wmdp.num'",
                        "warning: config key 'stages.gen.num_prompts' is deprecated; use 'stages.gen.prompts_num'"]
    with pytest.raises(ConfigError, match="evals.wmdp.limit: the old name of 'evals.wmdp.num', which is set too"):
        build(WmdpConfig, {"limit": 7, "num": 2}, "evals.wmdp")
