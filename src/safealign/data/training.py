"""What a train stage's streams are built from: `DataConfig`, every data setting of a train stage, and `STREAMS`,
one entry per data kind with its `check` (run when the config is read, so a recipe that cannot train fails before
anything runs) and its `build` (run when the stage runs: the tokenized, seeded, resumable batch streams the
method draws from, and a one-line summary). The kind is the method's `data_kind` (methods/base.py), except that
an "examples" method given `data.messages` trains on conversations ("chat"). The method class is passed in, so
this file knows no method by name; a new data kind is one DataConfig field group and one STREAMS entry here.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safealign.config import build, one_of, opt
from safealign.data.candidates import collate_candidates, read_candidates, tokenize_candidates
from safealign.data.chat import check_messages, tokenize_messages
from safealign.data.difficulty import order_by_difficulty, weights_by_difficulty
from safealign.data.files import load_rows
from safealign.data.formats import collate_pairs, tokenize_example, tokenize_pair
from safealign.data.mixing import guide_examples, harmful_examples, training_mix
from safealign.data.pairs import read_pairs
from safealign.data.prepare.prepare import PrepareConfig, sampler_of
from safealign.data.prompts import PromptFormat, prompt_setting
from safealign.data.sources import SourceConfig, load_examples
from safealign.data.streams import BatchStream
from safealign.errors import ConfigError, DataError


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
    prompt: PromptFormat = prompt_setting("alpaca", "prompt format of examples, pairs, candidates and forget / retain "
                                                    "rows (data/prompts.py): alpaca (the Lisa code's) | chat | "
                                                    "safe_rlhf | tags | raw; conversations (messages) carry their "
                                                    "own turns", was="template")
    forget: SourceConfig | None = opt(None, "the forget set of an unlearning method (e.g. {source: tofu, path: "
                                            "'mini:tofu', split: forget10})")
    retain: SourceConfig | None = opt(None, "the retain set of an unlearning method (e.g. split retain90)")
    forget_max_length: int = opt(0, "truncate forget rows to this many tokens; 0 = model.max_length (the WMDP code cuts "
                                    "cyber forget text at 768 tokens, bio and retain at 512)")
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
               self.messages_num, self.forget_max_length) < 0:
            raise ConfigError(f"{where}: the *_num counts and forget_max_length must be >= 0")
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

    def paths(self) -> Iterator[tuple[str, str]]:
        """(field, path) of every file or dataset these settings read, for the checks before a run."""
        for name, source in (("task", self.task), ("poison", self.poison), ("guide", self.guide),
                             ("harmful", self.harmful), ("forget", self.forget), ("retain", self.retain)):
            if source is not None:
                yield f"{name}.path", source.path
        for name, path in self.pairs.items():
            yield f"pairs.{name}", path
        for name, path in (("validation", self.validation), ("candidates", self.candidates),
                           ("messages", self.messages), ("difficulty", self.difficulty)):
            if path:
                yield name, path


@dataclass
class StreamSettings:
    """What building a stage's streams needs besides its data settings and its method."""

    tokenizer: Any
    max_length: int  # model.max_length
    batch_size: int  # train.batch_size
    shuffle: bool  # train.shuffle
    seed: int  # the stage's seed
    rank: int = 0  # this process and the number of processes (each takes its slice of a global batch)
    world_size: int = 1
    where: str = "data"  # the data settings' dotted key, for messages

    def stream(self, features: list[dict], seed: int, **kwargs) -> BatchStream:
        options = {"shuffle": self.shuffle, **kwargs}
        return BatchStream(features, self.batch_size, pad_id=self.tokenizer.pad_token_id, seed=seed, rank=self.rank,
                           world_size=self.world_size, **options)

    def tokenize(self, examples: list[dict], prompt: PromptFormat, max_length: int = 0) -> list[dict]:
        return [tokenize_example(self.tokenizer, e, max_length or self.max_length, prompt) for e in examples]


@dataclass(frozen=True)
class StreamKind:
    check: Callable[[DataConfig, type, str], None]  # (data, method class, stage key) -> raises ConfigError
    build: Callable[[DataConfig, type, Any, StreamSettings], tuple[dict, str]]  # (data, method class, its config, settings)


