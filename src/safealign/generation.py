"""Batched generation, greedy or sampled: the one place responses are generated.

Prompts are sorted by length so each left-padded batch wastes little compute, then put back in order.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from safealign.data.formats import encode_prompt, response_text
from safealign.io import progress_kwargs


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str] | list[list[int]], max_new_tokens: int, batch_size: int,
             desc: str = "generate", temperature: float = 0.0, top_p: float = 1.0) -> list[str]:
    """Responses to `prompts` (each the full templated prompt), the text after the response marker: greedy
    at temperature 0, else sampled at that temperature with nucleus `top_p` (from torch's global generator,
    so the caller's seed fixes the samples). A prompt given as token ids is used as it is: a judge whose own chat
    template tokenises its task prompt (evals/judges.py), BOS included, must not get a second BOS."""
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    model.eval()
    encoded = [p if isinstance(p, list) else encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc=desc, **progress_kwargs()):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        input_ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, i in enumerate(idx):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            attention_mask[row, width - len(encoded[i]):] = 1
        generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                   max_new_tokens=max_new_tokens, num_beams=1, **sampling,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            out[i] = response_text(text)
    return out
