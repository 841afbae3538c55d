"""flatbook.chapters.lanczos_checks (and spectrum's DiagonalOperator, MatrixOperator(dtype=...)) against
exact spectra of small matrices, float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flatbook import dense_hessian, models
from flatbook.chapters.lanczos_checks import (GhostEffect, LanczosParameters, estimator_grid, exact_measures, ghost_count,
                                     ghost_effect, lanczos_claims, one_probe_spread, quadrature_identity, ritz_history,
                                     smoothed_density_distance, steps_to_converge, summarise_grid)
from flatbook.spectrum import DiagonalOperator, MatrixOperator, start_vectors, check_operator, lanczos, slq


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_symmetric(P=30, seed=0, spread=None):
    """(A, ascending eigenvalues, eigenvectors Q as columns): distinct, mixed-sign eigenvalues."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((P, P)))
    eig = rng.standard_normal(P) + np.linspace(0, 3, P)
    if spread is not None:
        eig[np.argmax(eig)] = spread
    order = np.argsort(eig)
    eig, Q = eig[order], Q[:, order]
    return (Q * eig) @ Q.T, eig, Q


@pytest.fixture(scope="module")
def mlp_hessian():
    """The exact Hessian of a tiny MLP's mean cross-entropy (P = 71) and its eigenvalues."""
    torch.manual_seed(0)
    model = models.build("mlp", in_features=6, hidden=[4, 5], num_classes=3).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    H = dense_hessian(model, F.cross_entropy, (x, y), batch_size=40)
    return H, torch.linalg.eigvalsh(H).numpy()


# --- exact_measures -----------------------------------------------------------------------------


def test_exact_measures_on_known_eigenvalues():
    m = exact_measures([3.0, -4.0, 0.0, 1.0])
    assert m == {"lambda_max": 3.0, "lambda_min": -4.0, "trace": 0.0, "frobenius": pytest.approx(math.sqrt(26.0))}
    assert all(isinstance(v, float) for v in m.values())
    m = exact_measures(torch.tensor([[2.0], [2.0]]))
    assert m["trace"] == 4.0 and m["frobenius"] == pytest.approx(math.sqrt(8.0)) and m["lambda_min"] == 2.0
    with pytest.raises(ValueError, match="no eigenvalues"):
        exact_measures([])


def test_exact_top_measures_without_the_eigendecomposition():
    """lambda_max (ARPACK), trace and Frobenius of a known matrix Q diag(e) Q^T, with a top eigenvalue
    close to the next (a slow case for Lanczos) and negative ones, to rounding."""
    from flatbook.chapters import lanczos_checks

    gen = torch.Generator().manual_seed(3)
    e = torch.cat([torch.tensor([5.0, 5.0 - 1e-3, -7.0]), torch.rand(197, generator=gen, dtype=torch.float64)])
    Q, _ = torch.linalg.qr(torch.randn(200, 200, generator=gen, dtype=torch.float64))
    H = Q @ torch.diag(e.double()) @ Q.T
    m = lanczos_checks.exact_top_measures(H)
    assert set(m) == {"lambda_max", "trace", "frobenius"}
    assert m["lambda_max"] == pytest.approx(5.0, abs=1e-12)
    assert m["trace"] == pytest.approx(float(e.sum()), abs=1e-11)
    assert m["frobenius"] == pytest.approx(float(e.norm()), abs=1e-11)
    assert lanczos_checks.exact_top_measures(H.numpy()) == m
    with pytest.raises(ValueError, match="square"):
        lanczos_checks.exact_top_measures(torch.ones(3, 4))


def test_exact_measures_match_the_matrix(mlp_hessian):
    H, e = mlp_hessian
    m = exact_measures(e)
    assert m["trace"] == pytest.approx(float(H.trace()), rel=1e-10)
    assert m["frobenius"] == pytest.approx(float(H.norm()), rel=1e-10)
    assert m["lambda_max"] == pytest.approx(float(torch.linalg.matrix_norm(H, ord=2)), rel=1e-10)


