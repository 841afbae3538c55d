"""Tests of flatbook.theory.symbolic (the Gedanken experiment of Section 2: L = exp(X w_1 ... w_n)).

References are independent of the module under test wherever possible:

* torch autograd (float64) for the gradient and Hessian of w -> exp(X prod w);
* numpy eigvalsh / norms of that torch Hessian for spectra;
* exact Python ``Fraction`` arithmetic plus 50-digit mpmath for the log10 spectrum far out along
  a ray, where float64 ``exp`` would underflow;
* hand-derived exact values (61/4 e^-3 at the counter-example).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

try:  # allow plain ``pytest`` as well as ``python -m pytest`` from the repository root
    import flatbook  # noqa: F401
except ImportError:  # pragma: no cover - depends on how pytest is launched
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flatbook.theory import symbolic  # noqa: E402

import torch  # noqa: E402
import mpmath  # noqa: E402


# --------------------------------------------------------------------------------------------
# helpers and independent references
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def derivation(depth: int) -> symbolic.GedankenDerivation:
    """derive_gedanken is the slow part (~1 s at depth 6); build each depth once per session."""
    return symbolic.derive_gedanken(depth)


def _torch_loss(X: float):
    def f(w):
        return torch.exp(X * torch.prod(w))

    return f


def torch_hessian(point, X: float) -> np.ndarray:
    w = torch.tensor(point, dtype=torch.float64)
    H = torch.autograd.functional.hessian(_torch_loss(float(X)), w)
    return H.detach().numpy()


def torch_gradient(point, X: float) -> np.ndarray:
    w = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(_torch_loss(float(X))(w), w)
    return g.detach().numpy()


def rel_fro(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - ref) / np.linalg.norm(ref))


def random_points(depth: int, X: float, count: int, seed: int) -> list[list[float]]:
    """Seeded random points with |X prod w| < 4 and no tiny coordinates."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < count:
        w = rng.uniform(0.3, 1.6, size=depth) * rng.choice([-1.0, 1.0], size=depth)
        if abs(X * np.prod(w)) < 4.0:
            points.append([float(v) for v in w])
    return points


def subs_point(d: symbolic.GedankenDerivation, point, X) -> dict:
    values = {w: sp.Rational(v) for w, v in zip(d.weights, point)}  # exact binary value of the float
    values[d.X] = sp.Rational(X)
    return values


X_VALUES = (1.0, -0.7, 2.3, -1.9)


# --------------------------------------------------------------------------------------------
# 1. SymPy Hessian / gradient versus torch autograd
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
@pytest.mark.parametrize("X", X_VALUES)
def test_hessian_matches_torch_autograd(depth, X):
    d = derivation(depth)
    f = d.numeric("hessian")
    for point in random_points(depth, X, count=4, seed=100 * depth + int(10 * X) % 97):
        ref = torch_hessian(point, X)
        assert ref.shape == (depth, depth)
        H_numeric = np.asarray(f(*point, X), dtype=np.float64)
        H_at = symbolic.hessian_at(d, point, X)
        assert H_at.shape == (depth, depth) and H_at.dtype == np.float64
        assert rel_fro(H_numeric, ref) <= 1e-10
        assert rel_fro(H_at, ref) <= 1e-10


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
@pytest.mark.parametrize("X", X_VALUES)
def test_gradient_loss_trace_frobenius_match_torch(depth, X):
    d = derivation(depth)
    grad, loss = d.numeric("gradient"), d.numeric("loss")
    trace, frob2 = d.numeric("trace"), d.numeric("frobenius_squared")
    for point in random_points(depth, X, count=4, seed=7 + depth + int(100 * abs(X))):
        g_ref = torch_gradient(point, X)
        g = np.asarray(grad(*point, X), dtype=np.float64).reshape(-1)
        assert g.shape == (depth,)
        assert rel_fro(g, g_ref) <= 1e-10
        assert float(loss(*point, X)) == pytest.approx(math.exp(X * math.prod(point)), rel=1e-12)
        H_ref = torch_hessian(point, X)
        assert float(trace(*point, X)) == pytest.approx(np.trace(H_ref), rel=1e-10)
        assert float(frob2(*point, X)) == pytest.approx(np.sum(H_ref**2), rel=1e-10)


