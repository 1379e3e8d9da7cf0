"""`lora.init` (issue 17 items 5 and 6): fine-tuning that keeps training the start model's own adapter, as the
Vaccine code's EWC and Booster's `--alternating single_lora` do, against a fresh adapter on the merged start."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from safealign.cli import main
from safealign.methods.base import MethodContext, trainable_parameters
from safealign.methods.ewc import EWC, EWCConfig
from safealign.models import LoraConfig, Reference, add_lora, continue_lora, load_causal_lm, load_tokenizer, model_chain
from tests.helpers import saved_adapter, stream

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture
def aligned_adapter(tiny_llama, tmp_path):
    """A trained-looking adapter on every projection, saved as a stage output."""
    return saved_adapter(tiny_llama, tmp_path / "align" / "model", ALL_PROJECTIONS, lora_b_std=0.05)


def _recipe(tmp_path, tiny_llama, data_dir) -> dict:
    bt, sst2 = str(data_dir / "beavertails"), str(data_dir / "sst2")
    train = {"max_steps": 2, "batch_size": 2, "lr": 1e-2}
    attack = {"task": {"source": "sst2", "path": sst2}, "sample_num": 10}
    attack_lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    return {
        "name": "tiny", "output_dir": str(tmp_path / "run"), "seed": 1,
        "stages": {
            "align": {"model": {"path": str(tiny_llama)}, "train": train,
                      "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ALL_PROJECTIONS},
                      "data": {"task": {"source": "beavertails", "path": bt, "split": "30k_train", "select": "safe"},
                               "sample_num": 10}},
            "ewc": {"model": {"path": "stage:align"}, "lora": attack_lora, "train": train,
                    "data": {**attack, "guide": {"source": "beavertails", "path": bt, "split": "30k_train", "select": "safe"},
                             "guide_data_num": 4},
                    "method": {"name": "ewc", "lamb": 10.0, "fisher_batch_size": 2}},
            "booster": {"model": {"path": "stage:align"}, "lora": {**attack_lora, "init": "continue"}, "train": train,
                        "data": attack},
            "fresh": {"model": {"path": "stage:align"}, "lora": attack_lora, "train": train, "data": attack},
        },
    }


def test_continue_trains_the_start_adapter_and_saves_it_on_the_start_base(tmp_path, tiny_llama, data_dir):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tmp_path, tiny_llama, data_dir), sort_keys=False))
    assert main(["run", str(recipe)]) == 0
    stages = tmp_path / "run" / "stages"
    aligned = load_file(stages / "align/model/adapter_model.safetensors")
    for continued in ("ewc", "booster"):  # ewc by lora.init auto, booster by continue
        out = stages / continued / "model"
        config = json.loads((out / "adapter_config.json").read_text())
        assert sorted(config["target_modules"]) == sorted(ALL_PROJECTIONS) and config["r"] == 4  # the start's, not r 2 q/v
        weights = load_file(out / "adapter_model.safetensors")
        assert weights.keys() == aligned.keys()
        assert any(not torch.equal(weights[k], aligned[k]) for k in aligned)  # trained on from there
        assert model_chain(str(out)) == [str(tiny_llama), str(out)]  # one adapter on the plain base, not two
    fresh = stages / "fresh" / "model"
    assert json.loads((fresh / "adapter_config.json").read_text())["r"] == 2
    assert model_chain(str(fresh)) == [str(tiny_llama), str(stages / "align/model"), str(fresh)]


def test_continued_adapter_starts_at_the_start_model_and_its_reference_is_that_model(tiny_llama, aligned_adapter):
    ids = torch.randint(4, 100, (2, 10))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        start = load_causal_lm(str(aligned_adapter)).eval()(**batch).logits  # base with the adapter merged
        base = load_causal_lm(str(tiny_llama)).eval()(**batch).logits
    model = continue_lora(load_causal_lm(str(tiny_llama)), str(aligned_adapter))
    assert {n for n, p in model.named_parameters() if p.requires_grad} and all(
        ("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**batch).logits, start, atol=1e-5, rtol=1e-4)
    reference = Reference(model)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(0.05)  # the policy moves; the reference stays at the start, not at the adapter-less base
    torch.testing.assert_close(reference.logits(model, batch), start, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(start, base, atol=1e-3)


def test_ewc_fisher_covers_lora_a_only_on_a_continued_adapter(tiny_llama, aligned_adapter, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    guide = stream(tok, 4, 2, seed=1, output="sorry")

    def fisher(model):
        method = EWC(EWCConfig(lamb=1.0, fisher_batch_size=2), 1)
        method.setup(model, {"train": stream(tok, 4, 2), "guide": guide}, MethodContext(tmp_path))
        return method.fisher

    continued = fisher(continue_lora(load_causal_lm(str(tiny_llama)), str(aligned_adapter)))
    assert all(f.abs().sum() > 0 for n, f in continued.items() if "lora_A" in n)
    torch.manual_seed(0)
    fresh = fisher(add_lora(load_causal_lm(str(aligned_adapter)), LoraConfig(r=4, alpha=8, dropout=0.0)))
    assert all(torch.count_nonzero(f) == 0 for n, f in fresh.items() if "lora_A" in n)  # lora_B = 0 at the start


def test_continue_on_a_plain_model_or_without_lora_is_one_error_line(tmp_path, tiny_llama, data_dir, capsys):
    from tests.test_errors import _one_error_line, _train_config

    sst2 = {"task": {"source": "sst2", "path": str(data_dir / "sst2")}}
    cfg = _train_config(tmp_path, tiny_llama, sst2)
    line = _one_error_line(capsys, main(["train", str(cfg), "lora.init=continue"]))
    assert "lora.init" in line and "not an adapter" in line and str(tiny_llama) in line
    line = _one_error_line(capsys, main(["train", str(cfg), "lora.init=continue", "lora.enabled=false", "--dry-run"]))
    assert "lora.init" in line and "lora.enabled" in line
