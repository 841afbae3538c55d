"""The statistics behind every claim the book prints: effect estimates with confidence intervals,
minimum detectable effects, and the decision between "supported", "contradicted" and
"inconclusive".

Conventions (all functions):

* An ``Estimate`` is a point estimate of an EFFECT (a difference, or a ratio for the sharpness
  measures) with its standard error ``se``, degrees of freedom ``df`` (``inf`` for a normal
  approximation) and a two-sided ``level`` (95%) confidence interval ``[low, high]``. ``se`` is
  NaN when the data cannot tell it (one seed, one probe): the interval is then (-inf, inf), never
  a zero-width interval that pretends to certainty.
* The minimum detectable effect ``mde`` is the distance from the null value that a two-sided test
  at 1 - level would detect with probability ``power`` (80%): (t_{1-alpha/2, df} + t_{power, df}) se.
* ``decide(estimate, direction)``: "supported" when the interval excludes the null value on the
  claimed side, "contradicted" when it excludes it on the other side, else "inconclusive". A
  difference inside the interval is never called a trend.

Estimators:

* ``paired_accuracy_difference(correct_a, correct_b)``: models b minus a on the SAME validation
  images, per seed (rows) and image (columns). Mean over seeds of the per-seed accuracy
  difference. With the two-way model delta_si = mu_i + gamma_s + eps_si (image, seed, and
  seed-by-image noise), Var(mean) = Var(mu)/N + Var(gamma)/n + Var(eps)/(nN), estimated as (image
  part) + (seed part) - (noise part): the image part is the paired (McNemar-type) variance of the
  seed-averaged per-image difference, var_i(delta_i) / N; the seed part the seed-to-seed variance
  of the per-seed difference, var_s(d_s) / n; both hold Var(eps)/(nN) once, so one copy, estimated
  from the residual mean square of the additive fit, is subtracted (never below either part).
  One seed: the image part only, and the training procedure's uncertainty is unknown. Degrees of
  freedom by Welch-Satterthwaite on the two parts.
* ``ratio_over_seeds(a, b)``: b / a for a positive measure (lambda_1, trace, Frobenius norm, weight
  norm), paired by seed: the mean over seeds of log(b_s / a_s) with a t interval (df = n - 1),
  exponentiated. Each per-seed value already carries its own probe noise and its own choice of
  Hessian images, so the seed-to-seed spread holds every source of noise the runs vary.
* ``difference_over_seeds(a, b)``: the same for a difference (a measure that can be <= 0).
* ``difference_of_means(mean_a, se_a, mean_b, se_b)``: two independent summary estimates (for
  numbers known only as means and standard errors, e.g. the paper's).
* ``rank_correlation(x, y)``: Kendall's tau-b with its permutation p-value (exact enumeration up
  to ``exact_limit`` points, otherwise a seeded Monte Carlo of ``permutations`` permutations, said
  so in ``method``), a bootstrap interval, and the smallest p-value a perfect ordering of n points
  could reach, so that "no trend can be shown from 3 points" is computed, not asserted.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .checks import positive_int

__all__ = ["LEVEL", "POWER", "Estimate", "t_quantile", "minimum_detectable", "p_value", "decide", "paired_accuracy_difference",
           "ratio_over_seeds", "difference_over_seeds", "ratio_or_difference", "scaled", "difference_of_means",
           "binomial_se", "RankCorrelation",
           "rank_correlation", "stratified_rank_correlation", "kendall_tau_b", "one_probe_relative_sd",
           "ritz_residual"]

LEVEL = 0.95
POWER = 0.80
OUTCOMES_DECIDED = ("supported", "contradicted", "inconclusive")


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with ``df`` degrees of freedom (normal for df = inf)."""
    from scipy.stats import norm, t

    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q!r}")
    if math.isnan(df) or df <= 0:
        return math.nan
    return float(norm.ppf(q)) if math.isinf(df) else float(t.ppf(q, df))


def minimum_detectable(se: float, df: float, level: float = LEVEL, power: float = POWER) -> float:
    """(t_{1 - alpha/2, df} + t_{power, df}) * se: the smallest |effect - null| that a two-sided test at
    1 - ``level`` detects with probability ``power``. NaN when ``se`` is unknown."""
    if math.isnan(se):
        return math.nan
    return (t_quantile(1 - (1 - level) / 2, df) + t_quantile(power, df)) * se


