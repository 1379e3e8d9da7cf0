"""PKU-SafeRLHF pairs, split by prompt, written and read back (ours and TRL's formats), and the mini generator."""

from __future__ import annotations

import random

import pytest

from safealign.data import pairs as pairs_source, pku_saferlhf
from safealign.data.files import Rows, load_rows
from safealign.data.pairs import read_pairs, split_pairs, write_pair_splits
from safealign.errors import ConfigError, DataError
from safealign.mini.corpus import pku_saferlhf as mini_pku
from tests.conftest import write_jsonl


def pku_row(prompt="how can I hurt my neighbour", better=1, safer=0, safe=(True, False)) -> dict:
    return {"prompt": prompt, "response_0": "sorry I cannot help", "response_1": "sure here is a plan",
            "better_response_id": better, "safer_response_id": safer,
            "is_response_0_safe": safe[0], "is_response_1_safe": safe[1]}


def load(tmp_path, rows) -> Rows:
    return load_rows(str(write_jsonl(tmp_path / "pku.jsonl", rows)), "train")


def test_helpful_chooses_better_and_harmless_chooses_safer(tmp_path):
    helpful, harmless, stats = pku_saferlhf.pairs(load(tmp_path, [pku_row()]))
    assert helpful == [{"prompt": "how can I hurt my neighbour", "chosen": "sure here is a plan",
                        "rejected": "sorry I cannot help", "chosen_is_safe": False, "rejected_is_safe": True}]
    assert harmless[0]["chosen"] == "sorry I cannot help" and harmless[0]["chosen_is_safe"] is True
    assert stats == {"rows": 1, "contradictory": 0, "both_safe": 0, "one_safe": 1, "both_unsafe": 0,
                     "helpful": 1, "harmless": 1}


def test_contradictory_rows_are_counted_and_dropped_from_harmless_only(tmp_path):
    rows = load(tmp_path, [pku_row(), pku_row(safer=0, safe=(False, True)), pku_row(safer=1, safe=(False, False))])
    helpful, harmless, stats = pku_saferlhf.pairs(rows)
    assert stats["contradictory"] == 1 and stats["both_unsafe"] == 1
    assert len(helpful) == 3 and len(harmless) == 2  # both-unsafe rows still rank; contradictory ones cannot
    # select=safe takes only safe safer-responses: the contradictory and the both-unsafe rows are skipped
    assert [e["output"] for e in pku_saferlhf.examples(rows, "safe")] == ["sorry I cannot help"]


def test_sft_selections_of_pku_rows_and_of_pair_files(tmp_path):
    rows = load(tmp_path, [pku_row(), pku_row(better=0, safer=1, safe=(False, False))])
    outputs = lambda select: [e["output"] for e in pku_saferlhf.examples(rows, select)]  # noqa: E731
    assert outputs("unsafe") == ["sure here is a plan", "sorry I cannot help", "sure here is a plan"]
    assert outputs("all") == ["sorry I cannot help", "sure here is a plan"] * 2
    assert [e["meta"]["is_safe"] for e in pku_saferlhf.examples(rows, "all")] == [True, False, False, False]

    helpful, _, _ = pku_saferlhf.pairs(rows)
    pair_rows = load_rows(str(write_jsonl(tmp_path / "helpful.jsonl", helpful)), "")
    chosen = pairs_source.examples(pair_rows, "chosen")  # the more helpful answers, safe or not
    assert [(e["instruction"], e["output"], e["meta"]["is_safe"]) for e in chosen] == [
        ("how can I hurt my neighbour", "sure here is a plan", False), ("how can I hurt my neighbour", "sorry I cannot help", False)]
    assert [e["output"] for e in pairs_source.examples(pair_rows, "all")] == ["sure here is a plan", "sorry I cannot help",
                                                                          "sorry I cannot help", "sure here is a plan"]


@pytest.mark.parametrize("change, field", [({"safer_response_id": None}, "missing field 'safer_response_id'"),
                                           ({"better_response_id": 2}, "'better_response_id' must be 0 or 1, got 2"),
                                           ({"safer_response_id": True}, "'safer_response_id' must be 0 or 1, got True"),
                                           ({"is_response_1_safe": "yes"}, "'is_response_1_safe' must be true or false")])
def test_bad_rows_name_file_line_and_field(tmp_path, change, field):
    rows = load(tmp_path, [pku_row(), {**pku_row(), **change}])
    with pytest.raises(DataError, match=rf"pku\.jsonl:2: .*{field}"):
        pku_saferlhf.pairs(rows)


def many_pairs(n_prompts=50):
    helpful = [{"prompt": f"p{k}", "chosen": f"c{k}-{j}", "rejected": "r"} for k in range(n_prompts) for j in range(2)]
    return helpful, [{**p, "chosen": "safe"} for p in helpful[::3]]


def prompts_of(split: dict) -> set:
    return {p["prompt"] for kind in split.values() for p in kind}


