"""Trackers (issue 18): a missing tracker package is one error line before any work; a tracker run per unit named
RECIPE/UNIT gets the unit's config, every loss row, and an eval unit's metrics."""

from __future__ import annotations

import pytest

from safealign.cli import main
from safealign.trackers import flat_config
from safealign.loop import TrainConfig
from tests.test_errors import _one_error_line
from tests.test_pipeline import _recipe


@pytest.mark.parametrize("override", ["report_to=[wandb]", "stages.lisa.train.report_to=[wandb]"])
def test_a_tracker_without_its_package_stops_the_run_before_any_work(tmp_path, tiny_llama, tiny_judge, data_dir,
                                                                     capsys, monkeypatch, override):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    for extra in ([], ["--dry-run"]):
        line = _one_error_line(capsys, main(["run", str(recipe), override, *extra]))
        assert "tracker 'wandb' needs the package 'wandb'" in line and "pip install -e '.[wandb]'" in line
    assert not (tmp_path / "run" / "stages").exists()


def test_flat_config_has_scalars_only():
    flat = flat_config(TrainConfig(report_to=["tensorboard"]))
    assert flat["lr"] == 1e-4 and flat["adam_betas"] == "[0.9, 0.999]" and flat["report_to"] == "['tensorboard']"
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


def test_tensorboard_gets_config_losses_and_eval_metrics(tmp_path, tiny_llama, tiny_judge, data_dir):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = _recipe(tmp_path, tiny_llama, tiny_judge, data_dir)
    assert main(["run", str(recipe), "report_to=[tensorboard]"]) == 0
    run = tmp_path / "run"

    def scalars(unit_dir):
        runs = [p.parent for p in unit_dir.rglob("events.out.tfevents.*")]
        assert runs, f"no event file under {unit_dir}"
        tags = {}
        for r in runs:
            acc = EventAccumulator(str(r))
            acc.Reload()
            for tag in acc.Tags()["scalars"]:
                tags[tag] = [e.value for e in acc.Scalars(tag)]
        return tags, runs

    train_tags, runs = scalars(run / "stages/align")
    assert len(train_tags["loss"]) == 3 and all(r.is_relative_to(run / "stages/align") for r in runs)
    assert any("tiny" in str(r) for r in runs)  # the project is the recipe's name
    hparams = list((run / "stages/align").rglob("hparams.yml"))
    assert hparams and "lr: 0.0001" in hparams[0].read_text() and "model.path:" in hparams[0].read_text()
    eval_tags, _ = scalars(run / "stages/evaluate/lisa")
    import json

    results = json.loads((run / "results.json").read_text())
    assert eval_tags["eval/harmful_score"] == [pytest.approx(results["lisa"]["harmful_score"])]
