"""The config schema shared by every pipeline: model, LoRA, data, training, and the stage kinds of a recipe.

Every default lives here with one line of help; recipes (YAML) hold only what differs.
Method and evaluation configs live beside their code (methods/*.py, evals/*.py) and are chosen by name.
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from typing import Any

from safealign.config import choose_from, one_of, opt
from safealign.data.prepare import PrepareConfig
from safealign.errors import ConfigError


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


@dataclass
class LoraConfig:
    enabled: bool = opt(True, "train a LoRA adapter (peft); false trains all weights")
    r: int = opt(8, "LoRA rank")
    alpha: float = opt(4, "LoRA alpha (the update is scaled by alpha/r)")
    dropout: float = opt(0.1, "dropout on the LoRA input")
    target_modules: list[str] = opt(["q_proj", "v_proj"], "module names to adapt")
    modules_to_save: list[str] = opt([], "modules trained in full and saved with the adapter (e.g. a score head)")


@dataclass
class SourceConfig:
    source: str = opt("", "dataset family, a key of safealign.data.SOURCES (beavertails, sst2, agnews, gsm8k, alpaca, "
                          "pku_saferlhf, pairs, responses, tofu, text)")
    path: str = opt("", "hub id, local file (.jsonl/.json/.parquet), local directory, or 'mini:NAME'")
    split: str = opt("train", "split to read (ignored for a single file); on the hub CONFIG:SPLIT picks a config too "
                              "(locuslab/TOFU forget10:train)")
    select: str = opt("all", "row filter, per family: beavertails all|safe|unsafe (by is_safe); "
                             "pku_saferlhf safe|unsafe|all; pairs chosen|rejected|all; others all")
    start: int = opt(0, "skip the first N rows (after select): keeps e.g. a defense's harmful rows apart from the attack's")

    def validate(self, where: str) -> None:
        from safealign.data import SOURCES, select_choices

        if not self.source or not self.path:
            raise ConfigError(f"{where}: both 'source' and 'path' are required")
        one_of(self.source, tuple(SOURCES), f"{where}.source")
        one_of(self.select, select_choices(self.source), f"{where}.select (source {self.source})")
        if self.start < 0:
            raise ConfigError(f"{where}.start: must be >= 0")


@dataclass
class DataConfig:
    task: SourceConfig | None = opt(None, "the user's (benign) training data")
    poison: SourceConfig | None = opt(None, "harmful rows mixed into the task data")
    sample_num: int = opt(0, "rows in the training mix (task + poison); 0 = every task row and no poison")
    poison_ratio: float = opt(0.0, "share of sample_num taken from `poison` (the first int(ratio*sample_num) rows)")
    guide: SourceConfig | None = opt(None, "alignment (guide) data for defenses such as Lisa")
    guide_data_num: int = opt(0, "rows of guide data (the first N); 0 = all")
    guide_mix: bool = opt(False, "VLGuard-style: put the guide rows into the training mix in place of as many task "
                                 "rows (sample_num stays the total, as the Lisa repo builds it), not a separate stream")
    harmful: SourceConfig | None = opt(None, "harmful data for alignment-stage defenses (Booster, T-Vaccine): the 'harmful' stream")
    harmful_num: int = opt(0, "rows of harmful data (the first N); 0 = all")
    pairs: dict[str, str] = opt({}, "preference pairs per stream: name -> pairs file, ours or TRL's format "
                                    "(e.g. train: 'stage:pairs/train/helpful_pairs.jsonl')")
    pairs_num: int = opt(0, "first N pairs of each pairs stream; 0 = all")
    validation: str = opt("", "pairs file evaluated during training (perplexity of the chosen responses, "
                              "every train.eval_every steps); pair-data methods only")
    messages: str = opt("", "conversations {messages: [{role, content}]} for SFT under the tokenizer's chat template "
                            "(loss on assistant tokens only), e.g. 'stage:prepare/sft.jsonl'")
    messages_num: int = opt(0, "first N conversations; 0 = all")
    mixing: str = opt("", "a prepare stage's stats.json ('stage:prepare/stats.json'): each epoch draws as many "
                          "conversations as the file has from that stage's sampler (language share, source x length "
                          "rotation, curriculum) instead of a shuffle")
    template: str = opt("alpaca", "prompt template of examples and pairs: alpaca (the Lisa / Safe RLHF code's) | chat "
                                  "(the tokenizer's chat template, one user turn)")
    forget: SourceConfig | None = opt(None, "the forget set of an unlearning method (e.g. {source: tofu, path: "
                                            "'mini:tofu', split: forget10})")
    retain: SourceConfig | None = opt(None, "the retain set of an unlearning method (e.g. split retain90)")
    forget_order: str = opt("random", "order of the forget set: random (seeded shuffle each epoch) | asc (easiest "
                                      "first by data.difficulty, a sequential order) | desc | weighted (each epoch "
                                      "draws with replacement, P ∝ score)")
    difficulty: str = opt("", "a difficulty stage's scores.json ('stage:difficulty/scores.json'), for forget_order")
    candidates: str = opt("", "rows of N scored candidate rewrites {prompt, candidates, scores} (or Tuna's "
                              "instruction/output/score): local file or directory, hub id or 'mini:code_backdoor'")
    candidates_split: str = opt("train", "split of `candidates`: of a directory or hub id, or of `candidates_ratios`")
    candidates_ratios: list[float] = opt([], "(train, validation, test) shares that cut one file's rows into splits "
                                             "(fixed shuffle); empty = the splits as given")
    candidates_num: int = opt(0, "first N candidate rows; 0 = all")

    def validate(self, where: str) -> None:
        if not 0.0 <= self.poison_ratio <= 1.0:
            raise ConfigError(f"{where}.poison_ratio: must be within [0, 1], got {self.poison_ratio}")
        if min(self.sample_num, self.guide_data_num, self.pairs_num, self.harmful_num, self.candidates_num,
               self.messages_num) < 0:
            raise ConfigError(f"{where}: the *_num counts must be >= 0")
        one_of(self.template, ("alpaca", "chat"), f"{where}.template")
        one_of(self.forget_order, ("random", "asc", "desc", "weighted"), f"{where}.forget_order")
        if (self.forget_order != "random") != bool(self.difficulty):
            raise ConfigError(f"{where}.forget_order: asc/desc/weighted go by data.difficulty scores, and scores need "
                              f"an order")
        if self.messages and (self.task is not None or self.pairs):
            raise ConfigError(f"{where}.messages: give conversations, 'task' examples or 'pairs', one of them")
        if self.guide_mix and (self.guide is None or self.sample_num == 0):
            raise ConfigError(f"{where}.guide_mix: mixing guide rows in needs 'guide' and sample_num > 0")
        if self.pairs and self.task is not None:
            raise ConfigError(f"{where}: give either 'task' (examples) or 'pairs' (preference pairs), not both")
        if self.validation and not self.pairs:
            raise ConfigError(f"{where}.validation: a validation pairs file needs pair data ('pairs')")
        if self.poison_ratio > 0 and self.poison is None:
            raise ConfigError(f"{where}.poison_ratio is {self.poison_ratio} but no 'poison' source is given")
        if self.poison_ratio > 0 and self.sample_num == 0:
            raise ConfigError(f"{where}.sample_num: must be > 0 when poison_ratio > 0")


@dataclass
class TrainConfig:
    lr: float = opt(1e-4, "peak learning rate (AdamW or SophiaG)")
    epochs: float = opt(1.0, "passes over the task data (the 'train' stream)")
    max_steps: int = opt(0, "optimizer steps; > 0 overrides epochs")
    batch_size: int = opt(8, "micro-batch size per process")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    weight_decay: float = opt(0.0, "decoupled weight decay of AdamW or SophiaG (not applied to biases and norm weights)")
    optimizer: str = opt("adamw", "adamw | sophiag (Sophia's clipped second-order update as SOUL uses it, optim.py)")
    adam_betas: list[float] = opt([0.9, 0.999], "AdamW betas")
    sophia_betas: list[float] = opt([0.9, 0.95], "SophiaG (β1 momentum, β2 Hessian EMA); SOUL's configs; "
                                                 "β1=0.81 reproduces SOUL's code, which updates the momentum twice a step")
    sophia_rho: float = opt(0.04, "SophiaG ρ: the step is lr·sign(m)·min(|m|/(ρ·5120·h), 1); SOUL's configs")
    hessian_interval: int = opt(1, "SophiaG: optimizer steps between Hessian EMA updates (k); SOUL: every step")
    warmup_ratio: float = opt(0.0, "share of steps with linear warm-up from 0")
    warmup_steps: int = opt(0, "warm-up length in optimizer steps; > 0 overrides warmup_ratio")
    scheduler: str = opt("constant", "learning-rate schedule after warm-up: constant, cosine, linear")
    max_grad_norm: float = opt(1.0, "clip the gradient norm to this; 0 disables clipping")
    precision: str = opt("fp32", "fp32, bf16 or fp16 (mixed precision through accelerate)")
    tf32: bool = opt(False, "allow TF32 matmuls on Ampere+ GPUs")
    log_every: int = opt(10, "optimizer steps per log line / metrics.jsonl row")
    eval_every: int = opt(0, "optimizer steps between evaluations on data.validation (also after the last step); 0 = only after the last")
    save_every: int = opt(0, "optimizer steps between checkpoints; 0 = only the final one")
    report_to: list[str] = opt([], "extra trackers: tensorboard, wandb")
    shuffle: bool = opt(True, "reshuffle the training data every epoch")

    def validate(self, where: str) -> None:
        one_of(self.scheduler, ("constant", "cosine", "linear"), f"{where}.scheduler")
        one_of(self.precision, ("fp32", "bf16", "fp16"), f"{where}.precision")
        one_of(self.optimizer, ("adamw", "sophiag"), f"{where}.optimizer")
        if self.optimizer == "sophiag" and (len(self.sophia_betas) != 2 or not all(0 <= b < 1 for b in self.sophia_betas)
                                            or self.sophia_rho < 0 or self.hessian_interval < 1):
            raise ConfigError(f"{where}: sophia_betas must be two numbers in [0, 1), sophia_rho >= 0 and "
                              f"hessian_interval >= 1; got {self.sophia_betas}, {self.sophia_rho}, {self.hessian_interval}")
        for tracker in self.report_to:
            one_of(tracker, ("tensorboard", "wandb"), f"{where}.report_to")
        if self.eval_every < 0 or self.warmup_steps < 0:
            raise ConfigError(f"{where}: eval_every and warmup_steps must be >= 0")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError(f"{where}: batch_size and grad_accum must be >= 1")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"{where}.warmup_ratio: must be within [0, 1), got {self.warmup_ratio}")


def _method_class(name: Any, where: str) -> type:
    from safealign.methods import METHODS

    one_of(str(name), tuple(METHODS), f"{where}.name")
    return METHODS[name].Config


def _eval_configs(value: Any, where: str) -> dict:
    from safealign.config import build
    from safealign.evals import EVALS

    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of evaluation name -> settings")
    out = {}
    for name, settings in value.items():
        one_of(str(name), tuple(EVALS), f"{where}")
        out[name] = build(EVALS[name].Config, settings or {}, f"{where}.{name}")
    return out


@dataclass
class TrainStage:
    """Train one model: load `model` (merging the adapters of the stages it comes from), add a fresh LoRA
    adapter, and run `method` on `data` with the shared loop."""

    kind: str = opt("train", "stage kind")
    model: ModelConfig = opt(None, "the model to start from")
    lora: LoraConfig = opt(None, "adapter settings")
    data: DataConfig = opt(None, "training data")
    method: Any = opt(None, "training method: {name: sft|lisa, ...its settings}", choose_by=choose_from(_method_class))
    train: TrainConfig = opt(None, "optimisation and loop settings")
    seed: int = opt(-1, "random seed; -1 takes the recipe's seed")

    def __post_init__(self) -> None:
        from safealign.methods.sft import SFTConfig

        self.model = self.model or ModelConfig()
        self.lora = self.lora or LoraConfig()
        self.data = self.data or DataConfig()
        self.method = self.method or SFTConfig()
        self.train = self.train or TrainConfig()

    def validate(self, where: str) -> None:
        from safealign.methods import METHODS

        method = METHODS[self.method.registry_name]
        wants_pairs = method.data_kind == "pairs"
        if self.model.quantization != "none" and not self.lora.enabled:
            raise ConfigError(f"{where}.model.quantization: quantised weights do not train; enable lora (QLoRA)")
        if self.data.validation and method.model_kind != "causal_lm":
            raise ConfigError(f"{where}.data.validation: the validation perplexity is for policies; "
                              f"'{self.method.registry_name}' trains a score model")
        name = self.method.registry_name
        if method.data_kind == "unlearn":
            for stream in method.streams:
                if getattr(self.data, stream) is None:
                    raise ConfigError(f"{where}.data.{stream}: method '{name}' needs a {stream} set")
            return
        if method.data_kind == "candidates":
            if not self.data.candidates:
                raise ConfigError(f"{where}.data.candidates: method '{name}' trains on scored candidates")
            return
        if wants_pairs:
            for stream in method.streams:
                if stream not in self.data.pairs:
                    raise ConfigError(f"{where}.data.pairs.{stream}: method '{name}' needs this pairs stream")
            return
        if self.data.messages:
            if method.streams != ("train",):
                raise ConfigError(f"{where}.data.messages: method '{name}' needs streams {method.streams}; "
                                  f"conversations make only 'train'")
            return
        if self.data.task is None:
            raise ConfigError(f"{where}.data.task: method '{name}' trains on task data (or data.messages: conversations)")
        if "guide" in method.streams and (self.data.guide is None or self.data.guide_mix):
            raise ConfigError(f"{where}.data.guide: method '{name}' needs alignment (guide) data as its own stream")
        if "harmful" in method.streams and self.data.harmful is None:
            raise ConfigError(f"{where}.data.harmful: method '{name}' needs harmful data")


@dataclass
class EvalStage:
    """Evaluate each model in `models` with every evaluation in `evals`; one cached unit per model."""

    kind: str = opt("eval", "stage kind")
    models: dict[str, str] = opt({}, "label -> model path (usually 'stage:NAME'); the labels name rows of results.json")
    evals: Any = opt({}, "evaluation name -> settings (harmful_score, finetune_accuracy)", choose_by=_eval_configs)
    dtype: str = opt("auto", "weights dtype for evaluation")
    trust_remote_code: bool = opt(False, "run the model repository's own Python code")
    seed: int = opt(-1, "random seed; -1 takes the recipe's seed")

    def validate(self, where: str) -> None:
        if not self.models:
            raise ConfigError(f"{where}.models: an eval stage needs at least one model")
        if not self.evals:
            raise ConfigError(f"{where}.evals: an eval stage needs at least one evaluation")


@dataclass
class PairsStage:
    """Preference pairs from PKU-SafeRLHF-schema rows: helpful (chosen = better) and harmless (chosen = safer),
    split by prompt, written as {train,val,test}/{helpful,harmless}_pairs.jsonl in the stage directory
    (later stages read them as 'stage:NAME/train/helpful_pairs.jsonl')."""

    kind: str = opt("pairs", "stage kind")
    path: str = opt("mini:pku_saferlhf", "rows in the PKU-SafeRLHF schema: hub id (PKU-Alignment/PKU-SafeRLHF), "
                                         "local file or directory, or 'mini:pku_saferlhf'")
    split: str = opt("train", "split to read (ignored for a single file)")
    ratios: list[float] = opt([0.8, 0.1, 0.1], "train / val / test shares of the distinct prompts")
    seed: int = opt(-1, "random seed of the prompt split; -1 takes the recipe's seed")


@dataclass
class GenerateStage:
    """Sample responses from a model for the prompts of a file, keep those the reward / cost models accept,
    and write them as prompt/response JSONL (`responses.jsonl` in the stage directory: distillation data for a
    later SFT stage, read as {source: responses, path: 'stage:NAME/responses.jsonl'}). Resumable."""

    kind: str = opt("generate", "stage kind")
    model: ModelConfig = opt(None, "the model that answers (the teacher)")
    prompts: str = opt("", "file whose distinct `prompt`s are answered: pairs, PKU-SafeRLHF, BeaverTails or prompt/response rows")
    split: str = opt("train", "split of `prompts` when it is a directory or hub id")
    num_prompts: int = opt(0, "first N distinct prompts; 0 = all")
    num_samples: int = opt(1, "responses sampled per prompt")
    temperature: float = opt(1.0, "sampling temperature; 0 = greedy (then num_samples must be 1)")
    top_p: float = opt(1.0, "nucleus sampling: keep the smallest token set with this much probability")
    max_new_tokens: int = opt(128, "response length")
    batch_size: int = opt(32, "prompts per generation batch (each batch is one resumable chunk)")
    reward_model: str = opt("", "score model whose reward a kept response must reach (empty = no reward filter)")
    min_reward: float = opt(0.0, "keep responses with reward >= this (when reward_model is set)")
    cost_model: str = opt("", "score model whose cost a kept response must stay under (empty = no cost filter)")
    max_cost: float = opt(0.0, "keep responses with cost <= this (when cost_model is set; 0 is the safe/unsafe boundary)")
    seed: int = opt(-1, "random seed of the samples; -1 takes the recipe's seed")

    def __post_init__(self) -> None:
        self.model = self.model or ModelConfig()

    def validate(self, where: str) -> None:
        if not self.prompts:
            raise ConfigError(f"{where}.prompts: a generate stage needs a prompt file")
        if self.num_samples < 1 or self.batch_size < 1 or self.num_prompts < 0:
            raise ConfigError(f"{where}: num_samples and batch_size must be >= 1, num_prompts >= 0")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"{where}: temperature must be >= 0 and top_p within (0, 1]")
        if self.temperature == 0 and self.num_samples > 1:
            raise ConfigError(f"{where}.num_samples: greedy decoding (temperature 0) gives one response per prompt")


@dataclass
class PrepareStage(PrepareConfig):
    """Instruction-tuning data preparation (data/prepare.py) into the stage directory: sft.jsonl and/or
    pairs.jsonl, stats.json, DATA_CARD.md (later stages read 'stage:NAME/sft.jsonl')."""

    kind: str = opt("prepare", "stage kind")
    tokenizer: str = opt("mini:base", "model whose tokenizer measures lengths for the buckets")
    seed: int = opt(-1, "seed of the sampler; -1 takes the recipe's seed")

    def validate(self, where: str = "prepare") -> None:
        if self.output_dir:
            raise ConfigError(f"{where}.output_dir: a prepare stage writes into its own stage directory")
        super().validate(where)

    def prepare_config(self, output_dir: str, sources=None) -> PrepareConfig:
        """The data-preparation config of this stage, writing into `output_dir` (sources replaced if given)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(PrepareConfig)}
        return PrepareConfig(**{**fields, "output_dir": output_dir, "sources": sources or self.sources})


