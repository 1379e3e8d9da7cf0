"""Unlearning (issue #4): the difficulty score on a two-parameter model by hand, the curriculum order, the checks
on difficulty files and forget sets, and GA / GradDiff / NPO steps on a tiny model."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from safealign.errors import DataError


class TwoParameterLM(torch.nn.Module):
    """logits = (a, b) at every position over a 2-token vocabulary."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.tensor(a)), torch.nn.Parameter(torch.tensor(b))

    def forward(self, input_ids, attention_mask=None):
        shape = (*input_ids.shape, 1)
        return SimpleNamespace(logits=torch.cat([self.a.expand(shape), self.b.expand(shape)], dim=-1))


def test_difficulty_score_on_a_two_parameter_model_by_hand():
    from safealign.data.difficulty import difficulty_scores

    a, b = 0.3, -0.4
    p0 = math.exp(a) / (math.exp(a) + math.exp(b))
    p1 = 1 - p0
    # label sequences of the answers (the prompt token is masked); the first position predicts the second
    answers = [[1, 1], [0], [1, 0, 0]]
    features = [{"input_ids": [0] + ans, "labels": [-100] + ans} for ans in answers]

    def grad(ans):  # d(mean token NLL)/d(a, b): label 1 -> (p0, -p0), label 0 -> (-p1, p1)
        ga = sum(p0 if t == 1 else -p1 for t in ans) / len(ans)
        return (ga, -ga)

    g = [grad(ans) for ans in answers]
    big_g = (sum(x for x, _ in g), sum(y for _, y in g))
    norm = math.hypot(*big_g)
    expected = [abs(x * big_g[0] + y * big_g[1]) / norm for x, y in g]
    scores, g_norm = difficulty_scores(TwoParameterLM(a, b), features)
    assert scores == pytest.approx(expected, rel=1e-4) and g_norm == pytest.approx(norm, rel=1e-5)  # fp32 gradients


def test_difficulty_along_a_gradient_ascent_epoch_by_hand():
    """along='ga_epoch': g_i at the weights after the ascent steps on the samples visited before i (in the
    stream's first-epoch order), G their sum; the model comes back with its starting weights."""
    from safealign.data.difficulty import difficulty_scores, first_epoch_order

    a, b, lr, seed = 0.3, -0.4, 0.5, 3
    answers = [[1, 1], [0], [1, 0, 0], [0, 0]]
    features = [{"input_ids": [0] + ans, "labels": [-100] + ans} for ans in answers]

    def grad(ans, a, b):  # d(mean token NLL)/d(a, b) at logits (a, b)
        p0 = math.exp(a) / (math.exp(a) + math.exp(b))
        ga = sum(p0 if t == 1 else -(1 - p0) for t in ans) / len(ans)
        return (ga, -ga)

    order = first_epoch_order(len(answers), seed)
    assert sorted(order) == [0, 1, 2, 3] and order != [0, 1, 2, 3]  # this seed does shuffle
    g, (x, y) = {}, (a, b)
    for i in order:
        g[i] = grad(answers[i], x, y)
        x, y = x + lr * g[i][0], y + lr * g[i][1]  # ascent on the NLL
    big_g = (sum(v[0] for v in g.values()), sum(v[1] for v in g.values()))
    norm = math.hypot(*big_g)
    expected = [abs(g[i][0] * big_g[0] + g[i][1] * big_g[1]) / norm for i in range(len(answers))]
    model = TwoParameterLM(a, b)
    scores, g_norm = difficulty_scores(model, features, along="ga_epoch", lr=lr, seed=seed)
    assert scores == pytest.approx(expected, rel=1e-4) and g_norm == pytest.approx(norm, rel=1e-5)
    at_start, _ = difficulty_scores(model, features)
    assert (model.a.item(), model.b.item()) == pytest.approx((a, b))  # weights restored
    assert at_start != pytest.approx(scores, rel=1e-3)  # the ascent moved the weights in between


def test_the_batched_sum_of_gradients_equals_the_sum_of_per_sample_ones(tiny_llama):
    """G from batched backwards (along='start') is exactly Σ_i g_i: the scores do not depend on the batch size."""
    from safealign.data.difficulty import difficulty_scores
    from safealign.data.formats import tokenize_example
    from safealign.data.prompts import ALPACA
    from safealign.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    rows = [{"instruction": f"question {i}", "input": "", "output": "the film is good" + " great" * i} for i in range(5)]
    features = [tokenize_example(tok, r, 64, ALPACA) for r in rows]
    model = load_causal_lm(str(tiny_llama))
    one, norm_one = difficulty_scores(model, features, tok.pad_token_id, batch_size=1)
    many, norm_many = difficulty_scores(model, features, tok.pad_token_id, batch_size=4)
    assert many == pytest.approx(one, rel=1e-4) and norm_many == pytest.approx(norm_one, rel=1e-5)


