"""Instruction-tuning data preparation, bilingual and Chinese first:

    read chat sources -> normalise text -> exact dedup -> drop too long, length buckets -> language filter
    -> output_dir/{sft,pairs}.jsonl, stats.json, DATA_CARD.md

and `MixedSampler`, which draws training records from (source, length bucket) groups at a target Chinese share.
Every step is a pure function over lists of records (`chat_sources` formats); only `prepare` reads and writes
files, and it prints the counts of every step.

Records are "Chinese" (`zh`) when their CJK ratio is at least `min_cn_ratio`, otherwise "English" (`en`, which
here means any language that is not Chinese). Output rows are the records plus `lang` and `bucket`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

from safealign.config import one_of, opt, to_dict
from safealign.data.chat_sources import ON_ERROR, read_source, source_kind
from safealign.errors import ConfigError, DataError
from safealign.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, looks_like_hub_id

KINDS = ("sft", "pairs")
PAIR_FIELDS = ("prompt", "chosen", "rejected")
LANGS = ("zh", "en")


@dataclass
class ChatSourceConfig:
    name: str = opt("", "adapter, a key of safealign.data.chat_sources.CHAT_SOURCES (oasst1, coig, coig_pc, messages, "
                        "shp, ultrafeedback, hh_rlhf, pku_saferlhf, pairs)")
    path: str = opt("", "hub id, local file (.jsonl/.json/.parquet) or local directory")
    split: str = opt("train", "split to read (ignored for a single file)")
    weight: float = opt(1.0, "sampling weight among the sources of the same language: a share of w / (sum of w)")

    def validate(self, where: str) -> None:
        if not self.name or not self.path:
            raise ConfigError(f"{where}: both 'name' and 'path' are required")
        source_kind(self.name, f"{where}.name")
        if not self.weight > 0:
            raise ConfigError(f"{where}.weight: must be > 0, got {self.weight}")


@dataclass
class PrepareConfig:
    sources: list[ChatSourceConfig] = opt([], "the datasets to read: a list of {name, path, split, weight}")
    output_dir: str = opt("", "directory for sft.jsonl / pairs.jsonl, stats.json and DATA_CARD.md")
    min_cn_ratio: float = opt(0.3, "a record is Chinese when this share of its non-space characters is CJK")
    allow_english_fallback: bool = opt(True, "admit non-Chinese records, up to english_cap of the output")
    english_cap: float = opt(0.3, "largest share of non-Chinese records in each output file (1 = no cap)")
    buckets: list[int] = opt([256, 1024, 2048], "length bucket upper bounds in tokens; longer records are dropped")
    target_cn_share: float = opt(0.7, "share of Chinese records the sampler draws when both languages are present")
    seed: int = opt(0, "seed of the sampler")
    curriculum: list[dict] = opt([], "sampler stages [{weights: {source: w}, steps: n}], in draws; the last lasts "
                                     "forever; empty = the sources' weights throughout")
    on_error: str = opt("raise", "malformed rows: raise (stop at the first, naming file:line) or skip (count them)")

    def validate(self, where: str = "prepare") -> None:
        where = where or "prepare"  # build() passes "" at the top level
        if not self.sources:
            raise ConfigError(f"{where}.sources: at least one source is required")
        for k, spec in enumerate(self.sources):
            spec.validate(f"{where}.sources[{k}]")
        names = [s.name for s in self.sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # records, stats and sampling weights are keyed by source name
            raise ConfigError(f"{where}.sources: source '{twice[0]}' is listed twice; merge its files into one")
        for name, value in (("min_cn_ratio", self.min_cn_ratio), ("english_cap", self.english_cap),
                            ("target_cn_share", self.target_cn_share)):
            if not 0 <= value <= 1:
                raise ConfigError(f"{where}.{name}: must be between 0 and 1, got {value}")
        if not self.buckets or self.buckets[0] < 1 or any(a >= b for a, b in zip(self.buckets, self.buckets[1:])):
            raise ConfigError(f"{where}.buckets: must be increasing positive token counts, got {self.buckets}")
        one_of(self.on_error, ON_ERROR, f"{where}.on_error")


# ---------------------------------------------------------------------------------------------- normalisation

# NFKC turns these full-width marks into ASCII ("，" -> ","), which is wrong typography in Chinese text and
# would teach the model to write it; they are kept. Full-width letters and digits ("Ａ１" -> "A1") still fold.
KEPT_FULLWIDTH = "！（），：；？～…"
_KEPT = re.compile(f"([{KEPT_FULLWIDTH}]+)")
_INNER_SPACE = re.compile(r"[^\S\n]+")  # any whitespace except a newline
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(s: str) -> str:
    """Normalise one text:
    1. Unicode NFKC (full-width letters/digits/space, ligatures and other compatibility forms fold to their
       plain forms; U+3000 and U+00A0 become a normal space), except the Chinese full-width punctuation
       `KEPT_FULLWIDTH` which stays as written;
    2. line ends \\r\\n and \\r become \\n;
    3. in each line, the leading indentation is kept (code and poems need it), every later run of spaces/tabs
       (and other non-newline whitespace) becomes one space, and trailing whitespace is removed;
    4. three or more newlines become two (at most one blank line); the text is stripped."""
    parts = _KEPT.split(s)  # odd positions hold the kept punctuation
    s = "".join(p if k % 2 else unicodedata.normalize("NFKC", p) for k, p in enumerate(parts))
    lines = []
    for line in s.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        body = line.lstrip(" \t")
        lines.append((line[: len(line) - len(body)] + _INNER_SPACE.sub(" ", body)).rstrip())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def is_sft(r: dict) -> bool:
    return "messages" in r


def normalize_record(r: dict) -> dict:
    """A copy of `r` with every text normalised: each message's content (sft) or prompt/chosen/rejected
    (pairs); other fields (roles, source, ...) as they are."""
    if is_sft(r):
        return {**r, "messages": [{**m, "content": normalize_text(m["content"])} for m in r["messages"]]}
    return {**r, **{k: normalize_text(r[k]) for k in PAIR_FIELDS}}


def record_texts(r: dict) -> list[str]:
    return [m["content"] for m in r["messages"]] if is_sft(r) else [r[k] for k in PAIR_FIELDS]


def record_text(r: dict) -> str:
    """All texts of a record joined by newlines (message contents, or prompt, chosen, rejected)."""
    return "\n".join(record_texts(r))


def record_key(r: dict) -> str:
    """SHA-256 hex of the normalised record's canonical JSON (sorted keys, no spaces, UTF-8): of its
    messages' roles and contents, or of prompt/chosen/rejected. The source and other fields are not part
    of it, so the same conversation from two datasets is a duplicate."""
    n = normalize_record(r)
    core = ({"messages": [{"role": m["role"], "content": m["content"]} for m in n["messages"]]} if is_sft(n)
            else {k: n[k] for k in PAIR_FIELDS})
    blob = json.dumps(core, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def dedup(records: list[dict]) -> tuple[list[dict], int]:
    """(records without exact duplicates by `record_key`, keeping each first occurrence, n removed)."""
    seen, kept = set(), []
    for r in records:
        key = record_key(r)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept, len(records) - len(kept)


# ---------------------------------------------------------------------------------------------- language

# CJK Symbols and Punctuation U+3001-303F (U+3000 is a space), Extension A U+3400-4DBF, Unified Ideographs
# U+4E00-9FFF, Compatibility Ideographs U+F900-FAFF, Halfwidth and Fullwidth Forms U+FF00-FFEF (after
# normalisation only the kept full-width punctuation and half-width katakana are left there).
_CJK = re.compile("[\u3001-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_NON_SPACE = re.compile(r"\S")


def cjk_ratio(text: str) -> float:
    """Share of CJK characters (ranges above) among the non-whitespace characters; 0 for an empty text."""
    total = len(_NON_SPACE.findall(text))
    return len(_CJK.findall(text)) / total if total else 0.0


def record_language(r: dict, min_cn_ratio: float) -> str:
    """'zh' when the record's CJK ratio is at least min_cn_ratio, else 'en'."""
    return "zh" if cjk_ratio(record_text(r)) >= min_cn_ratio else "en"


