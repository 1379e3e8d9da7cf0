"""Tokenisation: examples -> token ids with the prompt masked out of the loss, under a prompt format
(data/prompts.py: render_prompt).

An *example* is `{"instruction", "input", "output", "meta"}` (the Alpaca/Lisa record plus metadata the
evaluations need); its prompt is rendered in the stage's or evaluation's format, alpaca by default.

Raw text (WMDP corpora, WHP text, C4, Wikitext: the `text` family) is an example with `meta["raw_text"]` true
and the text as its `output`: no prompt, every token labelled (see `tokenize_example`), whatever the format. The
switch is read only there; render_prompt and the evaluations that build prompts do not look at it.
"""

from __future__ import annotations

import torch

from safealign.data.chat import tokenize_messages
from safealign.data.prompts import PromptFormat, adds_special_tokens, chat_messages, question, render_prompt
from safealign.losses.sft import IGNORE_INDEX

RESPONSE_MARKER = "### Response:"


def response_text(generated: str) -> str:
    """The response part of a generation: everything up to a repeated response marker, stripped (the Lisa
    evaluation takes `full_text.split("### Response:")[1]`, which stops there too)."""
    return generated.split(RESPONSE_MARKER)[0].strip()


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt ids with the tokenizer's BOS once, exactly as generation sees them."""
    return tokenizer(prompt, add_special_tokens=adds_special_tokens(tokenizer, prompt))["input_ids"]


def tokenize_example(tokenizer, example: dict, max_length: int, prompt: PromptFormat) -> dict:
    """Prompt and response are encoded separately, so the prompt's ids are the ones generation sees; the
    response ends with EOS. Labels are -100 on prompt tokens: the loss is on the response only. Under `chat` the
    example is a one-turn conversation tokenized as data/chat.py tokenizes conversations (whole, the assistant turn
    labelled through the template's own end of turn), so it matches SFT on `data.messages` token for token.

    A raw-text example (`meta["raw_text"]`) is BOS + text + EOS with every token labelled, as the mini base was
    pretrained and as WMDP's RMU and SOUL's GA on text see a passage. Either kind is cut to `max_length` tokens:
    one example per row, a long text truncated (its EOS then cut too), never split into chunks."""
    if example.get("meta", {}).get("raw_text"):  # evaluation examples carry no meta: templated
        ids = (encode_prompt(tokenizer, example["output"]) + [tokenizer.eos_token_id])[:max_length]
        return {"input_ids": ids, "labels": list(ids)}
    instruction, input = example["instruction"], example.get("input", "")
    if prompt.kind == "chat":
        messages = chat_messages(prompt, question(prompt, instruction, input))
        return tokenize_messages(tokenizer, messages + [{"role": "assistant", "content": example["output"]}], max_length)
    prompt_ids = encode_prompt(tokenizer, render_prompt(prompt, tokenizer, instruction, input))
    response_ids = tokenizer(example["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def collate(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of tokenized examples into (B, T) tensors."""
    width = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


# optional per-pair values carried into batches: safety labels, a score model's margin, the reference's log-probs
PAIR_FLAGS = ("chosen_is_safe", "rejected_is_safe", "margin", "ref_chosen_logp", "ref_rejected_logp")


def tokenize_pair(tokenizer, pair: dict, max_length: int, prompt: PromptFormat) -> dict:
    """A preference pair {"prompt", "chosen", "rejected", ...} as two sequences under the same rendered prompt,
    each tokenized like an SFT example (prompt masked, response + EOS labelled)."""
    side = lambda response: tokenize_example(  # noqa: E731
        tokenizer, {"instruction": pair["prompt"], "input": "", "output": response}, max_length, prompt)
    return {"chosen": side(pair["chosen"]), "rejected": side(pair["rejected"]),
            "text": {k: pair[k] for k in ("prompt", "chosen", "rejected")},  # for scoring with another tokenizer
            **{k: pair[k] for k in PAIR_FLAGS if pair.get(k) is not None}}


def collate_pairs(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> one (2B, T) batch: rows 0..B-1 the chosen responses, rows B..2B-1 the rejected ones, so one
    forward pass scores both; flags present on every pair come along as (B,) tensors."""
    batch = collate([f["chosen"] for f in features] + [f["rejected"] for f in features], pad_id)
    for key in PAIR_FLAGS:
        if all(key in f for f in features):
            batch[key] = torch.tensor([f[key] for f in features])
    return batch
