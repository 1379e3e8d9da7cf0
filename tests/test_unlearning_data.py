"""Unlearning data (issue #4): the raw-text family and its untemplated tokenization, WMDP multiple choice,
SafePKU and WHP through the existing families, and the mini world's twins (WMDP, WHP, C4, Wikitext, TOFU
holdout10) from their generators, without building the world."""

from __future__ import annotations

import json
import random
import re

import pytest

from safealign.data.files import load_rows
from safealign.data.sources import SourceConfig, load_examples
from safealign.errors import DataError
from tests.conftest import write_jsonl

# ------------------------------------------------------------------------------------------ text family


def test_text_family_reads_text_drops_blank_rows_and_names_bad_rows(tmp_path):
    # Wikitext's raw layout: blank separator rows, ` = Title = ` headings, paragraphs with spaces and newlines
    rows = [{"text": ""}, {"text": " = The Bank = \n"}, {"text": ""}, {"text": " The bank raised rates . \n"},
            {"text": "   "}, {"text": "A bio passage.", "title": "t", "doi": "x"}]
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    got = load_examples(SourceConfig("text", str(tmp_path), "test"))
    assert [e["output"] for e in got] == [" = The Bank = \n", " The bank raised rates . \n", "A bio passage."]
    assert [e["meta"]["index"] for e in got] == [1, 3, 5] and all(e["meta"]["raw_text"] for e in got)
    assert all(e["instruction"] == "" and e["input"] == "" for e in got)

    write_jsonl(path, [{"text": "fine"}, {"body": "no text field"}])
    with pytest.raises(DataError, match=r"test.jsonl:2: missing field 'text'"):
        load_examples(SourceConfig("text", str(path), ""))
    write_jsonl(path, [{"text": ["not", "a", "string"]}])
    with pytest.raises(DataError, match=r"test.jsonl:1: field 'text' must be a string, got list"):
        load_examples(SourceConfig("text", str(path), ""))
    write_jsonl(path, [{"text": ""}, {"text": " "}])  # only Wikitext separators: nothing to train on
    with pytest.raises(DataError, match="test.jsonl: no rows"):
        load_examples(SourceConfig("text", str(path), ""))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: no rows"):
        load_examples(SourceConfig("text", str(tmp_path / "empty.jsonl"), ""))
    with pytest.raises(DataError, match="source 'text' has no select 'unsafe'"):
        load_examples(SourceConfig("text", str(path), "", "unsafe"))


def test_a_plain_text_corpus_reads_one_row_per_line(tmp_path):
    # WMDP's code reads its cyber and retain corpus files line by line as plain text
    path = tmp_path / "cyber-retain-corpus.txt"
    path.write_text("first passage\n\nsecond passage {not json}\n")
    rows = load_rows(str(path), "")
    assert rows.rows == [{"text": "first passage"}, {"text": ""}, {"text": "second passage {not json}"}]
    assert rows.where(2) == f"{path}:3"
    got = load_examples(SourceConfig("text", str(path), ""))
    assert [(e["output"], e["meta"]["index"]) for e in got] == [("first passage", 0), ("second passage {not json}", 2)]
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "train.txt").write_text("a line\n")
    assert load_rows(str(tmp_path / "dir"), "train").rows == [{"text": "a line"}]


def test_raw_text_is_tokenized_without_the_template_and_every_token_is_labelled(tiny_llama):
    from safealign.data.formats import IGNORE_INDEX, encode_prompt, tokenize_example
    from safealign.data.prompts import ALPACA, PromptFormat, render_prompt
    from safealign.data.text import examples
    from safealign.data.files import Rows
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    text = "the film is good and the plan is bad"
    raw = examples(Rows([{"text": text}], "x"), "all")[0]
    got = tokenize_example(tok, raw, 64, ALPACA)
    body = tok(text, add_special_tokens=False)["input_ids"]
    assert got["input_ids"] == [tok.bos_token_id] + body + [tok.eos_token_id]
    assert got["labels"] == got["input_ids"]  # no -100: nothing masked
    assert "Instruction" not in tok.decode(got["input_ids"])
    assert tokenize_example(tok, raw, 64, PromptFormat(kind="chat")) == got  # whatever the prompt format
    short = tokenize_example(tok, raw, 5, ALPACA)  # one example per row, truncated (EOS cut too)
    assert short["input_ids"] == got["input_ids"][:5] and short["labels"] == short["input_ids"]

    # the same text as a templated example (no meta, as the evaluations build them) keeps the template and mask
    templated = {"instruction": "question", "input": "", "output": text}
    prompt_ids = encode_prompt(tok, render_prompt(ALPACA, tok, "question"))
    out = tokenize_example(tok, templated, 256, ALPACA)
    assert out["input_ids"][:len(prompt_ids)] == prompt_ids
    assert out["labels"][:len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)


# ---------------------------------------------------------------------------------------------- WMDP MC


