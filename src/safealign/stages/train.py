"""The train stage: load the model (merging the adapters of the stages it comes from), add a fresh LoRA adapter
(a score head on top for score-model methods) or keep training the start model's own adapter (`lora.init`),
build the streams the method asks for (data/training.py), run the shared loop, save the model into the stage
directory's `model/`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from safealign.config import choose_from, one_of, opt
from safealign.data.formats import tokenize_pair
from safealign.data.pairs import read_pairs
from safealign.data.training import STREAMS, DataConfig, StreamSettings, data_kind
from safealign.errors import ConfigError, SafealignError
from safealign.evals.perplexity import response_perplexity
from safealign.loop import TrainConfig, make_accelerator, total_steps, train
from safealign.losses.sft import IGNORE_INDEX
from safealign.methods import METHODS
from safealign.methods.sft import SFTConfig
from safealign.models import (LoraConfig, ModelConfig, adapter_parent, add_lora, continue_lora, count_parameters,
                              load_causal_lm, load_tokenizer, pick_dtype, save_model)
from safealign.score_model import ScoreModel, save_score_model
from safealign.trackers import Tracking


def _method_class(name: Any, where: str) -> type:
    one_of(str(name), tuple(METHODS), f"{where}.name")
    return METHODS[name].Config


@dataclass
class TrainStage:
    """Train one model: load `model` (merging the adapters of the stages it comes from), add a fresh LoRA
    adapter or continue the start model's own (`lora.init`), and run `method` on `data` with the shared loop."""

    kind: str = opt("train", "stage kind")
    model: ModelConfig = opt(None, "the model to start from")
    lora: LoraConfig = opt(None, "adapter settings")
    data: DataConfig = opt(None, "training data")
    method: Any = opt(None, "training method: {name: sft|lisa, ...its settings}", choose_by=choose_from(_method_class))
    train: TrainConfig = opt(None, "optimisation and loop settings")
    seed: int = opt(-1, "random seed; -1 takes the recipe's seed")

    def __post_init__(self) -> None:
        self.model = self.model or ModelConfig()
        self.lora = self.lora or LoraConfig()
        self.data = self.data or DataConfig()
        self.method = self.method or SFTConfig()
        self.train = self.train or TrainConfig()

    def validate(self, where: str) -> None:
        method = METHODS[self.method.registry_name]
        if self.model.quantization != "none" and not self.lora.enabled:
            raise ConfigError(f"{where}.model.quantization: quantised weights do not train; enable lora (QLoRA)")
        if self.data.validation and method.model_kind != "causal_lm":
            raise ConfigError(f"{where}.data.validation: the validation perplexity is for policies; "
                              f"'{self.method.registry_name}' trains a score model")
        if self.lora.init == "continue" and method.model_kind != "causal_lm":
            raise ConfigError(f"{where}.lora.init: continue is for policies; '{self.method.registry_name}' adds a score head")
        STREAMS[data_kind(self.data, method)].check(self.data, method, where)

    def paths(self) -> Iterator[tuple[str, str, str]]:
        yield "model", "model.path", self.model.path
        for field, path in self.data.paths():
            yield "data", f"data.{field}", path
        yield "precision", "train.precision", self.train.precision
        for tracker in self.train.report_to:
            yield "tracker", "train.report_to", tracker


