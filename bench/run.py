"""Speed and memory, side by side with peers in one process: `python bench/run.py` (issue #8).

Each benchmark runs both sides on the same model, data, batch size, sequence length and step count, checks that
they computed the same thing (losses to a tolerance, identical greedy outputs and judgements), repeats each side
(median of --repeats), and reports ratios. Results: a markdown table on stdout and bench/results.json.

  sft       safealign's loop + SFT vs TRL SFTTrainer: tokens/s and peak memory
  dpo       safealign's DPO vs TRL DPOTrainer, reference per step and precomputed: seconds/step and peak memory
  hs        harmful-score evaluation: batched generation + batched judging vs one prompt (and one judgement) at a
            time, as the original pred.py / eval_sentiment.py do
  lisa      the `lisa` recipe's wall time, stage by stage
  fabe      FABE's training step: one batched forward over every candidate vs one forward per candidate
  sandbox   running 200 rewrites' unit tests: today's sandbox (sandbox/) vs the one before issue #19, read from
            git at --old-sandbox-rev (a plain `python -I` subprocess per rewrite, exit status as the verdict)

Default model and data: the mini world (built on first use). `--model PATH` runs sft/dpo on another causal LM.
Peak memory is the process's peak RSS during the side (reset before it; Linux) on CPU, or peak allocated CUDA
memory on a GPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from safealign.measure import StageMeter
from safealign.mini.world import resolve as resolve_mini

HERE = Path(__file__).resolve().parent


def mini_or_path(ref: str) -> str:
    """A `mini:NAME` reference as its path in the mini world (built on first use), anything else unchanged: the
    bench calls the library below the pipeline, which is where recipes' references become paths."""
    return str(resolve_mini(ref)) if ref.startswith("mini:") else ref


def measure(fn):
    """(result of fn, wall seconds, peak MB) for one run of fn."""
    with StageMeter() as meter:
        out = fn()
    m = meter.result()
    return out, m["wall_s"], m["peak_mem_mb"]


def repeat(fn, n: int) -> dict:
    runs = [measure(fn) for _ in range(n)]
    return {"result": runs[-1][0], "seconds": statistics.median(r[1] for r in runs),
            "seconds_all": [r[1] for r in runs], "peak_mb": max(r[2] for r in runs)}


def quiet_trl_args(cls, out: str, **kw):
    """TRL's config with our side's precision: TRL's configs turn bf16 on by default (also on a CPU), ours
    trains in fp32 unless asked; comparing across precisions would compare different losses."""
    return cls(output_dir=out, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
               use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, bf16=False, fp16=False, **kw)