@dataclass(frozen=True)
class Estimate:
    """An effect with its uncertainty (module docstring). ``scale`` is "difference" (null 0) or
    "ratio" (null 1; ``se`` and ``df`` then refer to the log ratio, and ``mde`` is the smallest
    detectable ratio above 1, its reciprocal the smallest below)."""

    value: float
    low: float
    high: float
    se: float
    df: float
    level: float
    mde: float
    scale: str
    method: str
    seeds: int

    @property
    def null(self) -> float:
        """The value of "no effect" on this estimate's scale: 1 for a ratio, 0 for a difference."""
        return 1.0 if self.scale == "ratio" else 0.0

    @property
    def uncertainty_known(self) -> bool:
        """False when the standard error is unknown (NaN: one seed, so no spread over training runs)."""
        return not math.isnan(self.se)


def _difference_estimate(value: float, se: float, df: float, method: str, seeds: int,
                         level: float = LEVEL) -> Estimate:
    if math.isnan(se):
        return Estimate(value, -math.inf, math.inf, math.nan, df, level, math.nan, "difference", method, seeds)
    half = t_quantile(1 - (1 - level) / 2, df) * se
    return Estimate(value, value - half, value + half, se, df, level, minimum_detectable(se, df, level), "difference",
                    method, seeds)


def p_value(estimate: Estimate) -> float:
    """Two-sided p-value of "no effect" for ``estimate``: 2 P(|T_df| >= |value - null| / se), on the log
    scale for a ratio; the same t (or normal, df = inf) distribution as its interval, so p < 1 - level
    exactly when the interval excludes the null value. NaN when the uncertainty is unknown."""
    from scipy.stats import norm, t

    if not estimate.uncertainty_known or math.isnan(estimate.df) or estimate.df <= 0:
        return math.nan
    distance = math.log(estimate.value) if estimate.scale == "ratio" else estimate.value - estimate.null
    if estimate.se == 0:
        return 0.0 if distance != 0 else 1.0
    z = abs(distance) / estimate.se
    return float(2 * (norm.sf(z) if math.isinf(estimate.df) else t.sf(z, estimate.df)))


def decide(estimate: Estimate, direction: int) -> str:
    """"supported" if the interval lies wholly on the claimed side of the null value (``direction``
    +1: above, -1: below), "contradicted" if wholly on the other side, else "inconclusive"."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    null = estimate.null
    if not estimate.uncertainty_known:
        return "inconclusive"
    above, below = estimate.low > null, estimate.high < null
    if (above and direction == 1) or (below and direction == -1):
        return "supported"
    if above or below:
        return "contradicted"
    return "inconclusive"


def _as_correct(name: str, c) -> np.ndarray:
    a = np.asarray(c)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"{name} must be (seeds, images) of 0/1 with at least 2 images, got shape {a.shape}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold 0/1 (or booleans): whether each image was classified correctly")
    return a.astype(np.float64)


def paired_accuracy_difference(correct_a, correct_b, level: float = LEVEL) -> Estimate:
    """Accuracy of b minus accuracy of a (fractions; multiply by 100 for points) on the same images,
    rows paired by seed (module docstring)."""
    a, b = _as_correct("correct_a", correct_a), _as_correct("correct_b", correct_b)
    if a.shape != b.shape:
        raise ValueError(f"correct_a {a.shape} and correct_b {b.shape} must have the same seeds and images")
    n, N = a.shape
    per_seed = b.mean(axis=1) - a.mean(axis=1)
    delta = (b - a).mean(axis=0)
    var_images = float(delta.var(ddof=1)) / N
    value = float(per_seed.mean())
    if n == 1:
        method = (f"paired over {N} images (McNemar-type); seed-to-seed variance unknown with 1 seed")
        # the interval covers this pair of trained models only; uncertainty of the training procedure unknown
        return _difference_estimate(value, math.nan, math.inf, method, 1, level)
    var_seeds = float(per_seed.var(ddof=1)) / n
    # two-way (image x seed) decomposition: each part above also holds the seed-by-image noise once;
    # subtract one copy, estimated from the residual of the additive fit (never below either part)
    residual = (b - a) - delta[None, :] - per_seed[:, None] + value
    noise = float((residual**2).sum()) / ((n - 1) * (N - 1))
    var = max(var_images + var_seeds - noise / (n * N), var_images, var_seeds)
    if var == 0.0:
        df = math.inf
    else:
        denominator = (var_images**2 / (N - 1) if var_images else 0.0) + (var_seeds**2 / (n - 1) if var_seeds else 0.0)
        df = var**2 / denominator if denominator > 0 else math.inf
    method = (f"paired over {N} images and {n} seeds: image variance of the seed-averaged per-image difference "
              f"plus seed-to-seed variance (Welch-Satterthwaite df {df:.3g})")
    return _difference_estimate(value, math.sqrt(var), df, method, n, level)


def _paired_values(name_a: str, a: Sequence[float], name_b: str, b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 1:
        raise ValueError(f"{name_a} and {name_b} need one value per seed each, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{name_a} and {name_b} must be finite, got {list(x)} and {list(y)}")
    return x, y


def difference_over_seeds(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Estimate:
    """Mean over seeds of b_s - a_s with a t interval (df = n - 1); unknown uncertainty with 1 seed."""
    x, y = _paired_values("a", a, "b", b)
    d = y - x
    n = d.size
    if n == 1:
        return _difference_estimate(float(d[0]), math.nan, math.nan, "one seed: seed-to-seed variance unknown", 1,
                                    level)
    se = float(d.std(ddof=1)) / math.sqrt(n)
    return _difference_estimate(float(d.mean()), se, n - 1, f"paired over {n} seeds (t, df {n - 1})", n, level)


def ratio_over_seeds(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Estimate:
    """exp(mean over seeds of log(b_s / a_s)) with the t interval of the mean log ratio
    (df = n - 1), exponentiated; unknown uncertainty with 1 seed. Values must be > 0."""
    x, y = _paired_values("a", a, "b", b)
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError(f"a ratio needs positive values, got {list(x)} and {list(y)}; use difference_over_seeds")
    r = np.log(y / x)
    n = r.size
    value = float(math.exp(r.mean()))
    if n == 1:
        return Estimate(value, 0.0, math.inf, math.nan, math.nan, level, math.nan, "ratio",
                        "one seed: seed-to-seed variance unknown", 1)
    se = float(r.std(ddof=1)) / math.sqrt(n)
    half = t_quantile(1 - (1 - level) / 2, n - 1) * se
    mde = minimum_detectable(se, n - 1, level)
    return Estimate(value, math.exp(r.mean() - half), math.exp(r.mean() + half), se, n - 1, level,
                    math.exp(mde), "ratio", f"log ratio paired over {n} seeds (t, df {n - 1})", n)


def ratio_or_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Estimate:
    """``ratio_over_seeds`` when every value is > 0 (a sharpness measure, a weight norm), else
    ``difference_over_seeds``; the Estimate's ``scale`` says which."""
    x, y = _paired_values("a", a, "b", b)
    if (x > 0).all() and (y > 0).all():
        return ratio_over_seeds(x, y, level)
    return difference_over_seeds(x, y, level)