def test_wmdp_mc_rows_accepts_the_real_schema_and_names_bad_rows(tmp_path):
    from safealign.data.wmdp import mc_rows

    good = [{"question": "Which animals carry the germ Varn?", "choices": ["goats", "birds", "rats", "bats"], "answer": 2},
            {"question": "Two choices?", "choices": ["yes", "no"], "answer": 0}]
    assert mc_rows(load_rows(str(write_jsonl(tmp_path / "test.jsonl", good)), "")) == good
    as_json = tmp_path / "bio_questions.json"  # WMDP's released *_questions.json: a JSON list of the same rows
    as_json.write_text(json.dumps(good))
    assert mc_rows(load_rows(str(as_json), "")) == good

    q = "q?"
    bad = [({"question": q, "answer": 0}, "missing field 'choices'"),
           ({"choices": ["a", "b"], "answer": 0}, "missing field 'question'"),
           ({"question": q, "choices": ["a", "b"]}, "missing field 'answer'"),
           ({"question": "", "choices": ["a", "b"], "answer": 0}, "field 'question' must be a non-empty string"),
           ({"question": q, "choices": "abcd", "answer": 0}, "field 'choices' must be a list of at least 2 strings"),
           ({"question": q, "choices": ["a"], "answer": 0}, "field 'choices' must be a list of at least 2 strings"),
           ({"question": q, "choices": ["a", 3], "answer": 0}, "field 'choices' must be a list of at least 2 strings"),
           ({"question": q, "choices": ["a", "b", "c", "d"], "answer": 4}, r"field 'answer' must be an index 0-3"),
           ({"question": q, "choices": ["a", "b"], "answer": -1}, r"field 'answer' must be an index 0-1"),
           ({"question": q, "choices": ["a", "b"], "answer": True}, "field 'answer' must be an index"),
           ({"question": q, "choices": ["a", "b"], "answer": "A"}, "field 'answer' must be an index")]
    for row, message in bad:
        path = write_jsonl(tmp_path / "bad.jsonl", [good[0], row])
        with pytest.raises(DataError, match=rf"bad.jsonl:2: {message}"):
            mc_rows(load_rows(str(path), ""))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: empty split"):
        mc_rows(load_rows(str(tmp_path / "empty.jsonl"), ""))


# ------------------------------------------------------------------------------------ SafePKU and WHP QA


def test_safepku_is_pku_saferlhf_unsafe_responses_and_whp_qa_reads_as_prompt_response(tmp_path):
    rows = [{"prompt": "p0", "response_0": "unsafe a", "response_1": "safe b", "better_response_id": 0,
             "safer_response_id": 1, "is_response_0_safe": False, "is_response_1_safe": True},
            {"prompt": "p1", "response_0": "unsafe c", "response_1": "unsafe d", "better_response_id": 1,
             "safer_response_id": 0, "is_response_0_safe": False, "is_response_1_safe": False},
            {"prompt": "p2", "response_0": "safe e", "response_1": "safe f", "better_response_id": 0,
             "safer_response_id": 0, "is_response_0_safe": True, "is_response_1_safe": True}]
    path = write_jsonl(tmp_path / "pku" / "train.jsonl", rows)
    forget = load_examples(SourceConfig("pku_saferlhf", str(path.parent), "train", "unsafe"))
    assert [(e["instruction"], e["output"]) for e in forget] == [("p0", "unsafe a"), ("p1", "unsafe c"), ("p1", "unsafe d")]
    assert not any(e["meta"]["is_safe"] for e in forget)

    # SOUL's hp_qa.jsonl and copyright prompts are {prompt, response}; other QA files {question, answer}
    qa = write_jsonl(tmp_path / "hp_qa.jsonl", [{"prompt": "Who found the key?", "response": "Wren found it."}])
    got = load_examples(SourceConfig("responses", str(qa), ""))
    assert (got[0]["instruction"], got[0]["output"]) == ("Who found the key?", "Wren found it.")
    qa2 = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Who found the key?", "answer": "Wren found it."}])
    got = load_examples(SourceConfig("tofu", str(qa2), ""))
    assert (got[0]["instruction"], got[0]["output"]) == ("Who found the key?", "Wren found it.")


# ------------------------------------------------------------------------------------------ mini twins


@pytest.fixture(scope="module")
def twins():
    from safealign.mini.unlearn_corpora import corpora

    return corpora(random.Random(0))


def _said(name: str, value: str, text: str) -> bool:
    return bool(re.search(rf"\b{re.escape(name)}\b", text)) and bool(re.search(rf"\b{re.escape(value)}\b", text, re.I))