# --- ritz_history -------------------------------------------------------------------------------


def test_ritz_history_last_row_is_the_spectrum_when_steps_equal_p():
    A, eig, _ = random_symmetric(P=30, seed=1)
    hist = ritz_history(MatrixOperator(A), steps=30, seed=2)
    assert hist.shape == (30, 30)
    np.testing.assert_allclose(hist[-1], eig, rtol=0, atol=1e-10 * np.abs(eig).max())
    for m in range(1, 31):  # row m - 1: m ascending Ritz values, then NaN
        row = hist[m - 1]
        assert not np.isnan(row[:m]).any() and np.isnan(row[m:]).all()
        assert (np.diff(row[:m]) >= 0).all()
        # Cauchy interlacing: the extreme Ritz values move outwards monotonically, inside the spectrum
        assert eig[0] - 1e-12 <= row[0] and row[m - 1] <= eig[-1] + 1e-12
        if m > 1:
            prev = hist[m - 2]
            assert row[m - 1] >= prev[m - 2] - 1e-12 and row[0] <= prev[0] + 1e-12
    # the first row is the Rayleigh quotient of the start vector
    v = start_vectors(30, 1, seed=2)[:, 0].numpy()
    assert hist[0, 0] == pytest.approx(v @ A @ v, rel=1e-12)


def test_ritz_history_pads_after_breakdown_and_checks_steps():
    A = np.diag([1.0, 2.0, 3.0, 3.0, 3.0, 5.0])  # 4 distinct eigenvalues: an invariant Krylov space after 4 steps
    hist = ritz_history(MatrixOperator(A), steps=6, seed=0)
    assert np.allclose(hist[3, :4], [1.0, 2.0, 3.0, 5.0], atol=1e-10)
    assert np.isnan(hist[4:]).all()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            ritz_history(MatrixOperator(A), steps=bad)


def test_ritz_history_of_a_hessian(mlp_hessian):
    H, e = mlp_hessian
    hist = ritz_history(MatrixOperator(H), steps=25, seed=0)
    assert np.nanmax(hist[-1]) == pytest.approx(e.max(), rel=1e-8)  # top converges first
    assert np.nanmax(hist[-1]) <= e.max() * (1 + 1e-12)


# --- estimator_grid -----------------------------------------------------------------------------


def _quadratic_forms(A, P, probes, seed):
    V = start_vectors(P, probes, seed=seed).numpy()
    AV = A @ V
    return P * np.mean((V * AV).sum(0)), math.sqrt(P * np.mean((AV * AV).sum(0)))


@pytest.mark.parametrize("probes", [1, 3])
def test_estimator_grid_at_full_steps(mlp_hessian, probes):
    H, e = mlp_hessian
    A = H.numpy()
    P = len(e)
    exact = exact_measures(e)
    grid = estimator_grid(MatrixOperator(H), exact, steps=[P, P + 5], probes=[probes], repeats=2, seed=4)
    assert len(grid) == 4
    assert list(grid.columns) == ["steps", "probes", "repeat", "lambda_max", "lambda_max_rel_error", "trace",
                                  "trace_rel_error", "frobenius", "frobenius_rel_error"]
    assert (np.abs(grid["lambda_max_rel_error"]) < 1e-10).all()
    for row in grid.itertuples():
        assert row.lambda_max == pytest.approx(e.max(), rel=1e-10)
        # all steps: the estimates are exact quadratic forms of the probes (seed + repeat), which are
        # unbiased for the trace and ||H||_F^2 but not equal to them
        trace, fro = _quadratic_forms(A, P, probes, 4 + row.repeat)
        assert row.trace == pytest.approx(trace, rel=1e-9, abs=1e-10 * np.abs(e).sum())
        assert row.frobenius == pytest.approx(fro, rel=1e-9)
        assert row.trace_rel_error == pytest.approx((row.trace - exact["trace"]) / abs(exact["trace"]), rel=1e-12)
        assert row.frobenius_rel_error == pytest.approx((row.frobenius - exact["frobenius"]) / exact["frobenius"],
                                                        rel=1e-12)
    # steps beyond P are capped at P: identical numbers
    a, b = grid[grid.steps == P].reset_index(), grid[grid.steps == P + 5].reset_index()
    np.testing.assert_allclose(a[["lambda_max", "trace", "frobenius"]], b[["lambda_max", "trace", "frobenius"]],
                               rtol=1e-13)


