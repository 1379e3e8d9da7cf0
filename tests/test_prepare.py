"""Instruction-tuning data preparation: chat-source adapters on fixtures in the real schemas, normalisation,
dedup, language filter and English cap, length buckets, the mixed sampler, and prepare()/plan() end to end."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from itertools import islice

import pytest

from safealign.config import build
from safealign.data.chat_sources import CHAT_SOURCES, read_source
from safealign.data.prepare.clean import (cjk_ratio, dedup, english_limit, language_filter, length_buckets,
                                          normalize_text, record_key, record_text)
from safealign.data.prepare.prepare import PrepareConfig, plan, prepare
from safealign.data.prepare.sampler import MixedSampler
from safealign.errors import ConfigError, DataError
from tests.conftest import write_jsonl


def sft(user: str, answer: str, source: str = "s") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], "source": source}


def pair(prompt: str, chosen: str, rejected: str, source: str = "p") -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source}


# ---------------------------------------------------------------------------------------------- fixtures


def oasst_row(mid, parent, role, text, rank=None, lang="zh") -> dict:
    return {"message_id": mid, "parent_id": parent, "user_id": "u", "created_date": "2023-02-05T00:00:00+00:00",
            "text": text, "role": role, "lang": lang, "review_count": 3, "review_result": True, "deleted": False,
            "rank": rank, "synthetic": False, "model_name": None, "message_tree_id": "t1", "tree_state": "ready_for_export"}


OASST = [
    oasst_row("m1", None, "prompter", "如何学习Python？"),
    oasst_row("m2", "m1", "assistant", "先学基础语法。", rank=0),
    oasst_row("m3", "m1", "assistant", "随便看看。", rank=1),
    oasst_row("m4", "m2", "prompter", "然后呢？"),
    oasst_row("m5", "m4", "assistant", "多写小项目。"),  # rank null: no sibling
    oasst_row("m6", "m3", "prompter", "为什么？"),
    oasst_row("m7", "m6", "assistant", "因为简单。", rank=0),  # under m3 (rank 1): left out
]
COIG = [{"instruction": "把下面的句子翻译成英文。", "input": "你好", "output": "Hello"},
        {"instruction": "写一句关于春天的诗。", "input": "", "output": "春眠不觉晓。"}]
COIG_PC = [{"instruction": "判断情感：", "input": "这部电影很好看。", "output": "正面", "split": "train",
            "task_type": {"major": ["文本分类"], "minor": ["情感分析"]}, "domain": ["通用"], "other": None,
            "task_name_in_eng": "sentiment"},
           {"instruction": "回答问题。", "input": None, "output": "好的。", "split": "train",
            "task_type": {"major": ["问答"], "minor": []}, "domain": ["通用"], "other": None, "task_name_in_eng": "qa"}]


def shp_row(history, a, b, label) -> dict:
    return {"post_id": "p1", "domain": "askscience_train", "upvote_ratio": 0.9, "history": history,
            "c_root_id_A": "ca", "c_root_id_B": "cb", "created_at_utc_A": 1, "created_at_utc_B": 2, "score_A": 10,
            "score_B": 3, "human_ref_A": a, "human_ref_B": b, "labels": label, "seconds_difference": 1.0,
            "score_ratio": 3.3}


SHP = [shp_row("Why is the sky blue?", "Rayleigh scattering.", "Because.", 1),
       shp_row("Why is grass green?", "Dunno.", "Chlorophyll.", 0)]


def uf_row(prompt, good, bad) -> dict:
    def conv(answer):
        return [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]
    return {"prompt": prompt, "prompt_id": "x", "chosen": conv(good), "rejected": conv(bad), "messages": conv(good),
            "score_chosen": 8.0, "score_rejected": 4.0}


ULTRAFEEDBACK = [uf_row("Name a prime.", "7", "8"), uf_row("2+2?", "4", "5")]
HH = [{"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water and yeast.",
       "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: No idea."},
      {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross?",
       "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No."}]


def pku_row(prompt, r0, r1, better) -> dict:
    return {"prompt": prompt, "response_0": r0, "response_1": r1, "better_response_id": better,
            "safer_response_id": 0, "is_response_0_safe": True, "is_response_1_safe": False}


PKU = [pku_row("如何保护隐私？", "使用强密码。", "不用管。", 0), pku_row("怎样做饭？", "随便。", "先洗菜再切菜。", 1)]
MESSAGES = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}], "source": "elsewhere"},
            {"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}]
PAIRS = [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "No.", "chosen_is_safe": True, "rejected_is_safe": True}]


def read(tmp_path, name, rows, on_error="raise"):
    return read_source(name, str(write_jsonl(tmp_path / f"{name}.jsonl", rows)), "train", on_error)


# ---------------------------------------------------------------------------------------------- adapters


def test_oasst1_threads_end_at_each_top_ranked_assistant_message_under_top_ranked_ancestors(tmp_path):
    records, skipped = read(tmp_path, "oasst1", OASST)
    assert skipped == 0
    assert [[(m["role"], m["content"]) for m in r["messages"]] for r in records] == [
        [("user", "如何学习Python？"), ("assistant", "先学基础语法。")],
        [("user", "如何学习Python？"), ("assistant", "先学基础语法。"), ("user", "然后呢？"), ("assistant", "多写小项目。")],
    ]
    assert {r["source"] for r in records} == {"oasst1"}


@pytest.mark.parametrize("name, rows, expected", [
    ("coig", COIG, [sft("把下面的句子翻译成英文。\n\n你好", "Hello", "coig"),
                    sft("写一句关于春天的诗。", "春眠不觉晓。", "coig")]),
    ("coig_pc", COIG_PC, [sft("判断情感：\n\n这部电影很好看。", "正面", "coig_pc"), sft("回答问题。", "好的。", "coig_pc")]),
    ("messages", MESSAGES, [{"messages": MESSAGES[0]["messages"], "source": "messages"},
                            {"messages": MESSAGES[1]["messages"], "source": "messages"}]),
    ("shp", SHP, [pair("Why is the sky blue?", "Rayleigh scattering.", "Because.", "shp"),
                  pair("Why is grass green?", "Chlorophyll.", "Dunno.", "shp")]),
    ("ultrafeedback", ULTRAFEEDBACK, [pair("Name a prime.", "7", "8", "ultrafeedback"),
                                      pair("2+2?", "4", "5", "ultrafeedback")]),
    ("hh_rlhf", HH, [pair("How do I bake bread?", "Mix flour, water and yeast.", "No idea.", "hh_rlhf"),
                     pair("Human: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke", "Why did the chicken cross?",
                          "No.", "hh_rlhf")]),
    ("pku_saferlhf", PKU, [pair("如何保护隐私？", "使用强密码。", "不用管。", "pku_saferlhf"),
                           pair("怎样做饭？", "先洗菜再切菜。", "随便。", "pku_saferlhf")]),
    ("pairs", PAIRS, [pair("Say hi", "Hi!", "No.", "pairs")]),
])
def test_adapter_on_its_real_schema(tmp_path, name, rows, expected):
    assert read(tmp_path, name, rows) == (expected, 0)
    kind = CHAT_SOURCES[name][0]
    assert all(("messages" in r) == (kind == "sft") for r in expected)


BAD = [  # (source, good rows, bad row, field named in the error)
    ("coig", COIG, {"instruction": "写诗", "input": ""}, "'output'"),
    ("coig_pc", COIG_PC, {**COIG_PC[0], "instruction": 5}, "'instruction'"),
    ("messages", MESSAGES, {"messages": [{"role": "bot", "content": "x"}]}, "'messages[0].role'"),
    ("shp", SHP, {**SHP[0], "labels": 2}, "'labels'"),
    ("ultrafeedback", ULTRAFEEDBACK, {**ULTRAFEEDBACK[0], "chosen": [{"role": "user", "content": "q"}]}, "'chosen'"),
    ("hh_rlhf", HH, {**HH[0], "rejected": "\n\nHuman: How do I bake bread?"}, "'rejected'"),
    ("pku_saferlhf", PKU, {**PKU[0], "better_response_id": "1"}, "'better_response_id'"),
    ("pairs", PAIRS, {"prompt": "p", "chosen": "   ", "rejected": "r"}, "'chosen'"),
    ("oasst1", OASST, {**OASST[1], "message_id": "m9", "rank": "0"}, "'rank'"),
    ("oasst1", OASST, oasst_row("m9", "gone", "assistant", "孤儿。", rank=0), "'parent_id'"),
]


@pytest.mark.parametrize("name, good, bad, field", BAD, ids=[f"{b[0]}-{b[3]}" for b in BAD])
def test_malformed_row_names_file_line_and_field_or_is_skipped_and_counted(tmp_path, name, good, bad, field):
    rows = [good[0], bad, *good[1:]]  # the bad row is on line 2
    with pytest.raises(DataError) as error:
        read(tmp_path, name, rows)
    assert f"{name}.jsonl:2: " in str(error.value) and field in str(error.value)
    records, skipped = read(tmp_path, name, rows, on_error="skip")
    assert skipped == 1 and records == read(tmp_path, name, good)[0]


def test_unknown_source_and_on_error_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'coig'"):
        read_source("coigg", "x.jsonl", "train")
    with pytest.raises(ConfigError, match="on_error"):
        read(tmp_path, "coig", COIG, on_error="ignore")


# ---------------------------------------------------------------------------------------------- normalisation, dedup


def test_normalize_text_rules():
    assert normalize_text("\u3000你好\u3000世界  ") == "你好 世界"
    assert normalize_text("ＡＢＣ１２３ ﬁne") == "ABC123 fine"  # NFKC: full-width letters/digits, ligature
    assert normalize_text("你好，世界！真的？（是）…") == "你好，世界！真的？（是）…"  # Chinese punctuation kept
    assert normalize_text("a \t b  \r\nc   \n\n\n\nd") == "a b\nc\n\nd"
    assert normalize_text("def f():\n    x  =  1   \n") == "def f():\n    x = 1"  # indentation kept


def test_dedup_counts_duplicates_differing_only_by_space_forms_and_nfkc():
    records = [
        sft("你好　世界 ＡＢＣ", "好的", "first"),     # U+3000 and full-width letters
        sft("你好 世界 ABC", "好的", "second"),        # the same once normalised
        sft("  你好   世界\tABC ", "好的\n", "third"),  # whitespace runs, tabs, ends
        sft("你好 世界 ABC", "好的!", "other"),        # a different answer
        {"messages": [{"role": "system", "content": "你好 世界 ABC"}, {"role": "assistant", "content": "好的"}],
         "source": "role"},                            # the same texts under another role
        pair("问题", "答案", "错误"),
        pair("问题 ", "答案", "错误\u3000"),
        pair("问题", "错误", "答案"),                   # chosen and rejected swapped: not a duplicate
    ]
    kept, removed = dedup(records)
    assert removed == 3
    assert [r["source"] for r in kept] == ["first", "other", "role", "p", "p"]
    assert kept[3] is records[5]  # the first occurrence, as it was
    assert record_key(records[0]) == record_key(records[2])
    assert len(record_key(records[0])) == 64


def test_cjk_ratio_on_hand_strings():
    assert cjk_ratio("") == 0.0 and cjk_ratio(" \n\t") == 0.0
    assert cjk_ratio("你好世界") == 1.0
    assert cjk_ratio("hello world") == 0.0
    assert cjk_ratio("你好 ab") == 0.5              # whitespace is not counted
    assert cjk_ratio("你好，ab") == 3 / 5           # full-width comma (U+FF0C) is CJK
    assert cjk_ratio("「你」abc") == 0.5            # CJK brackets U+300C/U+300D
    assert cjk_ratio("㐀x") == 0.5                  # Extension A
    assert cjk_ratio("한국어") == 0.0 and cjk_ratio("カナ") == 0.0  # Hangul and katakana are not counted
    assert record_text(pair("a", "b", "c")) == "a\nb\nc"


# ---------------------------------------------------------------------------------------------- language, length


def test_english_cap_is_a_share_of_the_output_computed_exactly():
    zh = [sft(f"你好{i}", "世界") for i in range(7)]
    en = [sft(f"hello {i}", "world") for i in range(10)]
    records = [en[0], zh[0], *en[1:5], *zh[1:], *en[5:]]
    kept, stats = language_filter(records, 0.3, True, 0.3)
    assert stats == {"admitted": {"zh": 7, "en": 3}, "rejected": {"zh": 0, "en": 7}, "en_max": 3, "zh_share": 0.7}
    assert [r for r in kept if r in en] == en[:3]  # the first three, in input order
    assert kept == [en[0], zh[0], en[1], en[2], *zh[1:]]
    assert language_filter(records, 0.3, False, 0.3)[1]["admitted"] == {"zh": 7, "en": 0}
    assert language_filter(records, 0.3, True, 1.0)[1]["admitted"] == {"zh": 7, "en": 10}
    assert language_filter(en, 0.3, True, 0.3)[0] == []  # no Chinese: no room for English
    assert english_limit(2, 0.6) == 3 and english_limit(3, 0.7) == 7  # in floats these floor to 2 and 6
    assert english_limit(7, 0.0) == 0 and english_limit(7, 0.5) == 7


def test_length_buckets_and_dropped_count():
    def count_x(text: str) -> int:  # a fake tokenizer: one token per "x"
        return text.count("x")

    lengths = [1, 256, 257, 1024, 1025, 2048, 2049, 5000]
    records = [sft("q", "x" * n) for n in lengths] + [pair("x" * 10, "x" * 250, "x" * 300)]  # pair: 10 + 300
    buckets, dropped = length_buckets(records, count_x, [256, 1024, 2048])
    assert {b: len(rs) for b, rs in buckets.items()} == {"0-256": 2, "257-1024": 3, "1025-2048": 2}
    assert dropped == 2
    assert buckets["257-1024"][-1] is records[-1]
    assert {b: len(rs) for b, rs in length_buckets(records, count_x, [100])[0].items()} == {"0-100": 1}


# ---------------------------------------------------------------------------------------------- sampler


def groups() -> dict:
    def recs(source, lang, n, tag=""):
        return [{"id": f"{source}{tag}{lang}{i}", "source": source, "lang": lang} for i in range(n)]
    return {("coig", "0-256"): recs("coig", "zh", 30), ("coig", "257-1024"): recs("coig", "zh", 2, "L"),
            ("oasst1", "0-256"): recs("oasst1", "zh", 5) + recs("oasst1", "en", 5),
            ("shp", "0-256"): recs("shp", "en", 100), ("shp", "257-1024"): recs("shp", "en", 1, "L")}


# coig 2 of zh's 3 weight units, oasst1 1 of 3 in zh and 1 of 2 in en, shp 1 of 2 in en
INTENDED = {"coig": 0.7 * 2 / 3, "oasst1": 0.7 / 3 + 0.3 / 2, "shp": 0.3 / 2}


def test_sampler_hits_the_chinese_share_and_the_source_shares():
    sampler = MixedSampler(groups(), lambda r: r["lang"], target_cn_share=0.7, seed=0,
                           weights={"coig": 2, "oasst1": 1, "shp": 1})
    draws = [next(sampler) for _ in range(10_000)]
    assert abs(sum(r["lang"] == "zh" for r in draws) / 10_000 - 0.7) <= 0.02
    shares = {s: n / 10_000 for s, n in Counter(r["source"] for r in draws).items()}
    for source, intended in INTENDED.items():
        assert shares[source] <= intended + 0.02 and abs(shares[source] - intended) <= 0.02
    expected = sampler.plan()
    assert len(expected) == 1 and expected[0]["steps"] is None
    assert expected[0]["language"] == {"zh": 0.7, "en": pytest.approx(0.3)}
    assert expected[0]["sources"] == pytest.approx(INTENDED, abs=1e-6)
    # a source's buckets share its weight equally: the 2-record long bucket as often as the 30-record one
    assert expected[0]["groups"]["coig|257-1024|zh"] == pytest.approx(0.7 / 3, abs=1e-6)


def test_sampler_is_deterministic_from_the_seed_and_reshuffles_exhausted_groups():
    def ids(seed: int) -> list[str]:
        return [r["id"] for r in islice(MixedSampler(groups(), lambda r: r["lang"], seed=seed), 500)]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    small = {("a", "0-256"): [{"id": i, "lang": "zh"} for i in range(3)]}
    draws = [r["id"] for r in islice(MixedSampler(small, lambda r: r["lang"], seed=1), 9)]
    assert all(sorted(draws[k:k + 3]) == [0, 1, 2] for k in (0, 3, 6))  # every record once per pass


def test_sampler_curriculum_stages_and_bad_weights():
    stages = [{"weights": {"shp": 0, "oasst1": 0}, "steps": 50}, {"weights": {}, "steps": 10}]
    sampler = MixedSampler(groups(), lambda r: r["lang"], seed=0, curriculum=stages)
    first = [next(sampler) for _ in range(50)]
    assert {r["source"] for r in first} == {"coig"}  # no English source left: Chinese only
    later = [next(sampler) for _ in range(300)]
    assert {r["source"] for r in later} == {"coig", "oasst1", "shp"}
    plans = sampler.plan()
    assert [p["steps"] for p in plans] == [50, 10] and plans[0]["language"] == {"zh": 1.0, "en": 0.0}
    with pytest.raises(ConfigError, match="weights.shpp: no such source"):
        MixedSampler(groups(), lambda r: r["lang"], weights={"shpp": 1})
    with pytest.raises(ConfigError, match=r"curriculum\[0\].steps"):
        MixedSampler(groups(), lambda r: r["lang"], curriculum=[{"weights": {}, "steps": 0}])


# ---------------------------------------------------------------------------------------------- prepare / plan


def fixture_config(tmp_path) -> PrepareConfig:
    coig = [{"instruction": "请介绍一下长城。", "input": "", "output": "长城是中国古代的军事防御工程。"},
            {"instruction": "请介绍一下故宫。", "input": "", "output": "故宫是明清两代的皇宫。"},
            {"instruction": "重复“长城”。", "input": "", "output": "长城" * 150},  # 300+ characters: 257-1024
            {"instruction": "\u3000请介绍一下长城。\t", "input": None, "output": "长城是中国古代的军事防御工程。"},  # duplicate
            {"instruction": "缺少输出。", "input": ""}]  # malformed, line 5
    english = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
               for i in range(6)]
    english.append({"messages": [{"role": "user", "content": "Long?"}, {"role": "assistant", "content": "word " * 500}]})
    pku = [pku_row("如何保护隐私？", "使用强密码。", "不用管。", 0), pku_row("怎样做饭？", "随便。", "先洗菜再切菜。", 1),
           pku_row("怎样学习？", "多读书。", "不学。", 0), pku_row("如何保护隐私？ ", "使用强密码。", "不用管。", 0)]
    files = {"coig": coig, "oasst1": OASST, "messages": english, "shp": SHP, "pku_saferlhf": pku}
    sources = [{"name": n, "path": str(write_jsonl(tmp_path / "in" / f"{n}.jsonl", rows))} for n, rows in files.items()]
    return build(PrepareConfig, {"sources": sources, "output_dir": str(tmp_path / "out"), "on_error": "skip"})


def test_prepare_writes_outputs_stats_and_a_data_card_with_the_same_numbers(tmp_path, capsys):
    stats = prepare(fixture_config(tmp_path), len)  # the fake tokenizer: one token per character
    src = stats["sources"]
    assert {n: (s["records"], s["skipped"], s["after_dedup"], s["after_length"], s["written"]) for n, s in src.items()} == {
        "coig": (4, 1, 3, 3, 3), "oasst1": (2, 0, 2, 2, 2), "messages": (7, 0, 7, 6, 2),
        "shp": (2, 0, 2, 2, 1), "pku_saferlhf": (4, 0, 3, 3, 3)}
    # sft: 13 records, 1 duplicate, 1 longer than 2048; 5 Chinese admit floor(0.3*5/0.7) = 2 of 6 English
    assert (stats["sft"]["records"], stats["sft"]["duplicates_removed"], stats["sft"]["too_long"]) == (13, 1, 1)
    assert stats["sft"]["language"] == {"admitted": {"zh": 5, "en": 2}, "rejected": {"zh": 0, "en": 4},
                                        "en_max": 2, "zh_share": round(5 / 7, 6)}
    assert stats["sft"]["buckets"] == {"0-256": 6, "257-1024": 1, "1025-2048": 0}
    assert src["coig"]["buckets"] == {"0-256": 2, "257-1024": 1, "1025-2048": 0}
    # pairs: 6 records, 1 duplicate; 3 Chinese admit floor(0.3*3/0.7) = 1 of 2 English
    assert stats["pairs"]["language"]["admitted"] == {"zh": 3, "en": 1} and stats["pairs"]["written"] == 4
    assert stats["sft"]["mix_plan"]["sources"] == pytest.approx({"coig": 0.35, "messages": 0.3, "oasst1": 0.35})

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["DATA_CARD.md", "pairs.jsonl", "sft.jsonl", "stats.json"]
    sft_rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert len(sft_rows) == 7 and Counter(r["lang"] for r in sft_rows) == {"zh": 5, "en": 2}
    assert sft_rows[0] == {**sft("请介绍一下长城。", "长城是中国古代的军事防御工程。", "coig"), "lang": "zh", "bucket": "0-256"}
    assert len((out / "pairs.jsonl").read_text().splitlines()) == 4
    saved = json.loads((out / "stats.json").read_text())
    assert saved == json.loads(json.dumps(stats))

    card = (out / "DATA_CARD.md").read_text()
    for name, s in saved["sources"].items():
        assert (f"| {name} | {s['kind']} | {s['path']} | {s['split']} | {s['weight']} | {s['records']} | "
                f"{s['skipped']} | {s['after_dedup']} | {s['after_length']} | {s['written']} |") in card
    for kind in ("sft", "pairs"):
        k = saved[kind]
        section = card.split(f"## {kind}.jsonl")[1].split("## ")[0]
        for line in (f"- records read: {k['records']}", f"- exact duplicates removed: {k['duplicates_removed']}",
                     f"dropped: {k['too_long']}", f"- English admitted: {k['language']['admitted']['en']} "
                     f"(at most {k['language']['en_max']})", f"- English rejected: {k['language']['rejected']['en']}",
                     f"- written: {k['written']}", *(f"| {b} | {n} |" for b, n in k["buckets"].items())):
            assert line in section
    logs = capsys.readouterr().out
    assert "coig (sft)" in logs and "1 malformed rows skipped" in logs and "1 exact duplicates removed" in logs


def test_prepare_raises_on_a_malformed_row_by_default(tmp_path):
    cfg = fixture_config(tmp_path)
    cfg.on_error = "raise"
    with pytest.raises(DataError, match=r"coig\.jsonl:5: missing field 'output'"):
        prepare(cfg, len)
    assert not (tmp_path / "out").exists()


def test_plan_describes_and_writes_nothing(tmp_path):
    cfg = fixture_config(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    text = plan(cfg)
    assert sorted(tmp_path.rglob("*")) == before
    assert "coig (sft, weight 1.0)" in text and "(local file)" in text
    assert str(tmp_path / "out" / "sft.jsonl") in text and str(tmp_path / "out" / "pairs.jsonl") in text
    assert "CJK ratio >= 0.3" in text and "0-256, 257-1024, 1025-2048" in text
    mini = dataclasses.replace(cfg, sources=[dataclasses.replace(cfg.sources[0], path="mini:chat_sft")])
    assert "mini:chat_sft [train] (mini world)" in plan(mini)  # named, not built: a dry run builds nothing


def test_config_is_strict():
    with pytest.raises(ConfigError, match="did you mean 'min_cn_ratio'"):
        build(PrepareConfig, {"min_cn_ration": 0.5})
    with pytest.raises(ConfigError, match=r"sources\[0\]\.name.*did you mean 'shp'"):
        build(PrepareConfig, {"sources": [{"name": "shpp", "path": "x"}], "output_dir": "o"})
    with pytest.raises(ConfigError, match="listed twice"):
        build(PrepareConfig, {"sources": [{"name": "shp", "path": "x"}, {"name": "shp", "path": "y"}], "output_dir": "o"})
    with pytest.raises(ConfigError, match="buckets"):
        build(PrepareConfig, {"sources": [{"name": "shp", "path": "x"}], "output_dir": "o", "buckets": [512, 256]})
