"""Log-likelihoods of labelled tokens under a causal LM, batched, and the perplexities built on them:
- `response_perplexity`: exp of the token-mean NLL over every response token of a set (prompt tokens masked out),
  the validation metric of preference tuning (on the chosen responses);
- the `perplexity` evaluation: the same corpus-level token mean on raw text rows (Wikitext).
`labelled_token_logps` is the one batched pass that the perplexities, the Min-K% membership inference (evals/mia.py)
and WMDP's multi-token answer scoring (evals/wmdp.py) share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from safealign.config import opt
from safealign.data.files import load_rows
from safealign.data.formats import IGNORE_INDEX, collate
from safealign.data.prompts import prompt_record
from safealign.data.text import texts as non_blank_texts
from safealign.errors import ConfigError, DataError
from safealign.io import progress_kwargs
from safealign.losses.sft import token_log_probs


@torch.no_grad()
def labelled_token_logps(model, features: list[dict], pad_id: int, batch_size: int,
                         desc: str | None = None) -> list[torch.Tensor]:
    """log p(y_t | y_<t) of every labelled token of each feature (tokenized {input_ids, labels}, labels −100 where
    not scored), in feature order: one float32 CPU tensor per feature, of its labelled-token count. Features are
    batched longest first (right-padded, so little padding), one forward per batch; a progress bar when `desc`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    out: list[torch.Tensor] = [torch.empty(0)] * len(features)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=desc is None, **progress_kwargs()):
        idx = order[start:start + batch_size]
        batch = collate([features[i] for i in idx], pad_id)
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        logps, mask = token_log_probs(logits, batch["labels"].to(device))  # (B, T-1) each
        logps, mask = logps.cpu(), mask.cpu()
        for row, i in enumerate(idx):
            out[i] = logps[row][mask[row]]
    model.train(was_training)
    return out


def response_perplexity(model, features: list[dict], pad_id: int, batch_size: int = 32) -> float:
    """exp(Σ NLL / Σ tokens) over all labelled tokens of `features` (tokenized examples): a corpus-level token
    mean, so long responses weigh by their length (not a mean of per-sequence perplexities)."""
    logps = labelled_token_logps(model, features, pad_id, batch_size)
    return math.exp(-sum(float(lp.sum()) for lp in logps) / max(sum(len(lp) for lp in logps), 1))


# --- the `perplexity` evaluation: raw text ---------------------------------------------------------------------

@dataclass
class TextPerplexityConfig:
    registry_name = "perplexity"
    name: str = opt("wikitext", "metric prefix: <name>_perplexity")
    data: str = opt("mini:wikitext", "text rows: hub id (Salesforce/wikitext), a local file or directory, or mini:wikitext")
    split: str = opt("test", "split of `data` (on the hub CONFIG:SPLIT, e.g. wikitext-2-raw-v1:test)")
    text_field: str = opt("text", "the field holding each row's text")
    max_length: int = opt(1024, "tokens per row, the prefix token included; longer rows are truncated (counted)")
    num: int = opt(0, "first N non-empty rows; 0 = all", was="limit")
    batch_size: int = opt(16, "rows per forward")

    def validate(self, where: str) -> None:
        if self.max_length < 2:
            raise ConfigError(f"{where}.max_length: must be >= 2 (the prefix token and one predicted token)")
        if self.num < 0:
            raise ConfigError(f"{where}.num: must be >= 0")


def text_rows(cfg: TextPerplexityConfig) -> list[str]:
    """The non-empty texts of `data[split]` (Wikitext's blank lines dropped), the first `num` of them."""
    rows = load_rows(cfg.data, cfg.split)
    texts = [text for _, text in non_blank_texts(rows, cfg.text_field)]
    if not texts:
        raise DataError(f"{rows.origin}: no non-empty '{cfg.text_field}' rows (empty split)")
    return texts[: cfg.num or len(texts)]


def run(cfg: TextPerplexityConfig, model, tokenizer) -> tuple[dict, list[dict]]:
    """exp(Σ_rows Σ_t −log p(x_t | x_<t) / Σ_rows T_rows): every row is [prefix] + its tokens, cut to max_length, and
    every token after the prefix is predicted. The prefix is the BOS token, or EOS where the tokenizer has no BOS
    (lm-eval's `prefix_token_id`), so the text's first token is scored too."""
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    texts = text_rows(cfg)
    features, truncated = [], 0
    for text in texts:
        ids = [prefix] + tokenizer(text, add_special_tokens=False)["input_ids"]
        truncated += len(ids) > cfg.max_length
        ids = ids[: cfg.max_length]
        features.append({"input_ids": ids, "labels": [IGNORE_INDEX] + ids[1:]})
    logps = labelled_token_logps(model, features, tokenizer.pad_token_id, cfg.batch_size, desc=f"perplexity {cfg.name}")
    nll, tokens = -sum(float(lp.sum()) for lp in logps), sum(len(lp) for lp in logps)
    metrics = {f"{cfg.name}_perplexity": round(math.exp(nll / tokens), 4), f"{cfg.name}_tokens": tokens,
               f"{cfg.name}_rows": len(texts), f"{cfg.name}_truncated_rows": truncated,
               "prompt": prompt_record("raw", texts[0])}  # the text itself after the prefix token
    records = [{"row": i, "text": t[:200], "tokens": len(lp), "nll": round(-float(lp.sum()), 4),
                "perplexity": round(math.exp(-float(lp.mean())), 4)} for i, (t, lp) in enumerate(zip(texts, logps))]
    return metrics, records
