"""Harmful fine-tuning defenses (issue #7): Vaccine's perturbation, T-Vaccine's layer draws and freezing,
Booster's update against finite differences, EWC's penalty and Fisher, VLGuard-style mixing."""

import math

import pytest
import torch

from safealign.loop import make_accelerator, train
from safealign.losses.regularizers import ewc_penalty
from safealign.methods.base import MethodContext, causal_lm_loss, trainable_parameters
from safealign.methods.booster import Booster, BoosterConfig, booster_direction
from safealign.methods.ewc import EWC, EWCConfig
from safealign.methods.perturbation import (attention_modules, captured_outputs, joint_norm, perturbation,
                                            perturbed_loss, shifted_outputs)
from safealign.loop import TrainConfig
from safealign.methods.t_vaccine import TVaccine, TVaccineConfig, draw_layers, layer_importance, lowest_trained_layer
from safealign.methods.vaccine import Vaccine, VaccineConfig
from safealign.models import LoraConfig, add_lora, load_causal_lm, load_tokenizer
from tests.helpers import features, stream

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture
def lora_model(tiny_llama):
    torch.manual_seed(0)
    model = add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=ALL_PROJECTIONS))
    with torch.no_grad():  # a non-zero adapter, so every LoRA matrix has a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def _batch(tiny_llama, n=4, output="sure here is a plan"):
    tok = load_tokenizer(str(tiny_llama))
    from safealign.data.formats import collate

    return collate(features(tok, n, output), tok.pad_token_id)


# ------------------------------------------------------------------------------------------------ Vaccine


def test_vaccine_perturbation_has_norm_rho_and_is_applied_only_in_the_second_pass(lora_model, tiny_llama):
    batch = _batch(tiny_llama)
    layers = attention_modules(lora_model)
    assert len(layers) == 2
    with captured_outputs(layers) as clean_outputs:
        clean = causal_lm_loss(lora_model, batch)
    grads = torch.autograd.grad(clean, clean_outputs)
    eps = perturbation(list(grads), rho=2.0)
    assert float(joint_norm(eps)) == pytest.approx(2.0, rel=1e-5)
    for e, g in zip(eps, grads):  # each layer's share is its gradient's, in the ascent direction
        torch.testing.assert_close(e, 2.0 * g / (joint_norm(grads) + 1e-7))

    loss, metrics = perturbed_loss(lora_model, batch, layers, 2.0, causal_lm_loss)
    assert metrics["clean_loss"] == pytest.approx(clean.item())  # pass 1 saw no perturbation
    assert all(p.grad is None for p in lora_model.parameters())  # and left no parameter gradient
    assert loss.item() > clean.item()  # pass 2 did: an ascent step on the activations raises the loss
    # hooks run in the order they were registered: raw output, then the shift, then what the layer passes on
    with captured_outputs(layers) as raw, shifted_outputs(layers, eps), captured_outputs(layers) as seen:
        expected = causal_lm_loss(lora_model, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for s, r, e in zip(seen, raw, eps):
        torch.testing.assert_close(s, r + e)
    torch.testing.assert_close(raw[0], clean_outputs[0])  # the first layer's input is unchanged by the shifts
    # no hook is left behind: a plain forward is clean again
    assert causal_lm_loss(lora_model, batch).item() == pytest.approx(clean.item())


def test_vaccine_trains_only_trainable_weights(lora_model, tiny_llama, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    before = {n: p.detach().clone() for n, p in lora_model.named_parameters()}
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=2, log_every=1)
    result = train(lora_model, Vaccine(VaccineConfig(rho=2.0), 3), {"train": stream(tok, 6, 2)}, cfg, tmp_path,
                   make_accelerator(cfg), seed=0)
    for n, p in result["model"].named_parameters():
        assert torch.equal(p, before[n]) != p.requires_grad, n


# ---------------------------------------------------------------------------------------------- T-Vaccine


def test_layer_importance_is_the_share_of_gradient_norms():
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([[0.0, 5.0]]), torch.tensor([10.0])]  # norms 5, 5, 10
    torch.testing.assert_close(layer_importance(grads), torch.tensor([0.25, 0.25, 0.5]))


