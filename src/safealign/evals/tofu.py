"""TOFU's evaluation (Maini et al. 2024; locuslab/tofu `evaluate_util.py`, open-unlearning), metric definitions in
evals/tofu_metrics.py. Per set (forget, retain, real authors, world facts; the `*_perturbed` subsets):
- Prob: exp(−mean token NLL of the answer) per row, averaged (forget, retain); real authors and world facts use
  the normalised Prob P(answer) / (P(answer) + Σ P(perturbed)) of length-normalised probabilities;
- ROUGE-L recall of the greedy answer against the answer;
- truth ratio from the paraphrased and perturbed answers' length-normalised probabilities;
- forget quality: the KS-test p-value between this model's forget truth ratios and those of `retain_model`
  (trained on the retain set only), computed here with the same code;
- model utility: the harmonic mean of the nine retain / real / world values.
Each set is its first `num` rows (300, TOFU's ds_size: forget10 and retain_perturbed have 400).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.data.files import load_rows
from safealign.data.formats import collate, tokenize_example
from safealign.data.prompts import PromptFormat, prompt_record, prompt_setting, render_prompt
from safealign.data.tofu import perturbed_rows
from safealign.errors import ConfigError
from safealign.evals import tofu_metrics as tm
from safealign.generation import generate
from safealign.losses.sft import sequence_nll
from safealign.models import load_causal_lm

SETS = ("forget", "retain", "real", "world")


@dataclass
class TofuConfig:
    registry_name = "tofu"
    data: str = opt("mini:tofu", "TOFU: hub id (locuslab/TOFU), a directory of {subset}.jsonl, or 'mini:tofu'")
    forget_split: str = opt("forget10_perturbed", "the forget set with paraphrased and perturbed answers")
    retain_split: str = opt("retain_perturbed", "retain rows with paraphrased and perturbed answers")
    real_split: str = opt("real_authors_perturbed", "real authors")
    world_split: str = opt("world_facts_perturbed", "world facts")
    prompt: PromptFormat = prompt_setting("alpaca", "prompt format of the questions (data/prompts.py), as the models "
                                                    "were fine-tuned; TOFU's Llama-2-chat: {kind: tags, start: "
                                                    "'[INST] ', end: ' [/INST]'}")
    retain_model: str = opt("", "the model trained on the retain set only (e.g. 'stage:retain'), for forget quality")
    max_new_tokens: int = opt(48, "greedy answer length for ROUGE-L")
    batch_size: int = opt(32, "rows per forward / generation batch")
    max_length: int = opt(256, "truncate question+answer to this many tokens")
    # TOFU's eval_everything.yaml ds_size 300, applied in evaluate_util.py to every set (first rows, in file order),
    # the retain model's forget truth ratios included; forget quality is a KS p-value, so it depends on n
    num: int = opt(300, "first N rows of each set, as TOFU's ds_size; 0 = all")

    def validate(self, where: str) -> None:
        if self.num < 0:
            raise ConfigError(f"{where}.num: must be >= 0")


@torch.no_grad()
def answer_nlls(model, tokenizer, questions: list[str], answers: list[str], cfg: TofuConfig) -> list[float]:
    """Mean token NLL of each answer after its question (rendered as in training, question masked)."""
    model.eval()
    device = next(model.parameters()).device
    features = [tokenize_example(tokenizer, {"instruction": q, "input": "", "output": a}, cfg.max_length, cfg.prompt)
                for q, a in zip(questions, answers)]
    out = []
    for start in range(0, len(features), cfg.batch_size):
        batch = collate(features[start:start + cfg.batch_size], tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        nll_sum, n_tokens = sequence_nll(logits, batch["labels"].to(device))
        out += (nll_sum / n_tokens.clamp(min=1)).tolist()
    return out


def _perturbed_nlls(model, tokenizer, rows: list[dict], cfg: TofuConfig) -> list[list[float]]:
    flat = [(r["question"], p) for r in rows for p in r["perturbed_answer"]]
    nlls = answer_nlls(model, tokenizer, [q for q, _ in flat], [p for _, p in flat], cfg)
    out, k = [], 0
    for r in rows:
        out.append(nlls[k:k + len(r["perturbed_answer"])])
        k += len(r["perturbed_answer"])
    return out


def forget_truth_ratios(model, tokenizer, rows: list[dict], cfg: TofuConfig) -> list[float]:
    paraphrased = answer_nlls(model, tokenizer, [r["question"] for r in rows], [r["paraphrased_answer"] for r in rows], cfg)
    return [tm.truth_ratio(p, q) for p, q in zip(paraphrased, _perturbed_nlls(model, tokenizer, rows, cfg))]


def _set_metrics(model, tokenizer, rows: list[dict], name: str, cfg: TofuConfig) -> tuple[dict, list[dict]]:
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    nll = answer_nlls(model, tokenizer, questions, answers, cfg)
    perturbed = _perturbed_nlls(model, tokenizer, rows, cfg)
    # TOFU's truth ratio compares the perturbed answers with the paraphrase on forget / retain, with the answer
    # itself on real authors and world facts (its `base_answer_key`)
    base = nll if name in ("real", "world") else answer_nlls(model, tokenizer, questions,
                                                             [r["paraphrased_answer"] for r in rows], cfg)
    ratios = [tm.truth_ratio(p, q) for p, q in zip(base, perturbed)]
    greedy = generate(model, tokenizer, [render_prompt(cfg.prompt, tokenizer, q) for q in questions],
                      cfg.max_new_tokens, cfg.batch_size, desc=f"tofu {name}")
    rouge = [tm.rouge_l_recall(g, a) for g, a in zip(greedy, answers)]
    if name in ("real", "world"):
        prob = [tm.normalized_prob(n, q) for n, q in zip(nll, perturbed)]
    else:
        prob = [tm.answer_prob(n) for n in nll]
    metrics = {f"{name}_prob": sum(prob) / len(prob), f"{name}_rouge": sum(rouge) / len(rouge),
               f"{name}_truth_ratio": tm.truth_ratio_stat(ratios, "forget" if name == "forget" else "utility")}
    records = [{"set": name, "question": q, "answer": a, "generated": g, "rouge_l_recall": round(rl, 4),
                "prob": round(p, 6), "truth_ratio": r}
               for q, a, g, rl, p, r in zip(questions, answers, greedy, rouge, prob, ratios)]
    return metrics, records


def run(cfg: TofuConfig, model, tokenizer) -> tuple[dict, list[dict]]:
    splits = {"forget": cfg.forget_split, "retain": cfg.retain_split, "real": cfg.real_split, "world": cfg.world_split}
    metrics, records, rows = {}, [], {}
    for name, split in splits.items():
        checked = perturbed_rows(load_rows(cfg.data, split))
        rows[name] = checked[: cfg.num or len(checked)]
        m, r = _set_metrics(model, tokenizer, rows[name], name, cfg)
        metrics.update(m)
        records += r
    first = rows["forget"][0]["question"]
    metrics["model_utility"] = tm.model_utility([metrics[f"{s}_{k}"] for s in ("retain", "real", "world")
                                                 for k in ("prob", "rouge", "truth_ratio")])
    if cfg.retain_model:
        reference = load_causal_lm(cfg.retain_model).to(next(model.parameters()).device)
        ours = [r["truth_ratio"] for r in records if r["set"] == "forget"]
        metrics["forget_quality"] = tm.ks_forget_quality(ours, forget_truth_ratios(reference, tokenizer, rows["forget"], cfg))
    metrics = {k: round(v, 4) if k != "forget_quality" else v for k, v in metrics.items()}
    return {**metrics, "prompt": prompt_record(cfg.prompt.kind, render_prompt(cfg.prompt, tokenizer, first))}, records
