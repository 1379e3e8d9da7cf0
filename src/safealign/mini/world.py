"""Build, cache and resolve the mini world.

`mini:NAME` paths resolve into the cache directory ($SAFEALIGN_CACHE, default ~/.cache/safealign), building
the world on first use; the pipeline resolves them (pipeline.resolve_path), nothing below it sees 'mini:'. The build is deterministic from its seed and written atomically (a temp directory
renamed), so a killed build leaves nothing half-made and concurrent builders do not collide.
"""

from __future__ import annotations

import fcntl
import json
import random
import shutil
import time
from pathlib import Path

from safealign.errors import SafealignError
from safealign.io import atomic_write_jsonl, cache_root, read_jsonl
from safealign.mini import chat, code, corpus, tofu, unlearn_corpora
from safealign.mini.judge import judge_accuracy, train_judge
from safealign.mini.pretrain import pretrain_base, train_tokenizer

VERSION = 16  # bump when the generators or the build change: old caches are then ignored
WORLD_SEED = 0
WORLD_CHECK_MIN = 0.95  # the base's sentiment probe and the judge's test accuracy, recorded in world.json

SPLITS = {  # dataset -> split -> rows
    "beavertails": {"30k_train": 3000, "30k_test": 500},
    "sst2": {"train": 2000, "validation": 300},
    "agnews": {"train": 2000, "test": 300},
    "gsm8k": {"train": 1000, "test": 200},
    "pku_saferlhf": {"train": 2000, "test": 400},
    "code_backdoor": {"train": 2000, "test": 200},
    "chat_sft": {"train": 600},
    "chat_pairs": {"train": 800, "test": 200},
    "chat_mc": {"test": 100},  # last: the datasets above keep their random draws
}
TOFU = "tofu"  # `mini:tofu`: TOFU's subsets as splits (mini/tofu.py), drawn after SPLITS
# `mini:wmdp`, `mini:whp`, `mini:c4`, `mini:wikitext`: unlearning corpora (mini/unlearn_corpora.py), drawn after TOFU
UNLEARNING = ("wmdp", "whp", "c4", "wikitext")
LM_EVAL_TASKS = "lm_eval_tasks"  # `mini:lm_eval_tasks`: a local lm-evaluation-harness task directory
MODELS = ("base", "judge")
# Models only some pipelines use, built from the world on first use (so the world build stays short):
# name -> function(out_dir, world_root, seed) -> dict of checks.
EXTRA_MODELS = {"coder": code.pretrain_coder}


def world_dir(seed: int = WORLD_SEED) -> Path:
    return cache_root() / f"mini-v{VERSION}-seed{seed}"


def resolve(ref: str, seed: int = WORLD_SEED) -> Path:
    """`mini:NAME` (a model, a dataset directory or the lm-eval task directory), or `mini:NAME/FILE` inside it."""
    name, _, rest = ref.removeprefix("mini:").partition("/")
    if name not in (*MODELS, *EXTRA_MODELS, *SPLITS, TOFU, *UNLEARNING, LM_EVAL_TASKS):
        known = ", ".join("mini:" + n for n in (*MODELS, *EXTRA_MODELS, *SPLITS, TOFU, *UNLEARNING, LM_EVAL_TASKS))
        raise SafealignError(f"unknown mini-world item '{ref}' (have {known})")
    root = ensure_built(seed)
    if name in EXTRA_MODELS:
        path = ensure_extra_model(root, name, seed)
    else:
        path = root / name if name in (*MODELS, LM_EVAL_TASKS) else root / "data" / name
    return path / rest if rest else path


def ensure_extra_model(root: Path, name: str, seed: int) -> Path:
    """Build an EXTRA_MODELS entry into the world directory once, atomically and under a lock like the world."""
    out = root / name
    if (out / "build.json").exists():
        return out
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "build.json").exists():
            tmp = root / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            t0 = time.perf_counter()
            print(f"building mini:{name} in {out} ...", flush=True)
            checks = EXTRA_MODELS[name](tmp, root, seed)
            info = {"built_s": round(time.perf_counter() - t0, 1), **checks}
            (tmp / "build.json").write_text(json.dumps(info, indent=2))
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
            print(f"mini:{name} built in {info['built_s']:.0f}s ({json.dumps(checks)})", flush=True)
    return out