@dataclass
class DifficultyStage:
    """Per-sample unlearning difficulty of a forget set under the model to be unlearned (data/difficulty.py),
    written as scores.json in the stage directory; an unlearning stage orders its forget set by it with
    data.difficulty: 'stage:NAME/scores.json' and data.forget_order: asc | desc."""

    kind: str = opt("difficulty", "stage kind")
    model: ModelConfig = opt(None, "the model to be unlearned")
    lora: LoraConfig = opt(None, "its trainable parameters as the unlearning stage will have them (enabled: false = all)")
    forget: SourceConfig | None = opt(None, "the forget set, exactly as the unlearning stage reads it")
    along: str = opt("start", "where the gradients are taken: start (all at the starting weights) | ga_epoch "
                              "(along one epoch of SGD gradient ascent, in the unlearning stream's first-epoch order)")
    lr: float = opt(1e-4, "step size of that gradient-ascent epoch (along: ga_epoch)")
    batch_size: int = opt(16, "rows per batched backward when summing G (along: start)")
    seed: int = opt(-1, "random seed (a fresh LoRA's initialisation, the ga_epoch order); must equal the "
                        "unlearning stage's; -1 takes the recipe's seed")

    def __post_init__(self) -> None:
        self.model = self.model or ModelConfig()
        self.lora = self.lora or LoraConfig(enabled=False)

    def validate(self, where: str) -> None:
        if self.forget is None:
            raise ConfigError(f"{where}.forget: a difficulty stage needs the forget set")
        one_of(self.along, ("start", "ga_epoch"), f"{where}.along")
        if self.batch_size < 1 or self.lr < 0:
            raise ConfigError(f"{where}: batch_size must be >= 1 and lr >= 0")


