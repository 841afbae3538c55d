"""Spectra of symmetric operators from products alone: Lanczos, SLQ, Hutchinson.

Stochastic Lanczos quadrature (SLQ; Ghorbani et al. 2019, the paper's Appendix B): for a
symmetric P x P operator H and a start vector v with ||v|| = 1, m steps of Lanczos build an
orthonormal basis Q of the Krylov space span{v, Hv, ..., H^(m-1) v} and the tridiagonal
T = Q^T H Q. With T = U diag(theta) U^T, the Ritz values theta_k and weights
gamma_k = U[0, k]^2 (which sum to 1) form the m-point Gauss quadrature of the spectral measure
mu_v = sum_i (v . phi_i)^2 delta(lambda_i):

    v^T f(H) v  ~  sum_k gamma_k f(theta_k).

For a Gaussian v/||v||, E[(v . phi_i)^2] = 1/P, so

    Tr(H)    ~ P sum_k gamma_k theta_k,        ||H||_F^2 ~ P sum_k gamma_k theta_k^2,
    lambda_max ~ max_k theta_k (a lower bound that converges fast),

and the spectral density is sum_k gamma_k delta(theta_k), smoothed by a Gaussian. Several start
vectors ("probes") are averaged; their spread gives standard errors.

Lanczos runs in float64 with *full reorthogonalisation* (each new vector is orthogonalised
against the whole basis, twice): without it, rounding makes converged Ritz values reappear as
spurious copies ("ghosts"). The copies share the converged eigenvalue's quadrature weight and the
quadrature's moments stay accurate (Greenbaum 1989; measured by ``lanczos_checks.ghost_effect``),
but they use up Ritz values that would otherwise resolve other parts of the spectrum.
``reorthogonalize=False`` exists to show that.

Operators are anything with ``num_params`` and ``matmat(V)`` (P x k -> P x k); a
``flatbook.HessianOperator`` computes all k columns in one pass over the data, so k probes cost
one data pass per step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from .checks import positive_int
from .checks import seed as check_seed

__all__ = [
    "SymmetricOperator",
    "MatrixOperator",
    "DiagonalOperator",
    "LanczosResult",
    "start_vectors",
    "lanczos",
    "basis_home",
    "check_operator",
    "Spectrum",
    "slq",
    "TraceEstimate",
    "hutchinson_trace",
    "top_eigenvalues",
]


class SymmetricOperator(Protocol):
    """What Lanczos, SLQ and the estimators need of an operator H (a symmetric P x P matrix known
    only through its products): ``num_params`` P, the size; ``device``, where ``matmat`` wants
    its input; ``dtype``, the precision its products are computed in (they are returned, or
    converted, to float64 by the callers); ``matmat(V)``, H V for a (P, k) float64 tensor V."""

    num_params: int
    device: torch.device
    dtype: torch.dtype

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H V for a (P, k) tensor V: the k products in one call."""
        ...


class MatrixOperator:
    """A dense symmetric matrix as an operator (references, tests, exact comparisons).

    ``dtype=torch.float32`` stores the matrix and computes every product in single precision
    (inputs rounded to float32), as a float32 network's Hessian-vector products would."""

    def __init__(self, A: torch.Tensor | np.ndarray, dtype: torch.dtype = torch.float64):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        A = torch.as_tensor(A, dtype=dtype)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"MatrixOperator needs a square matrix, got shape {tuple(A.shape)}")
        self.A = A
        self.num_params = A.shape[0]
        self.device = A.device
        self.dtype = dtype
        self.settings: dict[str, Any] = {"operator": "dense matrix", "dtype": str(dtype).replace("torch.", "")}

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """A v, in the matrix's dtype and device."""
        return self.A @ v.to(self.A)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """A V for the k columns of V, in the matrix's dtype and device."""
        return self.A @ V.to(self.A)


