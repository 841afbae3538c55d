"""Exact Hessians where a closed form exists, and what they predict about the spectrum.

Logistic regression (``models.build("logreg")``: one Linear layer, weight W (K x D), bias b) on
samples x_n with labels y_n, N samples, p_n = softmax(W x_n + b), x~_n = [x_n; 1]:

    H = (1/N) sum_n (diag p_n - p_n p_n^T) kron (x~_n x~_n^T)

in the class-by-class order of [W b]; ``logreg_hessian`` returns it in the order of the model's
own flat parameter vector (all of W row-major, then b), so it compares entry by entry with
``curvature.dense_hessian`` and ``HessianOperator``.

Softmax invariance (adding the same vector to every class's weights changes no probability)
and any linear dependence among the inputs give exact zero eigenvalues. With
d0 = (D + 1) - rank(X~) (X~ the N x (D+1) matrix of the x~_n), the null space of H, when every
p_n has all entries in (0, 1), has dimension exactly

    (D + 1) + (K - 1) d0

(V x~_n must be a multiple of the all-ones vector for every n: V = 1 v^T + U with the rows of
the column-centred U orthogonal to the row space of X~). For MNIST-shaped data D + 1 = 785.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..checks import integer

__all__ = ["logreg_hessian", "null_space_dimension", "zero_eigenvalue_count", "softmax_null_residual",
           "rarely_active_features"]


def _logreg_parts(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    others = [m for m in model.modules() if not isinstance(m, (nn.Linear, nn.Flatten, nn.Sequential))]
    if len(linears) != 1 or others or linears[0].bias is None:
        raise ValueError("logreg_hessian needs a logistic regression: one Linear layer with bias (and Flatten)")
    return linears[0]


@torch.no_grad()
def logreg_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
                   chunk: int = 4096) -> torch.Tensor:
    """The exact Hessian of the mean cross-entropy of logistic regression ``model`` over ``x``
    (labels do not enter: the Hessian of softmax cross-entropy does not depend on them), float64,
    in the model's parameter order. Cost O(N K^2 D^2): for MNIST-shaped data about a minute per
    10,000 samples on 2 cores."""
    layer = _logreg_parts(model)
    W = layer.weight.detach().double().cpu()
    b = layer.bias.detach().double().cpu()
    K, D = W.shape
    if len(x) == 0:
        raise ValueError("no samples")
    xf = x.detach().double().cpu().reshape(len(x), -1)
    if xf.shape[1] != D:
        raise ValueError(f"the inputs have {xf.shape[1]} features, the model expects {D}")
    N = len(xf)
    blocks = torch.zeros(K, K, D + 1, D + 1, dtype=torch.float64)
    for start in range(0, N, chunk):
        xs = xf[start:start + chunk]
        xt = torch.cat([xs, torch.ones(len(xs), 1, dtype=torch.float64)], dim=1)  # (n, D+1)
        p = torch.softmax(xs @ W.T + b, dim=1)  # (n, K)
        for k in range(K):
            for j in range(k, K):
                a = (p[:, k] * ((1.0 if k == j else 0.0) - p[:, j]))  # A_n[k, j]
                block = xt.T @ (a[:, None] * xt)
                blocks[k, j] += block
                if j != k:
                    blocks[j, k] += block
    blocks /= N
    # reorder from (class, feature-with-bias) to the model's order: W row-major then b
    full = blocks.permute(0, 2, 1, 3).reshape(K * (D + 1), K * (D + 1))
    order = [k * (D + 1) + i for k in range(K) for i in range(D)] + [k * (D + 1) + D for k in range(K)]
    idx = torch.tensor(order)
    return full[idx][:, idx].contiguous()


def null_space_dimension(x: torch.Tensor, num_classes: int, *, rtol: float = 1e-10) -> dict[str, int]:
    """The predicted number of exact zero eigenvalues of the logistic-regression Hessian on
    inputs ``x`` (see the module docstring): {"features": D + 1, "rank": rank(X~), "d0": ...,
    "softmax": D + 1, "data": (K - 1) d0, "total": ...}. The rank counts singular values above
    ``rtol`` times the largest."""
    integer("num_classes", num_classes, 2)
    if len(x) == 0:
        raise ValueError("no samples")
    xf = x.detach().double().cpu().reshape(len(x), -1)
    xt = torch.cat([xf, torch.ones(len(xf), 1, dtype=torch.float64)], dim=1)
    s = torch.linalg.svdvals(xt)
    rank = int((s > rtol * s[0]).sum())
    D1 = xt.shape[1]
    d0 = D1 - rank
    return {"features": D1, "rank": rank, "d0": d0, "softmax": D1, "data": (num_classes - 1) * d0,
            "total": D1 + (num_classes - 1) * d0}


def zero_eigenvalue_count(eigenvalues: np.ndarray | torch.Tensor, *, rtol: float = 1e-9) -> int:
    """How many eigenvalues have |lambda| <= rtol * max |lambda|."""
    e = np.abs(np.asarray(eigenvalues, dtype=np.float64))
    return int((e <= rtol * e.max()).sum())


def softmax_null_residual(H: torch.Tensor, num_classes: int) -> float:
    """||H N||_F / (||H||_F ||N||_F) for N the D + 1 softmax-invariance directions (the same
    change to every class's weights for one input feature or the bias), in the model's parameter
    order (W row-major, then b). Round-off level (~1e-16) means they are exact null vectors.
    (Frobenius norms: a spectral norm would cost an SVD of H.)"""
    H = torch.as_tensor(H, dtype=torch.float64)
    P = H.shape[0]
    K = int(num_classes)
    if P % K != 0:
        raise ValueError(f"{P} parameters are not a multiple of {K} classes")
    D = P // K - 1
    HN = torch.cat([H[:, :K * D].reshape(P, K, D).sum(1), H[:, K * D:].sum(1, keepdim=True)], dim=1)  # (P, D+1)
    norm_N = math.sqrt(K * (D + 1))
    return float(HN.norm() / (H.norm() * norm_N))


def rarely_active_features(x: torch.Tensor, max_fraction: float = 0.01) -> int:
    """How many input features (pixels) differ from their most common value in at most
    ``max_fraction`` of the samples: nearly constant inputs, whose weights the data barely
    constrain (small, but not zero, curvature)."""
    if not (isinstance(max_fraction, (int, float)) and 0 <= max_fraction < 1):
        raise ValueError(f"max_fraction must be a number in [0, 1), got {max_fraction!r}")
    xf = x.detach().reshape(len(x), -1).cpu()
    if len(xf) == 0:
        raise ValueError("no samples")
    mode = torch.mode(xf, dim=0).values
    differs = (xf != mode).double().mean(0)
    return int((differs <= max_fraction).sum())
