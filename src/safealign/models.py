"""Models: their configs, loading and saving (local directories and hub ids with the same code), LoRA through
peft, the adapter chain (Lisa's two-adapter scheme: merge stage 1's adapter into the base, train a fresh one; or,
`lora.init: continue`, keep training stage 1's adapter on its own base), the reference model of DPO-style
methods, and `unwrap` for the wrapper the loop's accelerator adds.

A stage's saved model directory holds `safealign_model.json`: {"kind": "adapter" | "full", "base": PATH, and for
an adapter "chain": the base and earlier adapters it fits, in merge order}; a base in the same run is stored
relative ("../../align/model"), so run directories can be copied and moved. `model_chain` follows it back to a
plain model, so any stage output can be loaded, merged and evaluated.
Paths arrive resolved: 'mini:' and 'stage:' references are turned into directories by the pipeline.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from safealign.config import one_of, opt
from safealign.errors import ConfigError, SafealignError
from safealign.io import atomic_write_json, looks_like_hub_id
from safealign.losses.sft import token_log_probs

# transformers, peft and huggingface_hub are imported where they are used: importing them costs seconds, which
# every command that never loads a model (config checks, --dry-run, schema) would pay.

CHAIN_FILE = "safealign_model.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelConfig:
    path: str = opt("mini:base", "local directory, hub id, 'mini:base' or 'stage:NAME' (the output of an earlier stage)")
    trust_remote_code: bool = opt(False, "run the model repository's own Python code (off unless you trust it)")
    dtype: str = opt("auto", "weights dtype when loading: auto (float32 on CPU, the training precision on GPU), float32, bfloat16, float16")
    max_length: int = opt(512, "truncate prompt+response to this many tokens")
    gradient_checkpointing: bool = opt(False, "recompute activations in backward to save memory (works with LoRA)")
    quantization: str = opt("none", "none | nf4: QLoRA, the base loaded in 4-bit NormalFloat with double "
                                    "quantisation (bitsandbytes, a CUDA device); LoRA trains on top")

    def validate(self, where: str) -> None:
        one_of(self.dtype, ("auto", "float32", "bfloat16", "float16"), f"{where}.dtype")
        one_of(self.quantization, ("none", "nf4"), f"{where}.quantization")
        if self.max_length < 2:
            raise ConfigError(f"{where}.max_length: must be >= 2 (a prompt token and a response token), got {self.max_length}")


@dataclass
class LoraConfig:
    enabled: bool = opt(True, "train a LoRA adapter (peft); false trains all weights")
    r: int = opt(8, "LoRA rank")
    alpha: float = opt(4, "LoRA alpha (the update is scaled by alpha/r)")
    dropout: float = opt(0.1, "dropout on the LoRA input")
    target_modules: list[str] = opt(["q_proj", "v_proj"], "module names to adapt")
    modules_to_save: list[str] = opt([], "modules trained in full and saved with the adapter (e.g. a score head)")
    init: str = opt("auto", "fresh: a new adapter on the merged start model | continue: keep training the start "
                            "model's own adapter (model.path a LoRA stage output; its r, alpha and modules are "
                            "used, not these) | auto: continue for methods that ask for it (EWC), else fresh")

    def validate(self, where: str) -> None:
        one_of(self.init, ("auto", "fresh", "continue"), f"{where}.init")
        if self.enabled and (self.r < 1 or not 0.0 <= self.dropout < 1.0 or self.alpha <= 0):
            raise ConfigError(f"{where}: LoRA needs r >= 1, alpha > 0 and dropout in [0, 1); "
                              f"got r {self.r}, alpha {self.alpha}, dropout {self.dropout}")
        if self.init == "continue" and not self.enabled:
            raise ConfigError(f"{where}.init: continue trains the start model's adapter; it needs lora.enabled true")


def unwrap(model):
    """The model inside the data-parallel wrapper `accelerator.prepare` puts around it under several processes
    (the adapter switch, hooks and extra passes that must bypass gradient sync act on the inner model)."""
    return model.module if isinstance(model, (DistributedDataParallel, DataParallel)) else model


def check_model_path(path: str, where: str, ask_hub: bool = True) -> None:
    """Fail fast when a model path is neither a local directory nor a reachable hub id (`ask_hub=False`: nor
    shaped like one)."""
    if path.startswith(("mini:", "stage:", "real:")):  # resolved by the pipeline; preflight checks 'real:' names
        return
    if Path(path).is_dir():
        if not any((Path(path) / name).exists() for name in ("config.json", CHAIN_FILE, "adapter_config.json")):
            raise SafealignError(f"{where}: {path} is a directory without config.json: not a saved model")
        return
    if not looks_like_hub_id(path):
        raise SafealignError(f"{where}: model path does not exist: {path}")
    if not ask_hub:
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SafealignError(f"{where}: model '{path}' is not a local directory, not in the HF cache, and HF_HUB_OFFLINE=1")
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(path, timeout=10)  # the token comes from the environment or the HF login
    except Exception as e:
        raise SafealignError(f"{where}: model '{path}' is not a local directory and the hub cannot serve it: "
                             f"{str(e).splitlines()[0][:200]}") from None


def model_chain(path: str) -> list[str]:
    """[base, adapter_1, ..., adapter_k]: the plain model and the adapters to merge into it, in order."""
    parent = adapter_parent(path)
    return [path] if parent is None else model_chain(parent) + [path]


def adapter_parent(path: str) -> str | None:
    """The model an adapter stage output was trained on (its adapter applies on top of that model merged), or
    None when `path` is not a LoRA adapter."""
    meta_file = Path(path) / CHAIN_FILE
    if not meta_file.exists():
        return None
    meta = json.loads(meta_file.read_text())
    if meta["kind"] != "adapter":
        return None
    base = meta["base"]
    # './' or '../': another stage of the same run, stored relative so that a copied or moved run directory
    # reads its own models (a hub id never starts with a dot)
    return os.path.normpath(Path(path) / base) if base.startswith(("./", "../")) else base


def pick_dtype(name: str, precision: str = "fp32") -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if torch.cuda.is_available() and precision == "bf16":
        return torch.bfloat16
    return torch.float32


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_chain(path)[0], trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:  # Llama tokenizers ship none; the Lisa code pads with id 0 (unk)
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                   quantization: str = "none"):
    """Load the chain's base and merge every adapter of the chain into it; `quantization: nf4` loads a plain
    base in 4-bit NF4 with double quantisation for QLoRA (bf16 compute where the dtype is bf16, else fp32)."""
    from transformers import AutoModelForCausalLM

    chain = model_chain(path)
    extra = {}
    if quantization == "nf4":
        extra["quantization_config"] = nf4_config(chain, dtype)
    model = AutoModelForCausalLM.from_pretrained(chain[0], dtype=dtype, trust_remote_code=trust_remote_code, **extra)
    return merge_adapters(model, chain[1:])


def nf4_config(chain: list[str], dtype: torch.dtype):
    """bitsandbytes' NF4 + double quantisation (the QLoRA paper's setting), or a one-line reason it cannot run."""
    missing = [what for what, ok in (("a CUDA device", torch.cuda.is_available()),
                                     ("bitsandbytes", importlib.util.find_spec("bitsandbytes") is not None)) if not ok]
    if missing:
        raise SafealignError(f"model.quantization nf4 (QLoRA) needs {' and '.join(missing)}; set model.quantization=none "
                             f"to train LoRA on the full-precision base")
    if len(chain) > 1:  # the earlier adapters would be merged into rounded 4-bit weights
        raise SafealignError(f"model.quantization nf4: {chain[-1]} is an adapter chain; export it merged "
                             f"(safealign export --merge) and train on that directory")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def merge_adapters(model, adapters: list[str]):
    from peft import PeftModel

    for adapter in adapters:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


def _prepare_for_lora(model, gradient_checkpointing: bool, quantized: bool):
    """What a model needs before an adapter goes on it, fresh or continued: checkpointing, QLoRA's preparation."""
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if quantized:  # QLoRA: norms in fp32, input grads for checkpointing
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if gradient_checkpointing:
        model.enable_input_require_grads()  # the frozen embeddings must pass a grad-requiring input to checkpoints
    return model


