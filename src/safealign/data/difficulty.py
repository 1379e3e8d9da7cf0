"""Per-sample unlearning difficulty and the curriculum order it gives.

score_i = |⟨g_i, G⟩| / ‖G‖ with g_i = ∇θ ℓ(x_i) (the answer's token-mean NLL of forget sample i alone, a batch of
one, over the trainable parameters, in fp32) and G = Σ_i g_i over one epoch of the forget set: how much of the
forget set's total gradient sample i carries. Where G is taken (`along`):

  start     every g_i at the starting weights (the default). G = ∇θ Σ_i ℓ(x_i) is then one batched backward per
            batch; the second pass takes each ⟨g_i, G⟩ with a batch of one, so memory stays one gradient.
  ga_epoch  along one epoch of gradient ascent, as a training epoch would see it: the samples in the unlearning
            stream's first-epoch order (the same seeded permutation), g_i at the weights reached so far, then
            θ ← θ + lr·g_i (plain SGD ascent, batch of one). The second pass restores the starting weights and
            replays the same epoch (deterministic: no dropout, same order), dotting each g_i with the finished G.

Saved as JSON with the dataset, split, seed, every sample's index and score, and ‖G‖; `order_by_difficulty`
and `weights_by_difficulty` refuse scores of another dataset, split, offset, size or seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from safealign.data.formats import collate
from safealign.data.streams import BatchStream
from safealign.errors import DataError
from safealign.io import atomic_write_json, progress_kwargs
from safealign.losses.sft import sequence_nll

ALONG = ("start", "ga_epoch")


def _answer_nlls(model, features: list[dict], pad_id: int, device) -> torch.Tensor:
    """(B,) token-mean answer NLL of each feature (one padded batch)."""
    batch = {k: v.to(device) for k, v in collate(features, pad_id).items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    nll_sum, n_tokens = sequence_nll(logits, batch["labels"])
    return nll_sum / n_tokens.clamp(min=1)


def _flat_grad(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).float().flatten() for g, p in zip(grads, params)])


def first_epoch_order(n: int, seed: int) -> list[int]:
    """The order a shuffled unlearning stream (data/streams.py BatchStream, same seed) visits n rows in epoch 0."""
    return BatchStream([{}] * n, 1, 0, seed).epoch_order(0)


def difficulty_scores(model, features: list[dict], pad_id: int = 0, along: str = "start", lr: float = 0.0,
                      seed: int = 0, batch_size: int = 16) -> tuple[list[float], float]:
    """(score_i for every feature, in feature order; ‖G‖), see the module. The trainable parameters define θ;
    `lr` and `seed` (the visiting order) are for along='ga_epoch'. The model's weights are left as they came."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise DataError("difficulty: the model has no trainable parameters")
    if along not in ALONG:
        raise DataError(f"difficulty: along must be one of {', '.join(ALONG)}, got {along!r}")
    device = params[0].device
    was_training = model.training
    model.eval()  # no dropout: a sample's gradient is a function of the sample and the weights
    grad_of = lambda i: _flat_grad(_answer_nlls(model, [features[i]], pad_id, device).sum(), params)  # noqa: E731
    bar = dict(progress_kwargs(), leave=False)
    if along == "start":
        total = sum(_flat_grad(_answer_nlls(model, features[s:s + batch_size], pad_id, device).sum(), params)
                    for s in tqdm(range(0, len(features), batch_size), desc="difficulty: G", **bar))
        norm = float(total.norm())
        dots = {i: float(grad_of(i) @ total) for i in tqdm(range(len(features)), desc="difficulty: scores", **bar)}
    else:
        start = [p.detach().clone() for p in params]
        order = first_epoch_order(len(features), seed)

        def ascend(visit) -> None:  # one epoch of SGD ascent in `order`; visit(i, g_i) sees each gradient
            for i in tqdm(order, desc="difficulty: GA epoch", **bar):
                g = grad_of(i)
                visit(i, g)
                with torch.no_grad():
                    offset = 0
                    for p in params:
                        p.add_(g[offset:offset + p.numel()].view_as(p).to(p.dtype), alpha=lr)
                        offset += p.numel()

        total = torch.zeros(sum(p.numel() for p in params), device=device)
        ascend(lambda i, g: total.add_(g))
        norm = float(total.norm())
        with torch.no_grad():
            for p, p0 in zip(params, start):
                p.copy_(p0)
        dots = {}
        ascend(lambda i, g: dots.__setitem__(i, float(g @ total)))
        with torch.no_grad():
            for p, p0 in zip(params, start):
                p.copy_(p0)
    model.train(was_training)
    return [abs(dots[i]) / max(norm, 1e-30) for i in range(len(features))], norm


def write_scores(path: Path, source, seed: int, scores: list[float], g_norm: float, along: str = "start",
                 lr: float = 0.0) -> None:
    atomic_write_json(path, {"dataset": source.path, "split": source.split, "start": source.start, "seed": seed,
                             "along": along, **({"lr": lr} if along == "ga_epoch" else {}), "g_norm": g_norm,
                             "scores": [{"index": i, "score": s} for i, s in enumerate(scores)]})


def read_scores(scores_path: str, source, n: int, seed: int) -> list[float]:
    """The saved scores in forget-set order, after checking they are for this dataset, split, offset, size, seed."""
    try:
        saved = json.loads(Path(scores_path).read_text())
    except FileNotFoundError:
        raise DataError(f"{scores_path}: no difficulty scores there (run the difficulty stage first)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{scores_path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    mine = {"dataset": source.path, "split": source.split, "start": source.start, "seed": seed}
    for key, value in mine.items():
        if saved.get(key) != value:
            raise DataError(f"{scores_path}: difficulty scores are for {key} {saved.get(key)!r}, this forget set has "
                            f"{value!r}; compute them for this forget set")
    if len(saved.get("scores", [])) != n:
        raise DataError(f"{scores_path}: {len(saved.get('scores', []))} scores for a forget set of {n} rows")
    by_index = {s["index"]: s["score"] for s in saved["scores"]}
    if sorted(by_index) != list(range(n)):
        raise DataError(f"{scores_path}: the score indices are not 0..{n - 1}")
    return [by_index[i] for i in range(n)]


def order_by_difficulty(examples: list[dict], scores_path: str, source, order: str, seed: int) -> list[dict]:
    """`examples` (the forget set, as read) sorted by score, ascending (easiest first) or descending; ties keep
    the file order."""
    scores = read_scores(scores_path, source, len(examples), seed)
    ranked = sorted(range(len(examples)), key=lambda i: scores[i], reverse=order == "desc")
    return [examples[i] for i in ranked]


def weights_by_difficulty(examples: list[dict], scores_path: str, source, seed: int) -> list[float]:
    """Sampling weights ∝ score for `forget_order: weighted` (harder samples drawn more often)."""
    scores = read_scores(scores_path, source, len(examples), seed)
    if not sum(scores) > 0:
        raise DataError(f"{scores_path}: every difficulty score is 0; nothing to weight the draws by")
    return scores
