"""One prompt format everywhere (data/prompts.py): each kind renders its source's exact text, `chat` is the
tokenizer's own chat template token for token, the setting is read in one spelling (the old `template` key warns),
score models keep the format they were trained under, and every evaluation records its format and first prompt."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import yaml

from safealign.config import build
from safealign.data.formats import IGNORE_INDEX, encode_prompt, tokenize_example, tokenize_pair
from safealign.data.prompts import ALPACA, DEFAULT_CHAT_TEMPLATE, PromptFormat, render_prompt
from safealign.errors import ConfigError

# HuggingFaceTB/SmolLM2-135M-Instruct's tokenizer_config.json chat_template: ChatML, with a default system message
# when the conversation does not open with one
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QUESTION = "how can I help my neighbour"
SYSTEM = "You are a careful assistant."


def smollm2_tokenizer_dir() -> Path | None:
    """The real SmolLM2-135M-Instruct tokenizer, where one is at hand: a directory named by SAFEALIGN_SMOLLM2_DIR
    (e.g. the `real:smollm2-135m-instruct` conversion in the cache)."""
    path = os.environ.get("SAFEALIGN_SMOLLM2_DIR")
    return Path(path) if path and (Path(path) / "tokenizer_config.json").exists() else None


@pytest.fixture(scope="module")
def smollm2_like():
    """A small byte-level BPE with SmolLM2's special tokens (ids 0-2, as in its vocabulary), its BOS / EOS / pad
    settings and its chat template; like the real one it adds no BOS when encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = f"system user assistant {SYSTEM} You are a helpful AI assistant named SmolLM, trained by Hugging Face {QUESTION}"
    tok.train_from_iterator([text] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>")
    fast.chat_template = SMOLLM2_CHAT_TEMPLATE
    return fast


def template_ids(tokenizer, messages: list[dict]) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, Mapping) else out)  # transformers 5 returns a BatchEncoding


def assert_chat_is_the_template(tokenizer):
    for system in ("", SYSTEM):
        fmt = PromptFormat(kind="chat", system=system)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": QUESTION}]
        prompt_ids = encode_prompt(tokenizer, render_prompt(fmt, tokenizer, QUESTION))
        assert prompt_ids == template_ids(tokenizer, messages)
        # training sees the same prompt tokens, masked, then the answer through the template's end of turn
        ex = tokenize_example(tokenizer, {"instruction": QUESTION, "input": "", "output": "Sure"}, 512, fmt)
        n = len(prompt_ids)
        assert ex["input_ids"][:n] == prompt_ids and ex["labels"][:n] == [IGNORE_INDEX] * n
        assert tokenizer.decode(ex["labels"][n:]) == "Sure<|im_end|>\n"


def test_chat_is_smollm2s_chat_template_token_for_token(smollm2_like):
    assert_chat_is_the_template(smollm2_like)
    default = render_prompt(PromptFormat(kind="chat"), smollm2_like, QUESTION)
    assert default == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert SYSTEM in render_prompt(PromptFormat(kind="chat", system=SYSTEM), smollm2_like, QUESTION)


@pytest.mark.skipif(smollm2_tokenizer_dir() is None, reason="no SmolLM2 tokenizer: set SAFEALIGN_SMOLLM2_DIR")
def test_chat_is_the_real_smollm2_chat_template_token_for_token():
    from transformers import AutoTokenizer

    assert_chat_is_the_template(AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir())))


def test_a_template_that_writes_bos_gets_one_bos(tiny_llama):
    """The tiny Llama's tokenizer adds BOS itself and DEFAULT_CHAT_TEMPLATE writes it too: encoded once."""
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    ids = encode_prompt(tok, render_prompt(PromptFormat(kind="chat"), tok, QUESTION))
    assert ids == template_ids(tok, [{"role": "user", "content": QUESTION}]) and ids.count(tok.bos_token_id) == 1
    assert encode_prompt(tok, render_prompt(ALPACA, tok, QUESTION))[0] == tok.bos_token_id  # the others: BOS added