@dataclass
class ExportStage:
    """Export a trained model into the stage directory's `model/`: its adapter (peft format), or merged into its
    base as sharded safetensors with the tokenizer (export.py)."""

    kind: str = opt("export", "stage kind")
    model: str = opt("", "the model to export, usually 'stage:NAME'")
    merge: bool = opt(True, "merge the adapters into the base; false exports the adapter alone")
    base: str = opt("", "full-precision base to merge into instead of the chain's own (after QLoRA)")
    dtype: str = opt("float32", "dtype of the merged weights: float32, bfloat16, float16")
    max_shard_size: str = opt("2GB", "largest safetensors shard")

    def validate(self, where: str) -> None:
        if not self.model:
            raise ConfigError(f"{where}.model: an export stage needs a model")
        one_of(self.dtype, ("float32", "bfloat16", "float16"), f"{where}.dtype")


STAGE_KINDS = {"train": TrainStage, "eval": EvalStage, "pairs": PairsStage, "generate": GenerateStage,
               "prepare": PrepareStage, "difficulty": DifficultyStage, "export": ExportStage}


def _stages(value: Any, where: str) -> dict:
    from safealign.config import build

    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: expected a non-empty mapping of stage name -> stage")
    out = {}
    for name, stage in value.items():
        if not isinstance(stage, dict):
            raise ConfigError(f"{where}.{name}: expected a mapping")
        kind = stage.get("kind", "train")
        one_of(str(kind), tuple(STAGE_KINDS), f"{where}.{name}.kind")
        out[str(name)] = build(STAGE_KINDS[kind], stage, f"{where}.{name}")
    return out