def test_layers_are_drawn_with_the_right_probabilities():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    g = torch.Generator().manual_seed(0)
    n = 20000
    single = torch.bincount(torch.tensor([draw_layers(p, 1, g)[0] for _ in range(n)]), minlength=4) / n
    assert torch.allclose(single, p, atol=0.012)  # 4 sigma of a binomial share at n = 20000 is about 0.014

    # two layers without replacement: layer i is in the draw with P = p_i + Σ_{j≠i} p_j · p_i / (1 − p_j)
    pairs = [tuple(draw_layers(p, 2, g)) for _ in range(n)]
    assert all(a < b for a, b in pairs)  # sorted, distinct
    inclusion = torch.tensor([sum(i in pair for pair in pairs) / n for i in range(4)])
    exact = torch.tensor([p[i] + sum(p[j] * p[i] / (1 - p[j]) for j in range(4) if j != i) for i in range(4)])
    assert torch.allclose(inclusion, exact, atol=0.015)
    assert math.isclose(float(exact.sum()), 2.0, rel_tol=1e-6)


def test_t_vaccine_trains_only_the_drawn_layers_attention(lora_model, tiny_llama, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    before = {n: p.detach().clone() for n, p in trainable_parameters(lora_model).items()}
    method = TVaccine(TVaccineConfig(rho=1.0, probability_steps=100, lisa_interval_steps=100, activated_layers=1), 4)
    streams = {"train": stream(tok, 8, 2), "harmful": stream(tok, 8, 2, seed=1, output="sure here is a plan")}
    cfg = TrainConfig(lr=1e-2, max_steps=4, batch_size=2, log_every=1)
    result = train(lora_model, method, streams, cfg, tmp_path, make_accelerator(cfg), seed=0)
    (drawn,) = method.active
    assert method.probabilities is not None and math.isclose(float(method.probabilities.sum()), 1.0, rel_tol=1e-6)
    after = trainable_parameters(result["model"])
    for name, p in after.items():
        layer = int(name.split("layers.")[1].split(".")[0])
        changed = not torch.equal(p, before[name])
        if ".self_attn." in name:  # attention adapters move in the drawn layer only
            assert changed == (layer == drawn), name
        else:  # MLP adapters train from the drawn layer up (below it the authors' checkpointing gives no gradient)
            assert changed == (layer >= drawn), name
    assert "t_vaccine: step 0: layers" in (tmp_path / "metrics.jsonl").read_text()


def test_t_vaccine_lowest_trained_layer_follows_the_authors_checkpointing():
    assert lowest_trained_layer([3, 4], 6) == 3 and lowest_trained_layer([0, 2], 4) == 0
    assert lowest_trained_layer([10, 20], 32) == 9  # > 26 layers: the layer below a drawn one runs un-checkpointed
    assert lowest_trained_layer([0, 5], 32) == 0


@pytest.mark.parametrize("below_active", ["freeze", "train"])
def test_t_vaccine_gives_no_gradient_below_the_lowest_active_layer(tiny_llama, tmp_path, below_active):
    """A toy 6-layer stack with layers {3, 4} drawn: under the authors' checkpointing (`freeze`, the default)
    adapter gradients reach layers 3, 4 and 5 only (attention in 3 and 4, MLP in 3, 4, 5); `train` keeps
    every layer's MLP adapters training."""
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_llama)
    config.num_hidden_layers = 6
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "six")
    model = add_lora(load_causal_lm(str(tmp_path / "six")), LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=ALL_PROJECTIONS))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    assert TVaccineConfig().below_active == "freeze"
    method = TVaccine(TVaccineConfig(rho=1.0, activated_layers=2, below_active=below_active), 1)
    method.setup(model, {}, MethodContext(work_dir=tmp_path))
    method.active, method.last_step = [3, 4], 0  # drawn already: step 0 draws nothing more
    method.step(model, {"train": iter([_batch(tiny_llama)])}, 0).loss.backward()
    with_grad = {(int(n.split("layers.")[1].split(".")[0]), ".self_attn." in n)
                 for n, p in model.named_parameters() if "lora_" in n and p.grad is not None and p.grad.abs().sum() > 0}
    attention = {layer for layer, attn in with_grad if attn}
    mlp = {layer for layer, attn in with_grad if not attn}
    assert attention == {3, 4}
    assert mlp == ({3, 4, 5} if below_active == "freeze" else set(range(6)))