def test_hessian_numeric_is_not_trivially_equal_to_reference_at_wrong_X():
    """Sanity check that the comparison above can fail: flipping X's sign changes the Hessian."""
    d = derivation(3)
    point = [0.9, -1.2, 1.1]
    assert rel_fro(symbolic.hessian_at(d, point, 1.0), torch_hessian(point, -1.0)) > 1e-3


# --------------------------------------------------------------------------------------------
# 2. closed form == SymPy's Hessian, symbolically
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6])
def test_closed_form_hessian_equals_sympy_hessian(depth):
    d = derivation(depth)
    C = symbolic.closed_form_hessian(d)
    assert C.shape == (depth, depth)
    diff = (d.hessian - C).applyfunc(sp.simplify)
    assert diff == sp.zeros(depth, depth)
    # and numerically against torch at one point, so the closed form is not only self-consistent
    point = random_points(depth, -1.3, count=1, seed=depth)[0]
    C_num = np.asarray(sp.lambdify((*d.weights, d.X), C, "numpy")(*point, -1.3), dtype=float)
    assert rel_fro(C_num, torch_hessian(point, -1.3)) <= 1e-10


def test_closed_form_hessian_entries_follow_the_documented_formula():
    """Independent check of two entries at depth 4: H_11 = X^2 P_1^2 L, H_12 = (X^2 P_1 P_2 + X P_12) L."""
    d = derivation(4)
    w1, w2, w3, w4 = d.weights
    X, L = d.X, d.loss
    C = symbolic.closed_form_hessian(d)
    assert sp.simplify(C[0, 0] - X**2 * (w2 * w3 * w4) ** 2 * L) == 0
    assert sp.simplify(C[0, 1] - (X**2 * (w2 * w3 * w4) * (w1 * w3 * w4) + X * w3 * w4) * L) == 0
    assert sp.simplify(C[2, 3] - (X**2 * (w1 * w2 * w4) * (w1 * w2 * w3) + X * w1 * w2) * L) == 0


# --------------------------------------------------------------------------------------------
# 3. the counter-example: depth 3, w = (2, 1.5, -1), X = 1
# --------------------------------------------------------------------------------------------

COUNTER_POINT = [2.0, 1.5, -1.0]


def test_counterexample_trace_is_not_lambda_max():
    d = derivation(3)
    cmp = symbolic.trace_versus_lambda(d, COUNTER_POINT, 1.0)

    H_ref = torch_hessian(COUNTER_POINT, 1.0)
    eig_ref = np.linalg.eigvalsh(H_ref)

    assert cmp.loss == pytest.approx(math.exp(-3.0), rel=1e-14)
    assert cmp.trace == pytest.approx(61 / 4 * math.exp(-3.0), rel=1e-12)
    assert cmp.trace == pytest.approx(0.759253, abs=5e-7)
    assert cmp.trace == pytest.approx(np.trace(H_ref), rel=1e-12)
    assert cmp.lambda_max == pytest.approx(eig_ref[-1], rel=1e-10)
    assert cmp.lambda_max == pytest.approx(0.621354, abs=5e-7)
    np.testing.assert_allclose(cmp.eigenvalues, eig_ref, rtol=1e-10)
    assert list(cmp.eigenvalues) == sorted(cmp.eigenvalues)
    assert cmp.spectral_norm == pytest.approx(np.linalg.norm(H_ref, 2), rel=1e-10)
    assert cmp.point == tuple(COUNTER_POINT) and cmp.X == 1.0

    assert cmp.trace_equals_lambda_max is False
    assert cmp.trace - cmp.lambda_max > 0.1  # not a rounding issue

    # the rank-one "paper" matrix g g^T / L: its only non-zero eigenvalue is its trace
    g = torch_gradient(COUNTER_POINT, 1.0)
    paper_ref = np.outer(g, g) / math.exp(-3.0)
    assert cmp.paper_trace == pytest.approx(np.trace(paper_ref), rel=1e-12)
    assert cmp.paper_lambda_max == pytest.approx(np.linalg.eigvalsh(paper_ref)[-1], rel=1e-10)
    assert cmp.paper_trace == pytest.approx(cmp.paper_lambda_max, rel=1e-10)
    # Eq. (4): the traces agree, because the residual X L M has a zero diagonal
    assert cmp.paper_trace == pytest.approx(cmp.trace, rel=1e-12)


