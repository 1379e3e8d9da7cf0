"""Unlearning methods on a forget stream (and a retain stream): FT, GA, GradDiff, GA+KL, NPO, KL, SimNPO. Each is
a few lines over the pure losses of losses/unlearning.py; per-sample losses are averaged over the batch. The
methods that rewrite the forget answers (CL, IDK, RL) are in unlearning_rewrite.py, RMU in rmu.py.

- FT (SOUL's "FT"): NLL on retain only (batch token mean). Epochs still count forget batches, as for every
  unlearning method, so budgets match: each step draws a forget batch and ignores it (SOUL's loader does too).
- GA (gradient ascent): mean over forget samples of −NLL, NLL = token mean over each answer (SOUL / TOFU code).
- GradDiff (GA + FT): GA on forget + γ · NLL on retain (batch token mean).
- NPO (Zhang et al. 2024, arXiv 2404.05868): −(2/β) log σ(−β (log π_θ − log π_ref)) on forget, log-probs SUMMED
  over answer tokens (open-unlearning; `normalization: token_mean` reproduces SOUL) + γ · retain NLL; the
  reference is the starting model (the adapter-disabled policy under LoRA, else a frozen copy).
- GA+KL: GA on forget + γ · KL(ref ‖ θ) on retain answers (per-sample token mean, padding and question masked).
- KL (SOUL's `KL`, OPTML-Group/SOUL src/unlearn/KL.py): −γ · D_f + D_r, D the per-sample token mean over every
  non-padding position of H(p_θ, p_ref) (SOUL's code; `divergence: kl` takes KL(p_θ ‖ p_ref)), the reference the
  starting model, on forget and retain batches alike.
- SimNPO (Fan et al. 2024, arXiv 2410.07163): w_f · −(2/β) log σ(−β ℓ − γ_m) on forget, ℓ the token-mean
  log-prob (no reference), + w_r · retain NLL; w_f 0.125, w_r 1, β 4.5 as the authors' forget10 setting.
Batches are tokenized examples (question masked, answer labelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import one_of, opt
from safealign.losses.sft import token_log_probs
from safealign.losses.unlearning import (REFERENCE_DIVERGENCES, ga_loss, kl_on_retain, npo_loss, reference_divergence,
                                         sequence_logps, simnpo_loss)
from safealign.methods.base import Method, MethodContext, StepOutput, causal_lm_loss
from safealign.models import Reference


def answer_terms(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(token log-probs (B, T−1), answer mask (B, T−1)) of one forward."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return token_log_probs(logits, batch["labels"])


def ga_forget(model, batch) -> torch.Tensor:
    """GA on a forget batch: the mean over samples of −(token-mean answer NLL)."""
    logps, mask = answer_terms(model, batch)
    return ga_loss(-sequence_logps(logps, mask, "token_mean")).mean()


@dataclass
class FTConfig:
    registry_name = "ft"


class FT(Method):
    Config = FTConfig
    streams = ("forget", "retain")
    data_kind, model_kind = "unlearn", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        next(streams["forget"])  # unused: it keeps the loop's epoch count on the forget set, as for the others
        retain = causal_lm_loss(model, next(streams["retain"]))
        return StepOutput(retain, {"retain_nll": retain.item()})


@dataclass
class GAConfig:
    registry_name = "ga"


class GA(Method):
    Config = GAConfig
    streams = ("forget",)
    data_kind, model_kind = "unlearn", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        forget = ga_forget(model, next(streams["forget"]))
        return StepOutput(forget, {"forget_loss": forget.item()})


@dataclass
class GradDiffConfig:
    registry_name = "graddiff"
    gamma: float = opt(1.0, "weight γ of the retain NLL")


class GradDiff(Method):
    Config = GradDiffConfig
    streams = ("forget", "retain")
    data_kind, model_kind = "unlearn", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        forget = ga_forget(model, next(streams["forget"]))
        retain = causal_lm_loss(model, next(streams["retain"]))
        return StepOutput(forget + self.cfg.gamma * retain, {"forget_loss": forget.item(), "retain_nll": retain.item()})


@dataclass
class NPOConfig:
    registry_name = "npo"
    beta: float = opt(0.1, "β of NPO")
    gamma: float = opt(1.0, "weight γ of the retain NLL (0: NPO alone; the stream is still read)")
    normalization: str = opt("sum", "per-sequence log-probs: sum (open-unlearning) | token_mean (SOUL)")

    def validate(self, where: str) -> None:
        one_of(self.normalization, ("sum", "token_mean"), f"{where}.normalization")


class NPO(Method):
    Config = NPOConfig
    streams = ("forget", "retain")
    data_kind, model_kind = "unlearn", "causal_lm"

    def setup(self, model, streams, ctx: MethodContext) -> None:
        self.reference = Reference(model)

    def step(self, model, streams, step: int) -> StepOutput:
        batch = next(streams["forget"])
        logps, mask = answer_terms(model, batch)
        policy = sequence_logps(logps, mask, self.cfg.normalization)
        _, ref_logps, ref_mask = self.reference.log_probs(model, batch)  # no grad
        reference = sequence_logps(ref_logps, ref_mask, self.cfg.normalization)
        forget = npo_loss(policy, reference, self.cfg.beta).mean()
        retain = causal_lm_loss(model, next(streams["retain"]))
        return StepOutput(forget + self.cfg.gamma * retain, {"forget_loss": forget.item(), "retain_nll": retain.item(),
                                                             "log_ratio": (policy - reference).mean().item()})


@dataclass
class GAKLConfig:
    registry_name = "ga_kl"
    gamma: float = opt(1.0, "weight γ of the KL to the starting model on retain")


class GAKL(Method):
    Config = GAKLConfig
    streams = ("forget", "retain")
    data_kind, model_kind = "unlearn", "causal_lm"

    def setup(self, model, streams, ctx: MethodContext) -> None:
        self.reference = Reference(model)

    def step(self, model, streams, step: int) -> StepOutput:
        forget = ga_forget(model, next(streams["forget"]))
        batch = next(streams["retain"])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ref_logits = self.reference.logits(model, batch)  # no grad
        answer = batch["labels"][:, 1:] != -100  # the next-token distributions that predict answer tokens
        kl = kl_on_retain(logits[:, :-1], ref_logits[:, :-1], answer).mean()
        return StepOutput(forget + self.cfg.gamma * kl, {"forget_loss": forget.item(), "retain_kl": kl.item()})


@dataclass
class KLConfig:
    registry_name = "kl"
    gamma: float = opt(1.0, "weight γ of the forget term −γ·D_f (SOUL's CLI default 0 switches forgetting off)")
    divergence: str = opt("cross_entropy", "per-position D: cross_entropy H(p_θ, p_ref) (SOUL's code) | "
                                           "kl KL(p_θ ‖ p_ref)")

    def validate(self, where: str) -> None:
        one_of(self.divergence, REFERENCE_DIVERGENCES, f"{where}.divergence")


class KL(Method):
    Config = KLConfig
    streams = ("forget", "retain")
    data_kind, model_kind = "unlearn", "causal_lm"

    def setup(self, model, streams, ctx: MethodContext) -> None:
        self.reference = Reference(model)

    def _divergence(self, model, batch) -> torch.Tensor:
        """(B,) per-sample token mean of D over the non-padding positions (SOUL: every position, no shift)."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ref_logits = self.reference.logits(model, batch)  # no grad
        return reference_divergence(logits, ref_logits, batch["attention_mask"], self.cfg.divergence)

    def step(self, model, streams, step: int) -> StepOutput:
        forget = self._divergence(model, next(streams["forget"])).mean()
        retain = self._divergence(model, next(streams["retain"])).mean()
        return StepOutput(-self.cfg.gamma * forget + retain, {"forget_divergence": forget.item(),
                                                               "retain_divergence": retain.item()})


