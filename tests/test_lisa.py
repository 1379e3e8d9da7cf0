import pytest
import torch

from safealign.losses.regularizers import squared_distance
from safealign.methods.base import MethodContext, trainable_parameters
from safealign.methods.lisa import ALIGNMENT, FINETUNE, Lisa, LisaConfig
from safealign.models import LoraConfig, add_lora, load_causal_lm, load_tokenizer
from tests.helpers import stream


@pytest.fixture
def lora_model(tiny_llama):
    torch.manual_seed(0)
    return add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0))


def _streams(tiny_llama):
    tok = load_tokenizer(str(tiny_llama))
    return {"train": stream(tok, 8, 2, output="positive"), "guide": stream(tok, 8, 2, seed=1, output="sorry")}


def _nudge(model, step):
    with torch.no_grad():  # stand-in for an optimizer step: weights move, so anchors differ
        for p in trainable_parameters(model).values():
            p.add_(0.01 * (step + 1))


def test_switching_counts_and_order(lora_model, tiny_llama, tmp_path):
    lisa = Lisa(LisaConfig(rho=0.0, alignment_step=2, finetune_step=3), total_steps=12)
    streams = _streams(tiny_llama)
    lisa.setup(lora_model, streams, MethodContext(tmp_path))
    states, events = [], []
    for step in range(12):
        events += lisa.step(lora_model, streams, step).events
        assert lisa.step(lora_model, streams, step).events == []  # a second micro-batch of a step: no switch
        states.append(lisa.status)
    assert states == [ALIGNMENT] * 2 + [FINETUNE] * 3 + [ALIGNMENT] * 2 + [FINETUNE] * 3 + [ALIGNMENT] * 2
    assert len([e for e in events if "alignment -> finetune" in e]) == 2
    assert len([e for e in events if "finetune -> alignment" in e]) == 2
    # the guide stream fed the 6 alignment steps, the user stream the 6 finetune steps, 2 micro-batches each
    drawn = {k: s.epoch * s.batches_per_epoch + s.position for k, s in streams.items()}
    assert drawn == {"guide": 12, "train": 12}


def test_without_guide_data_lisa_stays_in_finetune(lora_model, tiny_llama, tmp_path):
    lisa = Lisa(LisaConfig(alignment_step=2, finetune_step=3), total_steps=10)
    streams = {"train": _streams(tiny_llama)["train"]}
    lisa.setup(lora_model, streams, MethodContext(tmp_path))
    for step in range(10):
        lisa.step(lora_model, streams, step)
        assert lisa.status == FINETUNE


def test_anchor_is_the_ended_state_and_drift_is_logged(lora_model, tiny_llama, tmp_path):
    lisa = Lisa(LisaConfig(rho=0.0, alignment_step=1, finetune_step=1), total_steps=10)
    streams = _streams(tiny_llama)
    lisa.setup(lora_model, streams, MethodContext(tmp_path))
    lisa.step(lora_model, streams, 0)
    _nudge(lora_model, 0)
    current = {k: v.detach().clone() for k, v in trainable_parameters(lora_model).items()}
    out = lisa.step(lora_model, streams, 1)  # alignment ended: its anchor is the current weights
    assert lisa.status == FINETUNE
    for k, v in current.items():
        assert torch.equal(lisa.anchors[ALIGNMENT][k], v)
    drift = squared_distance(lisa.anchors[ALIGNMENT], lisa.anchors[FINETUNE])
    assert drift > 0 and f"{drift:.6g}" in out.events[0]


def test_proximal_zero_before_warmup_then_rho_half_delta_squared(lora_model, tiny_llama, tmp_path):
    rho, total = 3.0, 20
    lisa = Lisa(LisaConfig(rho=rho, alignment_step=1, finetune_step=100, proximal_warmup=0.1), total_steps=total)
    streams = _streams(tiny_llama)
    lisa.setup(lora_model, streams, MethodContext(tmp_path))
    for step in range(3):
        out = lisa.step(lora_model, streams, step)
        _nudge(lora_model, step)
        if step <= 0.1 * total:  # steps 0, 1, 2: the authors apply the term only when step > 0.1 · total
            assert out.metrics["proximal"] == 0.0
    # step 3 (> 2): finetune state, anchored to the alignment anchor taken when step 1 began
    out = lisa.step(lora_model, streams, 3)
    assert lisa.status == FINETUNE
    params = trainable_parameters(lora_model)
    hand = sum(((params[k].detach() - lisa.anchors[ALIGNMENT][k]) ** 2).sum().item() for k in params)
    assert hand > 0
    assert out.metrics["proximal"] == pytest.approx(rho / 2 * hand, rel=1e-5)
    assert out.loss.item() == pytest.approx(out.metrics["nll"] + rho / 2 * hand, rel=1e-5)


def test_state_dict_round_trip_keeps_anchors(lora_model, tiny_llama, tmp_path):
    lisa = Lisa(LisaConfig(alignment_step=1, finetune_step=2), total_steps=10)
    streams = _streams(tiny_llama)
    lisa.setup(lora_model, streams, MethodContext(tmp_path))
    for step in range(4):
        lisa.step(lora_model, streams, step)
        _nudge(lora_model, step)
    state = lisa.state_dict()
    other = Lisa(LisaConfig(alignment_step=1, finetune_step=2), total_steps=10)
    other.setup(lora_model, streams, MethodContext(tmp_path))
    other.load_state_dict(state)
    assert (other.status, other.clock, other.last_step) == (lisa.status, lisa.clock, lisa.last_step)
    for name in (ALIGNMENT, FINETUNE):
        for k in lisa.anchors[name]:
            assert torch.equal(other.anchors[name][k], lisa.anchors[name][k])
