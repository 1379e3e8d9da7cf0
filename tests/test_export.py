"""Export (issue #6): the merged model gives the adapter-on-base logits, sharded; the adapter alone loads with
peft; merging into a quantised base is refused with a message."""

import json
import shutil

import pytest
import torch

from safealign.errors import SafealignError
from tests.helpers import saved_adapter


@pytest.fixture()
def trained_adapter(tiny_llama, tmp_path):
    return saved_adapter(tiny_llama, tmp_path / "stage" / "model")


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_merged_export_matches_adapter_on_base_and_is_sharded(tiny_llama, trained_adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safealign.export import export_model

    ids = torch.randint(4, 100, (2, 12))
    expected = _logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), trained_adapter), ids)
    assert not torch.allclose(expected, _logits(AutoModelForCausalLM.from_pretrained(tiny_llama), ids), atol=1e-3)

    out = export_model(str(trained_adapter), tmp_path / "merged", merge=True, max_shard_size="40KB")
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").exists()
    assert torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(out), ids), expected, atol=1e-4)
    AutoTokenizer.from_pretrained(out)  # the tokenizer travels with it

    adapter = export_model(str(trained_adapter), tmp_path / "adapter", merge=False)
    assert {p.name for p in adapter.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json"}
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter)
    assert torch.allclose(_logits(reloaded, ids), expected, atol=1e-6)


def test_merging_into_a_quantised_base_is_refused(tiny_llama, trained_adapter, tmp_path):
    from safealign.cli import main
    from safealign.export import export_model

    quantised = tmp_path / "nf4-base"
    shutil.copytree(tiny_llama, quantised)
    config = json.loads((quantised / "config.json").read_text())
    (quantised / "config.json").write_text(json.dumps({**config, "quantization_config": {"load_in_4bit": True}}))
    with pytest.raises(SafealignError, match="quantised; .*full-precision base"):
        export_model(str(trained_adapter), tmp_path / "out", merge=True, base=str(quantised))
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.tmp").exists()
    assert main(["export", str(trained_adapter), str(tmp_path / "out"), "--merge", "--base", str(quantised)]) == 2
    with pytest.raises(SafealignError, match="a full model, not one adapter"):
        export_model(str(tiny_llama), tmp_path / "out2", merge=False)


def test_qlora_without_cuda_or_bitsandbytes_says_what_is_missing(tiny_llama, monkeypatch):
    from safealign.models import load_causal_lm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SafealignError, match="nf4 \\(QLoRA\\) needs a CUDA device.*model.quantization=none"):
        load_causal_lm(str(tiny_llama), quantization="nf4")


def test_quantised_weights_without_lora_are_a_config_error():
    from safealign.errors import ConfigError
    from safealign.stages.train import TrainStage

    stage = TrainStage()
    stage.model.quantization, stage.lora.enabled = "nf4", False
    with pytest.raises(ConfigError, match="quantised weights do not train"):
        stage.validate("stages.sft")
