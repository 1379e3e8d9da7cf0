"""Instruction tuning (issue #6) end to end on a tiny model: prepare -> SFT on conversations (chat template,
assistant tokens only, the prepared mix) -> ORPO on chat pairs -> pair log-odds and a local lm-eval task ->
merged export; the chat tokenization's labels; the pipeline's stage checks."""

import json

import pytest
import torch
import yaml

from safealign.cli import main
from tests.conftest import write_jsonl

ZH = ["苹果是什么颜色的？", "香蕉是什么颜色的？", "天空是什么颜色的？", "草是什么颜色的？", "雪是什么颜色的？", "煤是什么颜色的？"]
ZH_ANSWERS = ["苹果通常是红色的。", "香蕉通常是黄色的。", "天空通常是蓝色的。", "草通常是绿色的。", "雪通常是白色的。", "煤通常是黑色的。"]


def test_chat_labels_cover_exactly_the_assistant_turns(tiny_llama):
    from safealign.data.chat import tokenize_messages
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the film is good"},
                {"role": "assistant", "content": "a kind answer"}, {"role": "user", "content": "and then"},
                {"role": "assistant", "content": "go away"}]
    f = tokenize_messages(tok, messages, 512)
    labelled = tok.decode([t for t in f["labels"] if t != -100])
    assert labelled.replace(" ", "") == "akindanswer</s>goaway</s>"  # both answers and their EOS, nothing else
    assert tok.decode(f["input_ids"]).count("the film is good") == 1
    assert len(tokenize_messages(tok, messages, 8)["input_ids"]) == 8


def _fixtures(tmp_path):
    from safealign.evals.lm_harness import multiple_choice_task

    sft = [{"instruction": q, "input": "", "output": a} for q, a in zip(ZH, ZH_ANSWERS)] * 2  # every row twice
    sft += [{"instruction": "What colour is the sky?", "input": "", "output": "The sky is blue."}] * 3
    pairs = [{"prompt": q, "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
              "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": "我不知道。"}],
              "score_chosen": 9.0, "score_rejected": 2.0} for q, a in zip(ZH, ZH_ANSWERS)]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    docs = write_jsonl(tmp_path / "mc.jsonl", [{"question": q, "choices": ["红色", "黄色"], "answer": i % 2}
                                              for i, q in enumerate(ZH)])
    (tasks / "tiny_mc.yaml").write_text(multiple_choice_task("tiny_mc", docs))
    return write_jsonl(tmp_path / "coig.jsonl", sft), write_jsonl(tmp_path / "uf.jsonl", pairs), tasks


def test_prepare_sft_orpo_evaluate_export_recipe(tiny_llama, tmp_path):
    coig, uf, tasks = _fixtures(tmp_path)
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    train = {"max_steps": 4, "batch_size": 4, "lr": 1e-2, "log_every": 2}
    recipe = {"name": "it", "seed": 0, "output_dir": str(tmp_path / "run"), "stages": {
        "prepare": {"kind": "prepare", "tokenizer": str(tiny_llama), "buckets": [40, 200],
                    "sources": [{"name": "coig", "path": str(coig)}, {"name": "ultrafeedback", "path": str(uf)}]},
        "sft": {"model": {"path": str(tiny_llama)}, "lora": lora, "method": {"name": "sft"}, "train": train,
                "data": {"messages": "stage:prepare/sft.jsonl", "mixing": "stage:prepare/stats.json"}},
        "orpo": {"model": {"path": "stage:sft"}, "lora": lora, "method": {"name": "orpo"}, "train": train,
                 "data": {"pairs": {"train": "stage:prepare/pairs.jsonl"}, "prompt": "chat"}},
        "evaluate": {"kind": "eval", "models": {"sft": "stage:sft", "orpo": "stage:orpo"}, "evals": {
            "pair_odds": {"pairs": str(uf), "prompt": "chat"},
            "lm_harness": {"tasks": ["tiny_mc"], "include_path": str(tasks), "batch_size": 4}}},
        "export": {"kind": "export", "model": "stage:orpo", "merge": True}}}
    path = tmp_path / "it.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False))  # stages run in order
    assert main(["run", str(path)]) == 0

    run = tmp_path / "run"
    stats = json.loads((run / "stages/prepare/stats.json").read_text())
    assert stats["sft"]["duplicates_removed"] == 8 and stats["sft"]["written"] == 7  # 6 Chinese + 1 English kept
    assert stats["pairs"]["written"] == 6
    card = (run / "stages/prepare/DATA_CARD.md").read_text()
    assert "| coig |" in card
    logged = [json.loads(line) for line in (run / "stages/orpo/metrics.jsonl").read_text().splitlines()]
    assert all({"nll", "odds_ratio_loss", "log_odds_ratio"} <= set(r) for r in logged if "loss" in r)
    results = json.loads((run / "results.json").read_text())
    for label in ("sft", "orpo"):
        assert results[label]["n_pairs"] == 6 and 0 <= results[label]["tiny_mc/acc"] <= 1
        assert (run / f"stages/evaluate/{label}/eval/lm_harness.results.csv").exists()

    from transformers import AutoModelForCausalLM

    from safealign.models import load_causal_lm

    merged = AutoModelForCausalLM.from_pretrained(run / "stages/export/model").eval()
    chain = load_causal_lm(str(run / "stages/orpo/model")).eval()
    ids = torch.randint(4, 300, (2, 10))
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, chain(input_ids=ids).logits, atol=1e-4)


def test_conversations_without_a_prepare_stage_cannot_use_its_mix(tiny_llama, tmp_path):
    from safealign.errors import DataError
    from safealign.data.training import mixed_order

    (tmp_path / "stats.json").write_text(json.dumps({"config": {"sources": [{"name": "messages", "path": "x"}]}}))
    with pytest.raises(DataError, match="lack 'lang'"):
        mixed_order([{"messages": [], "source": "messages"}], str(tmp_path / "stats.json"))


def test_messages_and_task_data_together_are_a_config_error(tiny_llama, tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"path": str(tiny_llama)}, "method": {"name": "sft"},
                                   "data": {"messages": "x.jsonl", "task": {"source": "sst2", "path": "y"}}}))
    assert main(["train", str(cfg), "--dry-run"]) == 2
    assert "give conversations, 'task' examples or 'pairs'" in capsys.readouterr().err
