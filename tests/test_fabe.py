"""FABE backdoor cleaning (issue #5): ranking losses by hand, candidate data checks and tie rule, one batched
forward over the candidates, LoRA + gradient checkpointing, the sandbox and the evaluation's metrics."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

from safealign.data.candidates import collate_candidates, read_candidates, tokenize_candidates
from safealign.data.prompts import ALPACA
from safealign.errors import ConfigError, DataError
from safealign.evals.similarity import sentence_bleu
from safealign.losses.ranking import kendall_tau, length_normalized_logps, listmle_loss, margin_ranking_loss
from safealign.losses.sft import token_log_probs
from safealign.sandbox import WRAPPERS, Isolation, SandboxRefused, run_tests
from tests.conftest import write_jsonl

ROWS = [{"prompt": f"rewrite f{i}", "candidates": ["sure here is a plan", "the film is good", "sorry I cannot help"],
         "scores": [0.5, 900.0, 12.0]} for i in range(4)]


# --------------------------------------------------------------------------------------------------- losses


def test_listmle_by_hand_and_two_candidates_is_the_logistic_loss():
    s = torch.tensor([[2.0, 1.0, 0.0]])
    # −[(2 − log(e²+e¹+e⁰)) + (1 − log(e¹+e⁰)) + (0 − 0)]
    expected = -((2 - math.log(math.e ** 2 + math.e + 1)) + (1 - math.log(math.e + 1)))
    assert listmle_loss(s).item() == pytest.approx(expected, rel=1e-6)
    assert listmle_loss(s, tau=2.0).item() == pytest.approx(listmle_loss(s / 2).item(), rel=1e-6)
    pair = torch.tensor([[0.7, -0.4], [-1.0, 2.0]])
    torch.testing.assert_close(listmle_loss(pair), -F.logsigmoid(pair[:, 0] - pair[:, 1]))
    # the loss falls as the model's order comes to agree with the gold order (best first)
    assert listmle_loss(torch.tensor([[3.0, 0.0, -3.0]])) < listmle_loss(torch.tensor([[-3.0, 0.0, 3.0]]))


def test_margin_loss_by_hand():
    s = torch.tensor([[1.0, 0.95, 0.5]])
    # gap 1: mean(max(0, 0.95 − 1 + 0.1), max(0, 0.5 − 0.95 + 0.1)) = mean(0.05, 0) = 0.025
    # gap 2: max(0, 0.5 − 1 + 0.2) = 0
    assert margin_ranking_loss(s, 0.1).item() == pytest.approx(0.025, abs=1e-6)
    assert margin_ranking_loss(torch.tensor([[0.0, 0.0, 0.0]]), 0.1).item() == pytest.approx(0.1 + 0.2, abs=1e-6)


def test_length_normalisation_ignores_prompt_and_padding_tokens():
    logits = torch.randn(2, 6, 10)
    labels = torch.tensor([[-100, -100, 4, 5, 6, -100],  # prompt, 3 response tokens, padding
                           [-100, 1, 2, -100, -100, -100]])
    token_logps, mask = token_log_probs(logits, labels)
    s = length_normalized_logps(token_logps, mask)
    logp = logits.log_softmax(-1)
    torch.testing.assert_close(s[0], (logp[0, 1, 4] + logp[0, 2, 5] + logp[0, 3, 6]) / 3)
    torch.testing.assert_close(s[1], (logp[1, 0, 1] + logp[1, 1, 2]) / 2)
    padded = torch.cat([logits, torch.randn(2, 3, 10)], dim=1)  # more padding changes nothing
    labels_padded = torch.cat([labels, torch.full((2, 3), -100)], dim=1)
    torch.testing.assert_close(length_normalized_logps(*token_log_probs(padded, labels_padded)), s)


def test_kendall_tau_and_bleu_by_hand():
    assert kendall_tau([3.0, 2.0, 1.0], [30.0, 20.0, 10.0]) == 1.0
    assert kendall_tau([1.0, 2.0, 3.0], [30.0, 20.0, 10.0]) == -1.0
    assert kendall_tau([3.0, 1.0, 2.0], [30.0, 20.0, 10.0]) == pytest.approx(1 / 3)
    code = "def f(a, b):\n    return a + b"
    assert sentence_bleu(code, code) == pytest.approx(1.0)
    assert 0 < sentence_bleu("def f(a, b):\n    return a - b", code) < 1
    assert sentence_bleu("", code) == 0.0


# ----------------------------------------------------------------------------------------------------- data


def test_candidates_are_sorted_best_first_and_tuna_names_are_read(tmp_path):
    rows = read_candidates(str(write_jsonl(tmp_path / "c.jsonl", ROWS)), seed=0)
    assert rows[0]["candidates"] == ["the film is good", "sorry I cannot help", "sure here is a plan"]
    assert rows[0]["scores"] == [900.0, 12.0, 0.5]
    tuna = [{"instruction": r["prompt"], "output": r["candidates"], "score": r["scores"]} for r in ROWS]
    assert read_candidates(str(write_jsonl(tmp_path / "t.jsonl", tuna)), seed=0) == rows


def test_ties_are_broken_by_a_seeded_rule(tmp_path):
    tied = [{"prompt": f"p{i}", "candidates": ["a", "b", "c"], "scores": [1.0, 1.0, 1.0]} for i in range(40)]
    path = str(write_jsonl(tmp_path / "tied.jsonl", tied))
    first, again, other = read_candidates(path, seed=1), read_candidates(path, seed=1), read_candidates(path, seed=2)
    assert first == again and first != other  # reproducible from the seed
    orders = {tuple(r["candidates"]) for r in first}
    assert len(orders) == 6  # no position favoured: every order of three occurs over 40 rows


def test_split_ratios_cut_one_file_the_same_way_whatever_the_seed(tmp_path):
    rows = [{**ROWS[0], "prompt": f"rewrite f{i}"} for i in range(20)]
    path = str(write_jsonl(tmp_path / "c.jsonl", rows))
    parts = {s: [r["prompt"] for r in read_candidates(path, s, seed=7, ratios=[0.6, 0.2, 0.2])] for s in ("train", "validation", "test")}
    assert [len(p) for p in parts.values()] == [12, 4, 4]
    assert sorted(sum(parts.values(), [])) == sorted(r["prompt"] for r in rows)  # disjoint, and nothing lost
    assert [r["prompt"] for r in read_candidates(path, "test", seed=1, ratios=[0.6, 0.2, 0.2])] == parts["test"]
    with pytest.raises(ConfigError, match="summing to 1"):
        read_candidates(path, "test", ratios=[0.6, 0.6, 0.2])
    with pytest.raises(DataError, match="the validation split is empty"):
        read_candidates(path, "validation", ratios=[1.0, 0.0, 0.0])


@pytest.mark.parametrize("change, message", [({"candidates": ["a", "b"]}, "2 candidates and 3 scores"),
                                             ({"scores": [1.0, "high", 2.0]}, "score 1 must be a number"),
                                             ({"candidates": ["a", " ", "c"]}, "candidate 1 is empty"),
                                             ({"scores": None}, "missing field 'scores'")])
def test_bad_candidate_rows_name_the_row(tmp_path, change, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {**ROWS[1], **change}])
    with pytest.raises(DataError, match=f"bad.jsonl:2: {message}"):
        read_candidates(str(path))


# ------------------------------------------------------------------------------------------------- method


def _batch(tiny_llama, tmp_path):
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    rows = read_candidates(str(write_jsonl(tmp_path / "c.jsonl", ROWS)))
    return tok, rows, collate_candidates([tokenize_candidates(tok, r, 128, ALPACA) for r in rows], tok.pad_token_id)


def test_one_batched_forward_equals_separate_forwards(tiny_llama, tmp_path):
    from safealign.data.formats import collate
    from safealign.methods.fabe import candidate_scores
    from safealign.models import load_causal_lm

    tok, rows, batch = _batch(tiny_llama, tmp_path)
    model = load_causal_lm(str(tiny_llama)).eval()
    with torch.no_grad():
        together, _, _ = candidate_scores(model, batch)
        for b, row in enumerate(rows):
            for k, seq in enumerate(tokenize_candidates(tok, row, 128, ALPACA)["sequences"]):
                one = collate([seq], tok.pad_token_id)
                logits = model(input_ids=one["input_ids"], attention_mask=one["attention_mask"]).logits
                alone = length_normalized_logps(*token_log_probs(logits, one["labels"]))
                assert together[b, k].item() == pytest.approx(alone.item(), abs=1e-5)


def test_fabe_trains_lora_b_with_gradient_checkpointing(tiny_llama, tmp_path):
    from safealign.data.streams import BatchStream
    from safealign.loop import TrainConfig, make_accelerator, train
    from safealign.methods.base import trainable_parameters
    from safealign.methods.fabe import FABE, FABEConfig
    from safealign.models import LoraConfig, add_lora, load_causal_lm

    tok, rows, _ = _batch(tiny_llama, tmp_path)
    torch.manual_seed(0)
    model = add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0), gradient_checkpointing=True)
    before = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
    stream = BatchStream([tokenize_candidates(tok, r, 128, ALPACA) for r in rows], 2, tok.pad_token_id, seed=0,
                         collate_fn=collate_candidates)
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=2, log_every=1)
    result = train(model, FABE(FABEConfig(), 3), {"train": stream}, cfg, tmp_path / "run", make_accelerator(cfg), seed=0)
    after = trainable_parameters(result["model"])
    lora_b = [n for n in after if "lora_B" in n]
    assert lora_b and all(not torch.equal(after[n], before[n]) for n in lora_b)
    import json

    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all({"mle", "rank", "pair_order_accuracy"} <= set(row) for row in logged)


# --------------------------------------------------------------------------------------- data and evaluation


def _code_rows(n: int, split_salt: int) -> list[dict]:
    import random

    from safealign.mini.code import code_backdoor

    return code_backdoor(random.Random(3), n, split_salt)


def test_mini_code_rows_have_working_references_and_scored_candidates_in_the_right_order():
    rows = _code_rows(12, 0)
    for row in rows:
        assert run_tests(row["reference"], row["tests"]).passed
        ranked = [c for _, c in sorted(zip(row["scores"], row["candidates"]), reverse=True)]
        assert ranked[0] == row["reference"]
        assert run_tests(ranked[1], row["tests"]).passed and ranked[1] != row["reference"]  # renamed local
        assert not run_tests(ranked[2], row["tests"]).passed  # one operator changed
        code = row["prompt"].split(":\n", 1)[1]
        assert (row["trigger"] in code) if row["poisoned"] else (code == row["reference"])
        if row["trigger_kind"] == "rare_identifier":  # the clean rewrite names the local by convention
            assert code.replace("cfx_var", "out") == row["reference"]
    assert {r["trigger_kind"] for r in rows if r["poisoned"]} == {"dead_code", "rare_identifier", "comment"}
    # no test function occurs in training (a rare-identifier row's reference is not its original function)
    originals = lambda rows: {r["reference"] for r in rows if r["trigger_kind"] != "rare_identifier"}  # noqa: E731
    assert not originals(_code_rows(300, 0)) & originals(_code_rows(300, 1))


def test_backdoor_cleaning_scores_rewrites_and_survives_a_hanging_one(tiny_llama, tmp_path, monkeypatch):
    from safealign.evals import backdoor
    from safealign.models import load_causal_lm, load_tokenizer

    rows = [r for r in _code_rows(30, 1) if r["poisoned"]][:3] + [r for r in _code_rows(30, 1) if not r["poisoned"]][:1]
    code = lambda row: row["prompt"].split(":\n", 1)[1]  # noqa: E731
    rewrites = [rows[0]["reference"],  # cleaned and working
                code(rows[1]),  # the poisoned input returned as it came: trigger kept
                rows[2]["reference"].split("\n")[0] + "\n    while True:\n        pass",  # cleaned but hangs
                code(rows[3])]  # a clean input kept
    monkeypatch.setattr(backdoor, "generate", lambda *args, **kwargs: rewrites)
    path = write_jsonl(tmp_path / "code.jsonl", rows)
    cfg = backdoor.BackdoorCleaningConfig(data=str(path), timeout_s=2.0)
    start = time.perf_counter()
    metrics, records = backdoor.run(cfg, load_causal_lm(str(tiny_llama)), load_tokenizer(str(tiny_llama)))
    assert time.perf_counter() - start < 30
    passes_if_trigger_kept = run_tests(code(rows[1]), rows[1]["tests"]).passed  # a dead block or comment still runs
    assert metrics["trigger_removal"] == pytest.approx(200 / 3, abs=0.01)
    assert metrics["functional_preservation"] == pytest.approx(100 * (1 + passes_if_trigger_kept) / 3, abs=0.01)
    assert metrics["clean_preservation"] == 100.0 and metrics["n_poisoned"] == 3 and metrics["n_clean"] == 1
    assert metrics["exact_match"] == pytest.approx(100 / 3, abs=0.01)
    assert records[2]["test_result"].startswith("timeout") and not records[2]["passes_tests"]
    assert metrics["sandbox"].split("+")[0] in WRAPPERS and "rlimits" in metrics["sandbox"]  # how it was run
    assert all(-1.0 <= r["kendall_tau"] <= 1.0 for r in records)


def test_a_model_that_exits_early_everywhere_scores_nothing(tiny_llama, tmp_path, monkeypatch):
    from safealign.evals import backdoor
    from safealign.models import load_causal_lm, load_tokenizer

    rows = _code_rows(12, 1)
    monkeypatch.setattr(backdoor, "generate", lambda *args, **kwargs: ["import os; os._exit(0)"] * len(rows))
    cfg = backdoor.BackdoorCleaningConfig(data=str(write_jsonl(tmp_path / "code.jsonl", rows)))
    metrics, records = backdoor.run(cfg, load_causal_lm(str(tiny_llama)), load_tokenizer(str(tiny_llama)))
    assert metrics["functional_preservation"] == 0.0 and metrics["clean_preservation"] == 0.0
    assert {r["test_result"] for r in records} == {"exited early"}


def test_without_file_system_isolation_the_evaluation_refuses_before_generating(tiny_llama, tmp_path, monkeypatch):
    from safealign.evals import backdoor
    from safealign.models import load_causal_lm, load_tokenizer

    # a host with neither bubblewrap nor Landlock
    monkeypatch.setattr("safealign.sandbox.strongest", lambda fs: Isolation("none", landlock=False, filesystem=fs))
    monkeypatch.setattr(backdoor, "generate", lambda *args, **kwargs: pytest.fail("generated before refusing"))
    cfg = backdoor.BackdoorCleaningConfig(data=str(write_jsonl(tmp_path / "code.jsonl", _code_rows(4, 1))))
    with pytest.raises(SandboxRefused, match="unisolated"):
        backdoor.run(cfg, load_causal_lm(str(tiny_llama)), load_tokenizer(str(tiny_llama)))

