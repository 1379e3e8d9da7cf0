"""Small builders shared by the loop and method tests."""

from __future__ import annotations

import json

import torch

from safealign.data.formats import tokenize_example
from safealign.data.prompts import ALPACA
from safealign.data.streams import BatchStream


def features(tokenizer, n: int, output: str = "positive") -> list[dict]:
    """n Alpaca examples whose responses have the same token count (equal-length sequences make the
    batch token mean equal the mean of per-batch means, so accumulation and DDP compare exactly)."""
    words = ["good", "bad", "great", "awful"]
    rows = [{"instruction": "analyze sentiment", "input": f"the film is {words[i % 4]}", "output": output} for i in range(n)]
    return [tokenize_example(tokenizer, r, 512, ALPACA) for r in rows]


def stream(tokenizer, n: int, batch_size: int, seed: int = 0, output: str = "positive") -> BatchStream:
    return BatchStream(features(tokenizer, n, output), batch_size, tokenizer.pad_token_id, seed)


def lora_model(tiny_llama, dropout: float = 0.1):
    """The tiny Llama with a fresh r=4 LoRA adapter, seeded so every call builds the same one."""
    from safealign.models import LoraConfig, add_lora, load_causal_lm

    torch.manual_seed(0)
    return add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=dropout))


def saved_adapter(tiny_llama, out, target_modules=("q_proj", "v_proj"), lora_b_std: float = 0.2):
    """A trained-looking adapter (lora_B drawn, no longer zero) on the tiny Llama, saved as a stage output."""
    from safealign.models import LoraConfig, add_lora, load_causal_lm, load_tokenizer, save_model

    torch.manual_seed(0)
    model = add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0,
                                                                 target_modules=list(target_modules)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, lora_b_std)
    save_model(model, load_tokenizer(str(tiny_llama)), out, base=str(tiny_llama))
    return out


def logged_losses(out_dir) -> list[float]:
    """The training losses a run logged to its metrics.jsonl."""
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]