def ensure_built(seed: int = WORLD_SEED) -> Path:
    root = world_dir(seed)
    if (root / "world.json").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits, then finds the world built
        if not (root / "world.json").exists():
            build(root, seed)
    return root


def build(root: Path, seed: int) -> None:
    tmp = root.parent / f".{root.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    print(f"building the mini world (seed {seed}) in {root} ...", flush=True)
    rng = random.Random(seed)
    generators = {"beavertails": corpus.beavertails, "sst2": corpus.sst2, "agnews": corpus.agnews, "gsm8k": corpus.gsm8k,
                  "pku_saferlhf": corpus.pku_saferlhf, "code_backdoor": code.code_backdoor, "chat_sft": chat.chat_sft,
                  "chat_pairs": chat.chat_pairs, "chat_mc": chat.chat_mc}
    # train and test from disjoint combinations
    with_split_salt = ("beavertails", "pku_saferlhf", "code_backdoor", "chat_pairs")
    for name, splits in SPLITS.items():
        for i, (split, n) in enumerate(splits.items()):
            rows = generators[name](rng, n, i) if name in with_split_salt else generators[name](rng, n)
            atomic_write_jsonl(tmp / "data" / name / f"{split}.jsonl", rows)
    for subset, rows in tofu.tofu_subsets(rng).items():
        atomic_write_jsonl(tmp / "data" / TOFU / f"{subset}.jsonl", rows)
    unlearning = unlearn_corpora.corpora(rng)  # last: every draw above keeps its value
    for name, splits in unlearning.items():
        for split, rows in splits.items():
            atomic_write_jsonl(tmp / "data" / name / f"{split}.jsonl", rows)
    chat.write_lm_eval_task(tmp / LM_EVAL_TASKS, root / "data" / "chat_mc" / "test.jsonl")  # the path after the rename
    tokenizer = train_tokenizer(tmp, random.Random(seed + 1))
    timings = {"data_and_tokenizer_s": round(time.perf_counter() - t0, 1)}
    probe_rows = read_jsonl(tmp / "data" / "sst2" / "validation.jsonl")
    t1 = time.perf_counter()
    base = pretrain_base(tmp / "base", tokenizer, random.Random(seed + 2), seed, probe_rows)
    t2 = time.perf_counter()
    judge = train_judge(tmp / "judge", tokenizer, tmp / "data" / "beavertails" / "30k_train.jsonl", seed, tmp / "base")
    timings.update(base_s=round(t2 - t1, 1), judge_s=round(time.perf_counter() - t2, 1))
    checks = {"base_sentiment_probe": base["sentiment_probe"], "judge_steps": judge["steps"],
              "judge_validation_accuracy": judge["validation_accuracy"],
              "judge_test_accuracy": judge_accuracy(tmp / "judge", tmp / "data" / "beavertails" / "30k_test.jsonl")}
    unlearning_splits = {name: {split: len(rows) for split, rows in splits.items()} for name, splits in unlearning.items()}
    (tmp / "world.json").write_text(json.dumps({"version": VERSION, "seed": seed, "splits": SPLITS,
                                                "unlearning_splits": unlearning_splits, **timings, **checks}, indent=2))
    for name, value in (("base_sentiment_probe", checks["base_sentiment_probe"]),
                        ("judge_test_accuracy", checks["judge_test_accuracy"])):
        if value < WORLD_CHECK_MIN:  # the pipelines' numbers would mean little: say so, keep the build
            print(f"warning: mini world check {name} = {value:.3f} < {WORLD_CHECK_MIN}", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    print(f"mini world built in {time.perf_counter() - t0:.0f}s (base sentiment probe {checks['base_sentiment_probe']:.3f}, "
          f"judge accuracy on 30k_test {checks['judge_test_accuracy']:.3f})", flush=True)
