"""Theorem 1 in SymPy: softmax cross-entropy, its Hessian, and the limit of large weights.

Per sample with logits z (K classes) and correct class c the loss is (the paper's Eq. 8)

    l(z) = log(1 + sum_{k != c} exp(z_k - z_c)) = -log p_c,      p = softmax(z),

with gradient p - y and Hessian diag(p) - p p^T with respect to z. For a model z = f(w), the chain
rule (the paper's Eq. 9, written with p) splits the Hessian with respect to the weights into

    d^2 l / dw^2 = J^T (diag p - p p^T) J  +  sum_k (p_k - y_k) d^2 f_k / dw^2,   J = df/dw,

a Gauss-Newton term and a residual term weighted by the residuals p - y. For logistic regression,
f = W x~ with x~ = [x; 1], the residual term vanishes and, with the parameters ordered class by
class (row-major vec(W~), W~ = [W b]),

    d^2 l / dw^2 = (diag p - p p^T) kron (x~ x~^T).

Everything here is exact (SymPy), and small on purpose: the point is to see the limits, not to
compute Hessians of real networks (``flatbook.curvature`` does that).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..checks import integer

__all__ = ["cross_entropy_per_sample", "logit_derivatives", "chain_rule_split", "logreg_kron_hessian",
           "separable_example", "ScalingLimits", "scaling_limits", "relu_net_example", "RATE_SYMBOL"]

alpha = sp.Symbol("alpha", positive=True)
RATE_SYMBOL = alpha


def _softmax(z: sp.Matrix) -> sp.Matrix:
    e = z.applyfunc(sp.exp)
    total = sum(e)
    return e.applyfunc(lambda v: v / total)


def cross_entropy_per_sample(num_classes: int, correct: int = 0) -> tuple[sp.Matrix, sp.Expr]:
    """(logit symbols z, the loss log(1 + sum_{k != c} exp(z_k - z_c))) for ``num_classes``."""
    integer("num_classes", num_classes, 2)
    if isinstance(correct, bool) or not isinstance(correct, int) or not 0 <= correct < num_classes:
        raise ValueError(f"correct must be a class index in [0, {num_classes}), got {correct!r}")
    z = sp.Matrix(sp.symbols(f"z_1:{num_classes + 1}", real=True))
    loss = sp.log(1 + sum(sp.exp(z[k] - z[correct]) for k in range(num_classes) if k != correct))
    return z, loss


@dataclass(frozen=True)
class LogitDerivatives:
    z: sp.Matrix
    loss: sp.Expr
    p: sp.Matrix
    y: sp.Matrix
    gradient: sp.Matrix
    hessian: sp.Matrix
    equals_minus_log_softmax: bool
    gradient_is_p_minus_y: bool
    hessian_is_diag_p_minus_ppT: bool


def logit_derivatives(num_classes: int, correct: int = 0) -> LogitDerivatives:
    """The loss's gradient and Hessian with respect to the logits, each checked against the
    closed forms p - y and diag(p) - p p^T (by simplifying the difference to zero)."""
    z, loss = cross_entropy_per_sample(num_classes, correct)
    p = _softmax(z)
    y = sp.Matrix([1 if k == correct else 0 for k in range(num_classes)])
    gradient = sp.Matrix([sp.diff(loss, zk) for zk in z])
    hessian = sp.hessian(loss, list(z))
    closed_hessian = sp.diag(*p) - p * p.T

    def zero(e: sp.Expr) -> bool:
        return sp.simplify(sp.expand(e)) == 0

    return LogitDerivatives(
        z=z, loss=loss, p=p, y=y, gradient=gradient, hessian=hessian,
        equals_minus_log_softmax=zero(sp.expand_log(sp.exp(loss) - 1 / p[correct], force=True)),
        gradient_is_p_minus_y=all(zero(g - (pk - yk)) for g, pk, yk in zip(gradient, p, y)),
        hessian_is_diag_p_minus_ppT=all(zero(h - c) for h, c in zip(hessian, closed_hessian)),
    )


def chain_rule_split(f: sp.Matrix, w: list[sp.Symbol], correct: int = 0) -> dict[str, sp.Matrix | bool]:
    """For logits ``f`` (a K-vector of expressions in the weights ``w``) the Hessian of the loss
    with respect to w, directly (SymPy) and as Gauss-Newton + residual terms, and whether the two
    agree exactly."""
    K = len(f)
    z, loss = cross_entropy_per_sample(K, correct)
    direct_loss = loss.subs(dict(zip(z, f)))
    direct = sp.hessian(direct_loss, w)
    p = _softmax(f)
    y = sp.Matrix([1 if k == correct else 0 for k in range(K)])
    J = f.jacobian(w)
    gauss_newton = J.T * (sp.diag(*p) - p * p.T) * J
    residual = sp.zeros(len(w), len(w))
    for k in range(K):
        residual += (p[k] - y[k]) * sp.hessian(f[k], w)
    difference = (direct - gauss_newton - residual).applyfunc(lambda e: sp.simplify(sp.expand(e)))
    return {"direct": direct, "gauss_newton": gauss_newton, "residual": residual,
            "agree": difference == sp.zeros(len(w), len(w))}


def logreg_kron_hessian(num_classes: int, num_features: int, correct: int = 0) -> dict[str, sp.Matrix | bool]:
    """Logistic regression on one sample x (symbols): the Hessian of the loss with respect to the
    class-by-class flattened [W b], directly and as (diag p - p p^T) kron (x~ x~^T)."""
    integer("num_features", num_features, 1)
    integer("num_classes", num_classes, 2)
    x = sp.Matrix(sp.symbols(f"x_1:{num_features + 1}", real=True))
    xt = x.col_join(sp.Matrix([1]))
    Wt = sp.Matrix(num_classes, num_features + 1,
                   lambda k, i: sp.Symbol(f"w_{k + 1}_{i + 1}" if i < num_features else f"b_{k + 1}", real=True))
    f = Wt * xt
    w = list(Wt)  # row-major: class by class, bias last in each row
    z, loss = cross_entropy_per_sample(num_classes, correct)
    direct = sp.hessian(loss.subs(dict(zip(z, f))), w)
    p = _softmax(f)
    kron = sp.kronecker_product(sp.diag(*p) - p * p.T, xt * xt.T)
    difference = (direct - kron).applyfunc(lambda e: sp.simplify(e))
    return {"x_tilde": xt, "W_tilde": Wt, "p": p, "direct": direct, "kron": kron,
            "agree": difference == sp.zeros(len(w), len(w))}


def separable_example(num_classes: int) -> tuple[list[sp.Matrix], list[int], sp.Matrix]:
    """A small separable data set and a weight matrix W~* = [W* b*] that classifies it with
    margin: 2 classes on the line (x = 1 -> class 0, x = -1 -> class 1, x = 2 -> class 0);
    3 classes at the corners of an equilateral triangle, each class's weights its own corner."""
    if num_classes == 2:
        xs = [sp.Matrix([1]), sp.Matrix([-1]), sp.Matrix([2])]
        ys = [0, 1, 0]
        W = sp.Matrix([[1, 0], [-1, 0]])
    elif num_classes == 3:
        s = sp.sqrt(3) / 2
        corners = [sp.Matrix([1, 0]), sp.Matrix([-sp.Rational(1, 2), s]), sp.Matrix([-sp.Rational(1, 2), -s])]
        xs, ys = corners, [0, 1, 2]
        W = sp.Matrix([[c[0], c[1], 0] for c in corners])
    else:
        raise ValueError(f"separable examples exist for 2 or 3 classes, got {num_classes!r}")
    return xs, ys, W


