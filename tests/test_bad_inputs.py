"""A probe of bad inputs (issue 18): each ends in exactly one `error:` line naming what is wrong, exit status 2, no
traceback, and nothing trained. `python -m pytest tests/test_bad_inputs.py -q -s` prints the table the closing
note quotes (case | exit | message)."""

from __future__ import annotations

import json

import pytest
import yaml

from safealign.cli import main
from tests.conftest import sst2_rows, write_jsonl


def _one_error_line(capsys, rc: int) -> str:
    """Exit status 2, no traceback, exactly one `error:` line on stderr (progress bars of work done before the
    check, such as loading a model to look up its module names, may come before it)."""
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]

# (case, extra CLI arguments for `safealign train CONFIG`, text the one error line must hold)
TRAIN_OVERRIDES = [
    ("lr inf", ["train.lr=inf"], "train.lr: must be a finite number > 0"),
    ("lr nan", ["train.lr=nan"], "train.lr: must be a finite number > 0"),
    ("lr zero", ["train.lr=0"], "train.lr: must be a finite number > 0"),
    ("lr negative", ["train.lr=-1e-4"], "train.lr"),
    ("max_steps negative", ["train.max_steps=-3"], "max_steps must be >= 0"),
    ("epochs zero", ["train.epochs=0", "train.max_steps=0"], "epochs a finite number > 0"),
    ("epochs negative", ["train.epochs=-1", "train.max_steps=0"], "epochs a finite number > 0"),
    ("log_every zero", ["train.log_every=0"], "log_every must be >= 1"),
    ("save_every negative", ["train.save_every=-1"], "save_every >= 0"),
    ("batch_size zero", ["train.batch_size=0"], "train.batch_size: must be >= 1"),
    ("grad_accum zero", ["train.grad_accum=0"], "train.grad_accum: must be >= 1"),
    ("warmup_ratio 1.5", ["train.warmup_ratio=1.5"], "train.warmup_ratio"),
    ("scheduler typo", ["train.scheduler=cosin"], "did you mean 'cosine'"),
    ("precision fp8", ["train.precision=fp8"], "train.precision"),
    ("optimizer sgd", ["train.optimizer=sgd"], "train.optimizer"),
    ("max_grad_norm negative", ["train.max_grad_norm=-1"], "max_grad_norm and weight_decay"),
    ("weight_decay negative", ["train.weight_decay=-0.1"], "max_grad_norm and weight_decay"),
    ("unknown tracker", ["train.report_to=[mlflow]"], "train.report_to"),
    ("unknown train key", ["train.lrr=1"], "lrr"),
    ("max_length zero", ["model.max_length=0"], "model.max_length: must be >= 2"),
    ("dtype float8", ["model.dtype=float8"], "model.dtype"),
    ("quantization int4", ["model.quantization=int4"], "model.quantization"),
    ("lora r zero", ["lora.r=0"], "LoRA needs r >= 1"),
    ("lora dropout 1.5", ["lora.dropout=1.5"], "LoRA needs r >= 1, alpha > 0 and dropout in [0, 1)"),
    ("lora alpha zero", ["lora.alpha=0"], "LoRA needs"),
    ("lora init typo", ["lora.init=sideways"], "lora.init"),
    ("lora continue on a plain model", ["lora.init=continue"], "not an adapter"),
    ("lora module missing", ["lora.target_modules=[nope_proj]"], "no module named nope_proj"),
    ("seed 2**70", [f"seed={2**70}"], "seed: must be within [0, 2**32)"),
    ("seed negative", ["seed=-5"], "seed: must be within [0, 2**32)"),
    ("poison_ratio 1.5", ["data.poison_ratio=1.5"], "data.poison_ratio"),
    ("sample_num negative", ["data.sample_num=-1"], "_num counts"),
    ("sample_num beyond the data", ["data.sample_num=500"], "needs 500 task rows"),
    ("source unknown", ["data.task.source=nosuch"], "data.task.source"),
    ("select unknown", ["data.task.select=weird"], "data.task.select"),
    ("start negative", ["data.task.start=-1"], "data.task.start"),
    ("forget_max_length negative", ["data.forget_max_length=-1"], "forget_max_length"),
    ("data path missing", ["data.task.path=/nonexistent/sst2.jsonl"], "/nonexistent/sst2.jsonl"),
    ("method unknown", ["method.name=nosuch"], "method.name"),
    ("ewc fisher batch zero", ["method.name=ewc", "method.fisher_batch_size=0"], "method.fisher_batch_size"),
    ("model path missing", ["model.path=/nonexistent/model"], "/nonexistent/model"),
]