def test_estimator_grid_is_exact_when_every_probe_weight_is_one_over_p():
    # a diagonal operator with all eigenvalues equal has trace and Frobenius estimates exact
    op = DiagonalOperator(np.full(12, 2.5))
    exact = exact_measures(np.full(12, 2.5))
    grid = estimator_grid(op, exact, steps=[1, 12], probes=[1, 2], repeats=2)
    for col in ("lambda_max_rel_error", "trace_rel_error", "frobenius_rel_error"):
        assert (np.abs(grid[col]) < 1e-12).all()


def test_trace_estimate_does_not_depend_on_the_number_of_steps(mlp_hessian):
    """m-point Gauss quadrature is exact for f(x) = x for every m >= 1 (and for x^2 from m = 2):
    the trace estimate of one probe is P q^T H q whatever the number of steps."""
    H, e = mlp_hessian
    A = H.numpy()
    P = len(e)
    exact = exact_measures(e)
    steps = [1, 2, 3, 5, 8, 13, 30, P]
    grid = estimator_grid(MatrixOperator(H), exact, steps=steps, probes=[1], repeats=1, seed=11)
    trace, fro = _quadratic_forms(A, P, 1, 11)
    np.testing.assert_allclose(grid["trace"], trace, rtol=1e-10)
    np.testing.assert_allclose(grid["trace_rel_error"], grid["trace_rel_error"].iloc[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grid["frobenius"][grid.steps >= 2], fro, rtol=1e-10)
    # lambda_max improves (weakly) with steps and is always a lower bound
    lm = grid["lambda_max"].to_numpy()
    assert (np.diff(lm) >= -1e-12).all() and (lm <= e.max() * (1 + 1e-12)).all()
    # another seed: another probe, another trace estimate
    other = estimator_grid(MatrixOperator(H), exact, steps=[1], probes=[1], repeats=1, seed=12)
    assert abs(other["trace"].iloc[0] - trace) > 1e-6 * abs(trace)


def test_estimator_grid_repeats_use_consecutive_seeds_and_checks_arguments():
    A, eig, _ = random_symmetric(P=20, seed=3)
    exact = exact_measures(eig)
    grid = estimator_grid(MatrixOperator(A), exact, steps=[4], probes=[2], repeats=3, seed=5)
    for r in range(3):
        single = estimator_grid(MatrixOperator(A), exact, steps=[4], probes=[2], repeats=1, seed=5 + r)
        assert grid["trace"].iloc[r] == single["trace"].iloc[0]
        assert grid["repeat"].iloc[r] == r
    for kwargs, name in [({"steps": [0]}, "steps"), ({"probes": [1, -1]}, "probes"), ({"repeats": 0}, "repeats"),
                         ({"steps": [2.0]}, "steps")]:
        args = {"steps": [2], "probes": [1], "repeats": 1, **kwargs}
        with pytest.raises(ValueError, match=name):
            estimator_grid(MatrixOperator(A), exact, **args)


def test_summarise_grid_columns_and_values():
    A, eig, _ = random_symmetric(P=20, seed=4)
    exact = exact_measures(eig)
    grid = estimator_grid(MatrixOperator(A), exact, steps=[2, 6], probes=[1, 3], repeats=4)
    s = summarise_grid(grid)
    assert list(s.columns) == ["steps", "probes", "lambda_max_rel_error", "trace_rel_error", "frobenius_rel_error",
                               "lambda_max_rel_error_se", "trace_rel_error_se", "frobenius_rel_error_se",
                               "lambda_max_rel_rms", "trace_rel_rms", "frobenius_rel_rms"]
    for (st, pr), d in grid.groupby(["steps", "probes"]):
        row = s[(s.steps == st) & (s.probes == pr)].iloc[0]
        assert row.trace_rel_rms == pytest.approx(float(np.sqrt(np.mean(d.trace_rel_error ** 2))), rel=1e-12)
    assert len(s) == 4
    assert sorted(zip(s.steps, s.probes)) == [(2, 1), (2, 3), (6, 1), (6, 3)]
    for row in s.itertuples():
        sub = grid[(grid.steps == row.steps) & (grid.probes == row.probes)]
        assert row.trace_rel_error == pytest.approx(sub["trace_rel_error"].mean(), rel=1e-12)
        assert row.trace_rel_error_se == pytest.approx(sub["trace_rel_error"].std(ddof=1) / 2, rel=1e-12)


# --- ghosts -------------------------------------------------------------------------------------


def test_ghost_count_with_and_without_reorthogonalisation():
    A, eig, _ = random_symmetric(P=200, seed=5, spread=100.0)
    top = eig[-1]
    clean = ritz_history(MatrixOperator(A), steps=120, seed=2, reorthogonalize=True)[-1]
    ghosts = ritz_history(MatrixOperator(A), steps=120, seed=2, reorthogonalize=False)[-1]
    assert ghost_count(clean, top) == 1
    assert ghost_count(ghosts, top) > 1
    sp = slq(MatrixOperator(A), steps=120, seed=2, reorthogonalize=False)
    assert ghost_count(sp.nodes[0], top) == ghost_count(ghosts, top)


def test_ghost_count_arithmetic():
    assert ghost_count([1.0, 10.0, 10.0 + 1e-6, np.nan, 9.0], 10.0) == 2
    assert ghost_count([1.0, 10.0, 10.0 + 1e-6, 9.0], 10.0, rtol=1e-8) == 1
    assert ghost_count([[np.nan, -5.0], [-5.0 + 1e-7, 3.0]], -5.0) == 2
    assert ghost_count([np.nan, np.nan], 1.0) == 0


# --- DiagonalOperator and MatrixOperator(dtype) -------------------------------------------------


def test_lanczos_on_the_diagonal_equals_lanczos_on_the_matrix():
    A, eig, Q = random_symmetric(P=40, seed=6)
    v = start_vectors(40, 2, seed=9)
    for steps in (1, 5, 15, 40):
        full = lanczos(MatrixOperator(A), steps=steps, probes=2, start=v)
        diag = lanczos(DiagonalOperator(eig), steps=steps, probes=2, start=torch.from_numpy(Q.T) @ v)
        n1, w1 = full.ritz()
        n2, w2 = diag.ritz()
        np.testing.assert_allclose(n2, n1, rtol=0, atol=1e-10)
        np.testing.assert_allclose(w2, w1, rtol=0, atol=1e-10)
    np.testing.assert_allclose(n2[0], eig, atol=1e-10)


def test_diagonal_operator_products_and_validation():
    op = DiagonalOperator(torch.tensor([1.0, -2.0, 3.0]))
    assert op.num_params == 3 and op.eigenvalues.dtype == torch.float64
    V = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    assert torch.equal(op.matmat(V), torch.diag(torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)) @ V)
    assert torch.equal(op.matvec(V[:, 0]), torch.tensor([0.0, -4.0, 12.0], dtype=torch.float64))
    assert check_operator(op) < 1e-15
    sp = slq(op, steps=3, seed=0)
    assert sp.lambda_max == pytest.approx(3.0) and sp.lambda_min == pytest.approx(-2.0)
    for bad in ([], [1.0, np.nan], [np.inf]):
        with pytest.raises(ValueError, match="DiagonalOperator"):
            DiagonalOperator(bad)