@dataclass
class Sweep:
    """One stage setting run at several values inside one recipe (e.g. the poison ratio of every attack stage):
    each stage whose recipe sets `key`, and each stage built on such a stage, runs once per value as
    'NAME@VALUE'; an eval stage evaluates each as 'LABEL@VALUE'. Stages that do not depend on it run once."""

    key: str = opt("", "a stage setting as a dotted path inside the stage, e.g. data.poison_ratio")
    values: list[Any] = opt([], "the values, e.g. [0.05, 0.1, 0.2]")

    def validate(self, where: str) -> None:
        if not self.key or not self.values:
            raise ConfigError(f"{where}: a sweep needs a 'key' and at least one value")


@dataclass
class Recipe:
    name: str = opt("run", "recipe name; also the default run directory runs/<name>")
    description: str = opt("", "one line on what the recipe reproduces")
    seed: int = opt(42, "seed for every stage that does not set its own")
    output_dir: str = opt("", "run directory; default runs/<name>")
    stages: Any = opt({}, "stage name -> stage (kind: train | eval | pairs | generate), run in order", choose_by=_stages)
    report: dict[str, str] = opt({}, "extra lines for report.md: title -> text")
    sweep: Sweep | None = opt(None, "run the stages that set one key at several values (see Sweep)")
    compute_difficulty_only: bool = opt(False, "run only the difficulty stages (and the stages they read), write "
                                               "their scores.json and stop")
    cost_baselines: dict[str, str] = opt({}, "train stage -> the stage whose seconds per step and peak memory are its "
                                             "1.0 in the report's cost table (a defense's extra cost over plain SFT)")

    def validate(self, where: str) -> None:
        if not self.stages:
            raise ConfigError(f"{where or 'recipe'}: 'stages' is required")