def test_counterexample_exact_symbolic_trace():
    d = derivation(3)
    values = {d.weights[0]: 2, d.weights[1]: sp.Rational(3, 2), d.weights[2]: -1, d.X: 1}
    exact = d.trace.subs(values)
    assert sp.simplify(exact - sp.Rational(61, 4) * sp.exp(-3)) == 0
    assert sp.simplify(d.hessian.trace().subs(values) - sp.Rational(61, 4) * sp.exp(-3)) == 0


def test_trace_versus_lambda_where_rank_one_part_vanishes():
    """w = (1, 0, 0), X = 2: every P_i = 0, so H = X L M with only M_23 = w_1 = 1 and L = 1.

    Eigenvalues -2, 0, 2 and trace 0: the paper's rank-one matrix is zero there."""
    cmp = symbolic.trace_versus_lambda(derivation(3), [1.0, 0.0, 0.0], 2.0)
    np.testing.assert_allclose(cmp.eigenvalues, [-2.0, 0.0, 2.0], atol=1e-14)
    assert cmp.loss == 1.0 and cmp.trace == 0.0
    assert cmp.lambda_max == pytest.approx(2.0, rel=1e-14)
    assert cmp.spectral_norm == pytest.approx(2.0, rel=1e-14)
    assert cmp.paper_trace == 0.0 and cmp.paper_lambda_max == pytest.approx(0.0, abs=1e-15)
    assert cmp.trace_equals_lambda_max is False


def test_trace_versus_lambda_spectral_norm_when_negative_eigenvalue_dominates():
    """Symmetric point s = 0.5, X = -2: eigenvalue -X s L (twice) vs the top one; here |lambda_min| > lambda_max."""
    point, X = [0.5, 0.5, 0.5], -2.0
    cmp = symbolic.trace_versus_lambda(derivation(3), point, X)
    H = torch_hessian(point, X)
    eig = np.linalg.eigvalsh(H)
    assert abs(eig[0]) > eig[-1] > 0  # the reference really is in the interesting regime
    assert cmp.spectral_norm == pytest.approx(np.linalg.norm(H, 2), rel=1e-10)
    assert cmp.lambda_max == pytest.approx(eig[-1], rel=1e-10)
    np.testing.assert_allclose(cmp.eigenvalues, eig, rtol=1e-10)


def test_trace_equals_lambda_max_property_tolerance():
    base = symbolic.trace_versus_lambda(derivation(2), [1.0, -1.0], 1.0)
    same = dataclasses.replace(base, trace=1.0, lambda_max=1.0 + 1e-12)
    differ = dataclasses.replace(base, trace=1.0, lambda_max=1.0 + 1e-6)
    assert same.trace_equals_lambda_max is True
    assert differ.trace_equals_lambda_max is False


# --------------------------------------------------------------------------------------------
# 4. rank-one + residual decomposition
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_rank_one_plus_residual(depth):
    d = derivation(depth)
    R, P = d.residual_term, d.rank_one_term
    assert R.shape == P.shape == (depth, depth)
    for i in range(depth):
        assert sp.simplify(R[i, i]) == 0
    assert any(sp.simplify(R[i, j]) != 0 for i in range(depth) for j in range(depth) if i != j)
    assert (P * d.loss - d.gradient * d.gradient.T).applyfunc(sp.simplify) == sp.zeros(depth, depth)
    assert (P + R - d.hessian).applyfunc(sp.simplify) == sp.zeros(depth, depth)
    # residual = X L M with M_ij = prod_{k != i, j} w_k off the diagonal
    w = d.weights
    for i in range(depth):
        for j in range(depth):
            if i != j:
                M_ij = sp.Mul(*[w[k] for k in range(depth) if k not in (i, j)])
                assert sp.simplify(R[i, j] - d.X * d.loss * M_ij) == 0
    # numerically at a point: residual = H - g g^T / L (torch)
    X = -1.1
    point = random_points(depth, X, count=1, seed=33 + depth)[0]
    g = torch_gradient(point, X)
    L = math.exp(X * math.prod(point))
    R_num = np.asarray(sp.lambdify((*w, d.X), R, "numpy")(*point, X), dtype=float)
    R_ref = torch_hessian(point, X) - np.outer(g, g) / L
    assert rel_fro(R_num, R_ref) <= 1e-10
    assert np.linalg.norm(R_ref) > 1e-3