def english_limit(n_zh: int, cap: float) -> int | None:
    """Most English records admitted beside n_zh Chinese ones so that n_en <= cap * (n_zh + n_en):
    floor(cap * n_zh / (1 - cap)), in exact rational arithmetic on the decimal cap (in floats, cap 0.6 with
    2 Chinese gives 0.6 * 2 / (1 - 0.6) = 2.9999999999999996, which floors to 2, not 3). None (no limit) for
    cap >= 1."""
    if cap >= 1:
        return None
    c = Fraction(str(cap))
    return math.floor(c * n_zh / (1 - c))


def language_filter(records: list[dict], min_cn_ratio: float, allow_english_fallback: bool,
                    english_cap: float) -> tuple[list[dict], dict]:
    """(kept, stats). Chinese records are all kept. English ones are rejected unless the fallback is on, and
    then admitted in input order up to `english_limit` (so they are at most english_cap of the output).
    Kept records are in input order. stats: admitted / rejected per language, en_max, zh_share of the output."""
    langs = [record_language(r, min_cn_ratio) for r in records]
    n_zh = langs.count("zh")
    limit = english_limit(n_zh, english_cap)
    en_max = (len(records) - n_zh if limit is None else limit) if allow_english_fallback else 0
    kept, n_en = [], 0
    for r, lang in zip(records, langs):
        if lang == "en":
            if n_en == en_max:
                continue
            n_en += 1
        kept.append(r)
    stats = {"admitted": {"zh": n_zh, "en": n_en}, "rejected": {"zh": 0, "en": len(records) - n_zh - n_en},
             "en_max": en_max, "zh_share": round(n_zh / len(kept), 6) if kept else 0.0}
    return kept, stats


