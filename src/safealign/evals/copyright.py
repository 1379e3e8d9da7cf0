"""Copyright / verbatim memorisation: how much of a copyrighted text (Harry Potter for WHP) the model reproduces when
given its beginning, as SOUL's `eval_copyright` (OPTML-Group/SOUL src/metrics/copyright.py) and MUSE's `verbmem`.

Rows, one of (a row is checked in this order):
- {text}: the first `prefix_tokens` tokens are the prefix and the next `continuation_tokens` the true continuation
  (token cuts, decoded back to text);
- {prefix, continuation}, or {prompt, response} (SOUL's hp_*_qa.jsonl): given; the true continuation is cut to its
  first `continuation_tokens` tokens (MUSE cuts its ground truth the same way; SOUL compares with the whole response).
The prefix is fed as raw text (the tokenizer's BOS, no prompt template), the model continues it greedily for
`continuation_tokens` new tokens (generation.py), and each continuation is scored against the true one:
- ROUGE-L recall, LCS / |true| on Porter-stemmed tokens (`tofu_metrics.rouge_l_recall`, rouge_score's `rougeL`
  `.recall` with `use_stemmer=True`, exactly SOUL's `scorers.score(ground_truth, text)["rougeL"].recall`);
- BLEU-4 in [0, 1] (`similarity.sentence_bleu`: BLEU+1 smoothing, \\w+ / punctuation tokens). SOUL calls
  `sacrebleu.corpus_bleu([text], [[truth]]).score`: 0–100, 13a tokens, "exp" smoothing; the two agree on exact (1 / 100)
  and disjoint (0) continuations and differ in between.
Metrics: their means over rows. SOUL also drops the first generated token (`outputs[:, length + 1:]`); we do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from safealign.config import opt
from safealign.data.files import load_rows
from safealign.data.prompts import prompt_record
from safealign.errors import ConfigError, DataError
from safealign.evals import tofu_metrics as tm
from safealign.evals.similarity import sentence_bleu
from safealign.generation import generate

GIVEN = (("prefix", "continuation"), ("prompt", "response"))


@dataclass
class CopyrightConfig:
    registry_name = "copyright"
    data: str = opt("mini:whp", "rows {text}, {prefix, continuation} or {prompt, response}: a local file or directory, "
                                "hub id, or mini:whp")
    split: str = opt("prefixes", "split of `data` (mini:whp: prefixes, rows {prompt, response} as SOUL's; text, rows {text})")
    prefix_tokens: int = opt(32, "{text} rows: tokens of the prefix the model continues")
    continuation_tokens: int = opt(128, "tokens of the true continuation, and new tokens generated (MUSE verbmem: 128)")
    num: int = opt(0, "first N rows; 0 = all", was="limit")
    batch_size: int = opt(32, "generation batch size")

    def validate(self, where: str) -> None:
        if self.prefix_tokens < 1 or self.continuation_tokens < 1:
            raise ConfigError(f"{where}: prefix_tokens and continuation_tokens must be >= 1")
        if self.num < 0:
            raise ConfigError(f"{where}.num: must be >= 0")


def _string(rows, i: int, field: str) -> str:
    value = rows.rows[i].get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{rows.where(i)}: field '{field}' must be a non-empty string, got {value!r}")
    return value


def passages(cfg: CopyrightConfig, tokenizer) -> list[dict]:
    """[{prefix, continuation}] of `data[split]`, the first `num`, continuations cut to continuation_tokens."""
    rows = load_rows(cfg.data, cfg.split)
    out = []
    for i, row in enumerate(rows.rows[: cfg.num or len(rows)]):
        given = next(((p, c) for p, c in GIVEN if p in row), None)
        if "text" in row:
            ids = tokenizer(_string(rows, i, "text"), add_special_tokens=False)["input_ids"]
            if len(ids) <= cfg.prefix_tokens:
                raise DataError(f"{rows.where(i)}: field 'text' has {len(ids)} tokens, needs more than "
                                f"prefix_tokens={cfg.prefix_tokens}")
            prefix, continuation = tokenizer.decode(ids[: cfg.prefix_tokens]), ids[cfg.prefix_tokens:]
        elif given is not None:
            prefix = _string(rows, i, given[0])
            continuation = tokenizer(_string(rows, i, given[1]), add_special_tokens=False)["input_ids"]
        else:
            raise DataError(f"{rows.where(i)}: missing field 'text' (rows are {{text}}, {{prefix, continuation}} "
                            f"or {{prompt, response}})")
        out.append({"prefix": prefix, "continuation": tokenizer.decode(continuation[: cfg.continuation_tokens])})
    if not out:
        raise DataError(f"{rows.origin}: empty split")
    return out


def run(cfg: CopyrightConfig, model, tokenizer) -> tuple[dict, list[dict]]:
    rows = passages(cfg, tokenizer)
    generated = generate(model, tokenizer, [r["prefix"] for r in rows], cfg.continuation_tokens, cfg.batch_size,
                         desc="copyright")
    records = [{**r, "generated": g, "bleu": sentence_bleu(g, r["continuation"]),
                "rouge_l": tm.rouge_l_recall(g, r["continuation"])} for r, g in zip(rows, generated)]
    metrics = {"copyright_bleu": round(sum(r["bleu"] for r in records) / len(records), 4),
               "copyright_rouge_l": round(sum(r["rouge_l"] for r in records) / len(records), 4),
               "n_copyright": len(records), "prompt": prompt_record("raw", rows[0]["prefix"])}
    return metrics, [{**r, "bleu": round(r["bleu"], 4), "rouge_l": round(r["rouge_l"], 4)} for r in records]
