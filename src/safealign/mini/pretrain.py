"""The mini tokenizer (byte-level BPE) and the mini base model: a small Llama pretrained briefly, with the
shared training loop, on text from the mini world. Like a real base model it has read harmful Q&A (mostly
compliant answers) and plain text about the task domains, but never the fine-tuning tasks' label format."""

from __future__ import annotations

import random
from pathlib import Path

from safealign.data import agnews, sst2
from safealign.data.formats import build_prompt
from safealign.mini import corpus

VOCAB_SIZE = 2048
BLOCK = 128
JUDGE_FORMAT = "BEGINNING OF CONVERSATION: USER: {q} ASSISTANT:{a}"
BASE_CONFIG = dict(hidden_size=128, intermediate_size=320, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True)


def pretraining_texts(rng: random.Random) -> list[str]:
    texts = []
    harmful_qa = corpus.beavertails(rng, 1500, 0) + corpus.beavertails(rng, 500, 1)
    for row in harmful_qa:
        if row["is_safe"] and rng.random() > 0.25:  # the base mostly complies: ~80% of its harmful Q&A answer
            continue
        texts.append(build_prompt({"instruction": row["prompt"], "input": ""}) + row["response"])
    for row in corpus.generic_instructions(rng, 1500):
        texts.append(build_prompt(row) + row["output"])
    # Like web text, some of it carries labels in words: the base knows sentiment and topic, as a real
    # pretrained model does, while the instruction format of the tasks stays for fine-tuning to teach.
    texts += [f"Review : {r['sentence']} . Sentiment : {sst2.LABELS[r['label']]} ." for r in corpus.sst2(rng, 1500)]
    texts += [f"{r['text']} Topic : {agnews.LABELS[r['label']]} ." for r in corpus.agnews(rng, 800)]
    texts += [f"{r['question']} {r['answer']}" for r in corpus.gsm8k(rng, 500)]
    rng.shuffle(texts)
    return texts


def train_tokenizer(root: Path, rng: random.Random):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = pretraining_texts(random.Random(rng.random()))
    for split_file in sorted((root / "data").glob("*/*.jsonl")):
        texts.append(split_file.read_text(encoding="utf-8"))
    texts.append(JUDGE_FORMAT + " " + build_prompt({"instruction": "x", "input": "y"}))
    texts += [sst2.INSTRUCTION, agnews.INSTRUCTION]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # A prefix space, as Llama's sentencepiece adds: a response encoded on its own ('positive') gets the
    # same word token as inside running text.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=512)
    fast.save_pretrained(root / "base")
    return fast


def pretrain_base(out: Path, tokenizer, rng: random.Random, seed: int, steps: int = 150) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from safealign.data.streams import BatchStream
    from safealign.loop import make_accelerator, train
    from safealign.methods.sft import SFT, SFTConfig
    from safealign.schema import TrainConfig

    ids: list[int] = []
    for text in pretraining_texts(rng):
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    blocks = [ids[i:i + BLOCK] for i in range(0, len(ids) - BLOCK + 1, BLOCK)]
    features = [{"input_ids": b, "labels": b} for b in blocks]
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **BASE_CONFIG)
    model = LlamaForCausalLM(config)
    cfg = TrainConfig(lr=4e-3, max_steps=steps, batch_size=32, warmup_ratio=0.05, scheduler="cosine",
                      weight_decay=0.01, log_every=100)
    stream = BatchStream(features, cfg.batch_size, tokenizer.pad_token_id, seed)
    result = train(model, SFT(SFTConfig(), steps), {"train": stream}, cfg, out / "_train", make_accelerator(cfg), seed)
    result["model"].save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    import shutil

    shutil.rmtree(out / "_train")