def scaled(estimate: Estimate, factor: float) -> Estimate:
    """A "difference" Estimate in other units (e.g. fractions to points: ``factor`` 100)."""
    import dataclasses

    if estimate.scale != "difference":
        raise ValueError(f"only a difference can be rescaled, got scale {estimate.scale!r}")
    return dataclasses.replace(estimate, value=estimate.value * factor, low=estimate.low * factor,
                               high=estimate.high * factor, se=estimate.se * factor, mde=estimate.mde * factor)


def difference_of_means(mean_a: float, se_a: float, mean_b: float, se_b: float, df: float = math.inf,
                        level: float = LEVEL, method: str = "two independent estimates") -> Estimate:
    """mean_b - mean_a for two independent estimates with standard errors se_a, se_b (NaN: unknown)."""
    for name, v in (("mean_a", mean_a), ("mean_b", mean_b)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")
    for name, v in (("se_a", se_a), ("se_b", se_b)):
        if not (math.isnan(v) or v >= 0):
            raise ValueError(f"{name} must be >= 0 or NaN (unknown), got {v!r}")
    return _difference_estimate(mean_b - mean_a, math.hypot(se_a, se_b), df, method, 1, level)


def binomial_se(accuracy: float, n: int) -> float:
    """sqrt(p (1 - p) / n): the standard error of an accuracy measured on n independent images."""
    if not 0 <= accuracy <= 1:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy!r}")
    positive_int("n", n)
    return math.sqrt(accuracy * (1 - accuracy) / n)


@dataclass(frozen=True)
class RankCorrelation:
    """Kendall's tau-b of (x, y), its two-sided permutation p-value, a bootstrap interval, and the
    smallest two-sided p-value any ordering of these x values could reach (``p_floor``)."""

    tau: float
    p_value: float
    low: float
    high: float
    n: int
    p_floor: float
    method: str
    critical: float = math.nan  # the smallest |tau| whose permutation p-value is below 5% (NaN: none is)


