"""Text similarity against a reference: a sentence-level BLEU for code rewrites."""

from __future__ import annotations

import math
import re
from collections import Counter

_TOKEN = re.compile(r"\w+|[^\w\s]")  # identifiers and numbers, and each punctuation mark on its own


def code_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def sentence_bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    """BLEU-4 of one candidate against one reference on code tokens (identifiers, numbers, punctuation), in
    [0, 1]: the geometric mean of the clipped n-gram precisions for n = 1..4, each smoothed by adding 1 to its
    numerator and denominator (Lin & Och 2004's BLEU+1, so one missing 4-gram does not zero the score), times the
    brevity penalty exp(1 − r/c) when the candidate is shorter than the reference. Identical texts give 1."""
    cand, ref = code_tokens(candidate), code_tokens(reference)
    if not cand or not ref:
        return float(cand == ref)
    log_precision = 0.0
    for n in range(1, max_n + 1):
        c_grams = Counter(tuple(cand[i:i + n]) for i in range(len(cand) - n + 1))
        r_grams = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        matched = sum(min(count, r_grams[g]) for g, count in c_grams.items())
        total = max(len(cand) - n + 1, 0)
        smooth = 0 if n == 1 else 1  # unigrams unsmoothed, as BLEU+1
        log_precision += math.log((matched + smooth) / (total + smooth)) if matched + smooth else float("-inf")
    brevity = 1.0 if len(cand) >= len(ref) else math.exp(1 - len(ref) / len(cand))
    return brevity * math.exp(log_precision / max_n)