def test_matrix_operator_float32_products(mlp_hessian):
    H, _ = mlp_hessian
    op64, op32 = MatrixOperator(H), MatrixOperator(H, dtype=torch.float32)
    assert op32.A.dtype == torch.float32 and op64.A.dtype == torch.float64
    assert op32.settings["dtype"] == "float32" and op64.settings["dtype"] == "float64"
    V = start_vectors(H.shape[0], 4, seed=0)
    p64, p32 = op64.matmat(V), op32.matmat(V)
    assert p32.dtype == torch.float32 and p64.dtype == torch.float64
    rel = float((p32.double() - p64).norm() / p64.norm())
    assert 1e-10 < rel < 1e-6  # single precision: rounded, but to about 1e-7
    rel_v = float((op32.matvec(V[:, 0]).double() - op64.matvec(V[:, 0])).norm() / op64.matvec(V[:, 0]).norm())
    assert rel_v < 1e-6
    assert check_operator(op32) < 1e-3  # float32 tolerance
    np.testing.assert_allclose(slq(op32, steps=30, seed=1).lambda_max, slq(op64, steps=30, seed=1).lambda_max,
                               rtol=1e-5)


def test_matrix_operator_rejects_other_dtypes_and_shapes():
    A = torch.eye(3, dtype=torch.float64)
    for dtype in (torch.float16, torch.bfloat16, torch.int64, torch.complex128, "float32", None):
        with pytest.raises(ValueError, match="dtype"):
            MatrixOperator(A, dtype=dtype)
    with pytest.raises(ValueError, match="square"):
        MatrixOperator(torch.zeros(3, 4))
    assert MatrixOperator(np.eye(3, dtype=np.float32)).A.dtype == torch.float64