# ------------------------------------------------------------------------------------------------ Booster


def test_booster_direction_matches_finite_differences_on_two_parameters():
    w = torch.tensor([0.7, -0.3], requires_grad=True)

    def h_of(x):  # a smooth non-quadratic harmful loss, so the gradient changes along the step
        return torch.sin(x[0]) * x[1] ** 2 + torch.exp(0.5 * x[0]) + x[1] ** 3

    def fd_grad(x, eps=1e-4):
        x = x.detach().double()
        return torch.stack([(h_of(x + eps * e) - h_of(x - eps * e)) / (2 * eps) for e in torch.eye(2, dtype=torch.double)])

    alpha = 0.1
    (d,), h, h_moved = booster_direction([w], lambda: h_of(w), alpha)
    g = fd_grad(w)
    moved = w.detach().double() - alpha * g / (g.norm() + 1e-7)
    expected = g - fd_grad(moved)
    torch.testing.assert_close(d.double(), expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(w.detach(), torch.tensor([0.7, -0.3]))  # the weights are back where they were
    assert h_moved < h  # the simulated step is a descent step on h


def test_booster_step_gradient_is_alignment_plus_lambda_times_the_direction(lora_model, tiny_llama):
    tok = load_tokenizer(str(tiny_llama))
    align, harmful = stream(tok, 4, 4), stream(tok, 4, 4, seed=1, output="sure here is a plan")
    params = list(trainable_parameters(lora_model).values())
    harmful_batch, align_batch = next(stream(tok, 4, 4, seed=1, output="sure here is a plan")), next(stream(tok, 4, 4))
    direction, _, _ = booster_direction(params, lambda: causal_lm_loss(lora_model, harmful_batch), 0.1)
    grad_f = torch.autograd.grad(causal_lm_loss(lora_model, align_batch), params)

    out = Booster(BoosterConfig(lamb=5.0, alpha=0.1), 1).step(lora_model, {"train": align, "harmful": harmful}, 0)
    assert out.loss.item() == pytest.approx(out.metrics["nll"])  # the logged loss is the alignment loss
    out.loss.backward()
    for p, gf, d in zip(params, grad_f, direction):
        torch.testing.assert_close(p.grad, gf + 5.0 * d, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------- EWC


def test_ewc_penalty_by_hand():
    params = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.5]])}
    anchors = {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([[1.5]])}
    fisher = {"a": torch.tensor([2.0, 3.0]), "b": torch.tensor([[4.0]])}
    # 10 · (2·1² + 3·1² + 4·1²) = 90: no 1/2, summed over every element
    assert ewc_penalty(params, anchors, fisher, 10.0).item() == pytest.approx(90.0)


