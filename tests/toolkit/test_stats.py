"""flatbook.stats: estimates against hand computations, tests against their stated error rates on
constructed null data, and the paper's own numbers through the decision machinery."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import kendalltau, t as student_t

from flatbook.chapters import adaptive
from flatbook import claims, stats
from flatbook.spectrum import DiagonalOperator, MatrixOperator, slq
from flatbook.chapters.weight_decay import PAPER_REPORTED


def _estimate(value, low, high, scale="difference"):
    return stats.Estimate(value, low, high, 0.1, 10, 0.95, 0.3, scale, "constructed", 3)


@pytest.mark.parametrize("low, high, direction, expected", [
    (0.1, 0.5, 1, "supported"), (0.1, 0.5, -1, "contradicted"),
    (-0.5, -0.1, 1, "contradicted"), (-0.5, -0.1, -1, "supported"),
    (-0.1, 0.5, 1, "inconclusive"), (-0.1, 0.5, -1, "inconclusive"),
])
def test_decide_needs_the_interval_to_exclude_no_effect(low, high, direction, expected):
    assert stats.decide(_estimate(0.2, low, high), direction) == expected


def test_decide_on_ratios_uses_one_and_unknown_uncertainty_is_inconclusive():
    assert stats.decide(_estimate(2.0, 1.2, 3.0, "ratio"), 1) == "supported"
    assert stats.decide(_estimate(2.0, 0.9, 3.0, "ratio"), 1) == "inconclusive"
    unknown = stats.ratio_over_seeds([1.0], [5.0])
    assert math.isnan(unknown.se) and unknown.high == math.inf
    assert stats.decide(unknown, 1) == "inconclusive"
    with pytest.raises(ValueError, match="direction"):
        stats.decide(unknown, 0)


def test_ratio_over_seeds_against_a_hand_computed_t_interval():
    a = np.array([1.0, 2.0, 4.0])
    b = a * np.exp([0.1, 0.2, 0.3])
    est = stats.ratio_over_seeds(a, b)
    se = 0.1 / math.sqrt(3)
    half = student_t.ppf(0.975, 2) * se
    assert est.value == pytest.approx(math.exp(0.2))
    assert est.se == pytest.approx(se) and est.df == 2
    assert est.low == pytest.approx(math.exp(0.2 - half)) and est.high == pytest.approx(math.exp(0.2 + half))
    assert est.mde == pytest.approx(math.exp((student_t.ppf(0.975, 2) + student_t.ppf(0.8, 2)) * se))
    with pytest.raises(ValueError, match="positive"):
        stats.ratio_over_seeds([1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="one value per seed"):
        stats.ratio_over_seeds([1.0, 2.0], [1.0])


def test_difference_over_seeds_and_of_means():
    est = stats.difference_over_seeds([1.0, 2.0, 3.0, 4.0], [2.0, 2.5, 4.5, 5.0])
    d = np.array([1.0, 0.5, 1.5, 1.0])
    assert est.value == pytest.approx(1.0)
    assert est.se == pytest.approx(d.std(ddof=1) / 2)
    assert est.low == pytest.approx(1.0 - student_t.ppf(0.975, 3) * est.se)
    m = stats.difference_of_means(93.48, 0.35, 94.08, 0.34)
    assert m.value == pytest.approx(0.60) and m.se == pytest.approx(math.hypot(0.35, 0.34))
    assert m.low == pytest.approx(0.60 - 1.959964 * m.se, rel=1e-6)


def test_paired_accuracy_difference_one_seed_is_the_paired_image_variance():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0, 1])
    b = np.array([1, 1, 1, 0, 1, 1, 1, 0, 0, 1])
    est = stats.paired_accuracy_difference(a, b)
    d = b - a
    assert est.value == pytest.approx(d.mean())
    assert math.isnan(est.se) and est.low == -math.inf  # the training procedure's variance is unknown
    assert "1 seed" in est.method


def test_paired_accuracy_difference_two_way_variance_by_hand():
    rng = np.random.default_rng(3)
    a = (rng.random((4, 50)) < 0.7).astype(int)
    b = (rng.random((4, 50)) < 0.75).astype(int)
    est = stats.paired_accuracy_difference(a, b)
    d = (b - a).astype(float)
    per_seed, per_image = d.mean(axis=1), d.mean(axis=0)
    v_img, v_seed = per_image.var(ddof=1) / 50, per_seed.var(ddof=1) / 4
    resid = d - per_image[None] - per_seed[:, None] + d.mean()
    noise = (resid**2).sum() / (3 * 49)
    assert est.value == pytest.approx(d.mean())
    assert est.se**2 == pytest.approx(max(v_img + v_seed - noise / 200, v_img, v_seed))
    with pytest.raises(ValueError, match="0/1"):
        stats.paired_accuracy_difference(a * 2, b)
    with pytest.raises(ValueError, match="same seeds and images"):
        stats.paired_accuracy_difference(a[:3], b)


def test_null_data_false_supported_rate_is_at_most_five_percent():
    """Identical models plus noise: two arms drawn from the same per-image and per-seed
    distributions. Over many draws, "supported" (in the claimed direction) must be rare."""
    rng = np.random.default_rng(12345)
    draws = 400
    supported_acc = supported_ratio = 0
    for _ in range(draws):
        p = rng.uniform(0.6, 0.99, 1000)
        shift_a, shift_b = rng.normal(0, 0.01, (5, 1)), rng.normal(0, 0.01, (5, 1))
        a = (rng.random((5, 1000)) < np.clip(p + shift_a, 0, 1)).astype(int)
        b = (rng.random((5, 1000)) < np.clip(p + shift_b, 0, 1)).astype(int)
        supported_acc += stats.decide(stats.paired_accuracy_difference(a, b), 1) == "supported"
        lam = rng.lognormal(2.0, 0.2, 5)
        supported_ratio += stats.decide(stats.ratio_over_seeds(lam * rng.lognormal(0, 0.1, 5),
                                                               lam * rng.lognormal(0, 0.1, 5)), 1) == "supported"
    assert supported_acc / draws <= 0.05
    assert supported_ratio / draws <= 0.05


def test_null_data_through_the_rank_tests():
    rng = np.random.default_rng(7)
    draws = 200
    hits = hits_strat = 0
    for _ in range(draws):
        x = np.repeat([0.0, 1e-4, 5e-4], 5)
        corr = stats.rank_correlation(x, rng.normal(size=15), permutations=2000, bootstrap=10)
        hits += claims.trend_claim("noise", corr, 1).outcome == "supported"
        groups = [(np.arange(3.0), rng.normal(size=3)) for _ in range(6)]
        strat = stats.stratified_rank_correlation(groups, permutations=2000, bootstrap=10)
        hits_strat += claims.trend_claim("noise", strat, 1).outcome == "supported"
    assert hits / draws <= 0.05 and hits_strat / draws <= 0.05


def test_the_papers_own_numbers_are_never_contradicted():
    """Every comparison the paper reports (largest weight decay against none; Gadam against SGD),
    as two independent estimates with the binomial SE of its 5,000 validation images (accuracies)
    or an unknown SE (spectra: one probe, one seed), never comes out "contradicted"."""
    outcomes = []
    for (model, dataset), quantities in PAPER_REPORTED.items():
        for quantity, by_wd in quantities.items():
            lo, hi = by_wd[min(by_wd)], by_wd[max(by_wd)]
            if quantity.endswith("acc"):
                se = [100 * stats.binomial_se(v / 100, 5000) for v in (lo, hi)]
            else:
                se = [math.nan, math.nan]
            direction = -1 if quantity == "gap" else 1
            if quantity == "train_acc":
                continue  # the paper makes no claim on training accuracy
            est = stats.difference_of_means(lo, se[0], hi, se[1])
            outcomes.append(claims.claim_from_estimate(f"{model} {quantity}", est, direction, "d").outcome)
    for dataset, by_opt in adaptive.PAPER_REPORTED.items():
        s, g = by_opt["sgd"], by_opt["gadam"]
        se = [100 * stats.binomial_se(v / 100, 5000) for v in (s["val_acc"], g["val_acc"])]
        outcomes.append(claims.claim_from_estimate("val", stats.difference_of_means(s["val_acc"], se[0], g["val_acc"],
                                                                                    se[1]), 1, "d").outcome)
    assert outcomes and "contradicted" not in outcomes
    assert "supported" in outcomes  # e.g. WRN: 75.2% -> 80.6% on 5,000 images is far beyond noise


def test_kendall_tau_b_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(30):
        x, y = rng.integers(0, 4, 9).astype(float), rng.integers(0, 5, 9).astype(float)
        ours, ref = stats.kendall_tau_b(x, y)[0], kendalltau(x, y).statistic
        assert (math.isnan(ours) and math.isnan(ref)) or ours == pytest.approx(ref, abs=1e-12)


def test_rank_correlation_exact_p_values():
    three = stats.rank_correlation([0, 1, 2], [1, 2, 3])
    assert three.tau == pytest.approx(1.0)
    assert three.p_value == pytest.approx(2 / 6) and three.p_floor == pytest.approx(2 / 6)
    assert claims.trend_claim("3 points", three, 1).outcome == "untestable"  # no trend from 3 points
    five = stats.rank_correlation([0, 1, 2, 3, 4], [1, 3, 2, 4, 5])
    taus = [kendalltau(range(5), p).statistic for p in itertools.permutations(range(5))]
    assert five.p_value == pytest.approx(np.mean(np.abs(taus) >= abs(five.tau) - 1e-12))
    assert "exact" in five.method
    perfect = stats.rank_correlation(range(6), range(6))
    assert perfect.p_value == pytest.approx(2 / 720)
    assert claims.trend_claim("6 points", perfect, 1).outcome == "supported"
    assert claims.trend_claim("6 points", perfect, -1).outcome == "contradicted"


def test_stratified_rank_correlation_exact_p():
    groups = [([0, 1, 2], [1, 2, 3]), ([0, 1, 2], [3, 5, 9])]
    r = stats.stratified_rank_correlation(groups)
    assert r.tau == pytest.approx(1.0)
    assert r.p_value == pytest.approx(2 / 36)  # both groups +1 or both -1, of 6 x 6 arrangements
    constant = stats.stratified_rank_correlation([([0, 1, 2], [1, 1, 1])])
    assert math.isnan(constant.tau) and constant.p_floor == 1.0


def test_one_probe_relative_sd_against_many_slq_probes():
    rng = np.random.default_rng(0)
    e = np.concatenate([rng.exponential(1.0, 300), [40.0, 25.0]])
    f = math.sqrt((e**2).sum())
    rel = stats.one_probe_relative_sd(e.sum(), f, num_params=e.size)  # normalised probes (SLQ)
    traces = [slq(DiagonalOperator(e), steps=10, probes=1, seed=s, check=False).trace for s in range(1000)]
    measured = np.std(traces, ddof=1) / e.sum()
    assert measured == pytest.approx(rel, rel=0.1)
    # the Gaussian (unnormalised) value sqrt(2 / r_eff) is the larger one
    assert stats.one_probe_relative_sd(e.sum(), f) > rel
    assert stats.one_probe_relative_sd(e.sum(), f) == pytest.approx(math.sqrt(2 * f**2 / e.sum() ** 2))


def test_ritz_residual_bounds_the_distance_to_an_eigenvalue():
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    eig = np.concatenate([[9.0, 8.5], rng.normal(0, 1, 58)])
    H = (Q * eig) @ Q.T
    for steps in (4, 8, 15):
        sp = slq(MatrixOperator(H), steps=steps, probes=2, seed=3)
        assert sp.top_residuals.shape == (2,)
        for theta, res in zip(np.nanmax(sp.nodes, axis=1), sp.top_residuals):
            assert np.min(np.abs(eig - theta)) <= res * (1 + 1e-9) + 1e-12
    full = slq(MatrixOperator(H), steps=60, probes=1, seed=3)
    assert full.lambda_max_residual < 1e-6 and full.lambda_max == pytest.approx(9.0, rel=1e-10)


def test_kendall_tau():
    from scipy.stats import kendalltau

    from flatbook.stats import kendall_tau

    assert kendall_tau([0, 1, 2], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([0, 1, 2], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([0, 1, 2, 3], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert math.isnan(kendall_tau([0], [1]))
    x, y = [0, 1, 1, 2, 5, 3], [2.0, 1.0, 1.0, 4.0, 3.0, 3.0]  # ties on both sides: tau-b, as SciPy's
    assert kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic, rel=1e-12)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # constant x
    with pytest.raises(ValueError, match="values"):
        kendall_tau([1, 2], [1, 2, 3])


def test_stratified_test_states_its_resolution():
    """Two groups of three: even both perfectly ordered give p = 2 / 36 > 5%, so nothing is
    significant (NaN); three groups of three: perfect orderings give 2 / 216, so the resolution is
    at most 1, and every arrangement at or beyond it is significant."""
    from flatbook.stats import stratified_rank_correlation

    two = stratified_rank_correlation([([1, 2, 3], [1, 2, 3]), ([1, 2, 3], [3, 1, 2])])
    assert math.isnan(two.critical) and two.p_floor == pytest.approx(2 / 36)
    three = stratified_rank_correlation([([1, 2, 3], [1, 2, 3])] * 3)
    assert 0 < three.critical <= 1 and three.p_value == pytest.approx(2 / 216) and three.tau >= three.critical
    five = stratified_rank_correlation([([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])] * 3)
    assert 0 < five.critical < 1 and five.p_value < 0.05