# --- LanczosParameters -------------------------------------------------------------------

GOOD = dict(dataset="mnist", image_size=None, train_per_class=None, epochs=1, lr=0.01, mlp_hidden=[10, 100],
            logreg_samples=100, mlp_samples=100, steps=50, steps_grid=[5, 10], probes_grid=[1, 4], repeats=3,
            paper_runs=2, seed=0, results_dir=None)


def test_check_lanczos_parameters_accepts_good_values():
    LanczosParameters(**GOOD)
    LanczosParameters(**{**GOOD, "dataset": "fashion-mnist", "image_size": 8, "results_dir": "/tmp/x",
                                "train_per_class": 10, "steps_grid": (1,), "mlp_hidden": [3]})


@pytest.mark.parametrize("name,bad", [
    ("logreg_samples", 0), ("mlp_samples", -3), ("steps", 1.5), ("repeats", True), ("paper_runs", None),
    ("seed", -1), ("seed", 1.0), ("seed", True), ("steps_grid", []), ("steps_grid", [5, 0]), ("steps_grid", 5),
    ("probes_grid", [1.0]), ("probes_grid", None), ("dataset", "cifar10"), ("mlp_hidden", []),
    ("mlp_hidden", [10, 0]), ("mlp_hidden", [True]), ("results_dir", 3), ("epochs", 0), ("lr", -0.1),
    ("image_size", 1), ("train_per_class", 0),
])
def test_check_lanczos_parameters_names_the_bad_one(name, bad):
    with pytest.raises(ValueError, match=name):
        LanczosParameters(**{**GOOD, name: bad})


def test_check_lanczos_parameters_limits_the_mlp_size():
    with pytest.raises(ValueError, match="parameters"):
        LanczosParameters(**{**GOOD, "mlp_hidden": [100, 100]})  # 784*100 + ... > 20,000
    LanczosParameters(**{**GOOD, "mlp_hidden": [100, 100], "image_size": 8})  # 64*100 + ... fits


def test_steps_to_converge_reads_the_history():
    history = np.array([[5.0, np.nan, np.nan], [2.0, 9.0, np.nan], [1.0, 7.0, 10.0]])
    eig = [1.0, 7.0, 10.0]
    assert steps_to_converge(history, eig, 1, rtol=1e-12) == 3
    assert steps_to_converge(history, eig, 2, rtol=1e-12) == 3
    assert steps_to_converge(history, eig, 1, rtol=0.11) == 2  # 9 is within 10% of 10
    assert steps_to_converge(history[:2], eig, 1, rtol=1e-12) is None
    with pytest.raises(ValueError, match="k"):
        steps_to_converge(history, eig, 0)


