"""Safe-MM-DPO: our composition of MM-DPO's margin-adaptive β (MM-RLHF, arXiv 2502.10391) and Safe RLHF's
Lagrangian (arXiv 2310.12773) over two DPO losses, one on helpful pairs and one on harmless pairs.

    β_i          = β_ori · (1 + w · (1 − exp(−k · δ_i)))   δ_i: reward margin (helpful) / cost margin (harmless)
    loss_helpful = mean_i −log σ(β_i h_i) over helpful pairs;  loss_safety the same over harmless pairs
    loss_kl      = per-token k3 KL of policy vs reference on chosen responses (token mean per pair, batch mean)
    loss_total   = (loss_helpful + λ · loss_safety) / (1 + λ) + kl_coeff · loss_kl
    λ            ← clip(λ + lambda_lr · (J_c − d), 0, lambda_max) every lambda_update_interval steps, J_c the
                   cost model's mean cost of the policy's greedy answers to held-out prompts

Margins are computed once in `setup`, before the first step, with the reward and cost models, and attached to
the pairs (recomputed identically on resume). λ is checkpointed. Streams: 'train' (helpful), 'harmless'.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.data.files import read_prompts
from safealign.data.prompts import render_prompt
from safealign.generation import generate
from safealign.losses.preference import dpo_loss, lagrange_update, margin_adaptive_beta, per_token_kl, safe_mm_dpo_total
from safealign.methods.base import Method, MethodContext, StepOutput
from safealign.models import Reference, response_log_probs, unwrap
from safealign.score_model import Scorer


@dataclass
class SafeMMDPOConfig:
    registry_name = "safe_mm_dpo"
    reward_model: str = opt("", "reward model directory (or 'stage:NAME'): margins of the helpful pairs")
    cost_model: str = opt("", "cost model directory (or 'stage:NAME'): margins of the harmless pairs and J_c")
    lambda_init: float = opt(1.0, "initial Lagrange multiplier λ")
    w: float = opt(0.5, "MM-DPO: how far β may rise above β_ori for clear pairs")
    k: float = opt(0.5, "MM-DPO: how fast β saturates with the margin")
    beta_ori: float = opt(0.1, "MM-DPO: β at zero margin")
    kl_coeff: float = opt(0.1, "weight of the per-token KL to the reference")
    lambda_lr: float = opt(0.01, "dual ascent step size for λ")
    cost_threshold: float = opt(0.0, "d: the cost the policy's answers may have on average (cost 0 = safe/unsafe boundary)")
    lambda_max: float = opt(10.0, "upper clip of λ")
    lambda_update_interval: int = opt(10, "optimizer steps between λ updates")
    lambda_eval_prompts: int = opt(16, "held-out prompts the policy answers for each J_c")
    eval_prompts: str = opt("", "file whose distinct `prompt`s are the held-out prompts (e.g. stage:pairs/val/harmless_pairs.jsonl)")
    max_new_tokens: int = opt(48, "answer length for J_c")


class SafeMMDPO(Method):
    Config = SafeMMDPOConfig
    streams = ("train", "harmless")
    data_kind, model_kind = "pairs", "causal_lm"

    def __init__(self, cfg: SafeMMDPOConfig, total_steps: int):
        self.cfg = cfg
        self.lam = cfg.lambda_init
        self.j_c = float("nan")
        self.updated_at = -1

    def setup(self, model, streams, ctx: MethodContext) -> None:
        self.reference = Reference(model)
        self.tokenizer = ctx.tokenizer  # the policy's, for its J_c answers; each score model has its own
        self.prompt = ctx.prompt  # the policy answers in the format it trains on (the stage's data.prompt)
        device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
        self.cost_scorer = Scorer(self.cfg.cost_model, device, dtype)
        attach_margins(streams["train"].features, Scorer(self.cfg.reward_model, device, dtype), higher="chosen")
        attach_margins(streams["harmless"].features, self.cost_scorer, higher="rejected")
        self.eval_prompts = read_prompts(self.cfg.eval_prompts, num=self.cfg.lambda_eval_prompts)

    def _dpo(self, model, batch) -> dict:
        policy, policy_tok, mask = response_log_probs(model, batch)
        ref, ref_tok, _ = self.reference.log_probs(model, batch)
        half = policy.shape[0] // 2
        beta = margin_adaptive_beta(batch["margin"], self.cfg.beta_ori, self.cfg.w, self.cfg.k)
        losses, chosen_rewards, _ = dpo_loss(policy[:half], policy[half:], ref[:half], ref[half:], beta)
        kl = per_token_kl(policy_tok[:half], ref_tok[:half], mask[:half])  # on chosen responses
        return {"loss": losses.mean(), "kl": kl.mean(), "reward": chosen_rewards.mean().item(),
                "delta": batch["margin"].mean().item(), "beta": beta.mean().item()}

    def step(self, model, streams, step: int) -> StepOutput:
        events = []
        if step % self.cfg.lambda_update_interval == 0 and step != self.updated_at:
            self.j_c = self.expected_cost(model)
            old, self.lam = self.lam, lagrange_update(self.lam, self.j_c, self.cfg.cost_threshold, self.cfg.lambda_lr,
                                                      self.cfg.lambda_max)
            self.updated_at = step
            events.append(f"safe_mm_dpo: step {step}: J_c {self.j_c:.4f} (d {self.cfg.cost_threshold}), λ {old:.4f} -> {self.lam:.4f}")
        helpful = self._dpo(model, next(streams["train"]))
        safety = self._dpo(model, next(streams["harmless"]))
        loss_kl = (helpful["kl"] + safety["kl"]) / 2
        loss = safe_mm_dpo_total(helpful["loss"], safety["loss"], loss_kl, self.lam, self.cfg.kl_coeff)
        return StepOutput(loss, {
            "loss_total": loss.item(), "loss_helpful": helpful["loss"].item(), "loss_safety": safety["loss"].item(),
            "loss_kl": loss_kl.item(),
            "reward_helpful_mean": helpful["reward"], "reward_safety_mean": safety["reward"],
            "delta_helpful_mean": helpful["delta"], "delta_safety_mean": safety["delta"],
            "beta_helpful_mean": helpful["beta"], "beta_safety_mean": safety["beta"],
            "kl_divergence": loss_kl.item(), "lambda": self.lam, "J_c": self.j_c}, events)

    @torch.no_grad()
    def expected_cost(self, model) -> float:
        policy = unwrap(model)  # generate on the inner model under DDP
        answers = generate(policy, self.tokenizer, [render_prompt(self.prompt, self.tokenizer, p) for p in self.eval_prompts],
                           self.cfg.max_new_tokens, batch_size=len(self.eval_prompts), desc="J_c answers")
        policy.train()
        return float(self.cost_scorer(self.eval_prompts, answers).mean())

    def state_dict(self) -> dict:
        return {"lambda": self.lam, "J_c": self.j_c, "updated_at": self.updated_at}

    def load_state_dict(self, state: dict) -> None:
        self.lam, self.j_c, self.updated_at = state["lambda"], state["J_c"], state["updated_at"]


def attach_margins(features: list[dict], scorer, higher: str) -> None:
    """δ per pair, stored as feature['margin']: score(chosen) − score(rejected) for a reward model
    (higher='chosen'); score(rejected) − score(chosen) for a cost model (higher='rejected', chosen = safer).
    `scorer` is a score_model.Scorer: it tokenizes the pair's texts with its own tokenizer."""
    prompts = [f["text"]["prompt"] for f in features]
    chosen = scorer(prompts, [f["text"]["chosen"] for f in features])
    rejected = scorer(prompts, [f["text"]["rejected"] for f in features])
    margins = chosen - rejected if higher == "chosen" else rejected - chosen
    for f, m in zip(features, margins.tolist()):
        f["margin"] = m