# --------------------------------------------------------------------------------------------
# 5. eigenvalues at the symmetric point
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_symmetric_point_eigenvalues(depth):
    d = derivation(depth)
    eigs = symbolic.symmetric_point_eigenvalues(d)
    assert sum(eigs.values()) == depth
    assert sorted(eigs.values()) == [1, depth - 1]
    free = set().union(*(k.free_symbols for k in eigs))
    (s,) = [sym for sym in free if sym.name == "s"]
    assert free == {s, d.X}

    # the documented closed forms
    n, X = depth, d.X
    L = sp.exp(X * s**n)
    expected = {
        sp.factor(L * (n * X**2 * s ** (2 * n - 2) + (n - 1) * X * s ** (n - 2))): 1,
        sp.factor(-X * s ** (n - 2) * L): n - 1,
    }
    for (k_exp, m_exp) in expected.items():
        matches = [m for k, m in eigs.items() if sp.simplify(k - k_exp) == 0]
        assert matches == [m_exp]

    # numerically versus numpy eigvalsh of the torch Hessian at w_i = s (multiplicities included)
    for s_val, X_val in [(0.8, 1.0), (1.1, -0.6), (-0.9, 1.7), (0.7, -2.0)]:
        numeric = []
        for k, m in eigs.items():
            numeric += [float(k.subs({s: s_val, d.X: X_val}))] * m
        ref = np.linalg.eigvalsh(torch_hessian([s_val] * depth, X_val))
        np.testing.assert_allclose(sorted(numeric), ref, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------------------------
# 6. characteristic polynomial
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_characteristic_polynomial_roots_times_loss_are_eigenvalues(depth):
    d = derivation(depth)
    mu = sp.Symbol("mu")
    cp = d.characteristic_polynomial(mu)
    poly_mu = sp.Poly(cp, mu)
    assert poly_mu.degree() == depth and poly_mu.LC() == 1
    for X in (1.0, -1.4):
        for point in random_points(depth, X, count=2, seed=50 + depth):
            coeffs = [float(c) for c in sp.Poly(cp.subs(subs_point(d, point, X)), mu).all_coeffs()]
            roots = np.roots(coeffs)
            assert np.max(np.abs(roots.imag)) <= 1e-8 * np.max(np.abs(roots))  # H / L is symmetric
            roots = np.sort(roots.real)
            L = math.exp(X * math.prod(point))
            ref = np.linalg.eigvalsh(torch_hessian(point, X))
            scale = np.max(np.abs(ref))
            np.testing.assert_allclose(roots * L, ref, rtol=1e-8, atol=1e-10 * scale)


def test_characteristic_polynomial_default_symbol_and_depth2_exact():
    d = derivation(2)
    cp = d.characteristic_polynomial()
    mu = sp.Symbol("mu")
    w1, w2 = d.weights
    X = d.X
    # H/L = [[X^2 w2^2, X^2 w1 w2 + X], [X^2 w1 w2 + X, X^2 w1^2]]
    K = sp.Matrix([[X**2 * w2**2, X**2 * w1 * w2 + X], [X**2 * w1 * w2 + X, X**2 * w1**2]])
    assert sp.expand(cp - (mu * sp.eye(2) - K).det()) == 0


# --------------------------------------------------------------------------------------------
# 7. limits along rays
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("X", [1.0, -2.5])
def test_ray_limits_vanish_when_X_prod_d_negative(depth, X):
    d = derivation(depth)
    for direction in symbolic.default_directions(depth, X):
        assert X * math.prod(direction) < 0
        rl = symbolic.ray_limits(d, direction, X)
        assert rl.loss_limit == 0 and rl.loss_limit is sp.S.Zero
        assert rl.trace_limit is sp.S.Zero
        assert rl.frobenius_squared_limit is sp.S.Zero
        assert rl.loss_goes_to_zero is True
        # exact loss along the ray: exp(X D t^n) with X, D as exact rationals
        D = sp.Mul(*[sp.Rational(str(v)) for v in direction])
        assert sp.simplify(rl.loss_along_ray - sp.exp(sp.Rational(str(X)) * D * rl.t**depth)) == 0
        assert rl.direction == tuple(sp.Rational(str(v)) for v in direction)
        assert rl.X == sp.Rational(str(X))


@pytest.mark.parametrize(
    "depth, direction, X",
    [(2, [1.0, 1.0], 1.0), (3, [1.0, 1.5, 0.5], 1.0), (3, [1.0, 1.0, -1.0], -0.5), (4, [-3.0, 0.5, 0.5, -1.0], 2.0)],
)
def test_ray_limits_blow_up_when_X_prod_d_positive(depth, direction, X):
    assert X * math.prod(direction) > 0
    rl = symbolic.ray_limits(derivation(depth), direction, X)
    assert rl.loss_limit == sp.oo
    assert rl.loss_goes_to_zero is False
    assert rl.trace_limit == sp.oo
    assert rl.frobenius_squared_limit == sp.oo


def test_ray_limits_use_exact_decimal_rationals():
    rl = symbolic.ray_limits(derivation(2), [0.1, -2.5], 0.3)
    assert rl.direction == (sp.Rational(1, 10), sp.Rational(-5, 2))
    assert rl.X == sp.Rational(3, 10)
    assert sp.simplify(rl.loss_along_ray - sp.exp(-sp.Rational(3, 40) * rl.t**2)) == 0


def test_ray_trace_along_ray_matches_exact_trace():
    d = derivation(3)
    direction, X = [1.0, 1.5, -0.5], 1.0
    rl = symbolic.ray_limits(d, direction, X)
    for t_val in (sp.Rational(1, 2), sp.Integer(2)):
        w = [t_val * sp.Rational(str(v)) for v in direction]
        # trace = X^2 L sum_i P_i^2 (independent exact formula)
        P = [sp.Mul(*[w[k] for k in range(3) if k != i]) for i in range(3)]
        L = sp.exp(sp.Mul(*w))
        expected = L * sum(p**2 for p in P)
        assert sp.simplify(rl.trace_along_ray.subs(rl.t, t_val) - expected) == 0


# --------------------------------------------------------------------------------------------
# 8. spectrum along a ray
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("X", [1.0, -0.8])
def test_spectrum_along_ray_matches_direct_hessian(depth, X):
    d = derivation(depth)
    scales = np.geomspace(0.3, 1.2, 5)
    for direction in symbolic.default_directions(depth, X):
        spec = symbolic.spectrum_along_ray(d, direction, X, scales)
        np.testing.assert_array_equal(spec.scales, scales)
        assert spec.direction == tuple(direction) and spec.X == X
        for k, t in enumerate(scales):
            point = [t * v for v in direction]
            assert abs(X * math.prod(point)) < 5
            H = torch_hessian(point, X)
            eig = np.linalg.eigvalsh(H)
            ref = {
                "log10_loss": math.exp(X * math.prod(point)),
                "log10_trace": np.trace(H),
                "log10_lambda_max": eig[-1],
                "log10_spectral_norm": np.linalg.norm(H, 2),
                "log10_frobenius": np.linalg.norm(H, "fro"),
            }
            for name, value in ref.items():
                got = 10.0 ** getattr(spec, name)[k]
                assert got == pytest.approx(value, rel=1e-10), (name, depth, X, direction, t)


def _exact_ray_reference(direction, X, t, depth):
    """log10 of loss, trace, lambda_max, spectral norm, Frobenius at w = t d, via Fractions + mpmath."""
    w = [Fraction(repr(t)) * Fraction(repr(v)) for v in direction]
    Xf = Fraction(repr(X))

    def prod_except(*skip):
        return math.prod((w[k] for k in range(depth) if k not in skip), start=Fraction(1))

    K = [
        [Xf**2 * prod_except(i) * prod_except(j) + (Xf * prod_except(i, j) if i != j else 0) for j in range(depth)]
        for i in range(depth)
    ]
    with mpmath.workdps(60):
        log10_L = mpmath.mpf(Xf.numerator) / Xf.denominator * mpmath.mpf(math.prod(w).numerator) / math.prod(
            w
        ).denominator / mpmath.log(10)
        Km = mpmath.matrix([[mpmath.mpf(e.numerator) / e.denominator for e in row] for row in K])
        E = mpmath.eigsy(Km)[0]
        eig = sorted(E[i] for i in range(depth))
        trace = sum(K[i][i] for i in range(depth))
        frob = mpmath.sqrt(sum(mpmath.mpf(e.numerator) ** 2 / mpmath.mpf(e.denominator) ** 2 for row in K for e in row))
        out = {
            "log10_loss": log10_L,
            "log10_trace": log10_L + mpmath.log10(mpmath.mpf(trace.numerator) / trace.denominator),
            "log10_lambda_max": log10_L + mpmath.log10(eig[-1]),
            "log10_spectral_norm": log10_L + mpmath.log10(max(abs(e) for e in eig)),
            "log10_frobenius": log10_L + mpmath.log10(frob),
        }
        return {k: float(v) for k, v in out.items()}


@pytest.mark.parametrize(
    "depth, direction, X",
    [(3, [1.0, 1.0, -1.0], 1.0), (3, [3.0, 0.5, -1.0], 1.0), (3, [1.0, 1.5, 0.5], -2.0), (4, [1.0, 1.5, 1.0, -0.5], 1.0)],
)
def test_spectrum_along_ray_no_underflow_far_out(depth, direction, X):
    d = derivation(depth)
    scales = np.array([5.0, 10.0, 20.0])
    spec = symbolic.spectrum_along_ray(d, direction, X, scales)
    names = ("log10_loss", "log10_trace", "log10_lambda_max", "log10_spectral_norm", "log10_frobenius")
    for name in names:
        values = getattr(spec, name)
        assert values.shape == (3,)
        assert np.all(np.isfinite(values)), name
    # t = 10 and beyond: everything far below float64's range (exp would give exactly 0 there)
    for name in names:
        assert np.all(getattr(spec, name)[1:] < -300), name
    assert math.exp(X * math.prod(10.0 * v for v in direction)) == 0.0  # float64 exp underflows at t = 10
    # against exact arithmetic
    for k, t in enumerate(scales):
        ref = _exact_ray_reference(direction, X, float(t), depth)
        for name in names:
            assert getattr(spec, name)[k] == pytest.approx(ref[name], rel=1e-10), (name, t)


def test_spectrum_along_ray_t10_depth3_value():
    """Depth 3, d = (1, 1, -1), X = 1, t = 10: log10 L = -1000 / ln 10 exactly."""
    spec = symbolic.spectrum_along_ray(derivation(3), [1.0, 1.0, -1.0], 1.0, np.array([10.0]))
    assert spec.log10_loss[0] == pytest.approx(-1000.0 / math.log(10.0), rel=1e-14)
    # trace / L = X^2 sum_i P_i^2 = 3 * 10^4 exactly
    assert spec.log10_trace[0] == pytest.approx(-1000.0 / math.log(10.0) + math.log10(3e4), rel=1e-13)
    assert -450 < spec.log10_lambda_max[0] < -300


def test_spectrum_along_ray_rejects_bad_scales():
    d = derivation(2)
    for bad in ([], [1.0, -1.0], [0.0, 1.0], [1.0, np.inf], [[1.0, 2.0]], [np.nan]):
        with pytest.raises(ValueError, match="scales"):
            symbolic.spectrum_along_ray(d, [1.0, -1.0], 1.0, np.array(bad, dtype=float))


# --------------------------------------------------------------------------------------------
# 9. input validation and defaults
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1, 0, -3, 2.0, 3.5, True, "3", None])
def test_depth_validation(bad):
    for fn in (symbolic.derive_gedanken, symbolic.default_counterexample_point, symbolic.default_directions):
        with pytest.raises(ValueError, match=r"depth must be an integer >= 2") as info:
            fn(bad)
        assert repr(bad) in str(info.value)