# ---------------------------------------------------------------------------------------------- length


def bucket_labels(bounds: list[int] | tuple[int, ...]) -> list[str]:
    """[256, 1024, 2048] -> ["0-256", "257-1024", "1025-2048"] (inclusive token ranges)."""
    lows = [0] + [b + 1 for b in bounds[:-1]]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, bounds)]


def record_length(r: dict, token_count_fn: Callable[[str], int]) -> int:
    """Tokens of the longest sequence the record trains on: all messages joined (sft), or the prompt with
    the longer of chosen / rejected (pairs). Chat-template tokens are not counted."""
    if is_sft(r):
        return token_count_fn(record_text(r))
    return max(token_count_fn(f"{r['prompt']}\n{r[side]}") for side in ("chosen", "rejected"))


def length_buckets(records: list[dict], token_count_fn: Callable[[str], int],
                   bounds: list[int] | tuple[int, ...] = (256, 1024, 2048)) -> tuple[dict[str, list[dict]], int]:
    """({label: records in input order} for every bucket, even empty ones; n dropped as longer than the last
    bound). A record of length n goes to the first bucket whose upper bound is >= n."""
    labels = bucket_labels(bounds)
    out, dropped = {label: [] for label in labels}, 0
    for r in records:
        k = bisect.bisect_left(bounds, record_length(r, token_count_fn))
        if k == len(bounds):
            dropped += 1
        else:
            out[labels[k]].append(r)
    return out, dropped


# ---------------------------------------------------------------------------------------------- sampling