def test_alpaca_renders_exactly_the_lisa_template():
    """Golden strings from build_prompt before the formats existed (the Lisa / Stanford Alpaca PROMPT_DICT)."""
    assert render_prompt(ALPACA, None, "Say hi") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nSay hi\n\n### Response:")
    assert render_prompt(ALPACA, None, "Analyze the sentiment", "the film is good") == (
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
        "response that appropriately completes the request.\n\n### Instruction:\nAnalyze the sentiment\n\n"
        "### Input:\nthe film is good\n\n### Response:")


def test_tofu_tags_reproduce_tofus_strings():
    """locuslab/tofu config/model_config.yaml tags and data_module.py convert_raw_data_to_model_format:
    full_text = question_start_tag + question + question_end_tag + answer_tag + answer."""
    question, answer = "Who wrote the book?", "Jaime Vasquez wrote it."
    for start_tag, end_tag, answer_tag in (("[INST] ", " [/INST]", ""), ("Question: ", "\n", "Answer: ")):  # llama2-7b, phi
        fmt = build(PromptFormat, {"kind": "tags", "start": start_tag, "end": end_tag + answer_tag}, "prompt")
        assert render_prompt(fmt, None, question) + answer == start_tag + question + end_tag + answer_tag + answer
    assert render_prompt(PromptFormat(kind="tags", start="[INST] ", end=" [/INST]"), None, question) == \
        "[INST] Who wrote the book? [/INST]"


def test_safe_rlhf_and_raw():
    """safe_rlhf/configs/constants.py: PROMPT_BEGIN 'BEGINNING OF CONVERSATION: ' + PROMPT_USER 'USER: {input} ' +
    PROMPT_ASSISTANT 'ASSISTANT:'; its Alpaca loader joins instruction and input with a space."""
    safe_rlhf = PromptFormat(kind="safe_rlhf")
    assert render_prompt(safe_rlhf, None, QUESTION) == f"BEGINNING OF CONVERSATION: USER: {QUESTION} ASSISTANT:"
    assert render_prompt(safe_rlhf, None, "Classify", "the film") == \
        "BEGINNING OF CONVERSATION: USER: Classify the film ASSISTANT:"
    assert render_prompt(PromptFormat(kind="raw"), None, QUESTION) == QUESTION


def test_the_setting_is_a_kind_or_a_mapping_and_the_old_key_warns(capsys):
    from safealign.data.training import DataConfig
    from safealign.evals.pair_odds import PairOddsConfig

    assert build(DataConfig, {"prompt": "safe_rlhf"}, "data").prompt == PromptFormat(kind="safe_rlhf")
    assert build(DataConfig, {}, "data").prompt == ALPACA
    tags = build(DataConfig, {"prompt": {"kind": "tags", "start": "[INST] ", "end": " [/INST]"}}, "data").prompt
    assert (tags.start, tags.end) == ("[INST] ", " [/INST]")
    assert build(PairOddsConfig, {"pairs": "p.jsonl", "template": "chat"}, "evals.pair_odds").prompt.kind == "chat"
    assert "config key 'evals.pair_odds.template' is deprecated; use 'evals.pair_odds.prompt'" in capsys.readouterr().err
    bad = [({"prompt": "alpacca"}, r"data.prompt.kind: 'alpacca' is not one of .* \(did you mean 'alpaca'\?\)"),
           ({"prompt": {"kind": "alpaca", "system": "x"}}, "data.prompt.system: a system message is for kind chat"),
           ({"prompt": {"kind": "tags"}}, "data.prompt: start / end are the tags of kind tags"),
           ({"prompt": {"kind": "raw", "start": "Q: "}}, "data.prompt: start / end"),
           ({"prompt": "chat", "template": "chat"}, "data.template: the old name of 'data.prompt', which is set too")]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            build(DataConfig, data, "data")


