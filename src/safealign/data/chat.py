"""Conversations under the tokenizer's chat template, with the loss on assistant tokens only.

A conversation is `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`. The whole
conversation is rendered once with the template; each assistant message's characters are found by rendering the
conversation up to it (with the generation prompt) and through it, and exactly the tokens inside those spans
(the template's end-of-turn text included, so the model learns to stop) carry labels. Tokenizers without a
template get prompts.DEFAULT_CHAT_TEMPLATE (the mini world's tokenizer has none). A single question under `prompt: chat`
(data/prompts.py) is tokenized here too, as a one-turn conversation (formats.tokenize_example).
"""

from __future__ import annotations

from safealign.data.chat_sources import ROLES
from safealign.data.prompts import adds_special_tokens, render_chat
from safealign.errors import DataError
from safealign.losses.sft import IGNORE_INDEX


def check_messages(messages, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {k} must be {{role: {'|'.join(ROLES)}, content: str}}, got {m!r}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant message to learn from")


def tokenize_messages(tokenizer, messages: list[dict], max_length: int) -> dict:
    """{"input_ids", "labels"}: the rendered conversation, labels only on assistant spans, truncated."""
    text = render_chat(tokenizer, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start = len(render_chat(tokenizer, messages[:i], True))
            through = render_chat(tokenizer, messages[:i + 1], False)
            end = len(through)
            if text[:end] != through:  # a template that rewrites history
                raise DataError("the chat template renders earlier turns differently as the conversation grows; "
                                "assistant tokens cannot be located")
            spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer, text), return_offsets_mapping=True)
    labels = [tok if any(s <= a and b <= e for s, e in spans) and b > a else IGNORE_INDEX
              for tok, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])]
    return {"input_ids": encoded["input_ids"][:max_length], "labels": labels[:max_length]}