@dataclass(frozen=True)
class ScalingLimits:
    """Loss and Hessian of logistic regression on a separable set at W~ = alpha W~*."""

    loss: sp.Expr  # mean loss as a function of alpha
    hessian: sp.Matrix  # mean Hessian as a function of alpha
    trace: sp.Expr
    margin: sp.Expr  # min over samples and wrong classes of (z_c - z_k) at alpha = 1
    loss_limit: sp.Expr
    entry_limits: sp.Matrix
    trace_limit: sp.Expr
    loss_rate_constant: sp.Expr  # lim loss * exp(margin alpha): finite and > 0 -> loss ~ C exp(-margin alpha)
    trace_rate_constant: sp.Expr
    eigenvalues: dict | None  # exact eigenvalues (2 classes), else None
    lambda_max_limit: sp.Expr | None

    @property
    def all_vanish(self) -> bool:
        return bool(self.loss_limit == 0 and self.trace_limit == 0 and all(e == 0 for e in self.entry_limits)
                    and (self.lambda_max_limit is None or self.lambda_max_limit == 0))


def scaling_limits(num_classes: int) -> ScalingLimits:
    """Scale the separating weights by alpha -> infinity: limits of the mean loss, every Hessian
    entry, the trace (and, for 2 classes, every exact eigenvalue), and the exponential rate: the
    loss and the trace times exp(margin * alpha) tend to finite positive constants."""
    xs, ys, Ws = separable_example(num_classes)
    K, D1 = Ws.shape
    n = len(xs)
    loss = sp.Integer(0)
    H = sp.zeros(K * D1, K * D1)
    margins = []
    for x, c in zip(xs, ys):
        xt = x.col_join(sp.Matrix([1]))
        zstar = Ws * xt
        margins += [zstar[c] - zstar[k] for k in range(K) if k != c]
        z = alpha * zstar
        loss += sp.log(1 + sum(sp.exp(z[k] - z[c]) for k in range(K) if k != c))
        p = _softmax(z)
        H += sp.kronecker_product(sp.diag(*p) - p * p.T, xt * xt.T)
    loss, H = loss / n, H / n
    margin = sp.nsimplify(min(margins))
    trace = sp.simplify(H.trace())
    entry_limits = H.applyfunc(lambda e: sp.limit(e, alpha, sp.oo))
    eigenvalues = lambda_max_limit = None
    if num_classes == 2:
        eigenvalues = {sp.simplify(k): v for k, v in H.eigenvals().items()}
        lambda_max_limit = sp.Max(*[sp.limit(e, alpha, sp.oo) for e in eigenvalues])
    return ScalingLimits(
        loss=loss, hessian=H, trace=trace, margin=margin,
        loss_limit=sp.limit(loss, alpha, sp.oo), entry_limits=entry_limits,
        trace_limit=sp.limit(trace, alpha, sp.oo),
        loss_rate_constant=sp.simplify(sp.limit(loss * sp.exp(margin * alpha), alpha, sp.oo)),
        trace_rate_constant=sp.simplify(sp.limit(trace * sp.exp(margin * alpha), alpha, sp.oo)),
        eigenvalues=eigenvalues, lambda_max_limit=lambda_max_limit,
    )


