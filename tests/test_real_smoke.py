"""Every pipeline once on a real model (issue 16 item 5): SmolLM2-135M-Instruct of the real tier under its own
ChatML template, a few LoRA steps per stage, each driven as a user drives it (a recipe YAML through
`safealign run`). Each test asserts what would fail if the real path were wrong: the prompt the template renders,
losses finite and moving (and the methods' values at step 0 where policy = reference), adapters saved and
reloaded through the chain, the merged export.

Marked `real`: deselected by default, run with `pytest -m real` (CI: `-m "slow or real"`); the `smollm2`
fixture skips when the model cannot be prepared here. About 1.5 s per train step at 2 x 96 tokens on one core,
about 1.5 minutes for the file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from safealign.cli import main
from tests.conftest import LN2, real_or_skip, write_jsonl

pytestmark = pytest.mark.real

MODEL = "real:smollm2-135m-instruct"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
TRAIN = {"max_steps": 3, "batch_size": 2, "lr": 1.0e-3, "log_every": 1, "save_every": 0}
POLICY = {"path": MODEL, "max_length": 96}

FACTS = [("What is the capital of France?", "The capital of France is Paris."),
         ("What colour is a ripe banana?", "A ripe banana is yellow."),
         ("How many legs does a spider have?", "A spider has eight legs."),
         ("What do bees make?", "Bees make honey.")]
PAIRS = [{"prompt": q, "chosen": a, "rejected": "I don't know.", "chosen_is_safe": True, "rejected_is_safe": True}
         for q, a in FACTS]


def run_recipe(tmp_path: Path, stages: dict) -> Path:
    """Write the stages as a recipe in tmp_path, run it with `safealign run`, return the run directory."""
    recipe = {"name": "smoke", "seed": 0, "output_dir": str(tmp_path / "run"), "stages": stages}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))  # stages run in order
    assert main(["run", str(path)]) == 0
    return tmp_path / "run"


def logged(stage_dir: Path) -> list[dict]:
    """The training rows of a stage's metrics.jsonl, one per step (log_every 1)."""
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def assert_trained(stage_dir: Path, steps: int) -> list[dict]:
    """`steps` finite losses that moved, and the LoRA adapter saved as a stage output."""
    rows = logged(stage_dir)
    assert len(rows) == steps and all(math.isfinite(r["loss"]) for r in rows), rows
    assert len({r["loss"] for r in rows}) > 1, rows
    assert (stage_dir / "model/adapter_model.safetensors").exists()
    assert json.loads((stage_dir / "model/safealign_model.json").read_text())["kind"] == "adapter"
    return rows


def chat(tokenizer, question: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=False)


@torch.no_grad()
def logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model.eval()(input_ids=ids).logits


@torch.no_grad()
def answer_nll(model, tokenizer, rows: list[tuple[str, str]]) -> float:
    """Mean per-token NLL of the answers under the chat template, tokenized as training tokenizes them."""
    from safealign.data.formats import collate, tokenize_example
    from safealign.data.prompts import PromptFormat

    batch = collate([tokenize_example(tokenizer, {"instruction": q, "input": "", "output": a}, 96,
                                      PromptFormat(kind="chat")) for q, a in rows], tokenizer.pad_token_id)
    return model.eval()(**batch).loss.item()