def quiet(trainer) -> None:
    """No per-step log printing (with tqdm off the Trainer prints every log dict), as our side prints none here."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)


# ----------------------------------------------------------------------------------------------------- SFT


def sft_features(tokenizer, n: int):
    from safealign.data.sources import SourceConfig, load_examples
    from safealign.data.formats import tokenize_example
    from safealign.data.prompts import ALPACA

    examples = load_examples(SourceConfig("sst2", mini_or_path("mini:sst2"), "train"))[:n]
    return [tokenize_example(tokenizer, e, 512, ALPACA) for e in examples]


def lora_model(path: str):
    from safealign.models import LoraConfig, add_lora, load_causal_lm

    torch.manual_seed(0)
    return add_lora(load_causal_lm(path), LoraConfig(r=8, alpha=16, dropout=0.0,
                                                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))


def bench_sft(args) -> dict:
    from safealign.data.streams import BatchStream
    from safealign.loop import TrainConfig, make_accelerator, train
    from safealign.methods.sft import SFT, SFTConfig
    from safealign.models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    features = sft_features(tokenizer, args.batch_size * args.steps)
    tokens = sum(len(f["input_ids"]) for f in features)  # no padding counted: the same work on both sides
    start = lora_model(args.model)

    def ours():
        model = copy.deepcopy(start)
        cfg = TrainConfig(lr=1e-4, max_steps=args.steps, batch_size=args.batch_size, log_every=1, shuffle=False)
        stream = BatchStream(features, args.batch_size, tokenizer.pad_token_id, seed=0, shuffle=False)
        with tempfile.TemporaryDirectory() as out:
            train(model, SFT(SFTConfig(), args.steps), {"train": stream}, cfg, Path(out), make_accelerator(cfg), seed=0)
            return [json.loads(line)["loss"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]

    def trl():
        from datasets import Dataset
        from trl import SFTConfig as TRLSFTConfig
        from trl import SFTTrainer

        rows = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]  # the same ids and labels
        model = copy.deepcopy(start)
        with tempfile.TemporaryDirectory() as out:
            cfg = quiet_trl_args(TRLSFTConfig, out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                                 learning_rate=1e-4, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                                 max_grad_norm=1.0, optim="adamw_torch", train_sampling_strategy="sequential",
                                 max_length=512, dataset_kwargs={"skip_prepare_dataset": True})
            trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
            quiet(trainer)
            trainer.train()
            return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    a, b = repeat(ours, args.repeats), repeat(trl, args.repeats)
    same = max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a["result"], b["result"]))
    return {"what": f"SFT, LoRA r8 on attention, {args.steps} steps x batch {args.batch_size}, {tokens} tokens",
            "ours_tokens_per_s": tokens / a["seconds"], "trl_tokens_per_s": tokens / b["seconds"],
            "speed_ratio": b["seconds"] / a["seconds"], "ours_peak_mb": a["peak_mb"], "trl_peak_mb": b["peak_mb"],
            "memory_ratio": a["peak_mb"] / b["peak_mb"], "max_rel_loss_diff": same, "same": same < 1e-3,
            "ours_s": a["seconds_all"], "trl_s": b["seconds_all"]}


# ----------------------------------------------------------------------------------------------------- DPO


def dpo_pairs(n: int) -> list[dict]:
    from safealign.data import pku_saferlhf
    from safealign.data.files import load_rows

    helpful, _, _ = pku_saferlhf.pairs(load_rows(mini_or_path("mini:pku_saferlhf"), "train"))
    return helpful[:n]


def bench_dpo(args, precompute: bool) -> dict:
    from safealign.data.formats import collate_pairs, tokenize_pair
    from safealign.data.prompts import ALPACA, render_prompt
    from safealign.data.streams import BatchStream
    from safealign.loop import TrainConfig, make_accelerator, train
    from safealign.methods.dpo import DPO, DPOConfig
    from safealign.models import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    pairs = dpo_pairs(args.batch_size * args.steps)
    features = [tokenize_pair(tokenizer, p, 512, ALPACA) for p in pairs]
    start = lora_model(args.model)

    def ours():
        model = copy.deepcopy(start)
        cfg = TrainConfig(lr=1e-4, max_steps=args.steps, batch_size=args.batch_size, log_every=1, shuffle=False)
        stream = BatchStream([dict(f) for f in features], args.batch_size, tokenizer.pad_token_id, seed=0, shuffle=False,
                             collate_fn=collate_pairs)
        with tempfile.TemporaryDirectory() as out:
            train(model, DPO(DPOConfig(beta=0.1, precompute_ref=precompute), args.steps), {"train": stream}, cfg,
                  Path(out), make_accelerator(cfg), seed=0)
            return [json.loads(line)["loss"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]

    def trl():
        from datasets import Dataset
        from trl import DPOConfig as TRLDPOConfig
        from trl import DPOTrainer

        # Our template as text; the answers with the leading space our separate encoding gives them, so TRL's
        # joint tokenization yields the same ids (checked below).
        rows = [{"prompt": render_prompt(ALPACA, tokenizer, p["prompt"]), "chosen": " " + p["chosen"],
                 "rejected": " " + p["rejected"]} for p in pairs]
        model = copy.deepcopy(start)
        with tempfile.TemporaryDirectory() as out:
            cfg = quiet_trl_args(TRLDPOConfig, out, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                                 learning_rate=1e-4, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                                 max_grad_norm=1.0, optim="adamw_torch", train_sampling_strategy="sequential",
                                 beta=0.1, max_length=512, precompute_ref_log_probs=precompute)
            trainer = DPOTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
            quiet(trainer)
            first = trainer.train_dataset[0]
            ids = first["prompt_ids"] + first["chosen_ids"]
            trainer.train()
            return [h["loss"] for h in trainer.state.log_history if "loss" in h], ids

    a, b = repeat(ours, args.repeats), repeat(trl, args.repeats)
    trl_losses, trl_ids = b["result"]
    same_tokens = trl_ids == features[0]["chosen"]["input_ids"]
    diff = max(abs(x - y) / max(abs(y), 1e-8) for x, y in zip(a["result"], trl_losses))
    return {"what": f"DPO, reference {'precomputed' if precompute else 'per step'}, LoRA r8, {args.steps} steps x "
                    f"{args.batch_size} pairs", "ours_s_per_step": a["seconds"] / args.steps,
            "trl_s_per_step": b["seconds"] / args.steps, "speed_ratio": b["seconds"] / a["seconds"],
            "ours_peak_mb": a["peak_mb"], "trl_peak_mb": b["peak_mb"], "memory_ratio": a["peak_mb"] / b["peak_mb"],
            "same_tokens": same_tokens, "max_rel_loss_diff": diff, "same": same_tokens and diff < 1e-3,
            "ours_s": a["seconds_all"], "trl_s": b["seconds_all"]}


# ------------------------------------------------------------------------------------------ harmful score


def bench_hs(args) -> dict:
    from safealign.data.sources import SourceConfig, load_examples
    from safealign.data.formats import encode_prompt, response_text
    from safealign.data.prompts import ALPACA, render_prompt
    from safealign.generation import generate
    from safealign.evals.judges import load_judge
    from safealign.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(args.eval_model).eval()
    tokenizer = load_tokenizer(args.eval_model)
    rows = load_examples(SourceConfig("beavertails", mini_or_path("mini:beavertails"), "30k_test"))[: args.prompts]
    questions = [r["instruction"] for r in rows]
    prompts = [render_prompt(ALPACA, tokenizer, q) for q in questions]
    judge = load_judge("moderation", mini_or_path("mini:judge"), 0.5, 256, 32, "float32", append_eos=False)  # as trained

    def batched():
        answers = generate(model, tokenizer, prompts, args.max_new_tokens, batch_size=50, desc="batched")
        return answers, judge.judge(questions, answers)

    @torch.no_grad()
    def one_at_a_time():  # pred.py: one prompt per generate call; eval_sentiment.py: one judgement per call
        answers = []
        for p in prompts:
            ids = torch.tensor([encode_prompt(tokenizer, p)])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            answers.append(response_text(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)))
        return answers, [judge.judge([q], [a])[0] for q, a in zip(questions, answers)]

    a, b = repeat(batched, args.repeats), repeat(one_at_a_time, args.repeats)
    same_answers = sum(x == y for x, y in zip(a["result"][0], b["result"][0]))
    same_flags = sum(x["flagged"] == y["flagged"] for x, y in zip(a["result"][1], b["result"][1]))
    return {"what": f"harmful score of {len(prompts)} prompts, {args.max_new_tokens} new tokens, mini judge",
            "ours_s": a["seconds_all"], "one_at_a_time_s": b["seconds_all"], "speed_ratio": b["seconds"] / a["seconds"],
            "identical_answers": f"{same_answers}/{len(prompts)}", "identical_judgements": f"{same_flags}/{len(prompts)}",
            "same": same_answers == same_flags == len(prompts)}


# -------------------------------------------------------------------------------------------------- FABE


def bench_fabe(args) -> dict:
    """A FABE step (MLE + ListMLE) with all B·N candidates in one forward against the same loss from N·B
    single-sequence forwards (what scoring candidates one by one costs); same weights, same batch."""
    from safealign.data.candidates import collate_candidates, read_candidates, tokenize_candidates
    from safealign.data.formats import collate
    from safealign.data.prompts import ALPACA
    from safealign.losses.ranking import length_normalized_logps, listmle_loss
    from safealign.losses.sft import token_log_probs
    from safealign.methods.fabe import FABE, FABEConfig
    from safealign.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(args.model)
    rows = read_candidates(mini_or_path("mini:code_backdoor"), "train")[: args.batch_size]
    features = [tokenize_candidates(tokenizer, r, 1024, ALPACA) for r in rows]
    batch = collate_candidates(features, tokenizer.pad_token_id)
    model = load_causal_lm(args.model)
    method, cfg = FABE(FABEConfig(), 1), FABEConfig()

    def batched():
        model.zero_grad()
        loss = method.step(model, {"train": iter([batch])}, 0).loss
        loss.backward()
        return loss.item()

    def separate():
        model.zero_grad()
        scores, nll, tokens = [], 0.0, 0
        for f in features:
            row = []
            for k, seq in enumerate(f["sequences"]):
                one = collate([seq], tokenizer.pad_token_id)
                logps, mask = token_log_probs(model(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits,
                                              one["labels"])
                row.append(length_normalized_logps(logps, mask)[0])
                if k == 0:  # MLE on the best candidate: a token sum, normalised over the batch below
                    nll, tokens = nll - (logps * mask).sum(), tokens + int(mask.sum())
            scores.append(torch.stack(row))
        loss = cfg.mle_weight * nll / tokens + cfg.rank_weight * listmle_loss(torch.stack(scores), cfg.tau).mean()
        loss.backward()
        return loss.item()

    a, b = repeat(batched, args.repeats), repeat(separate, args.repeats)
    diff = abs(a["result"] - b["result"])
    n = len(features[0]["sequences"])
    return {"what": f"FABE step, {len(features)} inputs x {n} candidates", "ours_s": a["seconds_all"],
            "separate_s": b["seconds_all"], "speed_ratio": b["seconds"] / a["seconds"], "loss_abs_diff": diff,
            "same": diff < 1e-5}


# ------------------------------------------------------------------------------------------------ sandbox


def old_sandbox(rev: str):
    """The sandbox module as it was at `rev` (a single file then), loaded from git into a module of its own."""
    import importlib.util
    import subprocess

    try:
        source = subprocess.run(["git", "show", f"{rev}:src/safealign/sandbox.py"], cwd=HERE, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"error: the old sandbox is not in git here ({rev}:src/safealign/sandbox.py): {error}")
    path = Path(tempfile.mkdtemp(prefix="safealign-old-sandbox-")) / "old_sandbox.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_sandbox", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_sandbox"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def bench_sandbox(args) -> dict:
    """The unit tests of 200 rewrites (the mini code rows' candidates in turn: the reference, a renamed local
    that still passes, one operator changed that fails) under the old and today's sandbox."""
    import random

    from safealign.mini.code import code_backdoor
    from safealign.sandbox import prepare, run_many

    rows = code_backdoor(random.Random(3), args.rewrites, 1)
    pairs = [(row["candidates"][i % len(row["candidates"])], row["tests"]) for i, row in enumerate(rows)]
    old = old_sandbox(args.old_sandbox_rev)
    isolation = prepare("isolated")
    a = repeat(lambda: run_many(pairs, isolation=isolation), args.repeats)
    one = repeat(lambda: run_many(pairs, isolation=isolation, workers=1), args.repeats)
    b = repeat(lambda: [old.run_tests(code, tests).passed for code, tests in pairs], args.repeats)
    passed = [r.passed for r in a["result"]]
    return {"what": f"unit tests of {len(pairs)} rewrites", "isolation": a["result"][0].isolation,
            "ours_s": a["seconds_all"], "ours_one_worker_s": one["seconds_all"], "old_s": b["seconds_all"],
            "slowdown": a["seconds"] / b["seconds"], "passed": f"{sum(passed)}/{len(pairs)}",
            "slowdown_one_worker": one["seconds"] / b["seconds"],
            "same": passed == b["result"] == [r.passed for r in one["result"]]}