class DiagonalOperator:
    """diag(eigenvalues) as an operator. Lanczos on a symmetric H = Q diag(lambda) Q^T from start
    vector v is Lanczos on diag(lambda) from Q^T v (the same T, in exact arithmetic), and a
    Gaussian v gives a Gaussian Q^T v: so the distribution of any SLQ estimate depends on the
    eigenvalues only, and studies of it can run at O(P) per product once they are known."""

    def __init__(self, eigenvalues: torch.Tensor | np.ndarray):
        e = torch.as_tensor(np.asarray(eigenvalues, dtype=np.float64)).ravel()
        if e.numel() == 0 or not torch.isfinite(e).all():
            raise ValueError("DiagonalOperator needs a non-empty vector of finite eigenvalues")
        self.eigenvalues = e
        self.num_params = e.numel()
        self.device = e.device
        self.dtype = torch.float64
        self.settings: dict[str, Any] = {"operator": "diagonal (eigenvalues)"}

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """diag(eigenvalues) v."""
        return self.eigenvalues * v.to(self.eigenvalues)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """diag(eigenvalues) V for the k columns of V."""
        return self.eigenvalues[:, None] * V.to(self.eigenvalues)


def _check_protocol(op: SymmetricOperator) -> None:
    missing = [a for a in ("num_params", "device", "dtype", "matmat") if not hasattr(op, a)]
    if missing:
        raise ValueError(f"the operator ({type(op).__name__}) lacks {', '.join(missing)}: an operator needs "
                         "num_params, device, dtype and matmat (flatbook.spectrum.SymmetricOperator)")


def _operator_size(op: SymmetricOperator) -> int:
    _check_protocol(op)
    P = op.num_params
    if isinstance(P, bool) or not isinstance(P, (int, np.integer)) or P < 1:
        raise ValueError(f"the operator must have num_params >= 1, got {P!r}")
    return int(P)


def _operator_device(op: SymmetricOperator) -> torch.device:
    return torch.device(op.device)


def _products(op: SymmetricOperator, V: torch.Tensor, device: torch.device) -> torch.Tensor:
    """op.matmat(V) as float64 on ``device``; a non-finite product is an error, not a silent NaN."""
    W = op.matmat(V.to(_operator_device(op)))
    W = W.to(device=device, dtype=torch.float64)
    if W.shape != V.shape:
        raise ValueError(f"the operator returned shape {tuple(W.shape)} for input {tuple(V.shape)}")
    if not torch.isfinite(W).all():
        raise ValueError("the operator returned a non-finite product (NaN or inf): check the model and data")
    return W


@dataclass(frozen=True)
class LanczosResult:
    """Per probe j: the tridiagonal T_j (alphas[j, :m_j], betas[j, :m_j - 1]) and its size m_j;
    ``last_betas[j]`` is beta_{m_j}, the norm of the residual left after the last step (0 when the
    Krylov space became invariant), which bounds the Ritz pairs' residuals."""

    alphas: np.ndarray  # (probes, steps), zero-padded past m_j
    betas: np.ndarray  # (probes, steps), beta_i couples q_i and q_(i+1); zero-padded
    sizes: np.ndarray  # (probes,) number of Lanczos vectors m_j actually built
    seconds_per_product: float
    last_betas: np.ndarray | None = None  # (probes,) beta_{m_j}
    top_vectors: torch.Tensor | None = None  # (P, probes) each probe's unit top Ritz vector, float64
    first_pairs: tuple | None = None  # probe 0's first two (q, H q) pairs, (P, 2) each, float64 (checks)

    def __post_init__(self) -> None:
        # frozen: no attribute can be re-assigned; the arrays are private copies
        for name in ("alphas", "betas", "sizes", "last_betas"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, np.array(value))

    def top_residuals(self) -> np.ndarray:
        """Per probe, beta_{m_j} |u_{m_j, top}|: the residual norm ||H y - theta y|| of the largest
        Ritz pair (Parlett's bound: some eigenvalue lies within it of theta). NaN if unknown."""
        probes = self.alphas.shape[0]
        out = np.full(probes, np.nan)
        if self.last_betas is None:
            return out
        for j in range(probes):
            _, U = np.linalg.eigh(self.tridiagonal(j))
            out[j] = abs(self.last_betas[j]) * abs(U[-1, -1])
        return out

    def tridiagonal(self, j: int) -> np.ndarray:
        """Probe ``j``'s m_j x m_j Lanczos matrix T = Q^T H Q."""
        m = int(self.sizes[j])
        T = np.diag(self.alphas[j, :m])
        if m > 1:
            off = self.betas[j, : m - 1]
            T += np.diag(off, 1) + np.diag(off, -1)
        return T

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values and weights, (probes, steps) each; padding has NaN nodes and 0 weights."""
        probes, steps = self.alphas.shape
        nodes = np.full((probes, steps), np.nan)
        weights = np.zeros((probes, steps))
        for j in range(probes):
            m = int(self.sizes[j])
            theta, U = np.linalg.eigh(self.tridiagonal(j))
            nodes[j, :m] = theta
            weights[j, :m] = U[0, :] ** 2
        return nodes, weights


def start_vectors(P: int, probes: int, *, seed: int) -> torch.Tensor:
    """Gaussian start vectors from a private generator (the global RNG is untouched), unit columns."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    V = torch.randn(P, probes, generator=gen, dtype=torch.float64)
    return V / V.norm(dim=0, keepdim=True)