def data_kind(data: DataConfig, method_cls: type) -> str:
    """The STREAMS entry a method trains from under these data settings."""
    return "chat" if method_cls.data_kind == "examples" and data.messages else method_cls.data_kind


# ------------------------------------------------------------------------------------------------ examples


def check_examples(data: DataConfig, method_cls: type, where: str) -> None:
    name = method_cls.Config.registry_name
    if data.task is None:
        raise ConfigError(f"{where}.data.task: method '{name}' trains on task data (or data.messages: conversations)")
    if "guide" in method_cls.streams and (data.guide is None or data.guide_mix):
        raise ConfigError(f"{where}.data.guide: method '{name}' needs alignment (guide) data as its own stream")
    if "harmful" in method_cls.streams and data.harmful is None:
        raise ConfigError(f"{where}.data.harmful: method '{name}' needs harmful data")


def example_streams(data: DataConfig, method_cls: type, method_cfg, s: StreamSettings) -> tuple[dict, str]:
    """The task mix (with poison, and guide rows under guide_mix) as 'train'; guide data as 'guide' and harmful
    data as 'harmful' when given."""
    mix = training_mix(data, s.where)
    extra = {"guide": [] if data.guide_mix else guide_examples(data, s.where), "harmful": harmful_examples(data, s.where)}
    streams = {"train": s.stream(s.tokenize(mix, data.prompt), s.seed)}
    for i, (name, examples) in enumerate(extra.items(), start=1):
        if examples:
            streams[name] = s.stream(s.tokenize(examples, data.prompt), s.seed + i)
    poison = sum(e["meta"].get("poison", False) for e in mix)
    mixed = sum(e["meta"].get("guide", False) for e in mix)
    return streams, (f"{len(mix)} training rows ({poison} poison, {mixed} guide), {len(extra['guide'])} guide rows, "
                     f"{len(extra['harmful'])} harmful rows")


# ---------------------------------------------------------------------------------------------------- chat


def check_chat(data: DataConfig, method_cls: type, where: str) -> None:
    if method_cls.streams != ("train",):
        raise ConfigError(f"{where}.data.messages: method '{method_cls.Config.registry_name}' needs streams "
                          f"{method_cls.streams}; conversations make only 'train'")


def chat_streams(data: DataConfig, method_cls: type, method_cfg, s: StreamSettings) -> tuple[dict, str]:
    """'train': conversations under the chat template, the loss on assistant tokens (data/chat.py)."""
    rows = load_rows(data.messages, "train")
    n = data.messages_num or len(rows)
    for i in range(min(n, len(rows))):
        check_messages(rows.rows[i].get("messages"), rows.where(i))
    chosen, how = rows.rows[:n], "shuffled"
    if data.mixing:
        chosen, how = mixed_order(chosen, data.mixing), f"in the order of {data.mixing}'s sampler"
    features = [tokenize_messages(s.tokenizer, r["messages"], s.max_length) for r in chosen]
    # the sampler's order is the plan: no reshuffle on top
    stream = s.stream(features, s.seed, shuffle=False) if data.mixing else s.stream(features, s.seed)
    return {"train": stream}, f"{len(features)} conversations, {how}"


def mixed_order(rows: list[dict], stats_path: str) -> list[dict]:
    """len(rows) draws from the sampler the prepare stage planned (its config is in its stats.json)."""
    cfg = build(PrepareConfig, json.loads(Path(stats_path).read_text())["config"])
    if any("lang" not in r or "bucket" not in r for r in rows):
        raise DataError("data.mixing: the conversations lack 'lang' / 'bucket' (they are not a prepare stage's output)")
    return list(itertools.islice(sampler_of(rows, cfg), len(rows)))


# --------------------------------------------------------------------------------------------------- pairs


def check_pairs(data: DataConfig, method_cls: type, where: str) -> None:
    for stream in method_cls.streams:
        if stream not in data.pairs:
            raise ConfigError(f"{where}.data.pairs.{stream}: method '{method_cls.Config.registry_name}' needs this "
                              f"pairs stream")


