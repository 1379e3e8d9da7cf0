"""The lm-evaluation-harness wrapper runs offline on a local task with a tiny model and writes results.json
and results.csv; its accuracy is recomputed here from the model's own choice log-likelihoods."""

import csv
import json

import pytest
import torch

from tests.conftest import write_jsonl

DOCS = [{"question": f"Pick the word number {i}:", "choices": [" red", " blue", " green"], "answer": i % 3} for i in range(6)]


def test_lm_harness_runs_a_local_task_offline_and_writes_json_and_csv(tiny_llama, tmp_path):
    from safealign.evals.lm_harness import LmHarnessConfig, multiple_choice_task, run
    from safealign.models import load_causal_lm, load_tokenizer

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    (tasks / "tiny_choice.yaml").write_text(multiple_choice_task("tiny_choice", data))
    model, tok = load_causal_lm(str(tiny_llama)).eval(), load_tokenizer(str(tiny_llama))
    cfg = LmHarnessConfig(tasks=["tiny_choice"], include_path=str(tasks), batch_size=4)
    metrics, rows = run(cfg, model, tok, tmp_path / "eval")

    # the same accuracy by hand: the choice with the highest summed log-likelihood after the question
    right = 0
    with torch.no_grad():
        for doc in DOCS:
            context = tok(doc["question"])["input_ids"]
            scores = []
            for choice in doc["choices"]:
                ids = context + tok(choice, add_special_tokens=False)["input_ids"]
                logps = model(input_ids=torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
                scores.append(sum(logps[t - 1, ids[t]].item() for t in range(len(context), len(ids))))
            right += scores.index(max(scores)) == doc["answer"]
    assert rows[0]["value"] == pytest.approx(right / len(DOCS), abs=1e-9)
    assert metrics["tiny_choice/acc"] == round(right / len(DOCS), 4)
    raw = json.loads((tmp_path / "eval" / "lm_harness.results.json").read_text())
    assert raw["results"]["tiny_choice"]["acc,none"] == pytest.approx(metrics["tiny_choice/acc"], abs=1e-4)
    table = list(csv.DictReader(open(tmp_path / "eval" / "lm_harness.results.csv")))
    assert [(r["task"], r["metric"]) for r in table] == [("tiny_choice", "acc")] and rows[0]["value"] == raw["results"]["tiny_choice"]["acc,none"]


def test_an_unknown_task_is_a_clear_error(tiny_llama, tmp_path):
    from safealign.errors import SafealignError
    from safealign.evals.lm_harness import LmHarnessConfig, run
    from safealign.models import load_causal_lm, load_tokenizer

    (tmp_path / "tasks").mkdir()
    with pytest.raises(SafealignError, match="unknown task\\(s\\) nope"):
        run(LmHarnessConfig(tasks=["nope"], include_path=str(tmp_path / "tasks")), load_causal_lm(str(tiny_llama)),
            load_tokenizer(str(tiny_llama)), tmp_path)
