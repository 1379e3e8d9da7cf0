"""Unlearning by fine-tuning on rewritten forget answers: CL and IDK (the forget questions answered with a refusal)
and RL (answered with a random retain answer). The answers are rewritten BEFORE tokenization: a method's
`rewrite_forget(forget, retain, cfg, seed) -> forget'` is called by the unlearning streams (data/training.py)
on the examples as read; the pairing is drawn once from random.Random(seed), so the same seed gives the same
replacement for every row, whatever the order the forget set is then visited in. Losses are HF's batch token-mean
NLL of the (new) answers, as in SOUL and TOFU.

- CL (SOUL's `CL`, OPTML-Group/SOUL src/unlearn/CL.py): NLL of a refusal answer on forget, nothing on retain.
- IDK (TOFU's `idk`, locuslab/tofu dataloader.py): NLL of a refusal answer on forget + γ · NLL on retain, each a
  batch token mean: SOUL's `CL+FT` (its TOFU "PO" run: γ = 1). TOFU's idk runs ONE forward over the concatenated
  forget and retain batches, i.e. the pooled token mean (n_f·NLL_f + n_r·NLL_r) / (n_f + n_r) over both sets'
  answer tokens; with γ = 1 ours is twice that when n_f = n_r (a loss scale, which Adam all but ignores) and
  weighs the two sets equally instead of by their token counts.
- RL (SOUL's `RL`, src/unlearn/RL.py): NLL of a random retain answer on forget, nothing on retain.

Deviations from the authors' code, all in how the new answer reaches the tokens: SOUL splices token ids (the refusal
or the retain labels are written over the forget row's ids from the question length on, keeping the forget row's
attention mask and dropping all but the first token of the "### Answer:" header; RL copies the retain row's labels
at the SAME absolute positions, so a retain question of a different length shifts or cuts the retain answer).
Here the rewritten example is templated and tokenized like any other. SOUL's RL and TOFU's idk draw a new
replacement each time a row is visited; here it is fixed per seed (SOUL's CL draws once, as here). RL never
pairs a row with a retain answer equal to its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from safealign.config import opt
from safealign.errors import ConfigError, DataError
from safealign.methods.base import Method, StepOutput, causal_lm_loss

# Refusals in the spirit of TOFU's data/idontknow.jsonl (which SOUL's polite_refusal_responses_tofu.csv copies),
# written for safealign rather than copied: to reproduce TOFU or SOUL exactly, pass their strings in `refusals`.
REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I don't have that information.",
    "I can't answer that question.",
    "That is not something I know about.",
    "I have no information on that.",
    "I'm unable to say.",
    "I don't know the answer to that.",
    "That is outside what I know.",
    "I can't recall anything about that.",
    "I have nothing to say on that topic.",
    "I'm not familiar with that.",
    "I don't have an answer for that.",
    "Sorry, I don't know that one.",
    "I couldn't tell you.",
    "I have no knowledge of that.",
    "That is unknown to me.",
    "I'm afraid I don't know.",
    "I'm not able to answer that.",
    "I really can't say.",
)


def check_questions(forget: list[dict], method: str) -> None:
    """The rewrites replace answers: a raw-text forget set (data/text.py) has none."""
    if any(e["meta"].get("raw_text") for e in forget):
        raise DataError(f"{method}: the forget set is raw text; {method} answers its QUESTIONS anew, so it needs "
                        f"question/answer rows (e.g. TOFU)")


def with_output(example: dict, output: str, method: str) -> dict:
    """A copy of `example` answered with `output`; meta keeps the original answer."""
    return {**example, "output": output, "meta": {**example["meta"], "rewritten_by": method,
                                                  "original_output": example["output"]}}


def refusal_rewrite(forget: list[dict], refusals: list[str], seed: int, method: str) -> list[dict]:
    """Each forget question answered with a refusal drawn uniformly (with replacement) from `refusals`."""
    check_questions(forget, method)
    rng = random.Random(seed)
    return [with_output(e, rng.choice(refusals), method) for e in forget]


def check_refusals(refusals: list[str], where: str) -> None:
    if not refusals or not all(isinstance(r, str) and r.strip() for r in refusals):
        raise ConfigError(f"{where}.refusals: needs at least one non-empty refusal string")


@dataclass
class CLConfig:
    registry_name = "cl"
    refusals: list[str] = opt(list(REFUSALS), "refusal answers, one drawn per forget row (seeded); default: "
                                              "20 of our own (TOFU's idontknow.jsonl can be passed here)")

    def validate(self, where: str) -> None:
        check_refusals(self.refusals, where)


class CL(Method):
    Config = CLConfig
    streams = ("forget",)
    data_kind, model_kind = "unlearn", "causal_lm"

    @staticmethod
    def rewrite_forget(forget: list[dict], retain: list[dict], cfg: CLConfig, seed: int) -> list[dict]:
        return refusal_rewrite(forget, cfg.refusals, seed, "cl")

    def step(self, model, streams, step: int) -> StepOutput:
        forget = causal_lm_loss(model, next(streams["forget"]))
        return StepOutput(forget, {"refusal_nll": forget.item()})


@dataclass
class IDKConfig:
    registry_name = "idk"
    gamma: float = opt(1.0, "weight γ of the retain NLL (SOUL's CL+FT gamma, 1 in its TOFU run; TOFU's idk "
                            "pools the two sets' answer tokens in one mean instead)")
    refusals: list[str] = opt(list(REFUSALS), "refusal answers, one drawn per forget row (seeded); default: "
                                              "20 of our own (TOFU's idk draws from its 100-line idontknow.jsonl)")

    def validate(self, where: str) -> None:
        check_refusals(self.refusals, where)


class IDK(Method):
    Config = IDKConfig
    streams = ("forget", "retain")
    data_kind, model_kind = "unlearn", "causal_lm"

    @staticmethod
    def rewrite_forget(forget: list[dict], retain: list[dict], cfg: IDKConfig, seed: int) -> list[dict]:
        return refusal_rewrite(forget, cfg.refusals, seed, "idk")

    def step(self, model, streams, step: int) -> StepOutput:
        forget = causal_lm_loss(model, next(streams["forget"]))
        retain = causal_lm_loss(model, next(streams["retain"]))
        return StepOutput(forget + self.cfg.gamma * retain, {"refusal_nll": forget.item(), "retain_nll": retain.item()})


def random_retain_answers(forget: list[dict], retain: list[dict], seed: int) -> list[dict]:
    """Each forget question answered with the answer of a retain row drawn uniformly among those whose answer
    differs from its own (with replacement across forget rows)."""
    check_questions(forget, "rl")
    rng = random.Random(seed)
    answers = [r["output"] for r in retain]
    out = []
    for i, e in enumerate(forget):
        others = [a for a in answers if a != e["output"]]
        if not others:
            raise DataError(f"rl: forget row {i}: every retain answer equals its answer; nothing to replace it with")
        out.append(with_output(e, rng.choice(others), "rl"))
    return out


@dataclass
class RLConfig:
    registry_name = "rl"


class RL(Method):
    Config = RLConfig
    streams = ("forget", "retain")  # the retain set supplies the answers; its stream is not drawn
    data_kind, model_kind = "unlearn", "causal_lm"

    @staticmethod
    def rewrite_forget(forget: list[dict], retain: list[dict], cfg: RLConfig, seed: int) -> list[dict]:
        return random_retain_answers(forget, retain, seed)

    def step(self, model, streams, step: int) -> StepOutput:
        forget = causal_lm_loss(model, next(streams["forget"]))
        return StepOutput(forget, {"relabelled_nll": forget.item()})