def pair_streams(data: DataConfig, method_cls: type, method_cfg, s: StreamSettings) -> tuple[dict, str]:
    """One stream of preference pairs per entry of data.pairs (the first pairs_num of each); every pair must
    carry the method's `pair_labels`."""
    labels = method_cls.pair_labels
    streams, counts = {}, []
    for i, (name, path) in enumerate(data.pairs.items()):
        pairs = read_pairs(path)
        pairs = pairs[: data.pairs_num or len(pairs)]
        unlabelled = sum(any(p[k] is None for k in labels) for p in pairs)
        if unlabelled:
            raise DataError(f"{path}: {unlabelled} pairs lack {' / '.join(labels)}, which method "
                            f"'{method_cls.Config.registry_name}' needs (harmless pairs from a pairs stage carry them)")
        features = [tokenize_pair(s.tokenizer, p, s.max_length, data.prompt) for p in pairs]
        streams[name] = s.stream(features, s.seed + i, collate_fn=collate_pairs)
        counts.append(f"{len(pairs)} {name} pairs")
    return streams, ", ".join(counts)


# ---------------------------------------------------------------------------------------------- candidates


def check_candidates(data: DataConfig, method_cls: type, where: str) -> None:
    if not data.candidates:
        raise ConfigError(f"{where}.data.candidates: method '{method_cls.Config.registry_name}' trains on scored "
                          f"candidates")


def candidate_streams(data: DataConfig, method_cls: type, method_cfg, s: StreamSettings) -> tuple[dict, str]:
    """'train': rows of N scored candidates, each row one sample of N sequences (data/candidates.py)."""
    rows = read_candidates(data.candidates, data.candidates_split, s.seed, data.candidates_ratios)
    rows = rows[: data.candidates_num or len(rows)]
    features = [tokenize_candidates(s.tokenizer, r, s.max_length, data.prompt) for r in rows]
    stream = s.stream(features, s.seed, collate_fn=collate_candidates)
    return {"train": stream}, f"{len(rows)} rows of {len(rows[0]['candidates'])} candidates"


# ------------------------------------------------------------------------------------------------- unlearn


def check_unlearn(data: DataConfig, method_cls: type, where: str) -> None:
    sets = {"forget": data.forget, "retain": data.retain}
    for stream in method_cls.streams:
        if sets[stream] is None:
            raise ConfigError(f"{where}.data.{stream}: method '{method_cls.Config.registry_name}' needs a {stream} set")


def unlearn_streams(data: DataConfig, method_cls: type, method_cfg, s: StreamSettings) -> tuple[dict, str]:
    """'forget' (also 'train': the loop counts epochs over it) in a seeded random order or by difficulty
    (data.forget_order: a sequential order, which a shuffle would undo), and 'retain' when given. The method
    may rewrite the forget answers first (CL / IDK / RL), seeded, before tokenization and ordering."""
    forget = load_examples(data.forget)
    retain = load_examples(data.retain) if data.retain is not None else []
    forget = method_cls.rewrite_forget(forget, retain, method_cfg, s.seed)
    order, options = "random order", {}
    if data.forget_order == "weighted":
        options["weights"] = weights_by_difficulty(forget, data.difficulty, data.forget, s.seed)
        order = "draws weighted by difficulty"
    elif data.forget_order != "random":
        forget = order_by_difficulty(forget, data.difficulty, data.forget, data.forget_order, s.seed)
        options["shuffle"] = False
        order = f"{data.forget_order}ending difficulty"
    streams = {"forget": s.stream(s.tokenize(forget, data.prompt, data.forget_max_length), s.seed, **options)}
    streams["train"] = streams["forget"]
    summary = f"{len(forget)} forget rows in {order}"
    if data.retain is not None:
        streams["retain"] = s.stream(s.tokenize(retain, data.prompt), s.seed + 1)
        summary += f", {len(retain)} retain rows"
    return streams, summary


STREAMS = {
    "examples": StreamKind(check_examples, example_streams),
    "chat": StreamKind(check_chat, chat_streams),
    "pairs": StreamKind(check_pairs, pair_streams),
    "candidates": StreamKind(check_candidates, candidate_streams),
    "unlearn": StreamKind(check_unlearn, unlearn_streams),
}