def add_lora(model, cfg, gradient_checkpointing: bool = False, quantized: bool = False):
    """A fresh LoRA adapter (or, with cfg.enabled false, every weight trainable); `quantized`: the model was
    loaded in 4 bits (QLoRA)."""
    if not cfg.enabled:
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model = _prepare_for_lora(model, gradient_checkpointing, quantized)
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise SafealignError(f"lora.target_modules: the model has no module named {', '.join(missing)}")
    lora = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
                      modules_to_save=list(cfg.modules_to_save) or None, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def continue_lora(model, adapter_dir: str, gradient_checkpointing: bool = False, quantized: bool = False):
    """The adapter saved in `adapter_dir`, loaded trainable onto `model` (the model it was trained on, merged):
    fine-tuning that keeps training one adapter, as the Vaccine code's EWC (`first_lora_trainable`) and Booster's
    `--alternating single_lora`. The model remembers where it started, for `Reference`."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(_prepare_for_lora(model, gradient_checkpointing, quantized), adapter_dir,
                                      is_trainable=True)
    model.continued_from = adapter_dir
    return model


def save_model(model, tokenizer, out_dir: Path, base: str) -> None:
    """Save the adapter (peft format, loadable by peft, TRL and vLLM) or the full model, and the chain file."""
    from peft import PeftModel

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_chain_file(out_dir, "adapter" if isinstance(model, PeftModel) else "full", base)


def write_chain_file(out_dir: Path, kind: str, base: str) -> None:
    """safealign_model.json: what the model in `out_dir` is and the model it was trained on. `chain` spells out
    what an adapter fits: peft's adapter_config.json names only the plain base, yet an adapter trained on a
    merged model applies to that base with each earlier adapter merged in, in this order."""
    meta = {"kind": kind, "base": _as_stored(base, Path(out_dir))}
    if kind == "adapter":
        meta["chain"] = [_as_stored(p, Path(out_dir)) for p in model_chain(base)] + ["."]
    atomic_write_json(Path(out_dir) / CHAIN_FILE, meta)


def _as_stored(path: str, out_dir: Path) -> str:
    """A model path as a chain file in `out_dir` stores it: another stage of the same run (under the same
    stages/ directory) relative to `out_dir`, so a run directory copied or moved reads its own models; other
    local paths absolute; hub ids as they are."""
    if not Path(path).exists():
        return path
    full, here = Path(path).resolve(), out_dir.resolve()
    stages = here.parent.parent  # out_dir is RUN/stages/STAGE/model when a run saves it
    if stages.name != "stages" or not full.is_relative_to(stages):
        return str(full)
    rel = os.path.relpath(full, here)
    return rel if rel.startswith("..") else f"./{rel}"


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def response_log_probs(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sequence log-probs (B,) summed over response tokens, token log-probs (B, T-1), mask (B, T-1))."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, mask = token_log_probs(logits, batch["labels"])
    return (logps * mask).sum(dim=1), logps, mask


class Reference:
    """The starting model, as DPO, NPO, KL and RMU compare against it: the adapter-disabled policy under a fresh
    LoRA adapter (no second copy in memory), else a frozen copy made when the method is set up (full fine-tuning,
    or a continued adapter, whose start is not the adapter-disabled model)."""

    def __init__(self, model):
        policy = unwrap(model)
        fresh_adapter = hasattr(policy, "disable_adapter") and getattr(policy, "continued_from", None) is None
        self.frozen = None if fresh_adapter else copy.deepcopy(policy).requires_grad_(False).eval()

    @contextmanager
    def _as_reference(self, model):
        policy = unwrap(model)
        if self.frozen is not None:
            yield self.frozen
            return
        # The reference is a fixed function: no dropout in it, whatever mode the policy is training in.
        was_training = policy.training
        policy.eval()
        try:
            with policy.disable_adapter():
                yield policy
        finally:
            policy.train(was_training)

    @torch.no_grad()
    def logits(self, model, batch) -> torch.Tensor:
        with self._as_reference(model) as reference:
            return reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    @torch.no_grad()
    def log_probs(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with self._as_reference(model) as reference:
            return response_log_probs(reference, batch)