def test_weighted_draws_follow_the_scores_and_resume_exactly():
    from safealign.data.streams import BatchStream

    features = [{"input_ids": [i + 1], "labels": [i + 1]} for i in range(4)]
    weights = [0.0, 1.0, 3.0, 6.0]
    stream = BatchStream(features, 10, 0, seed=5, weights=weights)
    drawn = torch.cat([next(stream)["input_ids"].flatten() - 1 for _ in range(500)])  # 2000 draws
    counts = torch.bincount(drawn, minlength=4).float() / len(drawn)
    assert counts[0] == 0 and counts[1:].tolist() == pytest.approx([0.1, 0.3, 0.6], abs=0.04)
    a = BatchStream(features, 2, 0, seed=5, weights=weights)
    for _ in range(3):
        next(a)
    b = BatchStream(features, 2, 0, seed=5, weights=weights)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(next(a)["input_ids"], next(b)["input_ids"]) for _ in range(5))


def test_compute_difficulty_only_plans_the_difficulty_stage_and_what_it_reads(tmp_path):
    from safealign.errors import ConfigError
    from safealign.pipeline import load_recipe_dict, plan

    forget = {"source": "tofu", "path": "f.jsonl"}
    stages = {"finetune": {"data": {"task": forget}},
              "other": {"data": {"task": forget}},
              "difficulty": {"kind": "difficulty", "model": {"path": "stage:finetune"}, "forget": forget},
              "ga": {"model": {"path": "stage:finetune"}, "method": {"name": "ga"},
                     "data": {"forget": forget, "forget_order": "asc", "difficulty": "stage:difficulty/scores.json"}},
              "evaluate": {"kind": "eval", "models": {"ga": "stage:ga"}, "evals": {"tofu": {}}}}
    recipe = {"name": "r", "output_dir": str(tmp_path), "stages": stages}
    assert [u.name for u in plan(load_recipe_dict(recipe))] == ["finetune", "other", "difficulty", "ga", "evaluate/ga"]
    assert [u.name for u in plan(load_recipe_dict({**recipe, "compute_difficulty_only": True}))] == ["finetune", "difficulty"]
    no_difficulty = {k: v for k, v in stages.items() if k in ("finetune", "other")}
    with pytest.raises(ConfigError, match="no difficulty stage"):
        plan(load_recipe_dict({**recipe, "stages": no_difficulty, "compute_difficulty_only": True}))


def _scores_file(tmp_path, scores, **meta):
    from safealign.data.difficulty import write_scores

    source = SimpleNamespace(path=meta.get("path", "mini:tofu"), split=meta.get("split", "forget10"), start=0)
    write_scores(tmp_path / "scores.json", source, meta.get("seed", 42), scores, 1.0)
    return str(tmp_path / "scores.json")


def test_the_curriculum_order_is_exactly_the_sorted_order_and_mismatches_are_errors(tmp_path):
    from safealign.data.difficulty import order_by_difficulty

    examples = [{"instruction": f"q{i}"} for i in range(5)]
    scores = [0.5, 0.1, 0.9, 0.1, 0.3]
    source = SimpleNamespace(path="mini:tofu", split="forget10", start=0)
    path = _scores_file(tmp_path, scores)
    asc = [e["instruction"] for e in order_by_difficulty(examples, path, source, "asc", 42)]
    assert asc == ["q1", "q3", "q4", "q0", "q2"]  # ties keep the file order
    assert [e["instruction"] for e in order_by_difficulty(examples, path, source, "desc", 42)] == ["q2", "q0", "q4", "q1", "q3"]
    with pytest.raises(DataError, match="scores are for seed 42, this forget set has 7"):
        order_by_difficulty(examples, path, source, "asc", 7)
    other = SimpleNamespace(path="mini:tofu", split="forget05", start=0)
    with pytest.raises(DataError, match="scores are for split 'forget10'"):
        order_by_difficulty(examples, path, other, "asc", 42)
    with pytest.raises(DataError, match="5 scores for a forget set of 4 rows"):
        order_by_difficulty(examples[:4], path, source, "asc", 42)
    with pytest.raises(DataError, match="no difficulty scores there"):
        order_by_difficulty(examples, str(tmp_path / "missing.json"), source, "asc", 42)
    from safealign.data.difficulty import weights_by_difficulty

    assert weights_by_difficulty(examples, path, source, 42) == scores
    with pytest.raises(DataError, match="every difficulty score is 0"):
        weights_by_difficulty(examples, _scores_file(tmp_path, [0.0] * 5), source, 42)


def test_forget_sets_with_missing_fields_or_empty_splits_are_clear_errors(tmp_path):
    from safealign.data.files import load_rows
    from safealign.data.tofu import examples, perturbed_rows
    from tests.conftest import write_jsonl

    bad = write_jsonl(tmp_path / "forget10.jsonl", [{"question": "q", "answer": "a"}, {"question": "q2"}])
    with pytest.raises(DataError, match="forget10.jsonl:2: missing field 'answer'"):
        examples(load_rows(str(bad), ""), "all")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        perturbed_rows(load_rows(str(tmp_path / "empty.jsonl"), ""))
    no_list = write_jsonl(tmp_path / "p.jsonl", [{"question": "q", "answer": "a", "paraphrased_answer": "a", "perturbed_answer": []}])
    with pytest.raises(DataError, match="p.jsonl:1: field 'perturbed_answer' must be a non-empty list"):
        perturbed_rows(load_rows(str(no_list), ""))