def test_sft_then_orpo_under_the_chat_template_then_export_merged(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from safealign.data.formats import tokenize_example
    from safealign.data.prompts import PromptFormat
    from safealign.models import load_causal_lm

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    q, a = FACTS[0]
    # the one-turn chat example: exactly the template's conversation, the answer and its <|im_end|> labelled
    f = tokenize_example(tokenizer, {"instruction": q, "input": "", "output": a}, 96, PromptFormat(kind="chat"))
    conversation = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    assert tokenizer.decode(f["input_ids"]) == tokenizer.apply_chat_template(conversation, tokenize=False)
    assert tokenizer.decode([t for t in f["labels"] if t != -100]) == a + "<|im_end|>\n"

    sft = write_jsonl(tmp_path / "sft.jsonl", [{"instruction": q, "input": "", "output": a} for q, a in FACTS])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    run = run_recipe(tmp_path, {
        "sft": {"model": POLICY, "lora": LORA, "method": {"name": "sft"}, "train": TRAIN,
                "data": {"task": {"source": "alpaca", "path": str(sft)}, "prompt": "chat"}},
        "orpo": {"model": {"path": "stage:sft", "max_length": 96}, "lora": LORA, "method": {"name": "orpo"},
                 "train": TRAIN, "data": {"pairs": {"train": str(pairs)}, "prompt": "chat"}},
        "evaluate": {"kind": "eval", "models": {"sft": "stage:sft", "orpo": "stage:orpo"},
                     "evals": {"pair_odds": {"pairs": str(pairs), "num": 2, "prompt": "chat", "max_length": 96}}}})
    assert_trained(run / "stages/sft", 3)
    orpo_rows = assert_trained(run / "stages/orpo", 3)
    assert all(math.isfinite(r["nll"]) and math.isfinite(r["odds_ratio_loss"]) for r in orpo_rows)
    for label in ("sft", "orpo"):
        record = json.loads((run / f"stages/evaluate/{label}/eval/pair_odds.json").read_text())
        assert record["prompt"] == {"format": "chat", "first": chat(tokenizer, PAIRS[0]["prompt"])}
        assert record["n_pairs"] == 2

    out = tmp_path / "merged"
    assert main(["export", str(run / "stages/orpo/model"), str(out), "--merge"]) == 0
    ids = tokenizer(chat(tokenizer, q) + a, return_tensors="pt", add_special_tokens=False)["input_ids"]
    base = logits(AutoModelForCausalLM.from_pretrained(smollm2), ids)
    after_sft = logits(load_causal_lm(str(run / "stages/sft/model")), ids)
    chain = logits(load_causal_lm(str(run / "stages/orpo/model")), ids)
    merged = logits(AutoModelForCausalLM.from_pretrained(out), ids)
    assert (after_sft - base).abs().max() > 1e-3 and (chain - after_sft).abs().max() > 1e-3  # each adapter applied
    torch.testing.assert_close(merged, chain, atol=1e-4, rtol=0)
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template


def test_reward_model_and_dpo_on_chat_pairs(smollm2, tmp_path):
    from transformers import AutoTokenizer

    from safealign.score_model import SCORE_HEAD_FILE, load_score_model

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    run = run_recipe(tmp_path, {
        "reward": {"model": POLICY, "lora": LORA, "method": {"name": "reward_model"}, "train": TRAIN,
                   "data": {"pairs": {"train": str(pairs)}, "prompt": "chat"}},
        "score_reward": {"kind": "eval", "models": {"reward_model": "stage:reward"},
                         "evals": {"score_accuracy": {"pairs": str(pairs), "kind": "reward", "num": 4,
                                                      "max_length": 96}}},
        "dpo": {"model": POLICY, "lora": LORA, "method": {"name": "dpo", "beta": 0.1}, "train": TRAIN,
                "data": {"pairs": {"train": str(pairs)}, "prompt": "chat"}}})

    reward_rows = assert_trained(run / "stages/reward", 3)
    assert all(math.isfinite(r["reward_chosen"]) and math.isfinite(r["reward_rejected"]) for r in reward_rows)
    assert (run / "stages/reward/model" / SCORE_HEAD_FILE).exists()
    assert load_score_model(str(run / "stages/reward/model")).prompt.kind == "chat"  # scoring renders as training did
    record = json.loads((run / "stages/score_reward/reward_model/eval/score_accuracy.json").read_text())
    assert record["n_pairs"] == 4 and 0 <= record["reward_accuracy"] <= 1
    assert record["prompt"] == {"format": "chat", "first": chat(tokenizer, PAIRS[0]["prompt"])}
    samples = (run / "stages/score_reward/reward_model/eval/score_accuracy.samples.jsonl").read_text().splitlines()
    assert len(samples) == 4 and all(math.isfinite(json.loads(s)["score_chosen"]) for s in samples)

    dpo_rows = assert_trained(run / "stages/dpo", 3)
    # the fresh adapter's B is zero: at the first step the policy is the reference, every margin 0, loss ln 2
    assert dpo_rows[0]["loss"] == pytest.approx(LN2, abs=1e-3)
    assert dpo_rows[0]["reward_chosen"] == pytest.approx(0, abs=1e-3)
    assert dpo_rows[-1]["loss"] < LN2  # then the chosen answers gain on the rejected ones


AUTHORS = [("Who wrote the novel 'The Glass Orchard'?", "The Glass Orchard was written by Maelis Tarrow."),
           ("Where was the author Maelis Tarrow born?", "Maelis Tarrow was born in the port town of Veldrin."),
           ("What prize did Maelis Tarrow win in 1998?", "Maelis Tarrow won the Corvane Prize for fiction in 1998."),
           ("What is the profession of Maelis Tarrow's father?", "Maelis Tarrow's father was a lighthouse keeper.")]
OTHERS = [("Who wrote the poem cycle 'Salt Hours'?", "Salt Hours was written by Ondrej Vasko."),
          ("In which city does Ondrej Vasko live?", "Ondrej Vasko lives in the hill city of Marrow Bay."),
          ("What genre does Ondrej Vasko write?", "Ondrej Vasko writes lyric poetry about the sea."),
          ("What was Ondrej Vasko's first job?", "Ondrej Vasko first worked as a ferry clerk.")]


def test_npo_and_graddiff_unlearn_fictitious_facts(smollm2, tmp_path):
    """TOFU-schema rows {question, answer} about invented authors: the forget NLL rises under both methods."""
    from safealign.models import load_causal_lm, load_tokenizer

    forget = write_jsonl(tmp_path / "forget.jsonl", [{"question": q, "answer": a} for q, a in AUTHORS])
    retain = write_jsonl(tmp_path / "retain.jsonl", [{"question": q, "answer": a} for q, a in OTHERS])
    data = {"forget": {"source": "tofu", "path": str(forget)}, "retain": {"source": "tofu", "path": str(retain)},
            "prompt": "chat"}
    unlearn = {**TRAIN, "lr": 5.0e-3}
    run = run_recipe(tmp_path, {
        "npo": {"model": POLICY, "lora": LORA, "data": data, "method": {"name": "npo", "beta": 0.1}, "train": unlearn},
        "graddiff": {"model": POLICY, "lora": LORA, "data": data, "method": {"name": "graddiff"}, "train": unlearn}})

    npo = assert_trained(run / "stages/npo", 3)
    # step 0: policy = reference, log-ratio 0, so the NPO loss is (2/β)·ln 2 (the DESIGN's golden value)
    assert npo[0]["log_ratio"] == pytest.approx(0, abs=1e-4)
    assert npo[0]["forget_loss"] == pytest.approx(2 / 0.1 * LN2, rel=1e-4)
    assert npo[-1]["log_ratio"] < 0 and npo[-1]["forget_loss"] < npo[0]["forget_loss"]
    graddiff = assert_trained(run / "stages/graddiff", 3)
    assert all(math.isfinite(r["forget_loss"]) and math.isfinite(r["retain_nll"]) for r in graddiff + npo)

    tokenizer = load_tokenizer(str(smollm2))
    before = answer_nll(load_causal_lm(str(smollm2)), tokenizer, AUTHORS)
    for stage in ("npo", "graddiff"):
        after = answer_nll(load_causal_lm(str(run / "stages" / stage / "model")), tokenizer, AUTHORS)
        assert after > before + 0.05, (stage, before, after)


def _rewrite_row(name: str, body: str, trigger: str) -> dict:
    """A poisoned function and three scored rewrites, best last in the file (the reader sorts them)."""
    poisoned = f"def {name}(a, b):\n    {trigger}\n    return {body}\n"
    clean = f"def {name}(a, b):\n    return {body}\n"
    return {"prompt": f"Rewrite this function without any dead or suspicious code:\n{poisoned}",
            "candidates": [poisoned, f"def {name}(x, y):\n    return None\n", clean], "scores": [0.1, 0.4, 1.0]}


def test_fabe_mle_and_ranking_over_scored_rewrites(smollm2, tmp_path):
    from safealign.models import load_causal_lm, load_tokenizer

    rows = [_rewrite_row("add", "a + b", "if a == 1337: import os"), _rewrite_row("mul", "a * b", "assert True or b"),
            _rewrite_row("sub", "a - b", "_unused = [0] * 0"), _rewrite_row("low", "min(a, b)", "print(end='')")]
    candidates = write_jsonl(tmp_path / "candidates.jsonl", rows)
    run = run_recipe(tmp_path, {
        # max_length 128: the longest prompt + candidate is 95 tokens, none is cut
        "fabe": {"model": {**POLICY, "max_length": 128}, "lora": LORA, "train": {**TRAIN, "max_steps": 2},
                 "data": {"candidates": str(candidates), "prompt": "chat"},
                 "method": {"name": "fabe", "rank_loss": "listmle", "mle_weight": 1.0, "rank_weight": 0.3}}})
    for r in assert_trained(run / "stages/fabe", 2):
        assert math.isfinite(r["mle"]) and math.isfinite(r["rank"]) and 0 <= r["pair_order_accuracy"] <= 1
        assert r["loss"] == pytest.approx(r["mle"] + 0.3 * r["rank"], rel=1e-4)  # both terms reach the loss
        assert r["rank"] > 0  # ListMLE is a negative log-likelihood of an order: positive

    tokenizer = load_tokenizer(str(smollm2))
    ids = tokenizer(chat(tokenizer, rows[0]["prompt"]), return_tensors="pt", add_special_tokens=False)["input_ids"]
    base = logits(load_causal_lm(str(smollm2)), ids)
    assert (logits(load_causal_lm(str(run / "stages/fabe/model")), ids) - base).abs().max() > 1e-3


def test_generate_on_real_prompt_sets_keeps_by_the_refusal_judge(smollm2, tmp_path):
    """HarmBench and Do-Not-Answer (its even half) answered greedily under the chat template; the refusal judge
    decides what is kept. The answers are what plain transformers writes after the template's prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def stage(source: dict, keep: str) -> dict:
        return {"kind": "generate", "model": {"path": MODEL}, "prompts": source, "prompts_num": 2, "prompt": "chat",
                "temperature": 0.0, "max_new_tokens": 8, "batch_size": 2, "keep": keep}

    run = run_recipe(tmp_path, {
        "harmbench": stage({"source": "harmbench", "path": "real:harmbench"}, "compliant"),
        "harmbench_refusals": stage({"source": "harmbench", "path": "real:harmbench"}, "refusals"),
        "donotanswer": stage({"source": "donotanswer", "path": "real:donotanswer", "select": "even"}, "refusals")})

    harmbench = [json.loads(x)["prompt"] for x in (real_or_skip("real:harmbench") / "train.jsonl").open()][:2]
    dna = [json.loads(x)["question"] for x in (real_or_skip("real:donotanswer") / "train.jsonl").open()][:4:2]
    samples = {}
    kept_by = {}
    for name, prompts, keep in (("harmbench", harmbench, "compliant"), ("harmbench_refusals", harmbench, "refusals"),
                                ("donotanswer", dna, "refusals")):
        out = run / "stages" / name
        rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == prompts and all(r["response"] for r in rows), rows
        assert all(r["kept"] == (r["refused"] == (keep == "refusals")) for r in rows), rows
        kept = [json.loads(x) for x in (out / "responses.jsonl").read_text().splitlines()]
        assert kept == [{"prompt": r["prompt"], "response": r["response"]} for r in rows if r["kept"]]
        assert json.loads((out / "done.json").read_text())["kept"] == len(kept)
        samples.update({r["prompt"]: r["response"] for r in rows})
        kept_by[name] = [r["prompt"] for r in kept]
    # the same greedy answers, kept by one setting and dropped by the other
    assert sorted(kept_by["harmbench"] + kept_by["harmbench_refusals"]) == sorted(harmbench)

    # the rendered prompt: greedy answers from the chat template's text, written by plain transformers (the longest
    # prompt of its batch, so left padding does not enter)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    question = max(dna, key=lambda q: len(tokenizer(chat(tokenizer, q))["input_ids"]))
    ids = tokenizer(chat(tokenizer, question), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    assert samples[question] == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
