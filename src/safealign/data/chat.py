"""Conversations under the tokenizer's chat template, with the loss on assistant tokens only.

A conversation is `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`. The whole
conversation is rendered once with the template; each assistant message's characters are found by rendering the
conversation up to it (with the generation prompt) and through it, and exactly the tokens inside those spans
(the template's end-of-turn text included, so the model learns to stop) carry labels. Tokenizers without a
template get DEFAULT_CHAT_TEMPLATE (the mini world's tokenizer has none), which says so once.
"""

from __future__ import annotations

from safealign.data.chat_sources import ROLES
from safealign.data.formats import IGNORE_INDEX, tokenize_pair
from safealign.errors import DataError

# role tags on their own lines; an assistant turn ends with EOS, which generation stops on
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def ensure_chat_template(tokenizer) -> None:
    if tokenizer.chat_template is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE


def check_messages(messages, where: str) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list")
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {k} must be {{role: {'|'.join(ROLES)}, content: str}}, got {m!r}")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant message to learn from")


def _render(tokenizer, messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def tokenize_messages(tokenizer, messages: list[dict], max_length: int) -> dict:
    """{"input_ids", "labels"}: the rendered conversation, labels only on assistant spans, truncated."""
    ensure_chat_template(tokenizer)
    text = _render(tokenizer, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            start = len(_render(tokenizer, messages[:i], True))
            through = _render(tokenizer, messages[:i + 1], False)
            end = len(through)
            if text[:end] != through:  # a template that rewrites history
                raise DataError("the chat template renders earlier turns differently as the conversation grows; "
                                "assistant tokens cannot be located")
            spans.append((start, end))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [tok if any(s <= a and b <= e for s, e in spans) and b > a else IGNORE_INDEX
              for tok, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"])]
    return {"input_ids": encoded["input_ids"][:max_length], "labels": labels[:max_length]}


def chat_prompt(tokenizer, prompt: str) -> str:
    """A single user turn rendered for generation (the assistant's turn opened)."""
    ensure_chat_template(tokenizer)
    return _render(tokenizer, [{"role": "user", "content": prompt}], True)


def tokenize_chat_pair(tokenizer, pair: dict, max_length: int) -> dict:
    """A preference pair as two one-turn conversations (the user's prompt, then chosen or rejected)."""
    side = lambda response: tokenize_messages(  # noqa: E731
        tokenizer, [{"role": "user", "content": pair["prompt"]}, {"role": "assistant", "content": response}], max_length)
    return {"chosen": side(pair["chosen"]), "rejected": side(pair["rejected"]),
            "text": {k: pair[k] for k in ("prompt", "chosen", "rejected")}}


def pair_tokenizer(template: str):
    """tokenize_pair (the Alpaca prompt) or tokenize_chat_pair (the chat template), by a `template` setting."""
    return tokenize_chat_pair if template == "chat" else tokenize_pair
