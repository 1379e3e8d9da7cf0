"""Score models (the reward model and the cost model of Safe RLHF): a causal LM's decoder with a scalar head,
the score read at the last non-padding token, as safe-rlhf's `AutoModelForScore` reads its end score.

The head is a plain `nn.Linear(hidden, 1)` with its bias initialised to 0, kept outside the peft wrapper: under
LoRA it stays fully trainable (what peft's `modules_to_save` would give) and is saved beside the adapter as
`score_head.safetensors`, so a score model directory is a normal model directory plus that file, and
`load_causal_lm` reads its backbone like any stage output. The file's metadata keeps the prompt format the model
was trained under (the training stage's data.prompt), so whoever scores with it renders the same prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from safealign.config import to_dict
from safealign.data.formats import collate, tokenize_example
from safealign.data.prompts import ALPACA, PromptFormat, parse_prompt
from safealign.errors import SafealignError
from safealign.models import load_causal_lm, load_tokenizer, save_model

SCORE_HEAD_FILE = "score_head.safetensors"


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 0/1 mask -> (B,) position of each row's last real token; right or left padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


class ScoreModel(nn.Module):
    """`lm` is a causal LM (optionally peft-wrapped); forward returns one score per sequence, (B,). `prompt` is the
    format its (prompt, response) texts are rendered in."""

    def __init__(self, lm, head: nn.Linear | None = None, prompt: PromptFormat = ALPACA):
        super().__init__()
        self.lm = lm
        self.prompt = prompt
        if head is None:
            head = nn.Linear(lm.config.hidden_size, 1)
            nn.init.zeros_(head.bias)
        self.score_head = head.to(next(lm.parameters()).dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The decoder alone: no (B, T, vocab) logits are computed. LoRA layers live inside it, so they apply.
        hidden = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(attention_mask)]  # (B, H)
        return self.score_head(last).squeeze(-1).float()


def save_score_model(model: ScoreModel, tokenizer, out_dir: Path, base: str) -> None:
    out_dir = Path(out_dir)
    save_model(model.lm, tokenizer, out_dir, base=base)
    head = model.score_head
    save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
              str(out_dir / SCORE_HEAD_FILE), metadata={"prompt": json.dumps(to_dict(model.prompt))})


def load_score_model(path: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False) -> ScoreModel:
    """A saved score model: its backbone through the adapter chain, its head and prompt format from
    score_head.safetensors."""
    head_file = Path(path) / SCORE_HEAD_FILE
    if not head_file.exists():
        raise SafealignError(f"{path} is not a score model (no {SCORE_HEAD_FILE}); train one with the "
                             f"reward_model or cost_model method")
    lm = load_causal_lm(path, dtype, trust_remote_code)
    weights = load_file(str(head_file))
    head = nn.Linear(weights["weight"].shape[1], 1)
    head.load_state_dict(weights)
    with safe_open(str(head_file), "pt") as f:
        saved = (f.metadata() or {}).get("prompt")
    # a head saved before the format was recorded was trained under the only one there was: alpaca
    prompt = parse_prompt(json.loads(saved), f"{head_file}: prompt") if saved else ALPACA
    return ScoreModel(lm, head, prompt)


class Scorer:
    """A saved score model with its own tokenizer, on `device`: scores (prompt, response) texts exactly as it
    was trained, whatever tokenizer the policy being scored uses."""

    def __init__(self, path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.model = load_score_model(path, dtype).to(device)
        self.tokenizer = load_tokenizer(path)

    def __call__(self, prompts: list[str], responses: list[str], batch_size: int = 32) -> torch.Tensor:
        return score_responses(self.model, self.tokenizer, prompts, responses, batch_size)


@torch.no_grad()
def score_responses(model: ScoreModel, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 32,
                    max_length: int = 512) -> torch.Tensor:
    """(N,) scores of each (prompt, response) in the score model's own prompt format, as it was trained."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        features = [tokenize_example(tokenizer, {"instruction": p, "input": "", "output": r}, max_length, model.prompt)
                    for p, r in zip(prompts[start:start + batch_size], responses[start:start + batch_size])]
        batch = collate(features, tokenizer.pad_token_id)
        out.append(model(batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
