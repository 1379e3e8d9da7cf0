"""Pure functions over records (`chat_sources` formats) for the instruction-tuning data pipeline: text
normalisation, record helpers, exact dedup, the CJK ratio and language filter with its English cap, and
length buckets. Nothing here reads or writes files; `safealign.data.prepare.prepare` runs these steps."""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
import unicodedata
from fractions import Fraction
from typing import Callable

PAIR_FIELDS = ("prompt", "chosen", "rejected")


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