def run(unit) -> dict:
    cfg: TrainStage = unit.config
    method_cls = METHODS[cfg.method.registry_name]
    trackers = list(dict.fromkeys([*unit.report_to, *cfg.train.report_to]))
    accelerator = make_accelerator(cfg.train, unit.out_dir, trackers)
    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    settings = StreamSettings(tokenizer, cfg.model.max_length, cfg.train.batch_size, cfg.train.shuffle, cfg.seed,
                              accelerator.process_index, accelerator.num_processes, f"stages.{unit.stage}.data")
    streams, summary = STREAMS[data_kind(cfg.data, method_cls)].build(cfg.data, method_cls, cfg.method, settings)
    _warn_unlabelled(streams, cfg.model.max_length)
    dtype = pick_dtype(cfg.model.dtype, cfg.train.precision)
    # The fresh adapter's initial weights come from the global generator: seed it here, or they would depend on
    # whatever ran earlier in this process (which stages were cached), and reruns of a unit would differ.
    torch.manual_seed(cfg.seed)
    continued = _continued_adapter(cfg, method_cls, f"stages.{unit.stage}")
    base = adapter_parent(continued) if continued else cfg.model.path
    model = load_causal_lm(base, dtype, cfg.model.trust_remote_code, cfg.model.quantization)
    quantized = cfg.model.quantization != "none"
    if continued:
        model = continue_lora(model, continued, cfg.model.gradient_checkpointing, quantized)
        print(f"   continuing the adapter of {continued}", flush=True)
    else:
        model = add_lora(model, cfg.lora, cfg.model.gradient_checkpointing, quantized)
    if method_cls.model_kind == "score":
        model = ScoreModel(model, prompt=cfg.data.prompt)  # saved with it: scoring renders what training did
    trainable, total = count_parameters(model)
    steps = total_steps(cfg.train, streams["train"])
    print(f"   {summary}; {steps} steps; {trainable:,} of {total:,} parameters trainable", flush=True)
    method = method_cls(cfg.method, steps)
    evaluate = _validation(cfg, tokenizer) if cfg.data.validation else None
    tracking = Tracking(trackers, unit.recipe, unit.name, cfg) if trackers else None
    result = train(model, method, streams, cfg.train, unit.out_dir, accelerator, cfg.seed, evaluate=evaluate,
                   tokenizer=tokenizer, prompt=cfg.data.prompt, tracking=tracking)
    if accelerator.is_main_process:
        save = save_score_model if method_cls.model_kind == "score" else save_model
        save(result["model"], tokenizer, unit.out_dir / "model", base=base)
    accelerator.wait_for_everyone()
    return {"steps": result["steps"], "final_loss": result["final_loss"], "trainable_params": trainable,
            "data": summary, "setup_s": result["setup_s"], "step_s": result["step_s"]}


def _warn_unlabelled(streams: dict, max_length: int) -> None:
    """Rows whose prompt fills model.max_length keep no response token: they train on nothing; say how many."""
    for name, stream in streams.items():
        if name == "train" and stream is streams.get("forget"):
            continue  # unlearning: the same stream under two names
        rows = [f for f in stream.features if "labels" in f]
        empty = sum(all(t == IGNORE_INDEX for t in f["labels"]) for f in rows)
        if empty:
            print(f"   warning: {empty} of {len(rows)} '{name}' rows keep no response token within "
                  f"model.max_length={max_length} (the prompt fills it): they train on nothing", flush=True)


def _continued_adapter(cfg: TrainStage, method_cls, where: str) -> str | None:
    """The adapter directory to keep training, or None for a fresh adapter (lora.init)."""
    if cfg.lora.init == "fresh" or not cfg.lora.enabled or (cfg.lora.init == "auto" and not method_cls.continues_adapter):
        return None
    if adapter_parent(cfg.model.path) is not None:
        return cfg.model.path
    if cfg.lora.init == "continue":
        raise SafealignError(f"{where}.lora.init: continue needs model.path to be a LoRA stage output; "
                             f"{cfg.model.path} is not an adapter")
    return None  # auto on a plain model: nothing to continue


def _validation(cfg: TrainStage, tokenizer):
    """evaluate(model) -> {"chosen_perplexity"} on the validation pairs' chosen responses."""
    chosen = [tokenize_pair(tokenizer, p, cfg.model.max_length, cfg.data.prompt)["chosen"]
              for p in read_pairs(cfg.data.validation)]
    return lambda model: {"chosen_perplexity": response_perplexity(model, chosen, tokenizer.pad_token_id,
                                                                   cfg.train.batch_size)}