def relu_net_example() -> dict[str, sp.Expr | sp.Matrix | bool]:
    """A one-hidden-layer ReLU network with 2 hidden units, 2 classes, one sample x = 1 of class
    0, at weights where both hidden units are active (so ReLU is the identity there and the
    network is a polynomial in the weights): f = W2 relu(W1 x). Both layers scaled by alpha
    (f scales by alpha^2): the Hessian of the loss splits into Gauss-Newton and residual terms;
    both tend to 0, as alpha^2 exp(-m alpha^2) and exp(-m alpha^2)."""
    a1, a2, v11, v12, v21, v22 = sp.symbols("a_1 a_2 v_11 v_12 v_21 v_22", real=True)
    w = [a1, a2, v11, v12, v21, v22]
    hidden = sp.Matrix([a1, a2])  # W1 x with x = 1; active pattern: a_1, a_2 > 0
    f = sp.Matrix([[v11, v12], [v21, v22]]) * hidden
    split = chain_rule_split(f, w, correct=0)
    point = {a1: 1, a2: 1, v11: 1, v12: 1, v21: -1, v22: 0}  # logits (2, -1): margin 3
    scaled = {s: alpha * v for s, v in point.items()}
    gn = split["gauss_newton"].subs(scaled)
    res = split["residual"].subs(scaled)
    z_star = f.subs(point)
    margin = z_star[0] - z_star[1]
    gn_trace, res_frob2 = sp.simplify(gn.trace()), sp.simplify(sum(e**2 for e in res))
    return {
        "f": f, "weights": w, "point": point, "margin": margin, "agree": split["agree"],
        "gauss_newton": gn.applyfunc(sp.simplify), "residual": res.applyfunc(sp.simplify),
        "gauss_newton_trace": gn_trace, "residual_frobenius_squared": res_frob2,
        "gauss_newton_limit": sp.limit(gn_trace, alpha, sp.oo),
        "residual_limit": sp.limit(res_frob2, alpha, sp.oo),
        # rates: GN trace ~ C alpha^2 exp(-m alpha^2); residual entries ~ C exp(-m alpha^2)
        "gauss_newton_rate_constant": sp.simplify(sp.limit(gn_trace * sp.exp(margin * alpha**2) / alpha**2, alpha, sp.oo)),
        "residual_rate_constant": sp.simplify(sp.limit(sp.sqrt(res_frob2) * sp.exp(margin * alpha**2), alpha, sp.oo)),
    }
