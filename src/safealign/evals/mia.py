"""Membership inference with Min-K% Prob (Shi et al. 2023, arXiv 2310.16789), forget set vs holdout set, as
open-unlearning's `mia_min_k` metric (src/evals/metrics/mia/min_k.py, configs/eval/tofu_metrics/mia_min_k.yaml):

- each row is tokenized like training (its prompt masked, answer + EOS labelled; `tokenize_example`), and its
  token log-probs are those of the answer tokens without the final EOS (open-unlearning's `tokenwise_logprobs`
  drops the last labelled token: "ignore eos prediction");
- score = Min-K%: the mean of the lowest max(1, int(k·T)) of those T log-probs (`tofu_metrics.min_k_percent`;
  open-unlearning returns its negative);
- AUC = P(score_forget > score_holdout) + ½ P(tie) (`tofu_metrics.auc`), forget rows the members: 1 when every forget
  answer is likelier than every holdout answer, 0.5 when the model cannot tell them apart (what a model never trained on
  the forget set gives). This is open-unlearning's AUC (it labels forget 0 with the negated score: the same number).
k defaults to open-unlearning's 0.4 (its TOFU and MUSE configs; the Min-K% paper's headline k is 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from safealign.config import opt
from safealign.data.formats import IGNORE_INDEX, tokenize_example
from safealign.data.prompts import PromptFormat, prompt_record, prompt_setting, render_prompt
from safealign.data.sources import SourceConfig, load_examples
from safealign.errors import ConfigError, DataError
from safealign.evals import tofu_metrics as tm
from safealign.evals.perplexity import labelled_token_logps


@dataclass
class MiaConfig:
    registry_name = "mia"
    forget: SourceConfig = opt(SourceConfig(source="tofu", path="mini:tofu", split="forget10"),
                               "the members: the forget set the model was trained on (then unlearned)")
    holdout: SourceConfig = opt(SourceConfig(source="tofu", path="mini:tofu", split="holdout10"),
                                "the non-members: rows of the same distribution never trained on (TOFU holdout10)")
    prompt: PromptFormat = prompt_setting("alpaca", "prompt format of the rows (data/prompts.py), as the model was "
                                                    "trained on them")
    k: float = opt(0.4, "Min-K% fraction of the lowest token log-probs (0.4 as open-unlearning's configs)")
    num: int = opt(0, "first N rows of each set; 0 = all", was="limit")
    batch_size: int = opt(32, "rows per forward")
    max_length: int = opt(512, "truncate prompt+answer to this many tokens (open-unlearning's TOFU_MIA: 512)")

    def validate(self, where: str) -> None:
        if not 0 < self.k <= 1:
            raise ConfigError(f"{where}.k: a fraction in (0, 1] (0.2 for Min-20%), got {self.k}")
        if self.num < 0:
            raise ConfigError(f"{where}.num: must be >= 0")


def answer_features(tokenizer, examples: list[dict], max_length: int, prompt: PromptFormat) -> list[dict]:
    """SFT features with the final EOS unlabelled (where truncation left it), so only answer tokens are scored."""
    out = []
    for ex in examples:
        f = tokenize_example(tokenizer, ex, max_length, prompt)
        if f["labels"][-1] == tokenizer.eos_token_id:
            f["labels"] = f["labels"][:-1] + [IGNORE_INDEX]
        out.append(f)
    return out


def min_k_scores(model, tokenizer, source: SourceConfig, cfg: MiaConfig, name: str) -> tuple[list[dict], list[float]]:
    examples = load_examples(source)
    examples = examples[: cfg.num or len(examples)]
    logps = labelled_token_logps(model, answer_features(tokenizer, examples, cfg.max_length, cfg.prompt), tokenizer.pad_token_id,
                                 cfg.batch_size, desc=f"mia {name}")
    for i, lp in enumerate(logps):
        if not len(lp):
            raise DataError(f"{source.path} [{source.split}] example {source.start + i}: the prompt fills "
                            f"max_length={cfg.max_length}, no answer token is left to score")
    return examples, [tm.min_k_percent(lp.tolist(), cfg.k) for lp in logps]


def run(cfg: MiaConfig, model, tokenizer) -> tuple[dict, list[dict]]:
    forget, forget_scores = min_k_scores(model, tokenizer, cfg.forget, cfg, "forget")
    holdout, holdout_scores = min_k_scores(model, tokenizer, cfg.holdout, cfg, "holdout")
    metrics = {"mia_min_k_auc": round(tm.auc(forget_scores, holdout_scores), 4),
               "mia_min_k_forget_mean": round(sum(forget_scores) / len(forget_scores), 4),
               "mia_min_k_holdout_mean": round(sum(holdout_scores) / len(holdout_scores), 4),
               "n_mia_forget": len(forget), "n_mia_holdout": len(holdout),
               "prompt": prompt_record(cfg.prompt.kind, render_prompt(cfg.prompt, tokenizer, forget[0]["instruction"],
                                                                      forget[0]["input"]))}
    records = [{"set": name, "instruction": ex["instruction"], "output": ex["output"], "min_k": round(s, 4)}
               for name, rows, scores in (("forget", forget, forget_scores), ("holdout", holdout, holdout_scores))
               for ex, s in zip(rows, scores)]
    return metrics, records