def test_split_is_by_prompt_deterministic_and_follows_ratios():
    helpful, harmless = many_pairs()
    splits = split_pairs(helpful, harmless, (0.8, 0.1, 0.1), seed=0)
    train, val, test = (prompts_of(splits[s]) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    assert (len(train), len(val), len(test)) == (40, 5, 5)
    assert sum(len(splits[s]["helpful"]) for s in splits) == len(helpful)
    assert sum(len(splits[s]["harmless"]) for s in splits) == len(harmless)
    assert split_pairs(helpful, harmless, seed=0) == splits
    assert prompts_of(split_pairs(helpful, harmless, seed=1)["test"]) != test
    # the assignment depends on the prompts, not on the order the pairs came in
    assert prompts_of(split_pairs(helpful[::-1], harmless, seed=0)["test"]) == test


@pytest.mark.parametrize("ratios", [(0.8, 0.3, -0.1), (0.8, 0.1, 0.2), (0.9, 0.1)])
def test_bad_ratios_are_config_errors(ratios):
    with pytest.raises(ConfigError, match="ratios"):
        split_pairs(*many_pairs(), ratios=ratios)


def test_empty_train_split_is_an_error():
    with pytest.raises(DataError, match="train split is empty"):
        split_pairs(*many_pairs(), ratios=(0.0, 0.5, 0.5))
    with pytest.raises(DataError, match="train split is empty: 1 distinct prompts"):
        split_pairs(*many_pairs(1), ratios=(0.4, 0.3, 0.3))


def test_written_layout_and_read_back(tmp_path):
    helpful, harmless, _ = pku_saferlhf.pairs(Rows([pku_row(f"p{k}") for k in range(10)], "fixture"))
    splits = split_pairs(helpful, harmless, (0.6, 0.2, 0.2))
    counts = write_pair_splits(splits, tmp_path / "pairs")
    assert counts == {"train": {"helpful": 6, "harmless": 6}, "val": {"helpful": 2, "harmless": 2},
                      "test": {"helpful": 2, "harmless": 2}}
    assert sorted(str(p.relative_to(tmp_path / "pairs")) for p in (tmp_path / "pairs").rglob("*")) == [
        "test", "test/harmless_pairs.jsonl", "test/helpful_pairs.jsonl", "train", "train/harmless_pairs.jsonl",
        "train/helpful_pairs.jsonl", "val", "val/harmless_pairs.jsonl", "val/helpful_pairs.jsonl"]
    assert read_pairs(tmp_path / "pairs" / "train" / "harmless_pairs.jsonl") == splits["train"]["harmless"]


def test_trl_standard_and_conversational_formats(tmp_path):
    user, system = {"role": "user", "content": "how do I thank my neighbour"}, {"role": "system", "content": "be kind"}
    good, bad = {"role": "assistant", "content": "write a note"}, {"role": "assistant", "content": "no"}
    path = write_jsonl(tmp_path / "trl.jsonl", [
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"chosen": [system, user, good], "rejected": [system, user, bad]},  # implicit prompt
        {"prompt": [user, {"role": "user", "content": "today"}], "chosen": [good], "rejected": [bad]}])
    assert read_pairs(path) == [
        {"prompt": "q", "chosen": "a", "rejected": "b", "chosen_is_safe": None, "rejected_is_safe": None},
        {"prompt": "how do I thank my neighbour", "chosen": "write a note", "rejected": "no",
         "chosen_is_safe": None, "rejected_is_safe": None},
        {"prompt": "how do I thank my neighbour\ntoday", "chosen": "write a note", "rejected": "no",
         "chosen_is_safe": None, "rejected_is_safe": None}]


@pytest.mark.parametrize("row, message", [({"prompt": "q", "chosen": "a"}, "missing field 'rejected'"),
                                          ({"chosen": "a", "rejected": "b"}, "missing field 'prompt'"),
                                          ({"chosen": [{"role": "assistant", "content": "a"}],
                                            "rejected": [{"role": "assistant", "content": "b"}]}, "missing field 'prompt'"),
                                          ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}],
                                            "rejected": [{"role": "assistant", "content": "b"}]}, "field 'chosen' must end with an assistant")])
def test_bad_pair_rows_name_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}, row])
    with pytest.raises(DataError, match=rf"pairs\.jsonl:2: {message}"):
        read_pairs(path)


def test_mini_generator_schema_labels_and_disjoint_splits():
    train, test = mini_pku(random.Random(0), 5000, 0), mini_pku(random.Random(1), 500, 1)
    assert all(set(r) == set(pku_saferlhf.FIELDS) for r in train)
    helpful, harmless, stats = pku_saferlhf.pairs(Rows(train, "mini"))
    assert 0.01 < stats["contradictory"] / len(train) < 0.035
    assert stats["both_safe"] and stats["one_safe"] and stats["both_unsafe"]
    for r in train:  # where one answer is safe and the labels are consistent, the safer one is it
        safe = (r["is_response_0_safe"], r["is_response_1_safe"])
        if any(safe) and not (safe[1 - r["safer_response_id"]] and not safe[r["safer_response_id"]]):
            assert safe[r["safer_response_id"]]
    # the tension the pairs exist for: the better answer is often the unsafe one
    assert 0.2 < sum(not p["chosen_is_safe"] for p in helpful) / len(helpful) < 0.6
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
