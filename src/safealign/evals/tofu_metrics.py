"""TOFU's metrics as pure functions of per-answer NLLs, texts and scores (Maini et al. 2024, arXiv 2401.06121).

The reference is the code that produced the paper's numbers, locuslab/tofu: `evaluate_util.py` (per-row values)
and `aggregate_eval_stat.py` (Prob, ROUGE, truth ratio, model utility, forget quality); where locuslab/open-unlearning
(`evals/metrics/memorization.py`, its `ks_test` metric, `mia/`) writes a thing differently, the docstring says so.
Everything here takes the *mean token NLL* of an answer, i.e. −(1/|a|) Σ_t log p(a_t | q, a_<t) over the answer's
tokens only (question masked), which is TOFU's `avg_gt_loss` / `avg_paraphrased_loss` / `average_perturb_loss`
(`gt_loss / num_token_gt`). exp(−that) is the length-normalised probability P̃(a|q) = P(a|q)^(1/|a|).

In TOFU's eval config (`eval_everything.yaml`) the truth ratio's "paraphrased" answer is the paraphrased answer on
the forget and retain sets but the answer itself on real authors and world facts, and each set is cut to its first
300 rows (`ds_size: 300`).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

_EXACT_KS_MAX_PAIRS = 10_000_000  # n1·n2 above which the KS p-value is asymptotic (exact: ~2 s at 3000 x 3000)


def answer_prob(mean_token_nll: float) -> float:
    """Prob of one answer: exp(−mean token NLL) = P(a|q)^(1/|a|), TOFU's per-row "Prob." on the forget and retain
    sets. The set's Prob is the plain mean of these over rows (a mean of probabilities, not exp of a mean NLL)."""
    return math.exp(-mean_token_nll)


def normalized_prob(correct_nll_mean: float, perturbed_nll_means: Sequence[float]) -> float:
    """Prob on real authors / world facts: P̃(correct) / (P̃(correct) + Σ_k P̃(perturbed_k)), each P̃ = exp(−mean token
    NLL), the length-normalised probabilities (TOFU `aggregate_eval_stat.get_model_utility`; open-unlearning's
    `probability_w_options` adds 1e-10 to the denominator, we do not). A sum over the perturbed answers, not a mean,
    so with 5 equally likely wrong answers it is 1/6. Every P̃ is scaled by exp(min NLL) first, so that large NLLs
    neither overflow nor underflow to 0/0."""
    if not perturbed_nll_means:
        raise ValueError("normalized_prob needs at least one perturbed answer")
    lowest = min(correct_nll_mean, *perturbed_nll_means)
    total = sum(math.exp(lowest - n) for n in (correct_nll_mean, *perturbed_nll_means))
    return math.exp(lowest - correct_nll_mean) / total


def truth_ratio(paraphrased_nll_mean: float, perturbed_nll_means: Sequence[float]) -> float:
    """R = (Π_k P̃(perturbed_k))^(1/K) / P̃(paraphrased) = exp(NLL_para − mean_k NLL_pert_k), per row (paper §2.5.1;
    TOFU `eval_perturbation_ratio`'s `truth_ratio`, open-unlearning's `truth_ratio` score): the *geometric* mean of the
    perturbed answers' length-normalised probabilities over the paraphrased answer's. R < 1: the model prefers the
    true answer; R = 1: it cannot tell. (TOFU's `aggregate_eval_stat.py` works with 1/R, named `curr_stat_1`.)"""
    if not perturbed_nll_means:
        raise ValueError("truth_ratio needs at least one perturbed answer")
    return math.exp(paraphrased_nll_mean - sum(perturbed_nll_means) / len(perturbed_nll_means))


