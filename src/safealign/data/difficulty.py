"""Per-sample unlearning difficulty and the curriculum order it gives.

score_i = |⟨g_i, G⟩| / ‖G‖ with g_i = ∇θ ℓ(x_i) (the answer's token-mean NLL of forget sample i alone, a batch of
one, over the trainable parameters, in fp32) and G = Σ_i g_i over one epoch of the forget set at the starting
weights: how much of the forget set's total gradient sample i carries. Two passes (G first, then each ⟨g_i, G⟩),
so memory stays one gradient, not one per sample. Saved as JSON with the dataset, split, seed, every sample's
index and score, and ‖G‖; `order_by_difficulty` refuses scores of another dataset, split, size or seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from safealign.data.formats import collate
from safealign.errors import DataError
from safealign.io import atomic_write_json
from safealign.losses.sft import batch_token_mean, sequence_nll


def _sample_grad(model, feature: dict, params: list[torch.Tensor]) -> torch.Tensor:
    device = params[0].device
    batch = {k: v.to(device) for k, v in collate([feature], 0).items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll_sum, n_tokens = sequence_nll(logits, batch["labels"])
    loss = batch_token_mean(nll_sum, n_tokens)  # one sample: its answer's token-mean NLL
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).float().flatten() for g, p in zip(grads, params)])


def difficulty_scores(model, features: list[dict]) -> tuple[list[float], float]:
    """(score_i for every feature, ‖G‖), see the module. The model's trainable parameters define θ."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise DataError("difficulty: the model has no trainable parameters")
    was_training = model.training
    model.eval()  # no dropout: a sample's gradient is a function of the sample
    total = sum(_sample_grad(model, f, params) for f in features)
    norm = float(total.norm())
    scores = [abs(float(_sample_grad(model, f, params) @ total)) / max(norm, 1e-30) for f in features]
    model.train(was_training)
    return scores, norm


def write_scores(path: Path, source, seed: int, scores: list[float], g_norm: float) -> None:
    atomic_write_json(path, {"dataset": source.path, "split": source.split, "start": source.start, "seed": seed,
                             "g_norm": g_norm, "scores": [{"index": i, "score": s} for i, s in enumerate(scores)]})


def order_by_difficulty(examples: list[dict], scores_path: str, source, order: str, seed: int) -> list[dict]:
    """`examples` (the forget set, as read) sorted by score, ascending (easiest first) or descending; ties keep
    the file order. The scores must be for this dataset, split, offset, size and seed."""
    saved = json.loads(Path(scores_path).read_text())
    mine = {"dataset": source.path, "split": source.split, "start": source.start, "seed": seed}
    for key, value in mine.items():
        if saved.get(key) != value:
            raise DataError(f"{scores_path}: difficulty scores are for {key} {saved.get(key)!r}, this forget set has "
                            f"{value!r}; compute them for this forget set")
    if len(saved["scores"]) != len(examples):
        raise DataError(f"{scores_path}: {len(saved['scores'])} scores for a forget set of {len(examples)} rows")
    by_index = {s["index"]: s["score"] for s in saved["scores"]}
    ranked = sorted(range(len(examples)), key=lambda i: by_index[i], reverse=order == "desc")
    return [examples[i] for i in ranked]
