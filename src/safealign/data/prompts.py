"""The prompt format: how a question becomes the text a response follows, the one place it is decided.

Every path that puts a question before a model renders it with `render_prompt(fmt, tokenizer, instruction,
input)`: training examples, pairs and candidates (data/formats.py), every evaluation, the generate stage,
Safe-MM-DPO's λ prompts and the score models (which keep the format they were trained under). The `prompt`
setting of a train stage's data, of an evaluation or of a generate stage is a `PromptFormat`:

- `alpaca`: the Alpaca template the Lisa code (and Vaccine, Booster, Tuna) trains and evaluates with; the
  default, for base models and the mini world;
- `chat`: the tokenizer's own chat template, one user turn (`apply_chat_template(messages,
  add_generation_prompt=True)`), after an optional system message; tokenizers without a template get
  DEFAULT_CHAT_TEMPLATE;
- `safe_rlhf`: Safe RLHF's "BEGINNING OF CONVERSATION: USER: {q} ASSISTANT:" (safe_rlhf/configs/constants.py:
  PROMPT_BEGIN + PROMPT_USER + PROMPT_ASSISTANT);
- `tags`: `start` + question + `end`, as TOFU's model_config.yaml (question_start_tag, question_end_tag +
  answer_tag: Llama-2-chat's "[INST] " and " [/INST]");
- `raw`: the question as is.

In YAML a kind alone is a string (`prompt: chat`); with settings a mapping (`prompt: {kind: tags, start: "[INST] ",
end: " [/INST]"}`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safealign.config import build, one_of, opt
from safealign.errors import ConfigError

KINDS = ("alpaca", "chat", "safe_rlhf", "tags", "raw")

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
SAFE_RLHF = "BEGINNING OF CONVERSATION: USER: {input} ASSISTANT:"  # "should not have a space at the end" (theirs)

# role tags on their own lines; an assistant turn ends with EOS, which generation stops on
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)  # frozen: ALPACA is shared as a default
class PromptFormat:
    """How a question becomes the prompt text (the kinds are the module's)."""

    kind: str = opt("alpaca", "alpaca (the Lisa code's template) | chat (the tokenizer's chat template) | safe_rlhf "
                              "('BEGINNING OF CONVERSATION: USER: {q} ASSISTANT:') | tags (start + q + end) | raw")
    system: str = opt("", "chat: a system message before the user's; empty = none (a template may add its own "
                          "default, as SmolLM2's and Qwen2.5's do)")
    start: str = opt("", "tags: the text before the question (TOFU's question_start_tag; Llama-2-chat: '[INST] ')")
    end: str = opt("", "tags: the text between the question and the answer (TOFU's question_end_tag + answer_tag; "
                       "Llama-2-chat: ' [/INST]')")

    def validate(self, where: str) -> None:
        one_of(self.kind, KINDS, f"{where}.kind")
        if self.system and self.kind != "chat":
            raise ConfigError(f"{where}.system: a system message is for kind chat, not {self.kind}")
        if bool(self.start or self.end) != (self.kind == "tags"):
            raise ConfigError(f"{where}: start / end are the tags of kind tags (set at least one), and only of it")


ALPACA = PromptFormat()


def parse_prompt(value: Any, where: str) -> PromptFormat:
    """`alpaca` (a kind alone) or a mapping of PromptFormat's fields."""
    return build(PromptFormat, {"kind": value} if isinstance(value, str) else value, where)


def prompt_setting(default: str, help: str, **metadata: Any) -> Any:
    """The `prompt` field of a config: a PromptFormat, written in YAML as a kind or a mapping."""
    return opt(PromptFormat(kind=default), help, choose_by=parse_prompt, **metadata)


def question(fmt: PromptFormat, instruction: str, input: str = "") -> str:
    """Instruction and input as one question for the formats without an input slot: joined by a space as
    safe-rlhf's Alpaca loader does (' '.join((instruction, input))), by a blank line otherwise."""
    if not input:
        return instruction
    return f"{instruction} {input}" if fmt.kind == "safe_rlhf" else f"{instruction}\n\n{input}"


def render_prompt(fmt: PromptFormat, tokenizer, instruction: str, input: str = "") -> str:
    """The prompt text a response follows. `tokenizer` is read by `chat` only (its chat template); the text is
    encoded by formats.encode_prompt, with the tokenizer's BOS unless the template wrote it (adds_special_tokens)."""
    if fmt.kind == "alpaca":
        return ALPACA_WITH_INPUT.format(instruction=instruction, input=input) if input else \
            ALPACA_NO_INPUT.format(instruction=instruction)
    text = question(fmt, instruction, input)
    if fmt.kind == "safe_rlhf":
        return SAFE_RLHF.format(input=text)
    if fmt.kind == "tags":
        return fmt.start + text + fmt.end
    if fmt.kind == "raw":
        return text
    return render_chat(tokenizer, chat_messages(fmt, text), generation_prompt=True)


def chat_messages(fmt: PromptFormat, text: str) -> list[dict]:
    """The conversation `chat` renders: the system message when set, then the user's question."""
    system = [{"role": "system", "content": fmt.system}] if fmt.system else []
    return system + [{"role": "user", "content": text}]


def render_chat(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    """`messages` under the tokenizer's chat template (DEFAULT_CHAT_TEMPLATE, set on it, where it has none)."""
    if tokenizer.chat_template is None:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def adds_special_tokens(tokenizer, text: str) -> bool:
    """Whether encoding `text` adds the tokenizer's special tokens (its BOS): not when the text begins with the BOS
    text already, as chat templates that write `{{ bos_token }}` render it, so no prompt carries two."""
    return not (tokenizer.bos_token and text.startswith(tokenizer.bos_token))


def prompt_record(kind: str, first: str | None) -> dict:
    """What an evaluation writes about its prompts into eval/<name>.json and results.json: the format's kind and
    the rendered prompt of its first row, so a number is never read apart from the template it was measured
    under. `first` is None where another program renders the prompts (lm-evaluation-harness)."""
    return {"format": kind, "first": first}