# --- the trace estimate is P q^T H q at every number of steps ----------------------------------


def test_quadrature_identity_with_separate_runs(mlp_hessian):
    """Each number of steps is its own Lanczos run (nothing shared with the others): the trace
    estimate is P q^T H q for every m >= 1 and the Frobenius estimate sqrt(P ||Hq||^2) for m >= 2."""
    H, e = mlp_hessian
    A = H.numpy()
    P = len(e)
    table = quadrature_identity(MatrixOperator(H), [1, 2, 3, 7, 20, P], seed=11)
    trace, fro = _quadratic_forms(A, P, 1, 11)
    assert list(table["steps"]) == [1, 2, 3, 7, 20, P]
    np.testing.assert_allclose(table["hutchinson"], trace, rtol=1e-12)
    np.testing.assert_allclose(table["trace"], trace, rtol=1e-10)
    assert (table["trace_rel_deviation"] < 1e-10).all()
    assert math.isnan(table["frobenius_rel_deviation"].iloc[0])  # one node cannot integrate x^2 exactly
    assert abs(table["frobenius"].iloc[0] - fro) > 1e-6 * fro
    assert (table["frobenius_rel_deviation"].iloc[1:] < 1e-10).all()
    np.testing.assert_allclose(table["frobenius_direct"], fro, rtol=1e-12)
    # the same probe on the eigenvalues gives the same numbers (orthogonal invariance)
    other = quadrature_identity(DiagonalOperator(e), [1, 5], seed=11)
    assert (other["trace_rel_deviation"] < 1e-10).all()
    with pytest.raises(ValueError, match="steps"):
        quadrature_identity(MatrixOperator(H), [])


# --- ghosts: what they do ----------------------------------------------------------------------


def test_smoothed_density_distance():
    # identical measures: 0; disjoint narrow bumps: 2; a shift by one sigma: 2 (2 Phi(1/2) - 1)
    assert smoothed_density_distance([0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.5, 0.5], 0.01, (0, 1)) < 1e-12
    assert smoothed_density_distance([0.0], [1.0], [1.0], [1.0], 0.01, (0, 1)) == pytest.approx(2.0, abs=1e-6)
    from scipy.stats import norm

    d = smoothed_density_distance([0.0], [1.0], [0.1], [1.0], 0.1, (0, 0.1))
    assert d == pytest.approx(2 * (2 * norm.cdf(0.5) - 1), rel=1e-3)  # trapezoids on a grid of sigma / 10
    assert smoothed_density_distance([0.0, np.nan], [1.0, 0.0], [0.0], [1.0], 0.1, (0, 1)) < 1e-12
    with pytest.raises(ValueError, match="sigma"):
        smoothed_density_distance([0.0], [1.0], [0.0], [1.0], 0.0, (0, 1))


def test_ghost_effect_measures_shared_weight_and_an_unchanged_quadrature():
    """Lanczos without reorthogonalisation on a matrix with a far outlier: ghost copies of lambda_1
    appear, and (Greenbaum 1989) together carry its weight; the moments stay exact to rounding."""
    A, eig, Q = random_symmetric(P=200, seed=5, spread=100.0)
    g = ghost_effect(MatrixOperator(A), eig, steps=120, seed=2, max_moment=8)
    assert isinstance(g, GhostEffect) and g.converged and g.ghosts_with == 1 and g.ghosts_without > 1
    # the weight of lambda_1 in the probe's spectral measure: (q . u_1)^2
    from flatbook.spectrum import start_vectors

    q = start_vectors(200, 1, seed=2)[:, 0].numpy()
    exact_weight = float((Q[:, -1] @ q) ** 2)
    assert g.top_weight_with == pytest.approx(exact_weight, rel=1e-8)
    assert g.top_weight_without == pytest.approx(exact_weight, rel=1e-8)
    assert abs(g.top_weight_ratio - 1) < 1e-8
    assert len(g.moment_errors_with) == 8 and max(g.moment_errors_with) < 1e-12
    assert max(g.moment_errors_without) < 1e-10
    d = g.density[0.01]
    assert d["without vs with"] < 1e-8 < d["with vs exact"]  # one probe's own error dominates
    assert set(g.density) == {0.01, 0.001}
    # trace and Frobenius come from alpha_1 and beta_1, before orthogonality is lost
    assert g.estimates_with["trace"] == pytest.approx(g.estimates_without["trace"], rel=1e-12)
    assert g.estimates_with["frobenius"] == pytest.approx(g.estimates_without["frobenius"], rel=1e-12)
    row = g.summary()
    assert row["copies of lambda_1 without"] == g.ghosts_without and row["steps"] == 120