# ------------------------------------------------------------------------------------------- lisa recipe


def bench_lisa(args) -> dict:
    import subprocess

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "safealign", "run", "lisa", f"output_dir={out}"], check=True,
                       capture_output=True)
        total = time.perf_counter() - t0
        timings = json.loads((Path(out) / "timings.json").read_text())
    return {"what": "the lisa recipe (world built beforehand)", "total_s": round(total, 1),
            "stages_s": {k: v["wall_s"] for k, v in timings.items()}}


# ------------------------------------------------------------------------------------------------- report


def table(results: dict) -> str:
    lines = ["| benchmark | safealign | peer | ratio (peer time / ours) | memory (ours / peer) | same result |",
             "|---|---|---|---|---|---|"]
    if "sft" in results:
        r = results["sft"]
        lines.append(f"| SFT vs TRL SFTTrainer | {r['ours_tokens_per_s']:.0f} tok/s | {r['trl_tokens_per_s']:.0f} tok/s | "
                     f"{r['speed_ratio']:.2f} | {r['memory_ratio']:.2f} | {r['same']} (loss rel. diff {r['max_rel_loss_diff']:.1e}) |")
    for key in ("dpo", "dpo_precomputed"):
        if key in results:
            r = results[key]
            lines.append(f"| {r['what'].split(',')[0]} ({'precomputed reference' if 'pre' in key else 'reference per step'}) "
                         f"vs TRL DPOTrainer | {r['ours_s_per_step'] * 1000:.1f} ms/step | {r['trl_s_per_step'] * 1000:.1f} ms/step | "
                         f"{r['speed_ratio']:.2f} | {r['memory_ratio']:.2f} | {r['same']} (loss rel. diff {r['max_rel_loss_diff']:.1e}) |")
    if "hs" in results:
        r = results["hs"]
        lines.append(f"| harmful score: batched vs one at a time | {statistics.median(r['ours_s']):.1f} s | "
                     f"{statistics.median(r['one_at_a_time_s']):.1f} s | {r['speed_ratio']:.2f} | – | "
                     f"answers {r['identical_answers']}, judgements {r['identical_judgements']} |")
    if "fabe" in results:
        r = results["fabe"]
        lines.append(f"| {r['what']}: one batched forward vs one per candidate | {statistics.median(r['ours_s']) * 1000:.0f} ms | "
                     f"{statistics.median(r['separate_s']) * 1000:.0f} ms | {r['speed_ratio']:.2f} | – | "
                     f"{r['same']} (loss abs. diff {r['loss_abs_diff']:.1e}) |")
    if "sandbox" in results:
        r = results["sandbox"]
        lines.append(f"| sandbox: {r['what']}, today's ({r['isolation']}) vs before #19 | "
                     f"{statistics.median(r['ours_s']):.1f} s | {statistics.median(r['old_s']):.1f} s | "
                     f"{1 / r['slowdown']:.2f} (one worker: {1 / r['slowdown_one_worker']:.2f}) | – | "
                     f"{r['same']} (passed {r['passed']}) |")
    if "lisa" in results:
        r = results["lisa"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages_s"].items())
        lines.append(f"| lisa recipe | {r['total_s']} s ({stages}) | – | – | – | – |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="sft,dpo,hs,fabe,lisa", help="comma-separated subset of sft,dpo,hs,fabe,sandbox,lisa")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--prompts", type=int, default=100, help="harmful-score prompts")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--model", default="mini:base", help="causal LM for sft/dpo (path, hub id or mini:base)")
    p.add_argument("--eval-model", default="mini:base", help="the model whose harmful score is measured")
    p.add_argument("--rewrites", type=int, default=200, help="rewrites whose tests the sandbox bench runs")
    p.add_argument("--old-sandbox-rev", default="c19bde5", help="git revision of the sandbox before issue #19")
    p.add_argument("--out", default=str(HERE / "results.json"))
    args = p.parse_args(argv)
    args.model, args.eval_model = mini_or_path(args.model), mini_or_path(args.eval_model)
    torch.manual_seed(0)
    wanted = args.only.split(",")
    results = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
                           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
               "date": date.today().isoformat(), "argv": sys.argv[1:]}
    if "sft" in wanted:
        results["sft"] = bench_sft(args)
    if "dpo" in wanted:
        results["dpo"] = bench_dpo(args, precompute=False)
        results["dpo_precomputed"] = bench_dpo(args, precompute=True)
    if "hs" in wanted:
        results["hs"] = bench_hs(args)
    if "fabe" in wanted:
        results["fabe"] = bench_fabe(args)
    if "sandbox" in wanted:
        results["sandbox"] = bench_sandbox(args)
    if "lisa" in wanted:
        results["lisa"] = bench_lisa(args)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