class MixedSampler:
    """An endless, seeded stream of records mixed across (source, bucket) groups and two languages.

    Each draw (a) picks Chinese with probability target_cn_share when both languages have records with a
    positive weight (otherwise the language that has), then (b) picks a group of that language by smooth
    weighted round-robin (deterministic, exact shares over every cycle), so a large source cannot crowd out a
    small one. Groups are split by language: the units are (source, bucket, language). Within a language a
    source of weight w gets w / (sum of the weights of the sources that have records in that language), shared
    equally by its buckets of that language; a source with records in both languages gets a share in each.
    (c) A record is taken from the group's shuffled order; an exhausted group is reshuffled. All randomness
    comes from one random.Random(seed).

    weights: {source: w}, 1 for a source not named. curriculum: stages [{"weights": {...}, "steps": n}]: a
    stage's weights replace the named sources' weights (0 leaves a source out) for its n draws; the last
    stage lasts forever."""

    def __init__(self, groups: dict[tuple[str, str], list[dict]], language_of: Callable[[dict], str],
                 target_cn_share: float = 0.7, seed: int = 0, weights: dict[str, float] | None = None,
                 curriculum: list[dict] | None = None):
        self._rng = random.Random(seed)
        self._pools: dict[tuple[str, str, str], list[dict]] = {}
        for source, bucket in sorted(groups):  # sorted: the draws depend on the seed, not on dict order
            for r in groups[(source, bucket)]:
                self._pools.setdefault((source, bucket, language_of(r)), []).append(r)
        for pool in self._pools.values():
            self._rng.shuffle(pool)
        self._cursor = dict.fromkeys(self._pools, 0)
        self.sources = sorted({s for s, _ in groups})
        base = self._weights(weights or {}, {s: 1.0 for s in self.sources}, "weights")
        self._stages = [(None, base)] if not curriculum else self._curriculum(curriculum, base)
        self._tables = [self._table(w, target_cn_share, k) for k, (_, w) in enumerate(self._stages)]
        self._step, self._active, self._credit = 0, None, {}

    def _weights(self, given: dict, base: dict[str, float], where: str) -> dict[str, float]:
        for name, w in given.items():
            if name not in base:
                raise ConfigError(f"{where}.{name}: no such source (have {', '.join(self.sources)})")
            if not w >= 0:
                raise ConfigError(f"{where}.{name}: weight must be >= 0, got {w}")
        return {**base, **{k: float(v) for k, v in given.items()}}

    def _curriculum(self, stages: list[dict], base: dict[str, float]) -> list[tuple[int, dict]]:
        out = []
        for k, stage in enumerate(stages):
            if not isinstance(stage, dict) or set(stage) != {"weights", "steps"}:
                raise ConfigError(f"curriculum[{k}]: expected {{weights: {{source: w}}, steps: n}}, got {stage!r}")
            if type(stage["steps"]) is not int or stage["steps"] < 1:
                raise ConfigError(f"curriculum[{k}].steps: must be a positive integer, got {stage['steps']!r}")
            out.append((stage["steps"], self._weights(stage["weights"], base, f"curriculum[{k}].weights")))
        return out

    def _table(self, weights: dict[str, float], target_cn_share: float, k: int) -> dict:
        """{"p_zh": probability of Chinese, "groups": {lang: [(pool key, weight), ...]}} of one stage."""
        groups = {}
        for lang in LANGS:
            keys = [key for key in self._pools if key[2] == lang and weights[key[0]] > 0]
            by_source = Counter(key[0] for key in keys)
            total = sum(weights[s] for s in by_source)
            if keys:
                groups[lang] = [(key, weights[key[0]] / total / by_source[key[0]]) for key in keys]
        if not groups:
            raise ConfigError(f"sampler stage {k}: no source with a positive weight has records")
        p_zh = target_cn_share if len(groups) == 2 else float("zh" in groups)
        return {"p_zh": p_zh, "groups": groups}

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        k = self._stage_index(self._step)
        self._step += 1
        if k != self._active:  # a new stage starts its round-robin afresh
            self._active, self._credit = k, {key: 0.0 for key in self._pools}
        table = self._tables[k]
        if len(table["groups"]) == 2:
            lang = "zh" if self._rng.random() < table["p_zh"] else "en"
        else:
            lang = next(iter(table["groups"]))
        return self._take(self._round_robin(table["groups"][lang]))

    def _stage_index(self, step: int) -> int:
        for k, (steps, _) in enumerate(self._stages[:-1]):
            if step < steps:
                return k
            step -= steps
        return len(self._stages) - 1

    def _round_robin(self, groups: list[tuple[tuple, float]]) -> tuple:
        """Smooth weighted round-robin (as nginx): every group gains its weight, the richest is served and pays
        the total. Over any run of draws each group's count is within one of weight * draws."""
        for key, w in groups:
            self._credit[key] += w
        best = max(groups, key=lambda kw: self._credit[kw[0]])[0]
        self._credit[best] -= sum(w for _, w in groups)
        return best

    def _take(self, key: tuple) -> dict:
        pool = self._pools[key]
        if self._cursor[key] == len(pool):
            self._rng.shuffle(pool)
            self._cursor[key] = 0
        self._cursor[key] += 1
        return pool[self._cursor[key] - 1]

    def plan(self) -> list[dict]:
        """Expected shares, one entry per stage: {"steps": n (None: lasts forever), "language": {zh, en},
        "sources": {source: share of all draws}, "groups": {"source|bucket|lang": share}}."""
        out = []
        for (steps, _), table in zip(self._stages, self._tables):
            language = {lang: 0.0 for lang in LANGS}
            sources = {s: 0.0 for s in self.sources}
            groups = {}
            for lang, entries in table["groups"].items():
                p = table["p_zh"] if lang == "zh" else 1 - table["p_zh"]
                language[lang] = round(p, 6)
                for (source, bucket, _), w in entries:
                    sources[source] += p * w
                    groups[f"{source}|{bucket}|{lang}"] = round(p * w, 6)
            out.append({"steps": steps, "language": language,
                        "sources": {s: round(v, 6) for s, v in sources.items()}, "groups": groups})
        return out