def lanczos(
    op: SymmetricOperator,
    *,
    steps: int = 100,
    probes: int = 1,
    seed: int = 0,
    reorthogonalize: bool = True,
    basis_device: str | torch.device | None = None,
    basis_dtype: torch.dtype = torch.float64,
    start: torch.Tensor | None = None,
    progress: bool = False,
    breakdown_tol: float = 1e-12,
) -> LanczosResult:
    """Run ``min(steps, P)`` Lanczos steps for ``probes`` start vectors at once.

    Each step is one ``op.matmat`` call on a P x probes block. With ``reorthogonalize`` the new
    vectors are orthogonalised against every previous basis vector of their probe (classical
    Gram-Schmidt, applied twice). A probe whose residual norm falls below ``breakdown_tol``
    times the largest |alpha| or beta seen has found an invariant subspace: it stops there
    (its T is exact) and its columns are left out of later products.

    Example: P steps on a P x P matrix span the whole space, so the Ritz values are its
    eigenvalues (here 1, 2, 3, 4).

    >>> import torch
    >>> from flatbook.spectrum import MatrixOperator, lanczos
    >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    >>> nodes, weights = lanczos(MatrixOperator(A), steps=4, seed=0).ritz()
    >>> [round(float(theta), 10) for theta in nodes[0]]
    [1.0, 2.0, 3.0, 4.0]
    >>> round(float(weights[0].sum()), 12)  # the squared first components of a unit start vector
    1.0

    ``basis_device="cpu"`` keeps the P x steps x probes basis in host memory (large models on
    a GPU); ``basis_dtype=torch.float32`` halves it (the recurrence stays float64). By default
    (None) the basis stays on the operator's device, a GPU's included, when it takes at most half
    of that GPU's free memory, and goes to host memory otherwise (``basis_home``).
    """
    P = _operator_size(op)
    steps = positive_int("steps", steps)
    probes = positive_int("probes", probes)
    seed = check_seed(seed)
    m_max = min(steps, P)
    if basis_device is not None:
        device = torch.device(basis_device)
    else:
        device = basis_home(_operator_device(op), probes * m_max * P * torch.finfo(basis_dtype).bits // 8)
    if start is None:
        q = start_vectors(P, probes, seed=seed).to(device)
    else:
        q = torch.as_tensor(start, dtype=torch.float64).reshape(P, -1).to(device)
        if q.shape[1] != probes:
            raise ValueError(f"start has {q.shape[1]} columns but probes={probes}")
        q = q / q.norm(dim=0, keepdim=True)
    basis = torch.zeros(probes, m_max, P, dtype=basis_dtype, device=device)
    # reorthogonalise against chunks of the basis, converting at most ~64 MiB to float64 at once
    chunk = max(1, (64 * 2**20) // (8 * P * probes))
    alphas = np.zeros((probes, m_max))
    betas = np.zeros((probes, m_max))
    sizes = np.zeros(probes, dtype=int)
    last_betas = np.zeros(probes)
    active = np.ones(probes, dtype=bool)
    scale = np.zeros(probes)  # largest |alpha|, beta seen: the breakdown threshold is relative
    q_prev = torch.zeros_like(q)
    beta_prev = torch.zeros(probes, dtype=torch.float64, device=device)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=m_max, desc=f"Lanczos ({probes} probe{'s' if probes > 1 else ''})", unit="step")
    product_seconds = 0.0
    first_q: list[torch.Tensor] = []
    first_w: list[torch.Tensor] = []
    try:
        for i in range(m_max):
            basis[:, i] = q.T.to(basis_dtype)
            cols = np.flatnonzero(active)
            t0 = time.perf_counter()
            w = torch.zeros_like(q)
            w[:, cols] = _products(op, q[:, cols], device)
            product_seconds += time.perf_counter() - t0
            if i < 2 and active[0]:
                first_q.append(q[:, 0].clone())
                first_w.append(w[:, 0].clone())
            alpha = (q * w).sum(dim=0)
            w = w - alpha * q - beta_prev * q_prev
            if reorthogonalize:
                for _ in range(2):  # classical Gram-Schmidt, twice ("twice is enough": Kahan, Parlett)
                    wt = w.T.unsqueeze(2)  # (probes, P, 1)
                    coeffs = [torch.bmm(basis[:, a:a + chunk].to(torch.float64), wt)
                              for a in range(0, i + 1, chunk)]  # each (probes, c, 1)
                    for a, c in zip(range(0, i + 1, chunk), coeffs):
                        wt = wt - torch.bmm(basis[:, a:a + chunk].to(torch.float64).transpose(1, 2), c)
                    w = wt.squeeze(2).T
            beta = w.norm(dim=0)
            a_np, b_np = alpha.cpu().numpy(), beta.cpu().numpy()
            for j in cols:
                alphas[j, i] = a_np[j]
                sizes[j] = i + 1
                last_betas[j] = b_np[j]
                scale[j] = max(scale[j], abs(a_np[j]), b_np[j])
                if i + 1 < m_max and b_np[j] > breakdown_tol * max(scale[j], 1e-300):
                    betas[j, i] = b_np[j]
                else:
                    active[j] = False
            if not active.any():
                if bar is not None:
                    bar.update(1)
                break
            safe = torch.where(beta > 0, beta, torch.ones_like(beta))
            q_prev, q = q, w / safe
            q[:, ~torch.as_tensor(active, device=device)] = 0.0
            beta_prev = torch.where(torch.as_tensor(active, device=device), beta, torch.zeros_like(beta))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(s_per_product=f"{product_seconds / (i + 1):.3g}")
    finally:
        if bar is not None:
            bar.close()
    n_products = max(int(sizes.max()), 1)
    top = torch.zeros(P, probes, dtype=torch.float64, device=device)
    for j in range(probes):  # y_j = Q_j u_top: the top Ritz vector of probe j (unit: Q_j orthonormal)
        m = int(sizes[j])
        T = np.diag(alphas[j, :m]) + np.diag(betas[j, :m - 1], 1) + np.diag(betas[j, :m - 1], -1)
        u = torch.as_tensor(np.linalg.eigh(T)[1][:, -1], dtype=torch.float64, device=device)
        y = basis[j, :m].to(torch.float64).T @ u
        top[:, j] = y / y.norm()
    pairs = (torch.stack(first_q, 1), torch.stack(first_w, 1)) if len(first_q) == 2 else None
    return LanczosResult(alphas, betas, sizes, product_seconds / n_products, last_betas, top, pairs)


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


@dataclass(frozen=True)
class Spectrum:
    """Ritz values and weights of an SLQ run, with the settings that produced them.

    ``nodes`` and ``weights`` are (probes, m) arrays; a probe that stopped early (breakdown)
    is padded with NaN nodes and zero weights. ``settings`` records what was measured: for a
    HessianOperator the bn_mode, weight_decay, data size, dtype and device; always the seed,
    steps, probes and reorthogonalisation. ``top_residuals`` (probes,): the Ritz residual
    ||H y - theta y|| of each probe's largest Ritz pair, measured with one more product by ``slq``
    (``ritz_residuals``; None when not recorded).
    """

    nodes: np.ndarray
    weights: np.ndarray
    num_params: int
    settings: dict[str, Any] = field(default_factory=dict)
    top_residuals: np.ndarray | None = None

    def __post_init__(self) -> None:
        # frozen: no attribute can be re-assigned; the arrays and the settings are private copies
        nodes = np.atleast_2d(np.array(self.nodes, dtype=np.float64))
        weights = np.atleast_2d(np.array(self.weights, dtype=np.float64))
        if nodes.shape != weights.shape:
            raise ValueError(f"nodes {nodes.shape} and weights {weights.shape} differ in shape")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "settings", dict(self.settings))
        if self.top_residuals is not None:
            residuals = np.array(self.top_residuals, dtype=np.float64).ravel()
            if residuals.shape != (nodes.shape[0],):
                raise ValueError(f"top_residuals needs one value per probe ({nodes.shape[0]}), "
                                 f"got {residuals.shape}")
            object.__setattr__(self, "top_residuals", residuals)

    @property
    def probes(self) -> int:
        """The number of probes (start vectors) the spectrum was computed from."""
        return self.nodes.shape[0]

    def _per_probe_moment(self, power: int) -> np.ndarray:
        theta = np.nan_to_num(self.nodes, nan=0.0)
        return (self.weights * theta**power).sum(axis=1)

    # --- estimates (value, and standard error over probes; NaN for one probe) -------------
    @property
    def lambda_max(self) -> float:
        """The mean over probes of each probe's largest Ritz value (each a lower bound on the top
        eigenvalue; once converged they agree to the Ritz residual). The same quantity as
        ``lambda_max_se`` describes."""
        return _mean_se(np.nanmax(self.nodes, axis=1))[0]

    @property
    def lambda_max_se(self) -> float:
        """The standard error of ``lambda_max`` over probes (NaN with one probe: unknown, not 0)."""
        return _mean_se(np.nanmax(self.nodes, axis=1))[1]

    @property
    def lambda_max_residual(self) -> float:
        """The largest Ritz residual ||H y - theta y|| of the probes' top Ritz pairs: an eigenvalue of H
        lies within it of each probe's top Ritz value (NaN when not recorded)."""
        if self.top_residuals is None:
            return float("nan")
        return float(np.max(self.top_residuals))

    @property
    def lambda_min(self) -> float:
        """The smallest Ritz value over all probes (an upper bound on the bottom eigenvalue)."""
        return float(np.nanmin(self.nodes))

    @property
    def lambda_min_se(self) -> float:
        """The spread of the per-probe bottom Ritz values: the standard error of their mean."""
        return _mean_se(np.nanmin(self.nodes, axis=1))[1]

    @property
    def trace(self) -> float:
        """P * mean over probes of sum_k gamma_k theta_k."""
        return self.num_params * _mean_se(self._per_probe_moment(1))[0]

    @property
    def trace_se(self) -> float:
        """The standard error of ``trace`` over the probes (NaN with one probe): P times the SE of the
        probes' first moments."""
        return self.num_params * _mean_se(self._per_probe_moment(1))[1]

    @property
    def frobenius(self) -> float:
        """sqrt(P * mean over probes of sum_k gamma_k theta_k^2)."""
        return math.sqrt(max(self.num_params * _mean_se(self._per_probe_moment(2))[0], 0.0))

    @property
    def frobenius_se(self) -> float:
        """Delta method: se(F) = se(F^2) / (2 F)."""
        f = self.frobenius
        return self.num_params * _mean_se(self._per_probe_moment(2))[1] / (2 * f) if f > 0 else float("nan")

    def density(self, grid: Sequence[float] | np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian-smoothed spectral density on ``grid``: mean over probes of
        sum_k gamma_k N(x; theta_k, sigma^2). Integrates to 1 over the real line."""
        if not (isinstance(sigma, (int, float)) and sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        x = np.asarray(grid, dtype=np.float64)
        theta = np.nan_to_num(self.nodes, nan=0.0)[..., None]  # (probes, m, 1); padded weights are 0
        kernel = np.exp(-0.5 * ((x - theta) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        return (self.weights[..., None] * kernel).sum(axis=1).mean(axis=0)

    def summary(self) -> dict[str, float]:
        """The scalar measures by name: lambda_max (with SE and Ritz residual), lambda_min (with SE), trace
        (with SE), frobenius, num_params and probes."""
        return {
            "lambda_max": self.lambda_max, "lambda_max_se": self.lambda_max_se,
            "lambda_max_residual": self.lambda_max_residual,
            "lambda_min": self.lambda_min, "lambda_min_se": self.lambda_min_se,
            "trace": self.trace, "trace_se": self.trace_se,
            "frobenius": self.frobenius, "frobenius_se": self.frobenius_se,
        }

    # --- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only; NaN padding is written as null."""
        nodes = [[None if math.isnan(v) else float(v) for v in row] for row in self.nodes]
        out = {
            "format": "flatbook.Spectrum/1",
            "num_params": int(self.num_params),
            "nodes": nodes,
            "weights": self.weights.tolist(),
            "settings": dict(self.settings),
        }
        if self.top_residuals is not None:
            out["top_residuals"] = [None if math.isnan(v) else float(v) for v in self.top_residuals]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Spectrum":
        """The Spectrum that ``to_dict`` wrote (format "flatbook.Spectrum/1"); anything else is a ValueError."""
        if not isinstance(d, dict) or d.get("format") != "flatbook.Spectrum/1":
            raise ValueError(f"not a flatbook Spectrum dict (format={d.get('format') if isinstance(d, dict) else d!r})")
        missing = {"num_params", "nodes", "weights", "settings"} - set(d)
        if missing:
            raise ValueError(f"Spectrum dict lacks {sorted(missing)}")
        nodes = np.array([[np.nan if v is None else v for v in row] for row in d["nodes"]], dtype=np.float64)
        weights = np.asarray(d["weights"], dtype=np.float64)
        if weights.shape != nodes.shape or np.any(weights < 0) or not np.allclose(weights.sum(axis=1), 1.0, atol=1e-8):
            raise ValueError("Spectrum dict: weights must match nodes in shape, be >= 0 and sum to 1 per probe")
        residuals = d.get("top_residuals")
        if residuals is not None:
            residuals = np.array([np.nan if v is None else v for v in residuals], dtype=np.float64)
        return cls(nodes, weights, int(d["num_params"]), dict(d["settings"]), residuals)


def check_operator(op: SymmetricOperator, *, seed: int = 0, rtol: float | None = None) -> float:
    """Cheap sanity check of an operator before a long run: with two random unit vectors u, v,
    ``u^T H v`` must equal ``v^T H u`` (a Hessian is symmetric) and a repeated product must
    equal the first. This catches framework bugs in double backward, models that are random in
    their forward pass and data that change between passes. Costs a product of 2 columns and one of 1
    (``slq`` makes the same checks on its own products instead).

    Returns the relative asymmetry |u^T H v - v^T H u| / max(||H u||, ||H v||) for Gaussian u, v
    scaled to unit length: the asymmetry relative to the size of the products themselves, so it
    does not depend on the scale of H or on the number of parameters (a product rounded to d
    correct digits gives about 10^-d). Raises ValueError above ``rtol`` (default: 1e-6 for
    float64 products, 1e-3 otherwise)."""
    P = _operator_size(op)
    gen = torch.Generator(device="cpu").manual_seed(check_seed(seed) + 7919)
    U = torch.randn(P, 2, generator=gen, dtype=torch.float64)
    U = U / U.norm(dim=0, keepdim=True)
    HU = _products(op, U, torch.device("cpu"))
    again = _products(op, U[:, :1], torch.device("cpu"))  # one column repeated: random passes change any column
    return _check_symmetry_and_repeat(op, U, HU, again, rtol)


def basis_home(device: torch.device, basis_bytes: int, free_bytes=None) -> torch.device:
    """Where a Lanczos basis of ``basis_bytes`` lives by default: on ``device`` itself (no copies
    between host and GPU at every step) unless ``device`` is a GPU whose free memory
    (``free_bytes(device)``, default ``torch.cuda.mem_get_info``) is under twice the basis; then the
    CPU, whose memory is larger and whose copies cost one transfer of a P-vector per step."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    free = (free_bytes or (lambda d: torch.cuda.mem_get_info(d)[0]))(device)
    return device if basis_bytes <= free / 2 else torch.device("cpu")


def slq(
    op: SymmetricOperator,
    *,
    steps: int = 100,
    probes: int = 1,
    seed: int = 0,
    progress: bool = False,
    reorthogonalize: bool = True,
    basis_device: str | torch.device | None = None,
    basis_dtype: torch.dtype = torch.float64,
    check: bool = True,
) -> Spectrum:
    """Stochastic Lanczos quadrature with ``probes`` Gaussian start vectors run together.

    The paper used ``steps=100, probes=1``. See ``lanczos`` for the options. After the run, one
    product of the probes' top Ritz vectors gives their measured residuals (``ritz_residuals``);
    with ``check`` the same product also repeats the first Lanczos product (a random forward pass or
    changing data would change it), and the first two Lanczos products give u^T H v against
    v^T H u (a Hessian is symmetric), so the checks of ``check_operator`` cost no product of their
    own; a broken operator raises ValueError after the run (``check_operator`` itself runs first when
    the run has fewer than two steps).

    Example, on a spectrum known in closed form: one eigenvalue 10 well above 99 eigenvalues spread
    over [0, 1] (trace 10 + 49.5 = 59.5). The top Ritz value converges in a few steps; the trace is
    estimated from the probes (one probe's relative SD is about sqrt(2 / r_eff), r_eff = Tr(H)^2 /
    ||H||_F^2 = 26.6, here 27%; eight probes, about 10%).

    >>> import torch
    >>> from flatbook.spectrum import DiagonalOperator, slq
    >>> op = DiagonalOperator(torch.cat([torch.tensor([10.0]), torch.linspace(0, 1, 99)]).double())
    >>> sp = slq(op, steps=20, probes=8, seed=0)
    >>> round(sp.lambda_max, 8), sp.lambda_max_residual < 1e-8
    (10.0, True)
    >>> abs(sp.trace / 59.5 - 1) < 3 * 0.10
    True"""
    if check and min(int(steps), _operator_size(op)) < 2:
        check_operator(op, seed=seed)
        check = False
    res = lanczos(op, steps=steps, probes=probes, seed=seed, reorthogonalize=reorthogonalize,
                  basis_device=basis_device, basis_dtype=basis_dtype, progress=progress)
    nodes, weights = res.ritz()
    tops = np.nanmax(nodes, axis=1)
    if check and res.first_pairs is not None:
        (Q, W), Y = res.first_pairs, res.top_vectors
        both = _products(op, torch.cat([Y.to(Q.device), Q[:, :1]], 1), Q.device)
        _check_symmetry_and_repeat(op, Q, W, both[:, -1:])
        residuals = _residual_norms(Y.to(Q.device), both[:, :-1], tops)
    else:
        if check:  # stopped after one step (an invariant start): check the operator the slow way
            check_operator(op, seed=seed)
        residuals = ritz_residuals(op, res.top_vectors, tops)
    settings = dict(getattr(op, "settings", {}) or {})
    settings.update({
        "estimator": "slq", "steps": int(steps), "steps_run": res.sizes.tolist(), "probes": int(probes),
        "seed": int(seed), "reorthogonalize": bool(reorthogonalize), "basis_dtype": str(basis_dtype).replace("torch.", ""),
        "seconds_per_product": res.seconds_per_product,
    })
    settings["residual"] = "measured: ||H y - theta y|| with one more product"
    return Spectrum(nodes, weights, _operator_size(op), settings, residuals)


def ritz_residuals(op: SymmetricOperator, vectors: torch.Tensor, values: np.ndarray) -> np.ndarray:
    """||H y_j - theta_j y_j|| for each column y_j of ``vectors`` (unit Ritz vectors) and its Ritz value
    ``values[j]``, from one product H Y: the residual as the operator computes it (its rounding
    included), which the recurrence's beta_m |u_m| underestimates once it falls below that rounding.
    Some eigenvalue of H lies within it of theta_j (Krylov-Bogoliubov)."""
    Y = vectors.to(torch.float64)
    return _residual_norms(Y, _products(op, Y, Y.device), values)


def _residual_norms(Y: torch.Tensor, HY: torch.Tensor, values: np.ndarray) -> np.ndarray:
    theta = torch.as_tensor(np.asarray(values, dtype=np.float64), device=Y.device)
    return (HY - Y * theta).norm(dim=0).cpu().numpy()


def _check_symmetry_and_repeat(op: SymmetricOperator, Q: torch.Tensor, W: torch.Tensor, again: torch.Tensor,
                               rtol: float | None = None) -> float:
    """``check_operator``'s two tests on products a run already made: u = Q[:, 0], v = Q[:, 1] (unit
    Lanczos vectors) with W = H Q, the relative asymmetry |u^T H v - v^T H u| / max(||H u||, ||H v||),
    and ``again``, a repeated product of u, against W[:, 0]. ValueError above ``rtol`` (default 1e-6
    for float64 products, 1e-3 otherwise); returns the asymmetry."""
    if rtol is None:
        rtol = 1e-6 if getattr(op, "dtype", torch.float64) == torch.float64 else 1e-3
    scale = float(W.norm(dim=0).max()) or 1.0
    asym = abs(float(Q[:, 0] @ W[:, 1] - Q[:, 1] @ W[:, 0])) / scale
    if asym > rtol:
        raise ValueError(f"the operator is not symmetric (relative asymmetry {asym:.2e} > {rtol:g}): the products "
                         "are not those of a Hessian (a framework bug in double backward, e.g. weight_norm, or a "
                         "random forward pass)")
    change = float((again[:, 0] - W[:, 0]).norm() / (W[:, 0].norm() or 1.0))
    if change > rtol:
        raise ValueError(f"the operator is not deterministic (a repeated product differs by {change:.2e} relative): "
                         "random forward passes (dropout, augmentation) or data that change between passes")
    return asym


@dataclass(frozen=True)
class TraceEstimate:
    """A Hutchinson trace estimate: ``value`` (mean of the samples' z^T H z), ``stderr`` (its standard
    error over the samples) and ``samples`` (how many Rademacher probes)."""
    value: float
    stderr: float
    samples: int


def hutchinson_trace(op: SymmetricOperator, samples: int = 100, *, seed: int = 0, block: int = 16) -> TraceEstimate:
    """Hutchinson's estimator: mean of z^T H z over Rademacher vectors z, ``block`` at a time."""
    P = _operator_size(op)
    samples = positive_int("samples", samples)
    block = positive_int("block", block)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    values = []
    done = 0
    while done < samples:
        k = min(block, samples - done)
        Z = torch.randint(0, 2, (P, k), generator=gen, dtype=torch.int64).to(torch.float64) * 2 - 1
        HZ = _products(op, Z, torch.device("cpu"))
        values.append((Z * HZ).sum(dim=0).numpy())
        done += k
    v = np.concatenate(values)
    mean, se = _mean_se(v)
    return TraceEstimate(mean, se, samples)