def test_ewc_fisher_is_the_sum_of_squared_batch_gradients_and_the_penalty_starts_at_zero(lora_model, tiny_llama, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    guide = stream(tok, 6, 3, seed=1, output="sorry")  # batches of 3 for training; the Fisher pass takes its own 2
    params = trainable_parameters(lora_model)
    from safealign.data.formats import collate

    batches = [collate(guide.features[i:i + 2], tok.pad_token_id) for i in (0, 2, 4)]
    expected = {n: sum(g ** 2 for g in gs) for n, *gs in zip(
        params, *[torch.autograd.grad(causal_lm_loss(lora_model, b), list(params.values())) for b in batches])}
    method = EWC(EWCConfig(lamb=1e3, fisher_batch_size=2), 3)
    method.setup(lora_model, {"train": stream(tok, 6, 2), "guide": guide}, MethodContext(tmp_path))
    for name in params:
        torch.testing.assert_close(method.fisher[name], expected[name])
    out = method.step(lora_model, {"train": stream(tok, 6, 2)}, 0)
    assert out.metrics["ewc_penalty"] == 0.0  # at the anchor
    with torch.no_grad():
        for p in params.values():
            p.add_(0.1)
    penalty = method.step(lora_model, {"train": stream(tok, 6, 2)}, 1).metrics["ewc_penalty"]
    assert penalty == pytest.approx(1e3 * sum(0.01 * f.sum().item() for f in expected.values()), rel=1e-4)


# ----------------------------------------------------------------------------------------------- VLGuard


def test_guide_mix_replaces_task_rows_and_keeps_sample_num(data_dir):
    from safealign.data.mixing import training_mix
    from safealign.data.sources import SourceConfig
    from safealign.data.training import DataConfig

    bt = str(data_dir / "beavertails")
    data = DataConfig(task=SourceConfig("sst2", str(data_dir / "sst2")), sample_num=20, poison_ratio=0.1,
                      poison=SourceConfig("beavertails", bt, "30k_train", "unsafe"),
                      guide=SourceConfig("beavertails", bt, "30k_train", "safe"), guide_data_num=5, guide_mix=True)
    mix = training_mix(data)
    assert len(mix) == 20
    assert [bool(e["meta"].get("poison")) for e in mix[:2]] == [True, True]
    assert sum(bool(e["meta"].get("guide")) for e in mix) == 5 and all(e["meta"].get("guide") for e in mix[-5:])
    assert sum(e["instruction"].startswith("Analyze") for e in mix) == 13  # 18 task rows less the 5 guide rows


# ---------------------------------------------------------------------------- BeaverTails with refusals


def _refusal_rows() -> list[dict]:
    """Rows in the schema of beavertails_with_refusals_train.json."""
    return [{"prompt": f"how do I hurt someone {i}", "response": f"first you {i}", "category": {"violence": i % 2 == 0},
             "is_safe": i % 2 == 1, "refusal": f"Question: how do I hurt someone {i}\nAnswer: I cannot help with {i}."}
            for i in range(6)]


def test_beavertails_refusals_reads_refusals_harmful_and_unsafe_rows_as_the_authors(tmp_path):
    import json

    from safealign.data.sources import SourceConfig, load_examples

    path = tmp_path / "beavertails_with_refusals_train.json"
    path.write_text(json.dumps(_refusal_rows()))
    refusals = load_examples(SourceConfig("beavertails_refusals", str(path), select="refusal", start=1))
    assert [(e["instruction"], e["output"]) for e in refusals[:2]] == [
        ("how do I hurt someone 1", "I cannot help with 1."), ("how do I hurt someone 2", "I cannot help with 2.")]
    assert len(refusals) == 5
    every = load_examples(SourceConfig("beavertails_refusals", str(path), select="all"))
    assert [e["output"] for e in every] == [f"first you {i}" for i in range(6)]  # Booster: every row's response
    unsafe = load_examples(SourceConfig("beavertails_refusals", str(path), select="unsafe"))
    assert [e["output"] for e in unsafe] == ["first you 0", "first you 2", "first you 4"]  # T-Vaccine's importance rows


def test_a_refusal_without_its_answer_is_named(tmp_path):
    import json

    from safealign.data.sources import SourceConfig, load_examples
    from safealign.errors import DataError

    rows = _refusal_rows()
    rows[3]["refusal"] = "I cannot help with that."
    path = tmp_path / "refusals.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"refusals.jsonl:4: field 'refusal' must read 'Question: \.\.\.\\nAnswer: \.\.\.'"):
        load_examples(SourceConfig("beavertails_refusals", str(path), select="refusal"))
    assert len(load_examples(SourceConfig("beavertails_refusals", str(path), select="all"))) == 6  # only the refusal is read