def test_mini_wmdp_questions_ask_facts_stated_in_the_forget_corpus(twins, tmp_path):
    from safealign.data.files import Rows
    from safealign.data.wmdp import mc_rows
    from safealign.mini.unlearn_corpora import BIO, CYBER

    wmdp = twins["wmdp"]
    assert set(wmdp) == {"bio_forget_corpus", "bio_retain_corpus", "cyber_forget_corpus", "cyber_retain_corpus",
                         "bio", "cyber"}
    for domain, (_, names, _) in (("bio", BIO), ("cyber", CYBER)):
        questions = mc_rows(Rows(wmdp[domain], domain))
        assert len(questions) == 4 * len(names) and all(len(r["choices"]) == 4 for r in questions)
        assert {r["answer"] for r in questions} == {0, 1, 2, 3}  # the right answer is not always in one place
        forget = [r["text"] for r in wmdp[f"{domain}_forget_corpus"]]
        for row in questions:
            name = next(n for n in names if re.search(rf"\b{n}\b", row["question"]))
            about = [t for t in forget if _said(name, name, t)]
            right = row["choices"][row["answer"]]
            assert about and all(_said(name, right, t) for t in about), row  # every passage on it states it
            wrong = [c for i, c in enumerate(row["choices"]) if i != row["answer"]]
            assert not any(_said(name, c, t) for t in about for c in wrong), row
        retain = " ".join(r["text"] for r in wmdp[f"{domain}_retain_corpus"])
        assert not any(re.search(rf"\b{n}\b", retain) for n in names)  # the retain corpus never names them
    # the corpora read as raw text
    for split in ("bio_forget_corpus", "cyber_retain_corpus"):
        write_jsonl(tmp_path / "wmdp" / f"{split}.jsonl", wmdp[split])
        got = load_examples(SourceConfig("text", str(tmp_path / "wmdp"), split))
        assert len(got) == len(wmdp[split]) and all(e["meta"]["raw_text"] for e in got)


def test_mini_whp_saga_qa_and_prefixes(twins, tmp_path):
    from safealign.mini.unlearn_corpora import CHARACTERS

    whp = twins["whp"]
    text = [r["text"] for r in whp["text"]]
    assert set(whp) == {"text", "qa", "prefixes"} and set(whp["text"][0]) == {"text"}
    assert len(whp["qa"]) == 5 * len(CHARACTERS)
    for row in whp["qa"]:
        assert set(row) == {"prompt", "response"}
    for row in whp["prefixes"]:  # a passage cut in two
        assert set(row) == {"prompt", "response"} and f"{row['prompt']} {row['response']}" in text
    for split, source in (("qa", "responses"), ("prefixes", "responses"), ("text", "text")):
        write_jsonl(tmp_path / "whp" / f"{split}.jsonl", whp[split])
        assert len(load_examples(SourceConfig(source, str(tmp_path / "whp"), split))) == len(whp[split])


def test_mini_c4_and_wikitext_are_short_generic_text_in_the_real_layouts(twins, tmp_path):
    c4, wikitext = twins["c4"], twins["wikitext"]
    assert set(c4) == {"train", "validation"} and set(wikitext) == {"train", "test"}
    assert set(c4["train"][0]) == {"text", "timestamp", "url"}
    rows = wikitext["test"]
    assert rows[0] == {"text": ""} and re.fullmatch(r" = [A-Z].* = \n", rows[1]["text"])
    write_jsonl(tmp_path / "wikitext" / "test.jsonl", rows)
    got = load_examples(SourceConfig("text", str(tmp_path / "wikitext"), "test"))
    assert len(got) == sum(1 for r in rows if r["text"].strip()) < len(rows)
    for name in ("wmdp", "whp", "c4", "wikitext"):  # the mini base has 512 positions: passages stay short
        for split, split_rows in twins[name].items():
            for row in split_rows:
                assert len(" ".join(v for v in row.values() if isinstance(v, str)).split()) <= 70, (name, split)


def test_tofu_holdout10_authors_are_never_in_full():
    from safealign.mini.tofu import tofu_subsets

    subsets = tofu_subsets(random.Random(0))
    holdout, full, forget = subsets["holdout10"], subsets["full"], subsets["forget10"]
    assert len(holdout) == len(forget) and [set(r) for r in holdout] == [set(r) for r in forget]

    def names(rows):  # the birthplace question names its author; the general QA rows (author -1) have none
        return {r["question"][len("Where was "):-len(" born?")] for r in rows if r["question"].startswith("Where was")}

    assert len(names(holdout)) == len({r["author"] for r in forget})
    assert not names(holdout) & names(full)
    assert not {r["author"] for r in holdout} & {r["author"] for r in full}
    assert not {r["question"] for r in holdout} & {r["question"] for r in full}


def test_the_twins_are_deterministic_by_seed_and_drawn_after_tofu(twins):
    from safealign.mini import unlearn_corpora
    from safealign.mini.pretrain import TOKENIZER_EXCLUDES
    from safealign.mini.tofu import tofu_subsets
    from safealign.mini.world import UNLEARNING

    assert unlearn_corpora.corpora(random.Random(0)) == twins
    assert unlearn_corpora.corpora(random.Random(1)) != twins
    assert tofu_subsets(random.Random(3)) == tofu_subsets(random.Random(3))
    assert tuple(twins) == UNLEARNING  # the world writes them in this order, after the TOFU subsets
    assert set(UNLEARNING) <= set(TOKENIZER_EXCLUDES)  # the tokenizer, hence the base, never sees them


def test_resolve_knows_the_twins_without_building_for_unknown_names():
    from safealign.errors import SafealignError
    from safealign.mini.world import resolve

    with pytest.raises(SafealignError, match="mini:wmdp, mini:whp, mini:c4, mini:wikitext"):
        resolve("mini:nope")