def kendall_tau_b(x: Sequence[float], Y) -> np.ndarray:
    """Kendall's tau-b of x against each row of Y (shape (n,) or (B, n)), with ties:
    sum_{i<j} sgn(x_i - x_j) sgn(y_i - y_j) / sqrt((n0 - n_x)(n0 - n_y)), n0 = n(n-1)/2 and n_x, n_y
    the tied pairs; NaN where x or a row of Y is constant. Vectorised over rows (permutation tests)."""
    xs = np.asarray(x, dtype=np.float64).ravel()
    Ys = np.atleast_2d(np.asarray(Y, dtype=np.float64))
    if Ys.shape[1] != xs.size:
        raise ValueError(f"x has {xs.size} values and Y rows {Ys.shape[1]}")
    iu = np.triu_indices(xs.size, 1)
    sx = np.sign(xs[:, None] - xs[None, :])[iu]
    sy = np.sign(Ys[:, :, None] - Ys[:, None, :])[:, iu[0], iu[1]]
    nx, ny = np.sum(sx != 0), np.sum(sy != 0, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sy @ sx) / np.sqrt(nx * ny)
    tau[(nx == 0) | (ny == 0)] = np.nan
    return tau


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between x and y (``kendall_tau_b`` of one row): NaN with fewer than 2 values
    or when either is constant."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values and y has {len(y)}")
    if len(x) < 2:
        return math.nan
    return float(kendall_tau_b(x, y)[0])


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    return float(kendall_tau_b(x, y)[0])


def rank_correlation(x: Sequence[float], y: Sequence[float], *, exact_limit: int = 8, permutations: int = 20000,
                     bootstrap: int = 2000, seed: int = 0, level: float = LEVEL) -> RankCorrelation:
    """Kendall's tau-b with a permutation test of "no association" (module docstring). Permuting y
    against x keeps ties. The p-value counts permutations with |tau| >= the observed |tau| (exact
    enumeration of all n! orders when n <= ``exact_limit``; else ``permutations`` random ones, with the
    observed order counted, (k + 1) / (B + 1)). ``p_floor``: the p-value of the best possible
    ordering of y, computed the same way (with n = 3 distinct x it is 2/6 = 1/3)."""
    xs, ys = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if xs.shape != ys.shape or xs.size < 2:
        raise ValueError(f"x and y need the same length >= 2, got {xs.size} and {ys.size}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite")
    n = xs.size
    tau = _tau(xs, ys)
    best = _tau(xs, np.sort(ys)[np.argsort(np.argsort(xs, kind="stable"), kind="stable")])
    rng = np.random.default_rng(seed)
    if n <= exact_limit:
        taus = kendall_tau_b(xs, ys[np.array(list(itertools.permutations(range(n))))])
        method = f"Kendall tau-b, exact permutation p over all {math.factorial(n)} orders"

        def p_of(t: float) -> float:
            return float(np.mean(np.abs(taus) >= abs(t) - 1e-12))
    else:
        taus = kendall_tau_b(xs, np.array([rng.permutation(ys) for _ in range(permutations)]))
        method = f"Kendall tau-b, permutation p from {permutations} random orders"

        def p_of(t: float) -> float:
            return float((np.sum(np.abs(taus) >= abs(t) - 1e-12) + 1) / (permutations + 1))
    if math.isnan(tau):
        p = 1.0
    else:
        p = p_of(tau)
    p_floor = p_of(best) if not math.isnan(best) else 1.0
    boot = []
    for _ in range(bootstrap):
        idx = rng.integers(0, n, n)
        t = _tau(xs[idx], ys[idx])
        if not math.isnan(t):
            boot.append(t)
    if len(boot) >= 10:
        low, high = (float(v) for v in np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2]))
    else:
        low, high = -1.0, 1.0
    return RankCorrelation(tau, p, low, high, n, p_floor, method + f"; {level:.0%} bootstrap interval over points")


def one_probe_relative_sd(trace: float, frobenius: float, num_params: int | None = None) -> float:
    """The relative standard deviation of a one-probe SLQ (or Hutchinson) trace estimate,
    about sqrt(2 / r_eff) with r_eff = Tr(H)^2 / ||H||_F^2: for a Gaussian z, Var(z^T H z) =
    2 ||H||_F^2. SLQ normalises its probe (u = z / ||z||, estimate P u^T H u); with ``num_params`` P
    given, the exact value for that, Var = 2P/(P+2) (||H||_F^2 - Tr(H)^2 / P), is returned instead
    (smaller: the normalisation removes the part of the noise that is a common scale). NaN when
    the trace is 0."""
    if not (math.isfinite(trace) and math.isfinite(frobenius)) or frobenius < 0:
        raise ValueError(f"trace and frobenius must be finite (frobenius >= 0), got {trace!r}, {frobenius!r}")
    if trace == 0:
        return math.nan
    if num_params is None:
        return math.sqrt(2.0) * frobenius / abs(trace)
    positive_int("num_params", num_params)
    P = int(num_params)
    variance = 2.0 * P / (P + 2) * max(frobenius**2 - trace**2 / P, 0.0)
    return math.sqrt(variance) / abs(trace)


