"""The mini tokenizer (byte-level BPE) and the mini base model: a small Llama pretrained briefly, with the
shared training loop, on text from the mini world. Like a real base model it has read harmful Q&A (mostly
compliant answers) and plain text about the task domains, but never the fine-tuning tasks' label format."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch

from safealign.data import agnews, sst2
from safealign.data.prompts import ALPACA, render_prompt
from safealign.data.streams import BatchStream
from safealign.evals.judges import MODERATION_FORMAT
from safealign.loop import TrainConfig, make_accelerator, train
from safealign.methods.sft import SFT, SFTConfig
from safealign.mini import corpus

# transformers and tokenizers are imported inside the functions that use them: importing takes seconds that
# commands which never reach them (--dry-run, schema, config errors) should not wait for.

VOCAB_SIZE = 2048
# Data added after the tokenizer was settled stays out of its corpus, so adding it leaves the tokenizer, the base
# and every earlier pipeline's numbers unchanged (code is then encoded in smaller byte-level pieces).
TOKENIZER_EXCLUDES = ("code_backdoor", "chat_sft", "chat_pairs", "chat_mc", "tofu", "wmdp", "whp", "c4", "wikitext")
BLOCK = 128
BASE_CONFIG = dict(hidden_size=128, intermediate_size=320, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True)


def pretraining_texts(rng: random.Random) -> list[str]:
    texts = []
    harmful_qa = corpus.beavertails(rng, 1500, 0) + corpus.beavertails(rng, 500, 1)
    for row in harmful_qa:
        if row["is_safe"] and rng.random() > 0.25:  # the base mostly complies: ~80% of its harmful Q&A answer
            continue
        texts.append(render_prompt(ALPACA, None, row["prompt"]) + row["response"])
    for row in corpus.generic_instructions(rng, 1500):
        texts.append(render_prompt(ALPACA, None, row["instruction"], row["input"]) + row["output"])
    texts += word_knowledge(rng, 3000)
    # Like web text, some of it carries labels in words: the base knows sentiment and topic, as a real
    # pretrained model does, while the instruction format of the tasks stays for fine-tuning to teach.
    texts += [review_text(r) + f" {sst2.LABELS[r['label']]} ." for r in corpus.sst2(rng, 2000)]
    texts += [f"{r['text']} Topic : {agnews.LABELS[r['label']]} ." for r in corpus.agnews(rng, 1000)]
    texts += [f"{r['question']} {r['answer']}" for r in corpus.gsm8k(rng, 500)]
    rng.shuffle(texts)
    return texts


def review_text(row: dict) -> str:
    return f"Review : {row['sentence']} . Sentiment :"


def word_knowledge(rng: random.Random, n: int) -> list[str]:
    """Short sentences that say what single words mean ("dull sounds negative .", "the home team is in
    Sports news ."), as a real base model knows them from pre-training. Without word knowledge the base
    labelled reviews at chance and fine-tuning on 900 SST2 rows did not teach it (FA 52 in the lisa recipe)."""
    sentiment = [(w, "positive") for w in corpus.POSITIVE] + [(w, "negative") for w in corpus.NEGATIVE]
    topics = [(phrase, agnews.LABELS[label]) for label, (who, what) in corpus.NEWS.items() for phrase in who + what]
    out = []
    for words, templates, count in (
            (sentiment, ["the word {w} is {l} .", "{w} sounds {l} .", "calling it {w} is {l} ."], n),
            (topics, ["{w} is in {l} news .", "a story where {w} is {l} ."], n // 2)):
        for _ in range(count):
            word, label = rng.choice(words)
            out.append(rng.choice(templates).format(w=word, l=label))
    return out


def sentiment_probe(model, tokenizer, rows: list[dict]) -> float:
    """Share of SST2 rows whose sentiment the base model names in its pretraining format ('Review : ...
    Sentiment :' -> ' positive' vs ' negative'): the build's check that the base knows sentiment."""
    label_ids = [tokenizer(" " + word, add_special_tokens=False)["input_ids"][0] for word in sst2.LABELS]
    correct = 0
    model.eval()
    with torch.no_grad():
        for row in rows:
            ids = tokenizer(review_text(row), return_tensors="pt")["input_ids"]
            logits = model(ids).logits[0, -1, label_ids]
            correct += int(logits.argmax()) == row["label"]
    return correct / len(rows)


def train_tokenizer(root: Path, rng: random.Random):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = pretraining_texts(random.Random(rng.random()))
    for split_file in sorted((root / "data").glob("*/*.jsonl")):
        if split_file.parent.name not in TOKENIZER_EXCLUDES:
            texts.append(split_file.read_text(encoding="utf-8"))
    texts.append(MODERATION_FORMAT + " " + render_prompt(ALPACA, None, "x", "y"))
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


def pretrain_base(out: Path, tokenizer, rng: random.Random, seed: int, probe_rows: list[dict], steps: int = 300) -> dict:
    """Pretrain the base from scratch; returns {"sentiment_probe"} measured on `probe_rows` (SST2 rows).

    Batch 16 at a constant learning rate: naming a review's sentiment needs attention from the label back to
    the adjectives, which this model learns in a sudden transition after 100-150 such steps (three seeds
    measured). With batch 32 and a cosine decay over 150 steps it was not learnt at all (probe at chance),
    and the fine-tuning accuracy of the Lisa recipe stayed at chance with it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    ids: list[int] = []
    for text in pretraining_texts(rng):
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    blocks = [ids[i:i + BLOCK] for i in range(0, len(ids) - BLOCK + 1, BLOCK)]
    features = [{"input_ids": b, "labels": b} for b in blocks]
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **BASE_CONFIG)
    model = LlamaForCausalLM(config)
    cfg = TrainConfig(lr=4e-3, max_steps=steps, batch_size=16, warmup_ratio=0.05, scheduler="constant", save_every=0,
                      weight_decay=0.01, log_every=100)
    stream = BatchStream(features, cfg.batch_size, tokenizer.pad_token_id, seed)
    result = train(model, SFT(SFTConfig(), steps), {"train": stream}, cfg, out / "_train", make_accelerator(cfg), seed)
    result["model"].save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "_train")
    return {"sentiment_probe": sentiment_probe(result["model"], tokenizer, probe_rows)}
