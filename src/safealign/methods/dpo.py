"""DPO (Rafailov et al. 2023, arXiv 2305.18290) on helpful pairs, with TRL's ipo / hinge variants and label
smoothing. Batches are `collate_pairs` output (chosen rows first). Sequence log-probs are SUMMED over response
tokens (for ipo divided by the response length by default, as TRL); the loss is the batch mean over pairs.

The reference model (models.Reference) is the policy with its LoRA adapter disabled (no second copy in
memory); when every weight trains, a frozen copy of the starting model is taken in `setup`. With
`precompute_ref`, the reference's sequence log-probs of every training pair are computed once in `setup` (no grad, one pass), saved in the stage
directory as `reference_logps.json` (a resumed run reads them back), and carried in the batches, so a training
step runs the policy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from safealign.config import one_of, opt
from safealign.data.formats import collate_pairs
from safealign.io import atomic_write_json
from safealign.losses.preference import DPO_LOSS_TYPES, dpo_loss
from safealign.methods.base import Method, MethodContext, StepOutput
from safealign.models import Reference, response_log_probs


@dataclass
class DPOConfig:
    registry_name = "dpo"
    beta: float = opt(0.1, "β: strength of the implicit KL constraint")
    loss_type: str = opt("sigmoid", "sigmoid (DPO) | ipo | hinge")
    label_smoothing: float = opt(0.0, "conservative-DPO label smoothing ε (sigmoid only)")
    ipo_normalization: str = opt("token_mean", "ipo only: each sequence log-prob as token_mean over its response "
                                               "(TRL, the IPO authors) | sum (as sigmoid and hinge)")
    precompute_ref: bool = opt(False, "compute the reference log-probs of every pair once before training "
                                      "(cached in the stage directory) instead of a reference forward per step")

    def validate(self, where: str) -> None:
        one_of(self.loss_type, DPO_LOSS_TYPES, f"{where}.loss_type")
        one_of(self.ipo_normalization, ("token_mean", "sum"), f"{where}.ipo_normalization")


class DPO(Method):
    Config = DPOConfig
    streams = ("train",)
    data_kind, model_kind = "pairs", "causal_lm"

    def setup(self, model, streams, ctx: MethodContext) -> None:
        self.reference = Reference(model)
        if self.cfg.precompute_ref:
            attach_reference_logps(streams["train"], self.reference, model, Path(ctx.work_dir) / REFERENCE_FILE)

    def step(self, model, streams, step: int) -> StepOutput:
        batch = next(streams["train"])
        policy, _, mask = response_log_probs(model, batch)
        if "ref_chosen_logp" in batch:
            ref = torch.cat([batch["ref_chosen_logp"], batch["ref_rejected_logp"]])
        else:
            ref, _, _ = self.reference.log_probs(model, batch)
        if self.cfg.loss_type == "ipo" and self.cfg.ipo_normalization == "token_mean":
            # TRL's DPOTrainer divides each sequence's log-prob (policy and reference) by its completion length for
            # ipo; the policy and the reference score the same tokens, so one count serves both
            n_tokens = mask.sum(dim=1).clamp(min=1)
            policy, ref = policy / n_tokens, ref / n_tokens
        half = policy.shape[0] // 2
        losses, chosen_rewards, rejected_rewards = dpo_loss(policy[:half], policy[half:], ref[:half], ref[half:],
                                                            self.cfg.beta, self.cfg.loss_type, self.cfg.label_smoothing)
        return StepOutput(losses.mean(), {
            "reward_chosen": chosen_rewards.mean().item(), "reward_rejected": rejected_rewards.mean().item(),
            "reward_accuracy": (chosen_rewards > rejected_rewards).float().mean().item()})


REFERENCE_FILE = "reference_logps.json"


def attach_reference_logps(stream, reference: Reference, model, cache: Path) -> None:
    """Store the reference's summed sequence log-probs of each pair as feature['ref_chosen_logp'] /
    ['ref_rejected_logp'], read from `cache` when it holds them for these features, else computed in batches
    of the stream's size and written there atomically (main process only)."""
    features = stream.features
    saved = json.loads(cache.read_text()) if cache.exists() else None
    if saved is None or len(saved["chosen"]) != len(features):
        chosen, rejected = [], []
        device = next(model.parameters()).device
        for start in range(0, len(features), stream.batch_size):
            batch = collate_pairs(features[start:start + stream.batch_size], stream.pad_id)
            logps, _, _ = reference.log_probs(model, {k: v.to(device) for k, v in batch.items()})
            half = logps.shape[0] // 2
            chosen += logps[:half].tolist()
            rejected += logps[half:].tolist()
        saved = {"chosen": chosen, "rejected": rejected}
        if stream.rank == 0:
            atomic_write_json(cache, saved)
    for f, c, r in zip(features, saved["chosen"], saved["rejected"]):
        f["ref_chosen_logp"], f["ref_rejected_logp"] = c, r