def ritz_residual(beta_last: float, top_vector_last_component: float) -> float:
    """beta_m |u_m1|: the residual norm ||H y - theta y|| of the top Ritz pair after m Lanczos steps.
    Some eigenvalue of H lies within this distance of theta (Parlett, The Symmetric Eigenvalue
    Problem, Thm 11.4.1 / Kahan); 0 when the Krylov space is invariant."""
    return abs(float(beta_last)) * abs(float(top_vector_last_component))


def stratified_rank_correlation(groups: Sequence[tuple[Sequence[float], Sequence[float]]], *, exact_limit: int = 20000,
                                permutations: int = 10000, bootstrap: int = 2000, seed: int = 0,
                                level: float = LEVEL) -> RankCorrelation:
    """The mean over groups of the within-group Kendall tau-b of (x, y), tested against "no
    association in any group" by permuting y WITHIN each group independently (the stratified
    permutation test: its false-positive rate is the test's level whatever the number of groups,
    unlike "tau > 0 in at least one group"). Groups where x or y is constant are left out. The
    p-value is exact (all prod_g n_g! arrangements) when there are at most ``exact_limit`` of them,
    else from ``permutations`` random ones; the interval is a bootstrap over groups; ``p_floor`` is
    the p-value of every group perfectly ordered."""
    usable = []
    for gx, gy in groups:
        x, y = np.asarray(gx, dtype=np.float64).ravel(), np.asarray(gy, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"a group has {x.size} x values and {y.size} y values")
        if x.size >= 2 and np.unique(x).size > 1 and np.unique(y).size > 1:
            usable.append((x, y))
    if not usable:
        return RankCorrelation(math.nan, 1.0, -1.0, 1.0, 0, 1.0, "no group with at least two distinct values")
    observed = float(np.mean([_tau(x, y) for x, y in usable]))
    best = float(np.mean([_tau(x, np.sort(y)[np.argsort(np.argsort(x, kind="stable"), kind="stable")])
                          for x, y in usable]))
    total = 1
    for x, _ in usable:
        total *= math.factorial(x.size)
        if total > exact_limit:
            break
    rng = np.random.default_rng(seed)
    if total <= exact_limit:
        per_group = [kendall_tau_b(x, y[np.array(list(itertools.permutations(range(x.size))))]) for x, y in usable]
        grids = np.meshgrid(*per_group, indexing="ij")
        null = np.mean(np.stack([g.ravel() for g in grids]), axis=0)
        method = (f"mean within-group Kendall tau-b over {len(usable)} groups; exact stratified permutation p "
                  f"({total} arrangements)")

        def p_of(t: float) -> float:
            return float(np.mean(np.abs(null) >= abs(t) - 1e-12))
    else:
        null = np.mean([kendall_tau_b(x, np.array([rng.permutation(y) for _ in range(permutations)]))
                        for x, y in usable], axis=0)
        method = (f"mean within-group Kendall tau-b over {len(usable)} groups; stratified permutation p from "
                  f"{permutations} random arrangements")

        def p_of(t: float) -> float:
            return float((np.sum(np.abs(null) >= abs(t) - 1e-12) + 1) / (permutations + 1))
    taus = np.array([_tau(x, y) for x, y in usable])
    boot = [float(np.mean(taus[rng.integers(0, taus.size, taus.size)])) for _ in range(bootstrap)]
    low, high = (float(v) for v in np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2]))
    return RankCorrelation(observed, p_of(observed), low, high, sum(x.size for x, _ in usable), p_of(best),
                           method + f"; {level:.0%} bootstrap interval over groups", _critical(null, p_of))


def _critical(null: np.ndarray, p_of, alpha: float = 0.05) -> float:
    """The smallest |statistic| among the permutation distribution's values whose p-value is below
    ``alpha``: what this test can call significant at all, with these groups (NaN: nothing can)."""
    for v in np.unique(np.round(np.abs(null), 12)):
        if p_of(float(v)) < alpha:
            return float(v)
    return math.nan