def top_eigenvalues(op: SymmetricOperator, k: int = 1, *, tol: float = 1e-8, seed: int = 0,
                    maxiter: int | None = None) -> np.ndarray:
    """The k largest (algebraic) eigenvalues, descending, by ARPACK's implicitly restarted
    Lanczos (scipy.sparse.linalg.eigsh) on the operator's products, to relative tolerance ``tol``.

    Example: the two largest of a diagonal matrix, known in closed form.

    >>> from flatbook.spectrum import DiagonalOperator, top_eigenvalues
    >>> values = top_eigenvalues(DiagonalOperator([5.0, 1.0, 3.0, 2.0, 4.0, 0.5]), k=2)
    >>> [round(float(v), 8) for v in values]
    [5.0, 4.0]"""
    from scipy.sparse.linalg import LinearOperator, eigsh

    P = _operator_size(op)
    k = positive_int("k", k)
    if k >= P:
        raise ValueError(f"k must be < num_params={P} for the iterative solver, got k={k}; use dense_hessian")
    seed = check_seed(seed)
    gen = np.random.default_rng(seed)

    def mv(v: np.ndarray) -> np.ndarray:
        V = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)).reshape(P, -1)
        return _products(op, V, torch.device("cpu")).numpy().reshape(v.shape)

    lin = LinearOperator((P, P), matvec=mv, matmat=mv, dtype=np.float64)
    values = eigsh(lin, k=k, which="LA", tol=tol, v0=gen.standard_normal(P),
                   maxiter=maxiter, return_eigenvectors=False)
    return np.sort(values)[::-1]