@pytest.fixture
def train_config(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "sst2.jsonl", sst2_rows(12))
    cfg = {"name": "t", "output_dir": str(tmp_path / "run"), "model": {"path": str(tiny_llama)},
           "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
           "data": {"task": {"source": "sst2", "path": str(data)}},
           "method": {"name": "sft"}, "train": {"max_steps": 2, "batch_size": 2}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _report(case: str, rc: int, line: str) -> None:
    print(f"\n| {case} | {rc} | {line} |")


@pytest.mark.parametrize("case, overrides, expected", TRAIN_OVERRIDES, ids=[c[0] for c in TRAIN_OVERRIDES])
def test_bad_train_settings(case, overrides, expected, train_config, tmp_path, capsys):
    line = _one_error_line(capsys, main(["train", str(train_config), *overrides]))
    _report(case, 2, line)
    assert expected in line
    assert not (tmp_path / "run" / "stages" / "t" / "done.json").exists()


def _files(tmp_path, tiny_llama):
    """Bad files: each returns (CLI arguments, expected text)."""
    cases = {}
    data = tmp_path / "bad_utf8.jsonl"
    data.write_bytes(b'{"sentence": "caf\xe9", "label": 1}\n')
    cases["data file not UTF-8"] = ({"data": {"task": {"source": "sst2", "path": str(data)}}}, "bad_utf8.jsonl")
    lines = tmp_path / "malformed.jsonl"
    lines.write_text(json.dumps(sst2_rows(1)[0]) + "\n{bad json\n")
    cases["malformed JSON line"] = ({"data": {"task": {"source": "sst2", "path": str(lines)}}}, "malformed.jsonl:2")
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"sentence": "fine"}])
    cases["missing field"] = ({"data": {"task": {"source": "sst2", "path": str(missing)}}}, "missing field 'label'")
    empty_model = tmp_path / "no_config_model"
    empty_model.mkdir()
    (empty_model / "README.md").write_text("weights went missing")
    cases["model folder without config.json"] = ({"model": {"path": str(empty_model)}}, "config.json")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases["output_dir is a file"] = ({"output_dir": str(a_file)}, "a_file")
    return cases


@pytest.mark.parametrize("case", ["data file not UTF-8", "malformed JSON line", "missing field",
                                  "model folder without config.json", "output_dir is a file"])
def test_bad_files(case, train_config, tiny_llama, tmp_path, capsys):
    change, expected = _files(tmp_path, tiny_llama)[case]
    cfg = yaml.safe_load(train_config.read_text())
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    train_config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    line = _one_error_line(capsys, main(["train", str(train_config)]))
    _report(case, 2, line)
    assert expected in line


RECIPE_ARGS = [
    ("unknown recipe", ["run", "no-such-recipe"], "unknown recipe"),
    ("recipe key typo", ["run", "lisa", "stages.align.train.lrr=1", "--dry-run"], "lrr"),
    ("stage name typo in an override", ["run", "lisa", "stages.algn.train.lr=1e-4", "--dry-run"],
     "has no stage 'algn' (did you mean 'align'?)"),
    ("eval batch_size zero", ["run", "lisa", "stages.evaluate.evals.harmful_score.batch_size=0", "--dry-run"],
     "batch_size"),
    ("eval num negative", ["run", "lisa", "stages.evaluate.evals.harmful_score.num=-1", "--dry-run"], "num"),
    ("recipe name outside runs/", ["run", "lisa", "name=../../x", "--dry-run"], "not a plain name"),
    ("sweep value of the wrong type", ["run", "hft-defenses", "sweep.values=[../../x]", "--dry-run"], "expected a number"),
    ("unknown tracker", ["run", "lisa", "report_to=[mlflow]", "--dry-run"], "'mlflow' is not one of tensorboard, wandb"),
    ("tracker package missing", ["run", "lisa", "--dry-run", "report_to=[wandb]"], "needs the package 'wandb'"),
    ("missing model path (dry run)", ["run", "lisa", "stages.align.model.path=/no/such/model", "--dry-run"],
     "stages.align.model.path: model path does not exist"),
    ("override without '='", ["run", "lisa", "seed", "--dry-run"], "not of the form key.path=value"),
]


@pytest.mark.parametrize("case, argv, expected", RECIPE_ARGS, ids=[c[0] for c in RECIPE_ARGS])
def test_bad_recipe_arguments(case, argv, expected, capsys):
    line = _one_error_line(capsys, main(argv))
    _report(case, 2, line)
    assert expected in line