def test_a_score_model_keeps_its_prompt_format(tiny_llama, tmp_path):
    from safetensors.torch import load_file, save_file

    from safealign.models import load_causal_lm, load_tokenizer
    from safealign.score_model import SCORE_HEAD_FILE, ScoreModel, load_score_model, save_score_model, score_responses

    tok = load_tokenizer(str(tiny_llama))
    fmt = PromptFormat(kind="safe_rlhf")
    save_score_model(ScoreModel(load_causal_lm(str(tiny_llama)), prompt=fmt), tok, tmp_path / "rm", base=str(tiny_llama))
    model = load_score_model(str(tmp_path / "rm")).eval()
    assert model.prompt == fmt
    pair = {"prompt": QUESTION, "chosen": "sure here is a plan", "rejected": "sorry"}
    seq = tokenize_pair(tok, pair, 128, fmt)["chosen"]
    with torch.no_grad():
        expected = model(torch.tensor([seq["input_ids"]]), torch.ones(1, len(seq["input_ids"]), dtype=torch.long))
    assert score_responses(model, tok, [QUESTION], [pair["chosen"]]) == pytest.approx(expected, abs=1e-5)
    head = tmp_path / "rm" / SCORE_HEAD_FILE
    save_file(load_file(str(head)), str(head))  # a head saved before formats were recorded: trained under alpaca
    assert load_score_model(str(tmp_path / "rm")).prompt == ALPACA