@dataclass
class SimNPOConfig:
    registry_name = "simnpo"
    # the authors' forget10 setting (SimNPO repo TOFU config: β 4.5, npo_coeff 0.125, grad_diff_coeff 1) and
    # open-unlearning's SimNPO.yaml (β 4.5, gamma 0.125, alpha 1)
    beta: float = opt(4.5, "β of SimNPO")
    margin: float = opt(0.0, "γ_m, the reward margin inside the sigmoid (open-unlearning's δ = γ_m / β)")
    forget_weight: float = opt(0.125, "weight of the forget term (the authors' npo_coeff; open-unlearning's gamma)")
    retain_weight: float = opt(1.0, "weight of the retain NLL (the authors' grad_diff_coeff; open-unlearning's alpha)",
                               was="gamma")


class SimNPO(Method):
    Config = SimNPOConfig
    streams = ("forget", "retain")
    data_kind, model_kind = "unlearn", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        logps, mask = answer_terms(model, next(streams["forget"]))
        forget = simnpo_loss(sequence_logps(logps, mask, "token_mean"), self.cfg.beta, self.cfg.margin).mean()
        retain = causal_lm_loss(model, next(streams["retain"]))
        return StepOutput(self.cfg.forget_weight * forget + self.cfg.retain_weight * retain,
                          {"forget_loss": forget.item(), "retain_nll": retain.item()})