def test_ghost_effect_on_the_eigenvalues_knows_the_probes_measure():
    A, eig, _ = random_symmetric(P=200, seed=5, spread=100.0)
    g = ghost_effect(DiagonalOperator(eig), eig, steps=120, seed=2, sigma_fractions=(1e-2,))
    assert g.ghosts_without > 1 and abs(g.top_weight_ratio - 1) < 1e-8
    d = g.density[0.01]
    assert d["with vs probe"] < 1e-8 and d["without vs probe"] < 1e-8 < d["probe vs exact"]
    # the probe's measure q_i^2 at eigenvalue i, smoothed, against the exact density: computed directly
    from flatbook.spectrum import start_vectors

    q2 = start_vectors(200, 1, seed=2)[:, 0].numpy() ** 2
    sigma = 0.01 * (eig.max() - eig.min())
    expected = smoothed_density_distance(eig, q2, eig, np.full(200, 1 / 200), sigma, (eig.min(), eig.max()))
    assert d["probe vs exact"] == pytest.approx(expected, rel=1e-12)
    assert "density L1, without vs probe (sigma 0.01 x range)" in g.summary()
    # a general operator's probe measure is unknown: no such entries
    assert "with vs probe" not in ghost_effect(MatrixOperator(A), eig, steps=10, seed=2).density[0.01]


def test_ghost_effect_without_convergence_and_argument_checks():
    A, eig, _ = random_symmetric(P=200, seed=5, spread=100.0)
    g = ghost_effect(MatrixOperator(A), eig, steps=2, seed=2, max_moment=8, sigma_fractions=(0.05,))
    assert not g.converged and g.ghosts_with == 0 and len(g.moment_errors_with) == 3  # exact up to degree 2m - 1 = 3
    assert max(g.moment_errors_with) < 1e-12 and math.isnan(g.top_weight_ratio)
    with pytest.raises(ValueError, match="eigenvalues"):
        ghost_effect(MatrixOperator(A), eig[:-1], steps=5)
    with pytest.raises(ValueError, match="steps"):
        ghost_effect(MatrixOperator(A), eig, steps=0)


# --- one probe --------------------------------------------------------------------------------


def test_one_probe_spread_against_formula_and_simulation():
    e = np.array([10.0, 1.0, 1.0, 0.5, 0.0, 0.0, -0.2, 0.1] * 10)
    s = one_probe_spread(e)
    r_eff = e.sum() ** 2 / (e**2).sum()
    assert s["r_eff"] == pytest.approx(r_eff)
    assert s["trace_rel_sd"] == pytest.approx(math.sqrt(2 / r_eff))
    # equal eigenvalues: r_eff = P, and a normalised probe is exact
    flat = one_probe_spread(np.full(50, 3.0))
    assert flat["r_eff"] == pytest.approx(50) and flat["trace_rel_sd_sphere"] < 1e-7
    # the sphere formula against simulated normalised Gaussian probes
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20000, e.size))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    est = e.size * (z**2 * e).sum(axis=1)
    assert np.std(est) / e.sum() == pytest.approx(s["trace_rel_sd_sphere"], rel=0.03)
    fro = np.sqrt(e.size * (z**2 * e**2).sum(axis=1))
    assert np.std(fro) / np.sqrt((e**2).sum()) == pytest.approx(s["frobenius_rel_sd"], rel=0.25)
    with pytest.raises(ValueError, match="eigenvalues"):
        one_probe_spread([])