def truth_ratio_stat(ratios: Sequence[float], kind: str) -> float:
    """The set-level "Truth Ratio" from the per-row ratios R of `truth_ratio`:
    - "utility" (retain, real authors, world facts; the value in model utility): mean_i max(0, 1 − R_i), higher is
      better (TOFU: `mean(maximum(0, 1 − 1/curr_stat_1))`; open-unlearning: aggregator `true_better`);
    - "forget" (reported for the forget set, not part of model utility): mean_i min(R_i, 1/R_i), 1 when the model
      cannot tell true from false (TOFU: `mean(minimum(curr_stat_1, 1/curr_stat_1))`; open-unlearning:
      `closer_to_1_better`, with a 1e-10 we leave out).
    Forget quality does not use either summary: `ks_forget_quality` takes the ratios R themselves."""
    if not ratios:
        raise ValueError("truth_ratio_stat needs at least one ratio")
    if kind == "utility":
        return sum(max(0.0, 1.0 - r) for r in ratios) / len(ratios)
    if kind == "forget":
        return sum(min(r, 1.0 / r) for r in ratios) / len(ratios)
    raise ValueError(f"truth_ratio_stat: kind must be 'forget' or 'utility', got {kind!r}")


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the nine TOFU utility values: (Prob, ROUGE-L recall, truth-ratio "utility" stat) on each
    of retain, real authors and world facts, 9 / Σ 1/v (TOFU and open-unlearning: `scipy.stats.hmean`). Any value
    0 makes it 0 (the limit, and what scipy returns). Errors: not exactly nine values, or one negative or not finite."""
    if len(values) != 9:
        raise ValueError(f"model_utility takes the nine retain/real/world values, got {len(values)}")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"model_utility values must be finite and >= 0, got {list(values)}")
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


# --- forget quality: two-sample Kolmogorov-Smirnov p-value -----------------------------------------------------

def ks_forget_quality(unlearned_forget_ratios: Sequence[float], retain_model_forget_ratios: Sequence[float]) -> float:
    """Forget quality: the two-sided two-sample KS-test p-value between the unlearned model's per-row forget-set truth
    ratios and those of the model trained on the retain set only (TOFU `get_forget_quality`, open-unlearning `ks_test`;
    both `scipy.stats.ks_2samp` with its default method="auto"). Higher = closer to the retain model.

    Statistic: D = sup_x |F1(x) − F2(x)| of the empirical CDFs (right-continuous, ties included as scipy's
    searchsorted(side="right")), kept as the integer H = D·n1·n2. p-value, as scipy's "auto" (exact up to 10000
    rows a side): the exact null probability P(D ≥ d) for continuous data, counted over the C(n1+n2, n1) equally
    likely merge orders (lattice paths, Hodges 1958) in integer arithmetic, so exact to the last float bit (scipy's
    float recursions agree to ~1e-14 relative; ties are treated as scipy does, under the continuous null).
    When n1·n2 > 1e7 we use the asymptotic Kolmogorov distribution Q(λ) = 2 Σ_{k≥1} (−1)^(k−1) exp(−2k²λ²) with
    Stephens' finite-size correction λ = (√m + 0.12 + 0.11/√m)·D, m = n1·n2/(n1+n2) (scipy's method="asymp"
    evaluates the exact one-sample law at round(m) instead; there the two agree to ~1% relative at p ~ 1e-2 and a
    few % at p ~ 1e-10). TOFU's sets (≤ 400 rows) always take the exact path.

    The test is rank-based, so feeding R (open-unlearning) or 1/R (TOFU's `aggregate_eval_stat.py`) to both sides
    gives the same p-value."""
    x, y = sorted(unlearned_forget_ratios), sorted(retain_model_forget_ratios)
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        raise ValueError("ks_forget_quality needs two non-empty samples")
    h = max(abs(bisect_right(x, v) * n2 - bisect_right(y, v) * n1) for v in x + y)
    if h == 0:
        return 1.0
    if n1 * n2 > _EXACT_KS_MAX_PAIRS:
        m = n1 * n2 / (n1 + n2)
        return _kolmogorov_sf((math.sqrt(m) + 0.12 + 0.11 / math.sqrt(m)) * h / (n1 * n2))
    return _ks_exact_pvalue(n1, n2, h)


def _ks_exact_pvalue(n1: int, n2: int, h: int) -> float:
    """P(D ≥ h/(n1·n2)): the share of monotone lattice paths (0,0) → (n1,n2) that touch |i·n2 − j·n1| ≥ h, i and j
    the counts of sample-1 and sample-2 values taken so far. Row i keeps the number of paths reaching (i, j) while
    staying strictly inside the band; inside a row that number is a running sum of the row below."""
    total = math.comb(n1 + n2, n1)
    prev_lo, prev = 0, [1]  # a virtual row −1 that feeds (0, 0) with one path
    for i in range(n1 + 1):
        lo = max(0, (i * n2 - h) // n1 + 1)  # smallest j with j·n1 > i·n2 − h
        hi = min(n2, -(-(i * n2 + h) // n1) - 1)  # largest j with j·n1 < i·n2 + h
        if lo > hi:
            return 1.0
        below = [prev[j - prev_lo] if prev_lo <= j < prev_lo + len(prev) else 0 for j in range(lo, hi + 1)]
        prev_lo, prev = lo, list(accumulate(below))
    inside = prev[-1] if prev_lo + len(prev) - 1 == n2 else 0
    return (total - inside) / total  # int / int is correctly rounded in Python


def _kolmogorov_sf(lam: float) -> float:
    """Q(λ) = P(K > λ) of the Kolmogorov distribution; the theta-function form for small λ, where the alternating
    series converges slowly."""
    if lam <= 0:
        return 1.0
    if lam < 1.0:
        s = sum(math.exp(-((2 * k - 1) ** 2) * math.pi ** 2 / (8 * lam * lam)) for k in range(1, 8))
        return 1.0 - math.sqrt(2 * math.pi) / lam * s
    return min(1.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101)))


# --- ROUGE-L recall --------------------------------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer with `use_stemmer=True`, as TOFU builds its scorer
    (`RougeScorer(['rouge1', 'rougeL'], use_stemmer=True)`): lowercase, every run of characters outside [a-z0-9]
    becomes a separator, tokens longer than 3 characters are Porter-stemmed (NLTK's default mode, the one
    rouge_score uses). Text outside ASCII letters and digits (Chinese, accented letters) is dropped, so a Chinese
    answer has no tokens and scores 0, exactly as in rouge_score: this metric is English-only."""
    return [_porter_stem(t) if len(t) > 3 else t for t in _NON_ALNUM.sub(" ", text.lower()).split()]


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of a generated answer against the reference answer: LCS(pred, ref) / |ref| on `rouge_tokens`
    (rouge_score `_score_lcs`; TOFU reports `scorer.score(gt, gen)['rougeL'].recall`). 0 when either side has no
    tokens. Recall only: a long answer that contains the reference scores 1."""
    ref, pred = rouge_tokens(reference), rouge_tokens(prediction)
    if not ref or not pred:
        return 0.0
    row = [0] * (len(pred) + 1)  # LCS table, one row at a time
    for r in ref:
        diag = 0
        for j, p in enumerate(pred, start=1):
            diag, row[j] = row[j], diag + 1 if r == p else max(row[j], row[j - 1])
    return row[-1] / len(ref)


# Porter stemmer, NLTK_EXTENSIONS mode (nltk.stem.porter.PorterStemmer(), the stemmer inside rouge_score), written
# out here so ROUGE matches TOFU without nltk; tests compare it with nltk word by word when nltk is installed.
_IRREGULAR = {"skies": "sky", "sky": "sky", "dying": "die", "lying": "lie", "tying": "tie", "news": "news",
              "innings": "inning", "inning": "inning", "outings": "outing", "outing": "outing",
              "cannings": "canning", "canning": "canning", "howe": "howe", "proceed": "proceed",
              "exceed": "exceed", "succeed": "succeed"}
_STEP2 = (("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
          ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"),
          ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"),
          ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("fulli", "ful"), ("logi", "log"))
_STEP3 = (("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", ""))
_STEP4 = ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism",
          "ate", "iti", "ous", "ive", "ize")


def _consonants(word: str) -> list[bool]:
    """Porter's consonant flags: not a vowel, and 'y' only when it starts the word or follows a vowel."""
    flags: list[bool] = []
    for i, ch in enumerate(word):
        flags.append(ch not in "aeiou" and (ch != "y" or i == 0 or not flags[-1]))
    return flags


def _measure(stem: str) -> int:
    """m in [C](VC)^m[V]."""
    return "".join("c" if c else "v" for c in _consonants(stem)).count("vc")


def _ends_cvc(word: str) -> bool:
    c = _consonants(word)
    return ((len(word) >= 3 and c[-3] and not c[-2] and c[-1] and word[-1] not in "wxy")
            or (len(word) == 2 and not c[0] and c[1]))


def _first_rule(word: str, rules, ok) -> str:
    """Porter's rule lists: the first suffix that matches decides; its condition failing leaves the word as is."""
    for suffix, replacement in rules:
        if word.endswith(suffix):
            stem = word[: len(word) - len(suffix)]
            return stem + replacement if ok(stem, suffix) else word
    return word


def _porter_stem(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 2:
        return word
    # step 1a
    if word.endswith("ies") and len(word) == 4:
        word = word[:-3] + "ie"
    else:
        word = _first_rule(word, (("sses", "ss"), ("ies", "i"), ("ss", "ss"), ("s", "")), lambda s, _: True)
    # step 1b
    if word.endswith("ied"):
        word = word[:-3] + ("ie" if len(word) == 4 else "i")
    elif word.endswith("eed"):
        word = word[:-1] if _measure(word[:-3]) > 0 else word
    else:
        stem = next((word[: -len(s)] for s in ("ed", "ing") if word.endswith(s)
                     and not all(_consonants(word[: -len(s)]))), None)
        if stem is not None:
            c = _consonants(stem)
            if stem.endswith(("at", "bl", "iz")):
                word = stem + "e"
            elif len(stem) >= 2 and stem[-1] == stem[-2] and c[-1]:
                word = stem[:-1] if stem[-1] not in "lsz" else stem
            else:
                word = stem + "e" if _measure(stem) == 1 and _ends_cvc(stem) else stem
    # step 1c
    if word.endswith("y") and len(word) > 2 and _consonants(word[:-1])[-1]:
        word = word[:-1] + "i"
    # step 2 (with NLTK's 'alli' shortcut, which re-enters step 2)
    if word.endswith("alli") and _measure(word[:-4]) > 0:
        word = word[:-2]
    word = _first_rule(word, _STEP2, lambda s, suf: _measure(s + "l" if suf == "logi" else s) > 0)
    # steps 3 and 4
    word = _first_rule(word, _STEP3, lambda s, _: _measure(s) > 0)
    word = _first_rule(word, ((s, "") for s in _STEP4),
                       lambda s, suf: _measure(s) > 1 and (suf != "ion" or s[-1] in "st"))
    # step 5
    if word.endswith("e"):
        m = _measure(word[:-1])
        if m > 1 or (m == 1 and not _ends_cvc(word[:-1])):
            word = word[:-1]
    if word.endswith("ll") and _measure(word[:-1]) > 1:
        word = word[:-1]
    return word


# --- membership inference --------------------------------------------------------------------------------------

def min_k_percent(token_logps: Sequence[float], k: float) -> float:
    """Min-K% Prob (Shi et al. 2023, arXiv 2310.16789): the mean of the lowest ⌊k·T⌋ (at least 1) of the T token
    log-probs of a text; k is a fraction, 0.2 for Min-20%. Higher (closer to 0) = more likely a training member.
    open-unlearning's `MinKProbAttack` returns the negative of this (its AUC labels forget 0, holdout 1), so
    `auc(ours on forget, ours on holdout)` equals its MIA AUC; `int(k·T)` is taken as it does."""
    if not 0 < k <= 1:
        raise ValueError(f"min_k_percent: k is a fraction in (0, 1] (0.2 for Min-20%), got {k}")
    if not token_logps:
        raise ValueError("min_k_percent needs at least one token")
    n = max(1, int(len(token_logps) * k))
    return sum(sorted(token_logps)[:n]) / n


def auc(scores_pos: Sequence[float], scores_neg: Sequence[float]) -> float:
    """ROC AUC = P(s_pos > s_neg) + ½·P(s_pos = s_neg) over all (pos, neg) pairs (Mann-Whitney U / (n_pos·n_neg),
    sklearn's roc_auc_score), from mid-ranks of the pooled scores. 1: every positive scores above every negative."""
    if not scores_pos or not scores_neg:
        raise ValueError("auc needs at least one positive and one negative score")
    pooled = sorted([(s, True) for s in scores_pos] + [(s, False) for s in scores_neg], key=lambda t: t[0])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += mid_rank * sum(1 for _, pos in pooled[i:j] if pos)
        i = j
    n_pos, n_neg = len(scores_pos), len(scores_neg)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
