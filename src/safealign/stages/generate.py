"""The generate stage, distillation data (`safealign generate`, or a `kind: generate` recipe stage): a teacher
samples responses to the prompts of a file, the reward and cost models score each, and the responses that pass
both thresholds are written as prompt/response JSONL for a student's SFT (dSFT). `keep: refusals | compliant`
filters by the refusal judge instead (or as well): a model's own refusals as alignment data, its compliant answers
as an attack's harmful rows.

The prompts are cut into chunks of `batch_size`; each chunk's samples are drawn from a generator seeded by
(seed, chunk index) and appended to `samples.jsonl` as one write once scored. A killed run drops a partial
last chunk and continues with the next, so a resumed run writes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from safealign.config import one_of, opt
from safealign.data.files import read_prompts
from safealign.data.prompts import PromptFormat, prompt_setting, render_prompt
from safealign.data.sources import SourceConfig, load_examples
from safealign.errors import ConfigError
from safealign.evals.judges import RefusalJudge
from safealign.generation import generate
from safealign.io import atomic_write_jsonl, progress_kwargs, read_jsonl
from safealign.models import ModelConfig, load_causal_lm, load_tokenizer, pick_dtype
from safealign.score_model import Scorer

SAMPLES_FILE, RESPONSES_FILE = "samples.jsonl", "responses.jsonl"


@dataclass
class GenerateStage:
    """Sample responses from a model for the prompts of a file, keep those the reward / cost models accept,
    and write them as prompt/response JSONL (`responses.jsonl` in the stage directory: distillation data for a
    later SFT stage, read as {source: responses, path: 'stage:NAME/responses.jsonl'}). Resumable."""

    kind: str = opt("generate", "stage kind")
    model: ModelConfig = opt(None, "the model that answers (the teacher)")
    prompts: SourceConfig | str = opt("", "file whose distinct `prompt`s are answered (pairs, PKU-SafeRLHF, BeaverTails "
                                          "or prompt/response rows), or a data source {source, path, select, start} "
                                          "whose examples' questions are (e.g. donotanswer)")
    split: str = opt("train", "split of `prompts` when it is a file's directory or hub id (a source has its own)")
    prompts_num: int = opt(0, "first N distinct prompts; 0 = all", was="num_prompts")
    prompt: PromptFormat = prompt_setting("alpaca", "prompt format the teacher answers in (data/prompts.py), as it "
                                                    "was trained; the reward and cost models score in their own")
    num_samples: int = opt(1, "responses sampled per prompt")
    temperature: float = opt(1.0, "sampling temperature; 0 = greedy (then num_samples must be 1)")
    top_p: float = opt(1.0, "nucleus sampling: keep the smallest token set with this much probability")
    max_new_tokens: int = opt(128, "response length")
    batch_size: int = opt(32, "prompts per generation batch (each batch is one resumable chunk)")
    reward_model: str = opt("", "score model whose reward a kept response must reach (empty = no reward filter)")
    min_reward: float = opt(0.0, "keep responses with reward >= this (when reward_model is set)")
    cost_model: str = opt("", "score model whose cost a kept response must stay under (empty = no cost filter)")
    max_cost: float = opt(0.0, "keep responses with cost <= this (when cost_model is set; 0 is the safe/unsafe boundary)")
    keep: str = opt("all", "all | refusals (responses the refusal judge finds a refusal in) | compliant (the others)")
    seed: int = opt(-1, "random seed of the samples; -1 takes the recipe's seed")

    def __post_init__(self) -> None:
        self.model = self.model or ModelConfig()

    def paths(self) -> Iterator[tuple[str, str, str]]:
        yield "model", "model.path", self.model.path
        if isinstance(self.prompts, SourceConfig):
            yield "data", "prompts.path", self.prompts.path
        else:
            yield "data", "prompts", self.prompts
        for name, path in (("reward_model", self.reward_model), ("cost_model", self.cost_model)):
            if path:
                yield "model", name, path

    def validate(self, where: str) -> None:
        if not self.prompts:
            raise ConfigError(f"{where}.prompts: a generate stage needs a prompt file")
        one_of(self.keep, ("all", "refusals", "compliant"), f"{where}.keep")
        if self.num_samples < 1 or self.batch_size < 1 or self.prompts_num < 0:
            raise ConfigError(f"{where}: num_samples and batch_size must be >= 1, prompts_num >= 0")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}: temperature must be >= 0 and top_p within (0, 1]")
        if self.temperature == 0 and self.num_samples > 1:
            raise ConfigError(f"{where}.num_samples: greedy decoding (temperature 0) gives one response per prompt")


def chunk_seed(seed: int, chunk: int) -> int:
    return seed * 1_000_003 + chunk


def completed_samples(path: Path, chunk_sizes: list[int]) -> list[dict]:
    """The records of the chunks that were written whole (a kill can cut the last one short)."""
    if not path.exists():
        return []
    records = read_jsonl(path, allow_truncated_last=True)
    by_chunk: dict[int, list[dict]] = {}
    for r in records:
        by_chunk.setdefault(r["chunk"], []).append(r)
    whole = []
    for chunk, size in enumerate(chunk_sizes):
        if len(by_chunk.get(chunk, [])) != size:
            break
        whole += by_chunk[chunk]
    return whole


def passes_filters(record: dict, cfg) -> bool:
    return ((not cfg.reward_model or record["reward"] >= cfg.min_reward) and (not cfg.cost_model or record["cost"] <= cfg.max_cost)
            and (cfg.keep == "all" or record["refused"] == (cfg.keep == "refusals")))


def prompts_of(cfg: GenerateStage) -> list[str]:
    """The distinct prompts to answer, the first `prompts_num` of them (0 = all)."""
    if not isinstance(cfg.prompts, SourceConfig):
        return read_prompts(cfg.prompts, cfg.split, cfg.prompts_num)
    questions = list(dict.fromkeys(e["instruction"] for e in load_examples(cfg.prompts)))
    return questions[: cfg.prompts_num or len(questions)]


def run(unit) -> dict:
    return run_generate(unit.config, unit.out_dir)


def run_generate(cfg: GenerateStage, out_dir: Path) -> dict:
    """Sample, score, filter and write (cfg's references resolved to paths). Returns the counts."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompts = prompts_of(cfg)
    chunks = [prompts[i:i + cfg.batch_size] for i in range(0, len(prompts), cfg.batch_size)]
    samples_file = out_dir / SAMPLES_FILE
    records = completed_samples(samples_file, [len(c) * cfg.num_samples for c in chunks])
    atomic_write_jsonl(samples_file, records)  # without a partial chunk a kill may have left
    done = len({r["chunk"] for r in records})

    dtype = pick_dtype(cfg.model.dtype, "bf16")
    model = load_causal_lm(cfg.model.path, dtype, cfg.model.trust_remote_code).to(device)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    scorers = {name: Scorer(path, device, dtype) for name, path in (("reward", cfg.reward_model), ("cost", cfg.cost_model))
               if path}
    bar = tqdm(range(done, len(chunks)), initial=done, total=len(chunks), desc="generate (distill)", **progress_kwargs())
    for k in bar:
        asked = [p for p in chunks[k] for _ in range(cfg.num_samples)]  # each prompt num_samples times
        torch.manual_seed(chunk_seed(cfg.seed, k))
        answers = generate(model, tokenizer, [render_prompt(cfg.prompt, tokenizer, p) for p in asked],
                           cfg.max_new_tokens, len(asked), desc=f"chunk {k}", temperature=cfg.temperature, top_p=cfg.top_p)
        rows = [{"chunk": k, "prompt": p, "response": a} for p, a in zip(asked, answers)]
        for name, scorer in scorers.items():
            for row, score in zip(rows, scorer(asked, answers).tolist()):
                row[name] = round(score, 4)
        if cfg.keep != "all":
            for row, verdict in zip(rows, RefusalJudge().judge(asked, answers)):
                row["refused"] = not verdict["flagged"]
        for row in rows:
            row["kept"] = passes_filters(row, cfg)
        with open(samples_file, "a", encoding="utf-8") as f:  # one write per chunk: a kill leaves it whole or short
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        records += rows
    bar.close()

    keep = [r for r in records if r["kept"]]
    atomic_write_jsonl(out_dir / RESPONSES_FILE,
                       [{k: r[k] for k in ("prompt", "response", "reward", "cost") if k in r} for r in keep])
    stats = {"prompts": len(prompts), "samples": len(records), "kept": len(keep),
             "keep_rate": round(len(keep) / max(len(records), 1), 4)}
    if cfg.keep != "all":
        stats["refused"] = sum(r["refused"] for r in records)
    for name, failed in (("reward", lambda s: s < cfg.min_reward), ("cost", lambda s: s > cfg.max_cost)):
        if name in scorers:
            stats[f"dropped_by_{name}"] = sum(failed(r[name]) for r in records)
            stats[f"mean_{name}"] = round(sum(r[name] for r in records) / max(len(records), 1), 4)
    if not keep:
        print("warning: no sample passed the filters; responses.jsonl is empty", flush=True)
    print("   " + ", ".join(f"{k} {v}" for k, v in stats.items()), flush=True)
    return stats