# --- claims -----------------------------------------------------------------------------------


def _claims_inputs(ghosts_without=3, weight_without=1e-3, dens_between=1e-15, steps=100):
    import pandas as pd

    quad = pd.DataFrame({"steps": [1, 5], "trace_rel_deviation": [1e-15, 2e-15],
                         "frobenius_rel_deviation": [np.nan, 3e-15]})
    g = GhostEffect(steps=steps, lambda_max=10.0, top_error_with=1e-12, ghosts_with=1, ghosts_without=ghosts_without,
                    top_weight_with=1e-3, top_weight_without=weight_without, moment_errors_with=(1e-15,) * 8,
                    moment_errors_without=(2e-15,) * 8,
                    density={0.01: {"without vs with": dens_between, "with vs exact": 0.1, "without vs exact": 0.1}})
    errors = {"lambda_max": np.full(5, -1e-9), "trace": np.array([0.1, -0.1, 0.05, 0.0, 0.02]),
              "frobenius": np.full(5, 0.01)}
    return dict(identity_error=1e-14, quadrature={"m": quad}, ghosts={"m": g}, float32_lambda_error=1e-7,
                paper_errors={"m": errors}, spreads={"m": {"r_eff": 800.0, "trace_rel_sd": 0.05,
                                                           "frobenius_rel_sd": 0.2}}, steps=steps)


def test_lanczos_claims_on_constructed_inputs():
    claims = lanczos_claims(**_claims_inputs())
    assert len(claims) == 10
    exact = [c for c in claims if c.method.startswith("exact computation")]
    assert len(exact) == 3 and all(c.decision == "holds" for c in exact)
    assert all(c.decision == "holds" for c in claims)
    assert claims[1].effect == 2e-15 and claims[2].effect == 3e-15
    # ghosts that took weight from elsewhere, or moved the density: contradicted
    bad = lanczos_claims(**_claims_inputs(weight_without=2e-3, dens_between=0.05))
    assert bad[4].decision == "fails" and bad[4].effect == pytest.approx(1.0)
    assert bad[6].decision == "fails" and bad[6].effect == pytest.approx(0.5)
    # no ghost: the ghost claims are untestable, not supported
    none = lanczos_claims(**_claims_inputs(ghosts_without=1))
    assert none[3].decision == "fails"  # lambda_1 converged, yet no copy: the claim that ghosts appear fails
    assert [c.decision for c in none[4:7]] == ["untestable"] * 3 and "no ghost" in none[4].failed
    # lambda_1 not converged: untestable too
    inputs = _claims_inputs()
    inputs["ghosts"]["m"] = GhostEffect(**{**inputs["ghosts"]["m"].__dict__, "top_error_with": 1e-3})
    unconverged = lanczos_claims(**inputs)
    assert [c.decision for c in unconverged[3:7]] == ["untestable"] * 4
    # the density claim reads the study on the eigenvalues when given, against the probe's own measure
    inputs = _claims_inputs()
    diag = GhostEffect(**{**inputs["ghosts"]["m"].__dict__, "density": {0.01: {
        "without vs with": 0.5, "with vs exact": 0.1, "without vs exact": 0.1, "with vs probe": 1e-13,
        "without vs probe": 1e-9, "probe vs exact": 0.05}}})
    c = lanczos_claims(**inputs, density_ghosts={"m": diag})[6]
    assert c.decision == "holds" and c.effect == pytest.approx(2e-8)
    # a one-probe trace too noisy for 10%
    inputs = _claims_inputs()
    inputs["spreads"]["m"]["trace_rel_sd"] = 0.5
    assert lanczos_claims(**inputs)[-1].decision == "fails"