def sampler_of(rows: list[dict], cfg: PrepareConfig) -> "MixedSampler":
    """The sampler of a kind's written rows under `cfg` (weights, target share, seed, curriculum): the one whose
    plan the statistics report and the one a training stage with `data.mixing` draws from."""
    present = {r["source"] for r in rows}
    weights = {spec.name: spec.weight for spec in cfg.sources if spec.name in present}
    return MixedSampler(groups_of(rows), lambda r: r["lang"], cfg.target_cn_share, cfg.seed, weights,
                        cfg.curriculum or None)


def groups_of(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """{(source, bucket): rows} of output rows (which carry `source` and `bucket`)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["bucket"]), []).append(r)
    return groups


# ---------------------------------------------------------------------------------------------- the pipeline


def _log(msg: str) -> None:
    print(f"   {msg}", flush=True)


def prepare(cfg: PrepareConfig, token_count_fn: Callable[[str], int]) -> dict:
    """Run the pipeline and write output_dir/{sft,pairs}.jsonl (one file per kind that has sources),
    stats.json and DATA_CARD.md, atomically; returns the stats. token_count_fn(text) -> int measures lengths
    (the model's tokenizer in production). The length filter runs before the language cap, so the cap holds
    on the written files; each kind is filtered on its own, so each file respects the cap."""
    cfg.validate("prepare")
    if not cfg.output_dir:
        raise ConfigError("prepare.output_dir: required")
    stats: dict = {"config": to_dict(cfg), "sources": {}, "outputs": {}}
    by_kind: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for spec in cfg.sources:
        kind = source_kind(spec.name)
        records, skipped = read_source(spec.name, spec.path, spec.split, cfg.on_error)
        _log(f"read {spec.name} ({kind}) from {spec.path}: {len(records)} records, {skipped} malformed rows skipped")
        if not records:
            raise DataError(f"{spec.path}: source '{spec.name}' gave no records ({skipped} malformed rows skipped)")
        stats["sources"][spec.name] = {"kind": kind, "path": spec.path, "split": spec.split, "weight": spec.weight,
                                       "records": len(records), "skipped": skipped}
        by_kind[kind] += records
    out_dir, outputs = Path(cfg.output_dir), {}
    for kind, records in by_kind.items():
        if records:
            stats[kind], outputs[kind] = _prepare_kind(kind, records, cfg, token_count_fn)
            for name, counts in stats[kind].pop("per_source").items():
                stats["sources"][name].update(counts)
    for kind, rows in outputs.items():  # written only once every kind passed its filters
        atomic_write_jsonl(out_dir / f"{kind}.jsonl", rows)
        stats["outputs"][kind] = str(out_dir / f"{kind}.jsonl")
    atomic_write_json(out_dir / "stats.json", stats)
    atomic_write_text(out_dir / "DATA_CARD.md", data_card(stats))
    _log(f"wrote {', '.join(stats['outputs'].values())}, stats.json and DATA_CARD.md in {out_dir}")
    return stats


def _prepare_kind(kind: str, records: list[dict], cfg: PrepareConfig,
                  token_count_fn: Callable[[str], int]) -> tuple[dict, list[dict]]:
    """(stats, output rows) of one kind's records, all sources together (dedup keeps the first occurrence
    in source order)."""
    records = [normalize_record(r) for r in records]
    unique, n_dup = dedup(records)
    _log(f"{kind}: {len(records)} records, {n_dup} exact duplicates removed, {len(unique)} left")
    buckets, n_long = length_buckets(unique, token_count_fn, cfg.buckets)
    bucket_of = {id(r): label for label, rs in buckets.items() for r in rs}
    fitting = [r for r in unique if id(r) in bucket_of]
    _log(f"{kind}: {n_long} longer than {cfg.buckets[-1]} tokens dropped, {len(fitting)} left")
    kept, lang = language_filter(fitting, cfg.min_cn_ratio, cfg.allow_english_fallback, cfg.english_cap)
    _log(f"{kind}: language: {lang['admitted']['zh']} Chinese, {lang['admitted']['en']} English admitted "
         f"(at most {lang['en_max']}), {lang['rejected']['en']} English rejected; Chinese share {lang['zh_share']:.1%}")
    rows = [{**r, "lang": record_language(r, cfg.min_cn_ratio), "bucket": bucket_of[id(r)]} for r in kept]
    if not rows:
        raise DataError(f"{kind}: no records left after the filters ({len(records)} read, {n_dup} duplicates, "
                        f"{n_long} too long, {lang['rejected']['en']} rejected by the language filter)")
    labels = bucket_labels(cfg.buckets)
    steps = {"after_dedup": Counter(r["source"] for r in unique), "after_length": Counter(r["source"] for r in fitting),
             "written": Counter(r["source"] for r in rows)}
    cells = Counter((r["source"], r["bucket"]) for r in rows)
    per_source = {s: {**{step: counts[s] for step, counts in steps.items()}, "buckets": {b: cells[s, b] for b in labels}}
                  for s in dict.fromkeys(r["source"] for r in records)}
    bucket_counts = {b: sum(cells[s, b] for s in per_source) for b in labels}
    _log(f"{kind}: buckets " + ", ".join(f"{b}: {n}" for b, n in bucket_counts.items()) + "; per source "
         + ", ".join(f"{s}: {c['written']}" for s, c in per_source.items()))
    sampler = sampler_of(rows, cfg)
    stats = {"records": len(records), "duplicates_removed": n_dup, "too_long": n_long, "language": lang,
             "written": len(rows), "buckets": bucket_counts, "mix_plan": sampler.plan()[0], "per_source": per_source}
    return stats, rows


def data_card(stats: dict) -> str:
    """DATA_CARD.md from the stats (every number in it is read from stats.json)."""
    cfg = stats["config"]
    lines = ["# Data card", "",
             "Instruction-tuning data written by `safealign.data.prepare`; every number below comes from `stats.json`.",
             "", "## Sources", "",
             "| source | kind | path | split | weight | records | malformed skipped | after dedup | after length | written |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in stats["sources"].items():
        lines.append(f"| {name} | {s['kind']} | {s['path']} | {s['split']} | {s['weight']} | {s['records']} | "
                     f"{s['skipped']} | {s['after_dedup']} | {s['after_length']} | {s['written']} |")
    for kind in KINDS:
        if kind not in stats:
            continue
        k, lang = stats[kind], stats[kind]["language"]
        lines += ["", f"## {kind}.jsonl", "",
                  f"- records read: {k['records']}",
                  f"- exact duplicates removed: {k['duplicates_removed']}",
                  f"- longer than {cfg['buckets'][-1]} tokens, dropped: {k['too_long']}",
                  f"- Chinese admitted: {lang['admitted']['zh']}",
                  f"- English admitted: {lang['admitted']['en']} (at most {lang['en_max']})",
                  f"- English rejected: {lang['rejected']['en']}",
                  f"- Chinese share: {lang['zh_share']}",
                  f"- written: {k['written']}",
                  "", "| bucket (tokens) | records |", "|---|---|"]
        lines += [f"| {b} | {n} |" for b, n in k["buckets"].items()]
        lines += ["", "| sampling plan | share |", "|---|---|"]
        lines += [f"| language {lang_} | {p} |" for lang_, p in k["mix_plan"]["language"].items()]
        lines += [f"| source {s} | {p} |" for s, p in k["mix_plan"]["sources"].items()]
    lines += ["", "## Processing", "",
              "- text: NFKC (Chinese full-width punctuation kept), whitespace runs collapsed inside lines, "
              "indentation kept, at most one blank line, stripped",
              "- exact dedup on the SHA-256 of the normalised messages or prompt/chosen/rejected, first occurrence kept",
              f"- Chinese when at least {cfg['min_cn_ratio']} of the non-space characters are CJK; other records "
              + (f"admitted up to {cfg['english_cap']} of each file" if cfg["allow_english_fallback"] else "rejected"),
              f"- length buckets {', '.join(bucket_labels(cfg['buckets']))} tokens; the sampler's target Chinese share "
              f"is {cfg['target_cn_share']} (seed {cfg['seed']})", ""]
    return "\n".join(lines)


def plan(cfg: PrepareConfig) -> str:
    """What `prepare` would do (sources, filters, outputs), for a dry run: reads no data and writes nothing."""
    cfg.validate("prepare")
    out_dir = Path(cfg.output_dir)
    lines = [f"prepare: {len(cfg.sources)} sources -> {out_dir}"]
    for spec in cfg.sources:
        local = Path(spec.path)
        where = ("local file" if local.is_file() else "local directory" if local.is_dir()
                 else "hub id" if looks_like_hub_id(spec.path) else "NOT FOUND")
        lines.append(f"  {spec.name} ({source_kind(spec.name)}, weight {spec.weight}): {spec.path} [{spec.split}] ({where})")
    cap = f"admitted up to {cfg.english_cap} of each file" if cfg.allow_english_fallback else "rejected"
    lines += [f"  malformed rows: {cfg.on_error}",
              "  normalise: NFKC (Chinese full-width punctuation kept), whitespace inside lines, blank lines",
              "  exact dedup: SHA-256 of the normalised record, first occurrence kept",
              f"  length: buckets {', '.join(bucket_labels(cfg.buckets))} tokens, longer records dropped",
              f"  language: Chinese when CJK ratio >= {cfg.min_cn_ratio}; others {cap}",
              f"  sampler: target Chinese share {cfg.target_cn_share}, seed {cfg.seed}"]
    kinds = [kind for kind in KINDS if any(source_kind(s.name) == kind for s in cfg.sources)]
    lines.append("  outputs: " + ", ".join(str(out_dir / name) for name in
                                             [f"{kind}.jsonl" for kind in kinds] + ["stats.json", "DATA_CARD.md"]))
    return "\n".join(lines)
