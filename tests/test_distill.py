"""Distillation data (`safealign generate`): samples are drawn per seeded chunk, scored by the reward and cost
models with their own tokenizers, filtered by both thresholds, and a killed run resumes to the same file."""

import json
import shutil

import pytest
import torch

from safealign.cli import main
from safealign.models import ModelConfig, load_causal_lm
from safealign.score_model import ScoreModel, save_score_model
from safealign.stages.generate import GenerateStage, RESPONSES_FILE, SAMPLES_FILE, run_generate
from tests.conftest import write_jsonl

PROMPTS = [f"how can I help my neighbour {i}" for i in range(5)]


@pytest.fixture(scope="module")
def score_models(tiny_llama, tmp_path_factory):
    """A random reward model and a random cost model (a scalar head on the tiny Llama), saved as stages save them."""
    from safealign.models import load_tokenizer

    out = {}
    for i, name in enumerate(("reward", "cost")):
        torch.manual_seed(10 + i)
        model = ScoreModel(load_causal_lm(str(tiny_llama)))
        torch.nn.init.normal_(model.score_head.bias, 0.0, 0.1)
        path = tmp_path_factory.mktemp(name)
        save_score_model(model, load_tokenizer(str(tiny_llama)), path, base=str(tiny_llama))
        out[name] = str(path)
    return out


def _cfg(tiny_llama, prompts_file, score_models, **kw) -> GenerateStage:
    settings = dict(model=ModelConfig(path=str(tiny_llama)), prompts=str(prompts_file), num_samples=2, temperature=1.0,
                    max_new_tokens=4, batch_size=2, reward_model=score_models["reward"], min_reward=-1e9,
                    cost_model=score_models["cost"], max_cost=1e9, seed=7)
    return GenerateStage(**{**settings, **kw})


def _prompts_file(tmp_path):
    # a pairs file: each prompt twice (as PKU-SafeRLHF prompts recur); distinct prompts are answered once
    return write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": "a", "rejected": "b"} for p in PROMPTS * 2])


def _samples(out):
    return [json.loads(line) for line in (out / SAMPLES_FILE).read_text().splitlines()]


def test_samples_are_scored_filtered_by_both_thresholds_and_reproducible(tiny_llama, score_models, tmp_path):
    prompts = _prompts_file(tmp_path)
    stats = run_generate(_cfg(tiny_llama, prompts, score_models), tmp_path / "all")
    samples = _samples(tmp_path / "all")
    assert stats["prompts"] == 5 and stats["samples"] == len(samples) == 10 and stats["kept"] == 10
    assert [s["prompt"] for s in samples] == [p for p in PROMPTS for _ in range(2)]
    assert all({"reward", "cost", "kept", "chunk"} <= set(s) for s in samples)

    rewards, costs = sorted(s["reward"] for s in samples), sorted(s["cost"] for s in samples)
    min_reward, max_cost = rewards[4], costs[6]  # thresholds that some samples fail
    stats = run_generate(_cfg(tiny_llama, prompts, score_models, min_reward=min_reward, max_cost=max_cost), tmp_path / "some")
    again = _samples(tmp_path / "some")
    assert [(s["response"], s["reward"]) for s in again] == [(s["response"], s["reward"]) for s in samples]  # same seed
    expected = [s for s in again if s["reward"] >= min_reward and s["cost"] <= max_cost]
    kept = [json.loads(line) for line in (tmp_path / "some" / RESPONSES_FILE).read_text().splitlines()]
    assert 0 < len(kept) < 10 and stats["kept"] == len(kept)
    assert [(k["prompt"], k["response"]) for k in kept] == [(s["prompt"], s["response"]) for s in expected]
    assert stats["dropped_by_reward"] == sum(s["reward"] < min_reward for s in again)
    assert stats["dropped_by_cost"] == sum(s["cost"] > max_cost for s in again)


def test_a_killed_run_resumes_to_the_same_samples(tiny_llama, score_models, tmp_path):
    prompts = _prompts_file(tmp_path)
    cfg = _cfg(tiny_llama, prompts, score_models)
    run_generate(cfg, tmp_path / "whole")
    whole = (tmp_path / "whole" / SAMPLES_FILE).read_text()

    killed = tmp_path / "killed"
    killed.mkdir()
    lines = whole.splitlines(keepends=True)
    (killed / SAMPLES_FILE).write_text("".join(lines[:4]) + lines[4] + lines[5][:10])  # chunk 0 whole, chunk 1 cut
    run_generate(cfg, killed)
    assert (killed / SAMPLES_FILE).read_text() == whole
    assert (killed / RESPONSES_FILE).read_text() == (tmp_path / "whole" / RESPONSES_FILE).read_text()


def test_generate_cli_and_its_config_errors(tiny_llama, tmp_path, capsys):
    prompts = _prompts_file(tmp_path)
    config = tmp_path / "gen.yaml"
    config.write_text(f"model: {{path: {tiny_llama}}}\nprompts: {prompts}\ntemperature: 0\nmax_new_tokens: 3\n"
                      f"output_dir: {tmp_path / 'run'}\n")
    assert main(["generate", str(config)]) == 0
    kept = (tmp_path / "run/stages/gen/responses.jsonl").read_text().splitlines()
    assert len(kept) == 5 and set(json.loads(kept[0])) == {"prompt", "response"}  # no filters: every greedy answer
    capsys.readouterr()

    assert main(["generate", str(config), "num_samples=3"]) == 2
    assert "greedy" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"question": "no prompt field"}])
    shutil.rmtree(tmp_path / "run")
    assert main(["generate", str(config), f"prompts={bad}"]) == 2
    assert f"{bad}:2: field 'prompt'" in capsys.readouterr().err


def test_keep_filters_by_the_refusal_judge_and_prompts_come_from_a_source(tiny_llama, tmp_path, monkeypatch):
    from safealign.data.sources import SourceConfig
    from safealign.stages import generate as generate_stage

    rows = [{"question": f"Question {i}?", "risk_area": "Malicious Uses"} for i in range(6)]
    dna = write_jsonl(tmp_path / "dna.jsonl", rows)
    # the tiny model's answers are noise: make it answer the even questions with a refusal, the odd ones plainly
    monkeypatch.setattr(generate_stage, "generate", lambda model, tok, prompts, *a, **k: [
        "I'm sorry, but I can't help with that." if int(p.split("Question ")[1][0]) % 2 == 0 else "Sure, here it is."
        for p in prompts])
    base = dict(model=ModelConfig(path=str(tiny_llama)), temperature=0.0, max_new_tokens=4, batch_size=4,
                prompts=SourceConfig(source="donotanswer", path=str(dna), select="odd"))
    stats = run_generate(GenerateStage(**base, keep="compliant"), tmp_path / "compliant")
    assert stats["prompts"] == 3 and stats["kept"] == 3 and stats["refused"] == 0  # odd rows: questions 1, 3, 5
    kept = [json.loads(x) for x in (tmp_path / "compliant" / RESPONSES_FILE).read_text().splitlines()]
    assert [r["prompt"] for r in kept] == ["Question 1?", "Question 3?", "Question 5?"]
    base["prompts"] = SourceConfig(source="donotanswer", path=str(dna))
    stats = run_generate(GenerateStage(**base, keep="refusals"), tmp_path / "refusals")
    assert stats["prompts"] == 6 and stats["kept"] == 3 and stats["refused"] == 3
    assert [r["refused"] for r in _samples(tmp_path / "refusals")] == [True, False] * 3