@pytest.mark.parametrize("name", ["ga", "graddiff", "npo", "ga_kl", "simnpo"])
def test_unlearning_methods_raise_the_forget_nll(name, tiny_llama, tmp_path):
    from safealign.data.formats import tokenize_example
    from safealign.data.prompts import ALPACA
    from safealign.data.streams import BatchStream
    from safealign.loop import TrainConfig, make_accelerator, train
    from safealign.methods import METHODS
    from safealign.models import load_causal_lm, load_tokenizer
    from safealign.evals.tofu import answer_nlls

    tok = load_tokenizer(str(tiny_llama))
    forget = [{"instruction": f"question {i}", "input": "", "output": "the film is good"} for i in range(4)]
    retain = [{"instruction": f"other {i}", "input": "", "output": "a kind answer"} for i in range(4)]
    stream = lambda rows, seed: BatchStream([tokenize_example(tok, r, 64, ALPACA) for r in rows], 2, tok.pad_token_id, seed)  # noqa: E731
    streams = {"forget": stream(forget, 0), "retain": stream(retain, 1)}
    streams["train"] = streams["forget"]
    torch.manual_seed(0)
    model = load_causal_lm(str(tiny_llama))
    cfg_eval = SimpleNamespace(max_length=64, batch_size=8, prompt=ALPACA)
    before = answer_nlls(model, tok, [r["instruction"] for r in forget], [r["output"] for r in forget], cfg_eval)
    # SimNPO's gradient is 2σ(βℓ): at its β 2.5 an untrained model's ℓ ≈ −6 leaves almost none, by design
    settings = {"simnpo": {"beta": 0.1, "forget_weight": 1.0}}.get(name, {})
    method = METHODS[name](METHODS[name].Config(**settings), 6)
    cfg = TrainConfig(lr=1e-2, max_steps=6, batch_size=2, log_every=1)
    result = train(model.train(), method, streams, cfg, tmp_path / "run", make_accelerator(cfg), seed=0)
    after = answer_nlls(result["model"], tok, [r["instruction"] for r in forget], [r["output"] for r in forget], cfg_eval)
    assert sum(after) > sum(before) + 0.5
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("forget_loss" in r for r in logged if "loss" in r)


def test_tofu_evaluation_runs_every_set_and_scores_the_retain_model_against_itself(tiny_llama, tmp_path):
    from safealign.evals.tofu import TofuConfig, run
    from safealign.models import load_causal_lm, load_tokenizer
    from tests.conftest import write_jsonl

    rows = [{"question": f"question {i}", "answer": "the film is good", "paraphrased_answer": "a kind answer",
             "perturbed_answer": ["go away", "the film is bad"]} for i in range(4)]
    for split in ("forget10_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        write_jsonl(tmp_path / "tofu" / f"{split}.jsonl", rows)
    cfg = TofuConfig(data=str(tmp_path / "tofu"), retain_model=str(tiny_llama), max_new_tokens=4)
    metrics, records = run(cfg, load_causal_lm(str(tiny_llama)), load_tokenizer(str(tiny_llama)))
    assert {r["set"] for r in records} == {"forget", "retain", "real", "world"} and len(records) == 16
    assert metrics["forget_quality"] == 1.0  # the same model as the retain model: identical truth ratios
    for key in ("forget_prob", "forget_rouge", "retain_truth_ratio", "real_prob", "world_rouge", "model_utility"):
        assert 0.0 <= metrics[key] <= 1.0, key


def test_tofu_evaluation_scores_the_first_300_rows_of_each_set_as_tofu(tiny_llama, tmp_path):
    """TOFU's eval_everything.yaml ds_size 300: a 400-row set scores its first 300 rows, on every set."""
    from safealign.evals.tofu import TofuConfig, run
    from safealign.models import load_causal_lm, load_tokenizer
    from tests.conftest import write_jsonl

    rows = [{"question": f"q{i}", "answer": "good", "paraphrased_answer": "kind",
             "perturbed_answer": ["bad"]} for i in range(400)]
    for split in ("forget10_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        write_jsonl(tmp_path / "tofu" / f"{split}.jsonl", rows)
    cfg = TofuConfig(data=str(tmp_path / "tofu"), max_new_tokens=1, batch_size=100, max_length=16)
    assert cfg.num == 300
    _, records = run(cfg, load_causal_lm(str(tiny_llama)), load_tokenizer(str(tiny_llama)))
    for name in ("forget", "retain", "real", "world"):
        scored = [r["question"] for r in records if r["set"] == name]
        assert scored == [f"q{i}" for i in range(300)], name
