"""SymPy derivations behind the book's theory chapters.

The Gedanken experiment of the paper (Section 2) is a deep *linear* model of depth ``n`` with a
single scalar weight per layer, one datum ``X`` and the exponential loss

    L(w) = exp(X * w_1 * w_2 * ... * w_n).

Write ``P = w_1 ... w_n`` and ``P_i = prod_{j != i} w_j``, ``P_ij = prod_{k != i, j} w_k``.
Then exactly (no approximation):

    dL/dw_i          = X P_i L
    d2L/dw_i^2       = X^2 P_i^2 L
    d2L/dw_i dw_j    = (X^2 P_i P_j + X P_ij) L          (i != j)

so ``H = g g^T / L + X L M`` with ``g`` the gradient and ``M_ij = P_ij`` off the diagonal,
``M_ii = 0``. The paper's Eq. (3) keeps only the rank-one term ``g g^T / L``; its trace is the
full trace (``M`` has a zero diagonal), but its single non-zero eigenvalue equals its trace,
which is why the paper could write ``Tr(H) = lambda_1(H)``. With the ``X L M`` term the
equality fails in general.

Along a ray ``w = t d`` the loss is ``exp(X D t^n)`` with ``D = prod d`` and every Hessian entry
is a polynomial in ``t`` times that exponential; when ``X D < 0`` the exponential wins and the
loss, the trace, the Frobenius norm and hence every eigenvalue go to zero as ``t -> oo``.

Everything here is exact SymPy; ``lambdify`` turns expressions into NumPy functions for plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from fractions import Fraction
from typing import Sequence

import numpy as np
import sympy as sp

from ..checks import integer

__all__ = [
    "check_depth",
    "GedankenDerivation",
    "derive_gedanken",
    "closed_form_hessian",
    "symmetric_point_eigenvalues",
    "RayLimits",
    "ray_limits",
    "RaySpectrum",
    "spectrum_along_ray",
    "hessian_at",
    "TraceVersusLambda",
    "trace_versus_lambda",
    "default_directions",
    "scale_grid",
    "default_counterexample_point",
    "validate_point",
    "PathLimits",
    "unbalanced_path",
    "path_limits",
    "resolve_point",
    "resolve_directions",
    "spectra_along_rays",
]


def check_depth(depth: int) -> int:
    """``depth`` (the deep linear model's number of layers) as an int >= 2, else ValueError."""
    return integer("depth", depth, 2, why="one weight per layer")


def _exact(value: float | int | sp.Expr) -> sp.Expr:
    """A float becomes the exact rational it denotes in decimal (2.5 -> 5/2), so limits are exact."""
    if isinstance(value, sp.Expr):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"expected a number, got the boolean {value!r}")
    if isinstance(value, (int, np.integer)):
        return sp.Integer(int(value))
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            raise ValueError(f"expected a finite number, got {value!r}")
        frac = Fraction(repr(float(value)))
        return sp.Rational(frac.numerator, frac.denominator)
    raise TypeError(f"expected a number, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class GedankenDerivation:
    """Exact derivatives of ``L = exp(X w_1 ... w_n)``, all as SymPy expressions in ``weights`` and ``X``.

    Attributes
    ----------
    weights: the symbols ``w_1 ... w_n``.
    X: the datum symbol.
    loss: ``exp(X prod w)``.
    gradient: n x 1 Matrix, ``dL/dw``.
    hessian: n x n Matrix, ``d2L/dw dw^T`` obtained by differentiating twice (the reference).
    rank_one_term: ``g g^T / L``, what the paper's Eq. (3) prints.
    residual_term: ``hessian - rank_one_term = X L M`` (zero diagonal).
    trace: ``Tr(hessian)`` (equals the trace of ``rank_one_term``, the paper's Eq. (4)).
    frobenius_squared: ``sum_ij H_ij^2``.
    """

    depth: int
    weights: tuple[sp.Symbol, ...]
    X: sp.Symbol
    loss: sp.Expr
    gradient: sp.Matrix
    hessian: sp.Matrix
    rank_one_term: sp.Matrix
    residual_term: sp.Matrix
    trace: sp.Expr
    frobenius_squared: sp.Expr
    _numeric_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def polynomial_part(self) -> sp.Matrix:
        """``H / L``: a matrix of polynomials in the weights and ``X`` (no exponential left)."""
        return sp.simplify(self.hessian / self.loss)

    @cached_property
    def numeric_polynomial_part(self):
        """A NumPy function ``f(*weights, X)`` of ``H / L``."""
        return sp.lambdify((*self.weights, self.X), self.polynomial_part, modules="numpy")

    def characteristic_polynomial(self, symbol: sp.Symbol | None = None) -> sp.Expr:
        """det(mu I - H / L) in ``mu``: the eigenvalues of ``H`` are ``L`` times its roots."""
        mu = symbol if symbol is not None else sp.Symbol("mu")
        return sp.collect(sp.expand(self.polynomial_part.charpoly(mu).as_expr()), mu)

    def numeric(self, name: str):
        """A NumPy function ``f(*weights, X)`` of ``loss``, ``gradient``, ``hessian`` or ``trace``."""
        allowed = ("loss", "gradient", "hessian", "rank_one_term", "trace", "frobenius_squared")
        if name not in allowed:
            raise ValueError(f"numeric(name): name must be one of {allowed}, got {name!r}")
        if name not in self._numeric_cache:
            self._numeric_cache[name] = sp.lambdify(
                (*self.weights, self.X), getattr(self, name), modules="numpy"
            )
        return self._numeric_cache[name]


def derive_gedanken(depth: int = 3) -> GedankenDerivation:
    """Differentiate ``exp(X w_1 ... w_n)`` twice with SymPy (the reference derivation)."""
    depth = check_depth(depth)
    weights = sp.symbols(f"w_1:{depth + 1}", real=True)
    X = sp.Symbol("X", real=True)
    loss = sp.exp(X * sp.Mul(*weights))
    gradient = sp.Matrix([sp.diff(loss, w) for w in weights])
    hessian = sp.Matrix(depth, depth, lambda i, j: sp.diff(loss, weights[i], weights[j]))
    rank_one = sp.simplify(gradient * gradient.T / loss)
    residual = sp.simplify(hessian - rank_one)
    trace = sp.factor(hessian.trace())
    frob2 = sp.factor(sum(e**2 for e in hessian))
    return GedankenDerivation(
        depth=depth,
        weights=tuple(weights),
        X=X,
        loss=loss,
        gradient=gradient,
        hessian=hessian,
        rank_one_term=rank_one,
        residual_term=residual,
        trace=trace,
        frobenius_squared=frob2,
    )


def closed_form_hessian(derivation: GedankenDerivation) -> sp.Matrix:
    """The Hessian written from the closed form ``L (X^2 P_i P_j + [i != j] X P_ij)``.

    Independent of SymPy's differentiation; ``derivation.hessian - closed_form_hessian(...)``
    simplifies to zero for every depth (a test checks depths 2 to 6).
    """
    w, X, n = derivation.weights, derivation.X, derivation.depth
    L = derivation.loss

    def prod_except(*skip: int) -> sp.Expr:
        return sp.Mul(*[w[k] for k in range(n) if k not in skip])

    def entry(i: int, j: int) -> sp.Expr:
        value = X**2 * prod_except(i) * prod_except(j)
        if i != j:
            value += X * prod_except(i, j)
        return value * L

    return sp.Matrix(n, n, entry)


def symmetric_point_eigenvalues(derivation: GedankenDerivation) -> dict[sp.Expr, int]:
    """Exact eigenvalues (with multiplicities) at the symmetric point ``w_1 = ... = w_n = s``.

    There ``H = L [(X^2 s^(2n-2) + X s^(n-2)) 1 1^T - X s^(n-2) I]``: one eigenvalue
    ``L (n X^2 s^(2n-2) + (n-1) X s^(n-2))`` (eigenvector 1) and ``-X s^(n-2) L`` with
    multiplicity n - 1. Computed by SymPy's ``eigenvals`` on the substituted matrix.
    """
    s = sp.Symbol("s", real=True)
    H = derivation.hessian.subs({w: s for w in derivation.weights})
    return {sp.factor(k): v for k, v in H.eigenvals().items()}


def validate_point(values: Sequence[float], depth: int, name: str) -> list[float]:
    """Check that ``values`` is a list of ``depth`` finite numbers; return it as floats."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a list of {depth} numbers, got {values!r}")
    if len(values) != depth:
        raise ValueError(f"{name} must have one entry per layer (depth={depth}), got {len(values)}: {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise ValueError(f"{name} entries must be finite numbers, got {v!r} in {values!r}")
        out.append(float(v))
    return out


def default_directions(depth: int, X: float = 1.0) -> list[list[float]]:
    """Three directions ``d`` with ``X prod(d) < 0``, so that the loss -> 0 along ``w = t d``.

    Balanced (all magnitudes 1), mildly unbalanced and strongly unbalanced; the last weight
    carries the sign that makes ``X prod(d)`` negative.
    """
    depth = check_depth(depth)
    if isinstance(X, (bool, np.bool_)) or not isinstance(X, (int, float, np.integer, np.floating)) \
            or not np.isfinite(X) or X == 0:
        raise ValueError(f"X must be a non-zero finite number (X = 0 makes the loss 1 everywhere), got {X!r}")
    sign = -1.0 if X > 0 else 1.0
    balanced = [1.0] * (depth - 1) + [sign]
    mild = [1.0 + 0.5 * (k % 2) for k in range(depth - 1)] + [0.5 * sign]
    strong = [3.0] + [0.5] * (depth - 2) + [sign]
    return [balanced, mild, strong]


def scale_grid(scale_min: float, scale_max: float, num: int) -> np.ndarray:
    """``num`` log-spaced weight scales from ``scale_min`` to ``scale_max`` (both > 0)."""
    numbers = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                  and np.isfinite(v) for v in (scale_min, scale_max))
    if not numbers or not 0 < scale_min < scale_max:
        raise ValueError(
            f"need finite numbers with 0 < scale_min < scale_max, got scale_min={scale_min!r}, scale_max={scale_max!r}"
        )
    if isinstance(num, (bool, np.bool_)) or not isinstance(num, (int, np.integer)) or num < 2:
        raise ValueError(f"num_scales must be an integer >= 2, got {num!r}")
    return np.geomspace(float(scale_min), float(scale_max), int(num))


def default_counterexample_point(depth: int) -> list[float]:
    """``(2, 1.5, -1)`` for depth 3 (PAPER.md's counter-example), padded with 1s for deeper models;
    ``(2, -1.5)`` for depth 2 (keeping ``prod w < 0``, a point of low loss for ``X > 0``)."""
    depth = check_depth(depth)
    base = [2.0, 1.5, -1.0]
    if depth >= 3:
        return base + [1.0] * (depth - 3)
    return [2.0, -1.5]


def resolve_point(point: Sequence[float] | None, depth: int) -> list[float]:
    """A chapter's ``counterexample_point`` parameter: ``None`` means ``default_counterexample_point``."""
    return validate_point(default_counterexample_point(depth) if point is None else point, depth, "counterexample_point")


def resolve_directions(directions: Sequence[Sequence[float]] | None, depth: int, X: float) -> list[list[float]]:
    """A chapter's ``directions`` parameter: ``None`` means ``default_directions(depth, X)``."""
    if directions is None:
        return default_directions(depth, X)
    if isinstance(directions, (str, bytes)) or not isinstance(directions, Sequence) or not directions:
        raise ValueError(f"directions must be a non-empty list of lists of {depth} numbers, got {directions!r}")
    return [validate_point(d, depth, f"directions[{i}]") for i, d in enumerate(directions)]


def hessian_at(derivation: GedankenDerivation, point: Sequence[float], X: float) -> np.ndarray:
    """The exact Hessian evaluated at ``point`` (float64 n x n array)."""
    point = validate_point(point, derivation.depth, "point")
    return np.asarray(derivation.numeric("hessian")(*point, float(X)), dtype=np.float64)


@dataclass(frozen=True)
class TraceVersusLambda:
    """The paper's claim ``Tr(H) = lambda_1(H)`` checked at one point, in float64.

    ``paper_hessian`` is the rank-one matrix of Eq. (3); its top eigenvalue equals its trace.
    """

    point: tuple[float, ...]
    X: float
    loss: float
    trace: float
    eigenvalues: tuple[float, ...]  # of the exact Hessian, ascending
    lambda_max: float
    spectral_norm: float
    paper_trace: float  # trace of the rank-one Eq. (3) matrix
    paper_lambda_max: float  # its top eigenvalue

    @property
    def trace_equals_lambda_max(self) -> bool:
        return bool(np.isclose(self.trace, self.lambda_max, rtol=1e-9, atol=0.0))


def trace_versus_lambda(derivation: GedankenDerivation, point: Sequence[float], X: float) -> TraceVersusLambda:
    """Evaluate the exact Hessian and the paper's rank-one Hessian at ``point``."""
    point = validate_point(point, derivation.depth, "point")
    H = hessian_at(derivation, point, X)
    H_paper = np.asarray(derivation.numeric("rank_one_term")(*point, float(X)), dtype=np.float64)
    eig = np.linalg.eigvalsh(H)
    eig_paper = np.linalg.eigvalsh(H_paper)
    return TraceVersusLambda(
        point=tuple(point),
        X=float(X),
        loss=float(derivation.numeric("loss")(*point, float(X))),
        trace=float(np.trace(H)),
        eigenvalues=tuple(float(e) for e in eig),
        lambda_max=float(eig[-1]),
        spectral_norm=float(np.max(np.abs(eig))),
        paper_trace=float(np.trace(H_paper)),
        paper_lambda_max=float(eig_paper[-1]),
    )


@dataclass(frozen=True)
class RayLimits:
    """Exact behaviour along ``w = t d`` as ``t -> oo`` (SymPy ``limit``).

    ``loss_along_ray``, ``trace_along_ray`` and ``frobenius_squared_along_ray`` are expressions
    in ``t``; the ``*_limit`` fields are their exact limits. Since every eigenvalue satisfies
    ``|lambda| <= ||H||_F``, ``frobenius_squared_limit == 0`` proves that the spectral norm goes
    to zero too.
    """

    direction: tuple[sp.Expr, ...]
    X: sp.Expr
    t: sp.Symbol
    loss_along_ray: sp.Expr
    trace_along_ray: sp.Expr
    frobenius_squared_along_ray: sp.Expr
    loss_limit: sp.Expr
    trace_limit: sp.Expr
    frobenius_squared_limit: sp.Expr

    @property
    def loss_goes_to_zero(self) -> bool:
        return bool(self.loss_limit == 0)


def _limits_along(derivation: GedankenDerivation, weights: Sequence[sp.Expr], X: sp.Expr, t: sp.Symbol):
    subs = dict(zip(derivation.weights, weights))
    subs[derivation.X] = X
    loss_t = sp.simplify(derivation.loss.subs(subs))
    trace_t = sp.factor(sp.simplify(derivation.trace.subs(subs)))
    frob_t = sp.factor(sp.simplify(derivation.frobenius_squared.subs(subs)))
    return loss_t, trace_t, frob_t, sp.limit(loss_t, t, sp.oo), sp.limit(trace_t, t, sp.oo), sp.limit(frob_t, t, sp.oo)


def ray_limits(derivation: GedankenDerivation, direction: Sequence[float], X: float) -> RayLimits:
    """Substitute ``w = t d`` (exact rationals) and take ``limit(., t, oo)`` of loss, trace, ||H||_F^2."""
    validate_point(direction, derivation.depth, "direction")
    t = sp.Symbol("t", positive=True)
    d = tuple(_exact(v) for v in direction)
    Xv = _exact(X)
    loss_t, trace_t, frob_t, l_lim, t_lim, f_lim = _limits_along(derivation, [t * di for di in d], Xv, t)
    return RayLimits(d, Xv, t, loss_t, trace_t, frob_t, l_lim, t_lim, f_lim)


@dataclass(frozen=True)
class PathLimits:
    """Exact behaviour along a curved path ``w(t)`` as ``t -> oo`` (SymPy ``limit``)."""

    path: tuple[sp.Expr, ...]
    X: sp.Expr
    t: sp.Symbol
    loss_along_path: sp.Expr
    trace_along_path: sp.Expr
    frobenius_squared_along_path: sp.Expr
    loss_limit: sp.Expr
    trace_limit: sp.Expr
    frobenius_squared_limit: sp.Expr


def unbalanced_path(depth: int, X: float, t: sp.Symbol) -> tuple[sp.Expr, ...]:
    """``w(t) = (e^(t^2), -sign(X) t e^(-t^2), 1, ..., 1)``: ``X prod w = -|X| t``, so the loss
    ``e^(-|X| t)`` -> 0, while ``w_1`` grows much faster than the loss decays: the Hessian's
    entry ``X^2 P_2^2 L >= X^2 e^(2 t^2 - |X| t)`` blows up."""
    depth = check_depth(depth)
    if X == 0:
        raise ValueError("X must be non-zero")
    sign = 1 if X > 0 else -1
    return (sp.exp(t**2), -sign * t * sp.exp(-t**2), *([sp.Integer(1)] * (depth - 2)))


def path_limits(derivation: GedankenDerivation, path: Sequence[sp.Expr], X: float, t: sp.Symbol) -> PathLimits:
    """Substitute ``w = path(t)`` and take ``limit(., t, oo)`` of loss, trace and ||H||_F^2."""
    if len(path) != derivation.depth:
        raise ValueError(f"path must have one entry per layer (depth={derivation.depth}), got {len(path)}")
    Xv = _exact(X)
    loss_t, trace_t, frob_t, l_lim, t_lim, f_lim = _limits_along(derivation, list(path), Xv, t)
    return PathLimits(tuple(path), Xv, t, loss_t, trace_t, frob_t, l_lim, t_lim, f_lim)


@dataclass(frozen=True)
class RaySpectrum:
    """Loss and Hessian measures at ``w = t d`` for each scale ``t``, in base-10 logarithms.

    The measures span hundreds of orders of magnitude (``L = exp(X D t^n)`` underflows float64
    for ``X D t^n < -745``), so they are computed as ``log10 L + log10(measure of H / L)``:
    ``H / L`` is a polynomial matrix that never underflows. ``log10_lambda_max`` is NaN where
    the largest eigenvalue is not positive.
    """

    direction: tuple[float, ...]
    X: float
    scales: np.ndarray
    log10_loss: np.ndarray
    log10_trace: np.ndarray
    log10_lambda_max: np.ndarray
    log10_spectral_norm: np.ndarray
    log10_frobenius: np.ndarray


def spectrum_along_ray(
    derivation: GedankenDerivation, direction: Sequence[float], X: float, scales: np.ndarray
) -> RaySpectrum:
    """Evaluate the exact Hessian at ``t d`` for every ``t`` in ``scales`` and take its eigenvalues.

    float64 throughout: ``H / L`` from the SymPy polynomial matrix, its eigenvalues by
    ``numpy.linalg.eigvalsh``, then shifted by ``log10 L = X prod(t d) / ln 10``.
    """
    direction = validate_point(direction, derivation.depth, "direction")
    scales = np.asarray(scales, dtype=np.float64)
    if scales.ndim != 1 or scales.size == 0 or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ValueError(f"scales must be a non-empty 1-D array of positive finite numbers, got {scales!r}")
    poly = derivation.numeric_polynomial_part
    d = np.asarray(direction)
    K = np.stack([np.asarray(poly(*(t * d), float(X)), dtype=np.float64) for t in scales])
    eig = np.linalg.eigvalsh(K)
    log10_L = float(X) * np.prod(d) * scales ** derivation.depth / np.log(10.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.where(eig[:, -1] > 0, eig[:, -1], np.nan)
        return RaySpectrum(
            direction=tuple(direction),
            X=float(X),
            scales=scales,
            log10_loss=log10_L,
            log10_trace=log10_L + np.log10(np.trace(K, axis1=1, axis2=2)),
            log10_lambda_max=log10_L + np.log10(top),
            log10_spectral_norm=log10_L + np.log10(np.max(np.abs(eig), axis=1)),
            log10_frobenius=log10_L + np.log10(np.sqrt(np.sum(K**2, axis=(1, 2)))),
        )



def spectra_along_rays(derivation: GedankenDerivation, directions: Sequence[Sequence[float]], X: float,
                       scales: np.ndarray) -> list[RaySpectrum]:
    """``spectrum_along_ray`` for each direction of ``directions``, in order."""
    return [spectrum_along_ray(derivation, d, X, scales) for d in directions]