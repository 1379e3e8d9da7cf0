"""Golden values for TOFU's metrics (evals/tofu_metrics.py): hand-computed cases that a sign, scale or normalisation
error would fail, and, where installed, the libraries TOFU itself calls (scipy, rouge_score, nltk, sklearn) as
test-only references."""

import math
import random

import pytest

from safealign.evals import tofu_metrics as tm


# --- Prob, normalised Prob ------------------------------------------------------------------------------------

def test_answer_prob_is_exp_of_minus_mean_token_nll():
    assert tm.answer_prob(0.0) == 1.0
    assert tm.answer_prob(math.log(2.0)) == pytest.approx(0.5)
    assert tm.answer_prob(2.0) == pytest.approx(math.exp(-2.0))  # not exp(+2), not 2-token sum


def test_normalized_prob_sums_length_normalised_probabilities():
    # P̃ = e^-1 (correct), e^-1 and e^-2 (perturbed): e^-1 / (2e^-1 + e^-2) = 1 / (2 + e^-1)
    assert tm.normalized_prob(1.0, [1.0, 2.0]) == pytest.approx(1 / (2 + math.exp(-1)), rel=1e-12)
    # a sum over the wrong answers, not a mean: five as likely as the right one -> 1/6
    assert tm.normalized_prob(0.7, [0.7] * 5) == pytest.approx(1 / 6)
    # TOFU's own expression (aggregate_eval_stat.get_model_utility) on the same numbers
    true_p, false_p = math.exp(-0.3), [math.exp(-n) for n in (0.9, 1.4, 2.2)]
    assert tm.normalized_prob(0.3, [0.9, 1.4, 2.2]) == pytest.approx(true_p / (true_p + sum(false_p)), rel=1e-12)


def test_normalized_prob_survives_extreme_nlls():
    assert tm.normalized_prob(0.0, [1000.0, 2000.0]) == 1.0
    assert tm.normalized_prob(1000.0, [0.0]) == pytest.approx(0.0, abs=1e-300)
    with pytest.raises(ValueError):
        tm.normalized_prob(1.0, [])


# --- truth ratio ----------------------------------------------------------------------------------------------