def test_depth_accepts_numpy_integer():
    assert symbolic.default_counterexample_point(np.int64(3)) == [2.0, 1.5, -1.0]


def test_wrong_length_point_and_direction_messages():
    d = derivation(3)
    with pytest.raises(ValueError, match=r"point.*depth=3"):
        symbolic.hessian_at(d, [1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match=r"point.*depth=3"):
        symbolic.trace_versus_lambda(d, [1.0, 2.0, 3.0, 4.0], 1.0)
    with pytest.raises(ValueError, match=r"direction.*depth=3"):
        symbolic.ray_limits(d, [1.0, -1.0], 1.0)
    with pytest.raises(ValueError, match=r"direction.*depth=3"):
        symbolic.spectrum_along_ray(d, [1.0, 1.0, 1.0, -1.0], 1.0, np.array([1.0]))
    with pytest.raises(ValueError, match=r"foo.*depth=3.*got 2"):
        symbolic.validate_point([1.0, 2.0], 3, "foo")


def test_validate_point_entries_and_types():
    assert symbolic.validate_point((1, np.float64(2.5), np.int32(-3)), 3, "p") == [1.0, 2.5, -3.0]
    for bad in ([1.0, np.nan], [1.0, np.inf], [1.0, True], [1.0, "2"], [1.0, None]):
        with pytest.raises(ValueError, match="p entries must be finite numbers"):
            symbolic.validate_point(bad, 2, "p")
    for bad in ("ab", b"ab", 3.0, {1.0, 2.0}):
        with pytest.raises(TypeError, match="p must be a list of 2 numbers"):
            symbolic.validate_point(bad, 2, "p")


def test_numeric_rejects_unknown_name():
    with pytest.raises(ValueError, match="numeric\\(name\\).*'polynomial_part'"):
        derivation(2).numeric("polynomial_part")


@pytest.mark.parametrize("X", [0, 0.0, -0.0, np.nan, np.inf, -np.inf, True, "1"])
def test_default_directions_rejects_zero_or_nonfinite_X(X):
    with pytest.raises(ValueError, match="X must be a non-zero finite number"):
        symbolic.default_directions(3, X)


@pytest.mark.parametrize("depth", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("X", [1.0, -1.0, 2.5, -0.3, 7, -7])
def test_default_directions_make_the_loss_vanish(depth, X):
    dirs = symbolic.default_directions(depth, X)
    assert len(dirs) == 3
    assert len({tuple(v) for v in dirs}) == 3
    for v in dirs:
        assert len(v) == depth
        assert all(isinstance(x, float) and x != 0 for x in v)
        assert X * math.prod(v) < 0
    # the balanced one has all magnitudes 1
    assert [abs(x) for x in dirs[0]] == [1.0] * depth


def test_scale_grid_values_and_errors():
    g = symbolic.scale_grid(0.1, 10, 5)
    np.testing.assert_allclose(g, [0.1, 10**-0.5, 1.0, 10**0.5, 10.0], rtol=1e-14)
    assert g.dtype == np.float64
    for lo, hi in [(0, 1), (-1, 1), (2, 1), (1, 1), (np.nan, 1), ("0.1", 1), (0.1, None)]:
        with pytest.raises(ValueError, match="0 < scale_min < scale_max"):
            symbolic.scale_grid(lo, hi, 5)
    for num in (1, 0, -2, 2.0, True, "5"):
        with pytest.raises(ValueError, match="num_scales must be an integer >= 2"):
            symbolic.scale_grid(0.1, 1.0, num)


def test_scale_grid_rejects_non_finite_bounds():
    """Regression test for a bug found while writing this file: at commit 7d5d5f8, scale_grid(1, inf, 5)
    returned [1, inf, inf, inf, inf] (plus a numpy RuntimeWarning) instead of raising, because the
    `0 < scale_min < scale_max` check never tested finiteness. Fails against 7d5d5f8's symbolic.py."""
    for lo, hi in [(1.0, float("inf")), (float("-inf"), 1.0), (float("inf"), float("inf"))]:
        with pytest.raises(ValueError, match="scale_min"):
            symbolic.scale_grid(lo, hi, 5)


def test_default_counterexample_point():
    assert symbolic.default_counterexample_point(3) == [2.0, 1.5, -1.0]
    assert symbolic.default_counterexample_point(5) == [2.0, 1.5, -1.0, 1.0, 1.0]
    assert len(symbolic.default_counterexample_point(2)) == 2
    # at every depth the default point really is a counter-example to Tr(H) = lambda_max(H)
    for depth in (2, 3, 4, 5):
        point = symbolic.default_counterexample_point(depth)
        cmp = symbolic.trace_versus_lambda(derivation(depth), point, 1.0)
        assert cmp.trace_equals_lambda_max is False
        eig = np.linalg.eigvalsh(torch_hessian(point, 1.0))
        assert cmp.lambda_max == pytest.approx(eig[-1], rel=1e-10)
        assert abs(cmp.trace - eig[-1]) > 1e-3 * abs(cmp.trace)


# --- unbalanced paths and the chapter's parameter check -------------------------------------


@pytest.mark.parametrize("depth, X", [(2, 1.0), (2, -2.0), (3, 1.0), (4, -0.5)])
def test_unbalanced_path_loss_vanishes_but_hessian_does_not(depth, X):
    t = sp.Symbol("t", positive=True)
    path = symbolic.unbalanced_path(depth, X, t)
    assert sp.simplify(X * sp.Mul(*path) + abs(X) * t) == 0  # X prod w = -|X| t exactly
    res = symbolic.path_limits(derivation(depth), path, X, t)
    assert res.loss_limit == 0
    assert res.trace_limit == sp.oo and res.frobenius_squared_limit == sp.oo
    # numerically: at t = 3 the exact Hessian along the path is already huge while the loss is small
    point = [float(sp.N(e.subs(t, 3))) for e in path]
    H = torch_hessian(point, X)
    assert np.trace(H) > 1e3 and float(np.exp(X * np.prod(point))) < 0.25


def test_check_gedanken_parameters():
    from flatbook.chapters.theorem import GedankenParameters

    ok = dict(depth=3, X=1.0, counterexample_point=None, directions=None, scale_min=0.1, scale_max=3.0,
              num_scales=200, verify_depths_up_to=6)
    GedankenParameters(**ok)
    assert GedankenParameters.from_namespace({**ok, "unrelated": 1}).depth == 3  # a notebook's globals()
    with pytest.raises(ValueError, match="needs the parameters"):
        GedankenParameters.from_namespace({k: v for k, v in ok.items() if k != "X"})
    with pytest.raises(TypeError):
        GedankenParameters(3, 1.0, None, None, 0.1, 3.0, 200, 6)  # keyword only: no order to get wrong
    with pytest.raises(AttributeError):
        GedankenParameters(**ok).depth = 4  # frozen
    for change, message in (
        ({"depth": 1}, "depth must be an integer >= 2"),
        ({"X": 0.0}, "X must be a non-zero finite number"),
        ({"directions": [[1, 2]]}, "directions[0] must have one entry per layer"),
        ({"counterexample_point": [1.0]}, "counterexample_point must have one entry per layer"),
        ({"scale_max": 0.05}, "0 < scale_min < scale_max"),
        ({"num_scales": 1}, "num_scales must be an integer >= 2"),
        ({"verify_depths_up_to": 9}, "verify_depths_up_to must be an integer from 2 to 8"),
    ):
        with pytest.raises(ValueError) as info:
            GedankenParameters(**{**ok, **change})
        assert message in str(info.value)
