"""flatbook.theory.crossentropy (Theorem 1 in SymPy) evaluated at numbers and held against torch autograd
in float64, plus limits and rates checked against hand-derived constants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
import torch.nn.functional as F

from flatbook.theory.crossentropy import (RATE_SYMBOL, chain_rule_split, cross_entropy_per_sample, logit_derivatives,
                                   logreg_kron_hessian, relu_net_example, scaling_limits, separable_example)

ALPHA = RATE_SYMBOL


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# the SymPy work is the slow part: compute each object once per module
@pytest.fixture(scope="module")
def derivatives():
    return {(K, c): logit_derivatives(K, c) for K, c in ((2, 0), (3, 0), (4, 0), (3, 2))}


@pytest.fixture(scope="module")
def kron22():
    return logreg_kron_hessian(2, 2)


@pytest.fixture(scope="module")
def limits():
    return {2: scaling_limits(2), 3: scaling_limits(3)}


@pytest.fixture(scope="module")
def relu():
    return relu_net_example()


def _num(M: sp.Matrix, subs: dict) -> np.ndarray:
    return np.array(M.subs(subs).evalf(30).tolist(), dtype=np.float64)


def _torch_hessian(fn, theta: np.ndarray) -> np.ndarray:
    return torch.autograd.functional.hessian(fn, torch.tensor(theta, dtype=torch.float64)).numpy()


# --- logit derivatives --------------------------------------------------------------------------


@pytest.mark.parametrize("K,c", [(2, 0), (3, 0), (4, 0), (3, 2)])
def test_logit_derivatives_flags_and_numbers(derivatives, K, c):
    d = derivatives[(K, c)]
    assert d.equals_minus_log_softmax is True
    assert d.gradient_is_p_minus_y is True
    assert d.hessian_is_diag_p_minus_ppT is True
    assert d.z.shape == (K, 1) and d.gradient.shape == (K, 1) and d.hessian.shape == (K, K)
    assert list(d.y) == [1 if k == c else 0 for k in range(K)]
    grad_fn = sp.lambdify(list(d.z), d.gradient, "numpy")
    hess_fn = sp.lambdify(list(d.z), d.hessian, "numpy")
    loss_fn = sp.lambdify(list(d.z), d.loss, "numpy")
    p_fn = sp.lambdify(list(d.z), d.p, "numpy")
    rng = np.random.default_rng(K + 10 * c)
    target = torch.tensor([c])
    for scale in (0.5, 3.0):
        z = rng.standard_normal(K) * scale
        zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        loss = F.cross_entropy(zt[None], target)
        (grad,) = torch.autograd.grad(loss, zt)
        hess = _torch_hessian(lambda v: F.cross_entropy(v[None], target), z)
        assert loss_fn(*z) == pytest.approx(loss.item(), abs=1e-12)
        np.testing.assert_allclose(np.asarray(grad_fn(*z), dtype=float).ravel(), grad.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(hess_fn(*z), dtype=float), hess, rtol=0, atol=1e-12)
        p = np.asarray(p_fn(*z), dtype=float).ravel()
        np.testing.assert_allclose(p, torch.softmax(zt.detach(), 0).numpy(), rtol=0, atol=1e-14)
        np.testing.assert_allclose(hess, np.diag(p) - np.outer(p, p), rtol=0, atol=1e-12)


def test_cross_entropy_per_sample_is_minus_log_softmax():
    z, loss = cross_entropy_per_sample(3, correct=1)
    vals = {z[0]: 0.3, z[1]: -1.2, z[2]: 2.0}
    expect = F.cross_entropy(torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64), torch.tensor([1])).item()
    assert float(loss.subs(vals)) == pytest.approx(expect, rel=1e-14)
    assert all(s.is_real for s in z)


# --- logistic regression: Kronecker form -------------------------------------------------------


def test_logreg_kron_hessian_direct_equals_torch_in_class_by_class_order(kron22):
    K, D = 2, 2
    r = kron22
    assert r["agree"] is True
    Wt, xt = r["W_tilde"], r["x_tilde"]
    assert Wt.shape == (K, D + 1) and xt.shape == (D + 1, 1) and xt[D] == 1
    assert str(Wt[0, D]) == "b_1" and str(Wt[1, 0]) == "w_2_1"
    rng = np.random.default_rng(0)
    x = rng.standard_normal(D)
    theta = rng.standard_normal(K * (D + 1))  # row-major [W b]: class by class, bias last in each row
    subs = {**{s: v for s, v in zip(list(Wt), theta)}, **{xt[i]: x[i] for i in range(D)}}
    direct = _num(r["direct"], subs)
    kron = _num(r["kron"], subs)
    xtn = torch.tensor(np.append(x, 1.0), dtype=torch.float64)

    def loss(th):
        return F.cross_entropy((th.reshape(K, D + 1) @ xtn)[None], torch.tensor([0]))

    ref = _torch_hessian(loss, theta)
    np.testing.assert_allclose(direct, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(kron, ref, rtol=0, atol=1e-12)
    # and it is (diag p - p p^T) kron x~ x~^T numerically
    p = torch.softmax(torch.tensor(theta).reshape(K, D + 1) @ xtn, 0).numpy()
    np.testing.assert_allclose(direct, np.kron(np.diag(p) - np.outer(p, p), np.outer(xtn, xtn)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(_num(r["p"], subs).ravel(), p, rtol=0, atol=1e-14)


# --- the chain-rule split ------------------------------------------------------------------------


def test_chain_rule_split_on_a_polynomial_network():
    a, b, c = sp.symbols("a b c", real=True)
    w = [a, b, c]
    f = sp.Matrix([a * b, b * c, a])
    r = chain_rule_split(f, w, correct=1)
    assert r["agree"] is True
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(3)
    subs = dict(zip(w, theta))

    def logits(th):
        return torch.stack([th[0] * th[1], th[1] * th[2], th[0]])

    def loss(th):
        return F.cross_entropy(logits(th)[None], torch.tensor([1]))

    ref = _torch_hessian(loss, theta)
    direct, gn, res = (_num(r[k], subs) for k in ("direct", "gauss_newton", "residual"))
    np.testing.assert_allclose(direct, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gn + res, ref, rtol=0, atol=1e-12)
    # Gauss-Newton from torch's Jacobian
    th = torch.tensor(theta, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(logits, th).numpy()
    p = torch.softmax(logits(th), 0).numpy()
    np.testing.assert_allclose(gn, J.T @ (np.diag(p) - np.outer(p, p)) @ J, rtol=0, atol=1e-12)
    assert np.abs(res).max() > 1e-3  # a nonlinear network has a residual term


def test_chain_rule_split_residual_vanishes_for_a_linear_model():
    a, b, c, d = sp.symbols("a b c d", real=True)
    r = chain_rule_split(sp.Matrix([2 * a - b, c + 3 * d]), [a, b, c, d], correct=0)
    assert r["agree"] is True
    assert r["residual"] == sp.zeros(4, 4)


# --- scaling limits ------------------------------------------------------------------------------


def _separable_torch(K: int):
    xs, ys, W = separable_example(K)
    X = torch.tensor([[float(v) for v in x] + [1.0] for x in xs], dtype=torch.float64)  # rows x~_n
    Wn = torch.tensor(np.array(W.evalf(30).tolist(), dtype=np.float64))
    return X, torch.tensor(ys), Wn


@pytest.mark.parametrize("K", [2, 3])
@pytest.mark.parametrize("a", [0.4, 3.0])
def test_scaling_limits_loss_and_hessian_at_a_number_equal_torch(limits, K, a):
    s = limits[K]
    X, y, Wstar = _separable_torch(K)
    # the example really is separable with the stated weights
    assert torch.equal((X @ Wstar.T).argmax(1), y)

    def loss(th):
        return F.cross_entropy(X @ th.reshape(Wstar.shape).T, y)  # mean over samples

    theta = (a * Wstar).reshape(-1).numpy()
    assert float(s.loss.subs(ALPHA, a)) == pytest.approx(loss(torch.tensor(theta)).item(), rel=1e-13)
    ref = _torch_hessian(loss, theta)
    H = _num(s.hessian, {ALPHA: a})
    np.testing.assert_allclose(H, ref, rtol=0, atol=1e-12)
    assert float(s.trace.subs(ALPHA, a)) == pytest.approx(np.trace(ref), rel=1e-12)
    if K == 2:
        eig = np.sort([float(sp.re(e.subs(ALPHA, a).evalf(30))) for e, m in s.eigenvalues.items() for _ in range(m)])
        np.testing.assert_allclose(eig, np.linalg.eigvalsh(ref), rtol=0, atol=1e-12)


def test_scaling_limits_vanish_with_finite_positive_rates(limits):
    # hand-derived: K=2 (x = 1, -1, 2): margin 2, loss ~ (2/3) e^(-2a), trace ~ (8/3) e^(-2a);
    # K=3 (triangle corners): margin 3/2, loss ~ 2 e^(-3a/2), trace ~ 8 e^(-3a/2)
    expected = {2: (2, sp.Rational(2, 3), sp.Rational(8, 3)), 3: (sp.Rational(3, 2), 2, 8)}
    for K, s in limits.items():
        margin, loss_c, trace_c = expected[K]
        assert s.all_vanish is True
        assert s.loss_limit == 0 and s.trace_limit == 0
        assert all(e == 0 for e in s.entry_limits)
        assert sp.simplify(s.margin - margin) == 0
        for const, want in ((s.loss_rate_constant, loss_c), (s.trace_rate_constant, trace_c)):
            assert const.is_finite and const.is_positive
            assert sp.simplify(const - want) == 0
        # numerically: loss e^(margin a) at a = 20 is the constant to many digits
        for expr, want in ((s.loss, loss_c), (s.trace, trace_c)):
            v = (expr * sp.exp(s.margin * ALPHA)).subs(ALPHA, 20).evalf(40)
            assert float(v) == pytest.approx(float(want), rel=1e-6)
    assert limits[2].lambda_max_limit == 0 and limits[2].eigenvalues is not None
    assert limits[3].lambda_max_limit is None and limits[3].eigenvalues is None
    # K=2 eigenvalues: their multiplicities fill the 4 x 4 Hessian, their sum is the trace
    ev = limits[2].eigenvalues
    assert sum(ev.values()) == 4
    assert sp.simplify(sum(e * m for e, m in ev.items()) - limits[2].trace) == 0


# --- the ReLU network ---------------------------------------------------------------------------


def test_relu_net_split_equals_torch_hessian_at_the_scaled_point(relu):
    r = relu
    assert r["agree"] is True
    assert r["margin"] == 3
    w = r["weights"]
    point = np.array([float(r["point"][s]) for s in w])
    x, target = torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([0])

    def loss(th):  # f = W2 relu(W1 x), parameters (W1 flattened, W2 row-major)
        W1, W2 = th[:2].reshape(2, 1), th[2:].reshape(2, 2)
        return F.cross_entropy(torch.relu(x @ W1.T) @ W2.T, target)

    for a in (0.7, 1.3, 2.0):
        ref = _torch_hessian(loss, a * point)
        gn, res = _num(r["gauss_newton"], {ALPHA: a}), _num(r["residual"], {ALPHA: a})
        np.testing.assert_allclose(gn + res, ref, rtol=0, atol=1e-12)
        assert float(r["gauss_newton_trace"].subs(ALPHA, a)) == pytest.approx(np.trace(gn), rel=1e-12)
        assert float(r["residual_frobenius_squared"].subs(ALPHA, a)) == pytest.approx((res**2).sum(), rel=1e-12)
        # Gauss-Newton from torch's Jacobian of the logits
        th = torch.tensor(a * point, dtype=torch.float64)
        logits = lambda t: (torch.relu(x @ t[:2].reshape(2, 1).T) @ t[2:].reshape(2, 2).T)[0]  # noqa: E731
        J = torch.autograd.functional.jacobian(logits, th).numpy()
        p = torch.softmax(logits(th), 0).numpy()
        np.testing.assert_allclose(gn, J.T @ (np.diag(p) - np.outer(p, p)) @ J, rtol=0, atol=1e-12)


def test_relu_net_limits_and_rates(relu):
    # hand-derived: GN trace = 9 a^2 e^(-3 a^2) (1 + O(e^(-3a^2))), ||residual||_F = 2 sqrt(2) e^(-3 a^2) (...)
    r = relu
    assert r["gauss_newton_limit"] == 0 and r["residual_limit"] == 0
    assert sp.simplify(r["gauss_newton_rate_constant"] - 9) == 0
    assert sp.simplify(r["residual_rate_constant"] - 2 * sp.sqrt(2)) == 0
    a = 4
    gn = (r["gauss_newton_trace"] * sp.exp(3 * ALPHA**2) / ALPHA**2).subs(ALPHA, a).evalf(60)
    res = (sp.sqrt(r["residual_frobenius_squared"]) * sp.exp(3 * ALPHA**2)).subs(ALPHA, a).evalf(60)
    assert float(gn) == pytest.approx(9.0, rel=1e-12)
    assert float(res) == pytest.approx(2 * math.sqrt(2), rel=1e-12)


# --- invalid arguments --------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: cross_entropy_per_sample(1),
    lambda: cross_entropy_per_sample(0),
    lambda: cross_entropy_per_sample(2.0),
    lambda: cross_entropy_per_sample(True),
    lambda: cross_entropy_per_sample("3"),
    lambda: cross_entropy_per_sample(3, correct=3),
    lambda: cross_entropy_per_sample(3, correct=-1),
    lambda: cross_entropy_per_sample(3, correct=1.0),
    lambda: logit_derivatives(1),
    lambda: logit_derivatives(2, correct=2),
    lambda: logreg_kron_hessian(1, 2),
    lambda: logreg_kron_hessian(2, 1, correct=2),
    lambda: chain_rule_split(sp.Matrix([sp.Symbol("u"), 0]), [sp.Symbol("u")], correct=2),
    lambda: chain_rule_split(sp.Matrix([sp.Symbol("u")]), [sp.Symbol("u")]),
    lambda: separable_example(4),
    lambda: separable_example(1),
    lambda: separable_example(True),
    lambda: scaling_limits(4),
])
def test_invalid_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_error_messages_name_the_argument():
    with pytest.raises(ValueError, match="num_classes"):
        cross_entropy_per_sample(1)
    with pytest.raises(ValueError, match="correct"):
        cross_entropy_per_sample(3, correct=5)
    with pytest.raises(ValueError, match="2 or 3 classes"):
        scaling_limits(5)


@pytest.mark.parametrize("bad", [-1, True])
def test_logreg_kron_hessian_checks_num_features(bad):
    with pytest.raises(ValueError, match="num_features"):
        logreg_kron_hessian(2, bad)


def test_correct_class_refuses_a_boolean():
    with pytest.raises(ValueError, match="correct"):
        cross_entropy_per_sample(3, correct=True)