def test_truth_ratio_is_geometric_mean_of_perturbed_over_paraphrased():
    # para NLL 1, perturbed NLLs 2 and 4: exp(1 - 3) = e^-2 (the arithmetic mean of probabilities would give
    # (e^-2 + e^-4) / 2 / e^-1 = 0.2088, the inverse e^2)
    r = tm.truth_ratio(1.0, [2.0, 4.0])
    assert r == pytest.approx(math.exp(-2.0), rel=1e-12)
    assert r != pytest.approx((math.exp(-2) + math.exp(-4)) / 2 / math.exp(-1), rel=1e-3)
    assert tm.truth_ratio(1.5, [1.5, 1.5, 1.5]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        tm.truth_ratio(1.0, [])


def test_truth_ratio_stat_utility_and_forget():
    ratios = [math.exp(-2.0), 2.0]
    # utility: mean max(0, 1 - R) = ((1 - e^-2) + 0) / 2
    assert tm.truth_ratio_stat(ratios, "utility") == pytest.approx((1 - math.exp(-2.0)) / 2, rel=1e-12)
    # forget: mean min(R, 1/R); R and 1/R score the same, 1 is best
    assert tm.truth_ratio_stat([0.5, 2.0], "forget") == pytest.approx(0.5)
    assert tm.truth_ratio_stat([1.0, 1.0], "forget") == 1.0
    with pytest.raises(ValueError):
        tm.truth_ratio_stat(ratios, "retain")
    with pytest.raises(ValueError):
        tm.truth_ratio_stat([], "utility")


def test_truth_ratio_stats_match_tofu_aggregate_script():
    """aggregate_eval_stat.py: curr_stat_1 = exp(mean perturbed NLL - paraphrased NLL) = 1/R; utility
    mean(max(0, 1 - 1/curr_stat_1)), forget mean(min(curr_stat_1, 1/curr_stat_1))."""
    rows = [(0.8, [1.1, 2.0, 0.5]), (2.5, [1.0, 1.2]), (1.0, [1.0, 0.9, 1.3, 1.4, 0.7])]
    curr_stat_1 = [math.exp(sum(p) / len(p) - para) for para, p in rows]
    ratios = [tm.truth_ratio(para, p) for para, p in rows]
    utility = sum(max(0.0, 1 - 1 / c) for c in curr_stat_1) / len(rows)
    forget = sum(min(c, 1 / c) for c in curr_stat_1) / len(rows)
    assert tm.truth_ratio_stat(ratios, "utility") == pytest.approx(utility, rel=1e-12)
    assert tm.truth_ratio_stat(ratios, "forget") == pytest.approx(forget, rel=1e-12)


# --- model utility --------------------------------------------------------------------------------------------

def test_model_utility_is_harmonic_mean_of_nine():
    assert tm.model_utility([0.5] * 9) == pytest.approx(0.5)
    # 9 / (8·1 + 1/0.1) = 9 / 18
    assert tm.model_utility([1.0] * 8 + [0.1]) == pytest.approx(0.5)
    assert tm.model_utility([0.9] * 8 + [0.0]) == 0.0
    with pytest.raises(ValueError, match="nine"):
        tm.model_utility([0.5] * 8)
    with pytest.raises(ValueError):
        tm.model_utility([0.5] * 8 + [-0.1])
    with pytest.raises(ValueError):
        tm.model_utility([0.5] * 8 + [float("nan")])


def test_model_utility_matches_scipy_hmean():
    stats = pytest.importorskip("scipy.stats")
    values = [0.93, 0.41, 0.62, 0.77, 0.35, 0.58, 0.81, 0.47, 0.66]
    assert tm.model_utility(values) == pytest.approx(float(stats.hmean(values)), rel=1e-12)


# --- forget quality (KS test) ---------------------------------------------------------------------------------

def test_ks_pvalue_hand_cases():
    # fully separated samples: D = 1, and only the 2 merge orders "all x first" / "all y first" of C(n1+n2, n1) reach it
    assert tm.ks_forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(2 / 20, rel=1e-15)
    assert tm.ks_forget_quality([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70, rel=1e-15)
    assert tm.ks_forget_quality([1, 2], [3, 4]) == pytest.approx(1 / 3, rel=1e-15)
    # identical samples: D = 0, p = 1; one row each: every merge order has D = 1
    assert tm.ks_forget_quality([0.3, 0.7, 1.2], [0.3, 0.7, 1.2]) == 1.0
    assert tm.ks_forget_quality([1.0], [2.0]) == 1.0
    with pytest.raises(ValueError):
        tm.ks_forget_quality([], [1.0])


def test_ks_pvalue_is_the_same_for_r_and_one_over_r():
    rng = random.Random(3)
    a = [math.exp(rng.gauss(0.0, 1.0)) for _ in range(40)]
    b = [math.exp(rng.gauss(0.6, 1.0)) for _ in range(40)]
    p = tm.ks_forget_quality(a, b)
    assert p < 0.5
    assert tm.ks_forget_quality([1 / x for x in a], [1 / x for x in b]) == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize("n1,n2", [(1, 5), (3, 3), (5, 7), (10, 10), (40, 40), (37, 53), (200, 200), (400, 300)])
@pytest.mark.parametrize("shift", [0.0, 0.4, 1.0])
def test_ks_pvalue_matches_scipy_default(n1, n2, shift):
    """TOFU and open-unlearning call scipy.stats.ks_2samp(x, y) with method='auto': exact at these sizes."""
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(n1 * 1000 + n2)
    x = [rng.gauss(0.0, 1.0) for _ in range(n1)]
    y = [rng.gauss(shift, 1.0) for _ in range(n2)]
    expected = float(stats.ks_2samp(x, y).pvalue)
    assert tm.ks_forget_quality(x, y) == pytest.approx(expected, rel=1e-10, abs=1e-300)
    ties_x, ties_y = [round(v, 1) for v in x], [round(v, 1) for v in y]
    expected = float(stats.ks_2samp(ties_x, ties_y).pvalue)
    assert tm.ks_forget_quality(ties_x, ties_y) == pytest.approx(expected, rel=1e-10, abs=1e-300)


def test_ks_pvalue_asymptotic_for_large_samples_is_close_to_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(11)
    x = [rng.gauss(0.0, 1.0) for _ in range(5000)]
    y = [rng.gauss(0.05, 1.0) for _ in range(4000)]  # 2e7 pairs: past the exact path
    p = tm.ks_forget_quality(x, y)
    assert p == pytest.approx(float(stats.ks_2samp(x, y, method="asymp").pvalue), rel=0.03)
    assert p == pytest.approx(float(stats.ks_2samp(x, y).pvalue), rel=0.03)


# --- ROUGE-L recall -------------------------------------------------------------------------------------------

def test_rouge_l_recall_hand_cases():
    # LCS "the cat on mat" = 4 of the reference's 6 tokens
    assert tm.rouge_l_recall("the cat on mat", "the cat sat on the mat") == pytest.approx(4 / 6)
    # recall, not precision or F: a long answer containing the reference scores 1
    assert tm.rouge_l_recall("well, the cat sat on the mat today", "the cat sat on the mat") == 1.0
    # subsequence, not bag of words: reversed order keeps one token in order
    assert tm.rouge_l_recall("d c b a", "a b c d") == pytest.approx(1 / 4)
    # case and punctuation are separators only
    assert tm.rouge_l_recall("HELLO... world!!", "Hello, world.") == 1.0
    # Porter stemming of tokens longer than 3 characters: cats -> cat, running -> run
    assert tm.rouge_l_recall("cat run", "The cats were running") == pytest.approx(2 / 4)
    assert tm.rouge_l_recall("", "the cat") == 0.0
    assert tm.rouge_l_recall("the cat", "") == 0.0


def test_rouge_tokens_drop_non_ascii_letters():
    # rouge_score's tokenizer keeps [a-z0-9] only: Chinese has no tokens (the metric is English-only)
    assert tm.rouge_tokens("你好，世界") == []
    assert tm.rouge_l_recall("你好，世界", "你好，世界") == 0.0
    assert tm.rouge_tokens("Café No.5") == ["caf", "no", "5"]


def test_porter_stems_hand_words():
    expected = {"running": "run", "happiness": "happi", "relational": "relat", "generalizations": "gener",
                "skies": "sky", "ties": "tie", "caresses": "caress", "ponies": "poni", "hopping": "hop",
                "filing": "file", "controlling": "control", "agreed": "agre", "feed": "feed",
                "plastered": "plaster", "sensibility": "sensibl", "conditional": "condit", "dying": "die"}
    assert {w: tm._porter_stem(w) for w in expected} == expected


def test_porter_matches_nltk_on_suffix_grid():
    porter = pytest.importorskip("nltk.stem.porter")
    stemmer = porter.PorterStemmer()
    stems = ["relat", "condit", "hop", "fil", "agre", "plaster", "motor", "sing", "happ", "sky", "cr", "di", "ty",
             "generaliz", "form", "electr", "controll", "cease", "probat", "adopt", "effect", "analog", "radic",
             "tri", "sp", "enjoy", "toy", "syzyg", "yy", "ayy", "bey"]
    suffixes = ["", "s", "es", "ies", "ied", "ing", "ed", "eed", "y", "ational", "tional", "enci", "anci", "izer",
                "bli", "abli", "alli", "entli", "eli", "ousli", "ization", "ation", "ator", "alism", "iveness",
                "fulness", "ousness", "aliti", "iviti", "biliti", "fulli", "logi", "icate", "ative", "alize",
                "iciti", "ical", "ful", "ness", "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement",
                "ment", "ent", "sion", "tion", "ou", "ism", "ate", "iti", "ous", "ive", "ize", "e", "ll", "ly"]
    words = {s + x + y for s in stems for x in suffixes for y in ("", "s", "ed", "ing", "ly", "ness")}
    mismatches = {w: (stemmer.stem(w), tm._porter_stem(w)) for w in words
                  if len(w) > 3 and stemmer.stem(w) != tm._porter_stem(w)}
    assert not mismatches


def test_rouge_l_recall_matches_rouge_score_as_tofu_calls_it():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    words = ("The author's novels were published in 1998; she writes about running, flying, happiness and "
             "relational generalizations. Jaime Vasquez was born in Santiago, Chile! Café naïve 你好").split()
    rng = random.Random(5)
    for _ in range(300):
        gen = " ".join(rng.choice(words) for _ in range(rng.randint(0, 20)))
        gt = " ".join(rng.choice(words) for _ in range(rng.randint(0, 20)))
        assert tm.rouge_l_recall(gen, gt) == pytest.approx(scorer.score(gt, gen)["rougeL"].recall, abs=1e-12)


# --- membership inference -------------------------------------------------------------------------------------

def test_min_k_percent_hand_cases():
    logps = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0]
    assert tm.min_k_percent(logps, 0.2) == pytest.approx(-9.5)  # the 2 lowest: (-10 - 9) / 2
    assert tm.min_k_percent(logps, 0.05) == -10.0  # int(0.5) = 0 -> at least one token
    assert tm.min_k_percent(logps, 1.0) == pytest.approx(-5.5)
    assert tm.min_k_percent(list(reversed(logps)), 0.2) == pytest.approx(-9.5)  # order does not matter
    with pytest.raises(ValueError, match="fraction"):
        tm.min_k_percent(logps, 20)
    with pytest.raises(ValueError):
        tm.min_k_percent([], 0.2)


def test_auc_hand_cases():
    assert tm.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert tm.auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert tm.auc([1.0], [1.0]) == 0.5
    # pairs (2,1)=1, (2,2)=1/2, (3,1)=1, (3,2)=1 -> 3.5 / 4
    assert tm.auc([2.0, 3.0], [1.0, 2.0]) == pytest.approx(0.875)
    with pytest.raises(ValueError):
        tm.auc([], [1.0])


def test_auc_matches_sklearn_and_open_unlearning_convention():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(7)
    forget = [[rng.gauss(-1.0, 1.0) for _ in range(rng.randint(3, 30))] for _ in range(50)]
    holdout = [[rng.gauss(-1.6, 1.2) for _ in range(rng.randint(3, 30))] for _ in range(60)]
    ours_f = [tm.min_k_percent(lp, 0.2) for lp in forget]
    ours_h = [tm.min_k_percent(lp, 0.2) for lp in holdout]
    labels = [1] * len(ours_f) + [0] * len(ours_h)
    assert tm.auc(ours_f, ours_h) == pytest.approx(metrics.roc_auc_score(labels, ours_f + ours_h), rel=1e-12)
    # open-unlearning: score = -(mean of lowest k%), labels forget 0 / holdout 1
    ou_labels = [0] * len(ours_f) + [1] * len(ours_h)
    ou_auc = metrics.roc_auc_score(ou_labels, [-s for s in ours_f + ours_h])
    assert tm.auc(ours_f, ours_h) == pytest.approx(ou_auc, rel=1e-12)
    tied_pos, tied_neg = [round(s) for s in ours_f], [round(s) for s in ours_h]
    assert tm.auc(tied_pos, tied_neg) == pytest.approx(
        metrics.roc_auc_score(labels, tied_pos + tied_neg), rel=1e-12)
