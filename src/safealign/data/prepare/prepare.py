"""Instruction-tuning data preparation, bilingual and Chinese first: the configs (`ChatSourceConfig`,
`PrepareConfig`), the pipeline `prepare`, the data card and the dry-run `plan`:

    read chat sources -> normalise text -> exact dedup -> drop too long, length buckets -> language filter
    -> output_dir/{sft,pairs}.jsonl, stats.json, DATA_CARD.md

The steps are pure functions over lists of records (`chat_sources` formats) in `clean.py`; `MixedSampler`
(`sampler.py`) draws training records from (source, length bucket) groups at a target Chinese share. Only
`prepare` reads and writes files, and it prints the counts of every step.

Records are "Chinese" (`zh`) when their CJK ratio is at least `min_cn_ratio`, otherwise "English" (`en`, which
here means any language that is not Chinese). Output rows are the records plus `lang` and `bucket`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from safealign.config import one_of, opt, to_dict
from safealign.data.chat_sources import ON_ERROR, read_source, source_kind
from safealign.data.prepare.clean import (bucket_labels, dedup, language_filter, length_buckets, normalize_record,
                                          record_language)
from safealign.data.prepare.sampler import MixedSampler, groups_of
from safealign.errors import ConfigError, DataError
from safealign.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, looks_like_hub_id

KINDS = ("sft", "pairs")


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


# ---------------------------------------------------------------------------------------------- the pipeline


def sampler_of(rows: list[dict], cfg: PrepareConfig) -> MixedSampler:
    """The sampler of a kind's written rows under `cfg` (weights, target share, seed, curriculum): the one whose
    plan the statistics report and the one a training stage with `data.mixing` draws from."""
    present = {r["source"] for r in rows}
    weights = {spec.name: spec.weight for spec in cfg.sources if spec.name in present}
    return MixedSampler(groups_of(rows), lambda r: r["lang"], cfg.target_cn_share, cfg.seed, weights,
                        cfg.curriculum or None)


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
        where = ("mini world" if spec.path.startswith("mini:") else "local file" if local.is_file()
                 else "local directory" if local.is_dir() else "hub id" if looks_like_hub_id(spec.path) else "NOT FOUND")
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