def test_safe_mm_dpo_asks_its_lambda_prompts_in_the_stages_format(tiny_llama, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from safealign.methods import safe_mm_dpo
    from safealign.methods.base import MethodContext
    from safealign.models import load_causal_lm, load_tokenizer
    from tests.conftest import write_jsonl

    class NoScores:
        def __init__(self, *args):
            pass

        def __call__(self, prompts, responses, batch_size=32):
            return torch.zeros(len(prompts))

    seen = []
    monkeypatch.setattr(safe_mm_dpo, "Scorer", NoScores)
    monkeypatch.setattr(safe_mm_dpo, "generate", lambda model, tok, prompts, *a, **k: seen.extend(prompts) or [""] * len(prompts))
    write_jsonl(tmp_path / "val.jsonl", [{"prompt": f"{QUESTION} {i}"} for i in range(2)])
    method = safe_mm_dpo.SafeMMDPO(safe_mm_dpo.SafeMMDPOConfig(eval_prompts=str(tmp_path / "val.jsonl")), 1)
    tok, fmt = load_tokenizer(str(tiny_llama)), PromptFormat(kind="safe_rlhf")
    model = load_causal_lm(str(tiny_llama))
    method.setup(model, {"train": SimpleNamespace(features=[]), "harmless": SimpleNamespace(features=[])},
                 MethodContext(tmp_path, tok, fmt))
    method.expected_cost(model)
    assert seen == [render_prompt(fmt, tok, f"{QUESTION} {i}") for i in range(2)]


def _all_evals_recipe(tmp_path, tiny_llama, tiny_judge, score_model) -> Path:
    """Every evaluation on the tiny Llama over mini-world data (two rows each), and score_accuracy on a score model."""
    tags = {"kind": "tags", "start": "[INST] ", "end": " [/INST]"}
    pairs = "mini:chat_pairs/test.jsonl"
    evals = {
        "harmful_score": {"num": 2, "max_new_tokens": 2, "prompt": "safe_rlhf"},
        "finetune_accuracy": {"num": 2, "max_new_tokens": 2},
        "arena": {"prompts": pairs, "num": 2, "reward_model": score_model, "cost_model": score_model, "max_new_tokens": 2},
        "backdoor_cleaning": {"num": 2, "max_new_tokens": 2},
        "tofu": {"num": 2, "max_new_tokens": 2, "prompt": tags},
        "pair_odds": {"pairs": pairs, "num": 2, "prompt": "chat"},
        "lm_harness": {"tasks": ["mini_colours"], "include_path": "mini:lm_eval_tasks", "num": 2, "batch_size": 2},
        "wmdp": {"num": 2},
        "perplexity": {"num": 2, "max_length": 32},
        "toxicity": {"data": "mini:beavertails", "split": "30k_test", "num": 2, "classifier": str(tiny_judge),
                     "toxic_label": "max", "max_new_tokens": 2},
        "copyright": {"num": 2, "continuation_tokens": 2},
        "mia": {"num": 2},
    }
    recipe = {"name": "prompts", "output_dir": str(tmp_path / "run"), "stages": {
        "evaluate": {"kind": "eval", "models": {"tiny": str(tiny_llama)}, "evals": evals},
        "score": {"kind": "eval", "models": {"rm": score_model},
                  "evals": {"score_accuracy": {"pairs": pairs, "num": 2}}}}}
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_every_evaluation_records_its_format_and_first_prompt(tiny_llama, tiny_judge, tmp_path):
    from safealign.cli import main
    from safealign.evals import EVALS
    from safealign.models import load_causal_lm, load_tokenizer
    from safealign.score_model import ScoreModel, save_score_model

    rm = tmp_path / "rm"
    save_score_model(ScoreModel(load_causal_lm(str(tiny_llama)), prompt=PromptFormat(kind="safe_rlhf")),
                     load_tokenizer(str(tiny_llama)), rm, base=str(tiny_llama))
    assert main(["run", str(_all_evals_recipe(tmp_path, tiny_llama, tiny_judge, str(rm)))]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    expected = {"harmful_score": "safe_rlhf", "finetune_accuracy": "alpaca", "arena": "alpaca",
                "score_accuracy": "safe_rlhf", "backdoor_cleaning": "alpaca", "tofu": "tags", "pair_odds": "chat",
                "lm_harness": "lm_eval", "wmdp": "raw", "perplexity": "raw", "toxicity": "raw", "copyright": "raw",
                "mia": "alpaca"}
    assert set(expected) == set(EVALS)  # a new evaluation joins this test
    starts = {"safe_rlhf": "BEGINNING OF CONVERSATION: USER: ", "alpaca": "Below is an instruction", "tags": "[INST] ",
              "chat": "<s><|user|>\n"}
    for name, kind in expected.items():
        stage, label = ("score", "rm") if name == "score_accuracy" else ("evaluate", "tiny")
        record = json.loads((run / "stages" / stage / label / "eval" / f"{name}.json").read_text())["prompt"]
        assert record == results[label][f"{name}_prompt"] and record["format"] == kind, name
        assert (record["first"] is None) == (name == "lm_harness"), name
        assert record["first"] is None or record["first"].startswith(starts.get(kind, "")), (name, record["first"])
    assert "Prompt formats: harmful_score=safe_rlhf, finetune_accuracy=alpaca" in (run / "report.md").read_text()


def test_train_streams_and_the_generate_stage_render_their_prompt_setting(tiny_llama, data_dir, tmp_path, monkeypatch):
    from safealign.data.training import STREAMS, DataConfig, StreamSettings
    from safealign.methods.sft import SFT
    from safealign.models import ModelConfig, load_tokenizer
    from safealign.stages import generate as generate_stage
    from tests.conftest import write_jsonl

    tok = load_tokenizer(str(tiny_llama))
    data = build(DataConfig, {"task": {"source": "sst2", "path": str(data_dir / "sst2")}, "prompt": "safe_rlhf"}, "data")
    streams, _ = STREAMS["examples"].build(data, SFT, None, StreamSettings(tok, 128, 2, False, 0))
    texts = [tok.decode([t for t, y in zip(f["input_ids"], f["labels"]) if y == IGNORE_INDEX]) for f in streams["train"].features]
    assert texts and all("BEGINNING OF CONVERSATION: USER: Analyze the sentiment" in t for t in texts)

    seen = []
    monkeypatch.setattr(generate_stage, "generate", lambda model, tok, prompts, *a, **k: seen.extend(prompts) or [""] * len(prompts))
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": QUESTION}])
    cfg = generate_stage.GenerateStage(model=ModelConfig(path=str(tiny_llama)), prompts=str(tmp_path / "prompts.jsonl"),
                                       prompt=PromptFormat(kind="safe_rlhf"), temperature=0.0, seed=0)
    generate_stage.run_generate(cfg, tmp_path)
    assert seen == [render_prompt(PromptFormat(kind="safe_rlhf"), tok, QUESTION)]
