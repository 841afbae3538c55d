"""Curvature measures that account for the scale of the weights (beyond the paper's measures).

For a network with parameter tensors w_1, ..., w_T (each weight matrix, bias, BatchNorm affine is
one tensor t) and H the Hessian of the mean training loss over them:

* **layer-normalised** (``LayerNormalizedOperator``): the operator D H D with
  D = diag(||w_t|| I_t), the Hessian in the coordinates u_t = w_t / ||w_t||. If a
  reparameterisation multiplies every tensor t by a scalar c_t > 0 and leaves the function (so
  the loss) unchanged, the Hessian at the new point is C^-1 H C^-1 with C = diag(c_t I_t) and
  the new D is C D, so D H D is *the same matrix*: its lambda_1, trace
  (= sum_t ||w_t||^2 Tr(H_tt)) and Frobenius norm are invariant. That covers Dinh et al.'s
  layer rescaling of a ReLU network (weights x alpha_l, biases x prod_{k<=l} alpha_k, with
  prod alpha_l = 1) and a weight followed by BatchNorm, which the loss does not see scaled.
  A tensor of norm 0 (a bias at its initial value) contributes nothing.
* **relative flatness** (Petzka et al., 2021, Definition 3 with the trace):
  kappa(W) = sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}) for the weight matrix W (rows w_s, one per
  output unit s) of one linear layer, H_{s,s'} the Hessian block of rows s and s'. With G = W W^T
  and the rows laid out one after the other (PyTorch's layout), kappa = Tr((G kron I) H_W),
  computed exactly from the dense Hessian block of that layer, or estimated by Hutchinson's
  method for a large layer. Invariant when the layer's
  weights are multiplied by c and the function is not changed (G -> c^2 G, H_W -> H_W / c^2),
  and under the neuron-wise rescalings Petzka et al. discuss for the penultimate layer's
  features. The paper applies it to the last layer (the classifier of the penultimate
  features), as ``relative_flatness`` does by default.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

__all__ = ["LayerNormalizedOperator", "relative_flatness", "last_linear_layer", "tensor_norms"]


def tensor_norms(model: nn.Module, names: list[str]) -> dict[str, float]:
    """||w_t||_2 (float64) of the named parameter tensors of ``model``."""
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"not parameters of the model: {unknown}")
    return {n: float(params[n].detach().double().norm()) for n in names}


class LayerNormalizedOperator:
    """v -> D H D v for a ``curvature.HessianOperator`` H over parameter tensors t, with
    D = diag(||w_t|| I_t) from the weights at construction (see the module docstring: every
    spectral quantity of D H D is invariant to function-preserving per-tensor rescalings)."""

    def __init__(self, hessian: Any, model: nn.Module):
        names = list(getattr(hessian, "param_names", []))
        numels = list(getattr(hessian, "numels", []))
        if not names or len(names) != len(numels):
            raise ValueError("LayerNormalizedOperator needs a flatbook HessianOperator (param_names, numels)")
        self.hessian = hessian
        self.norms = tensor_norms(model, names)
        self.scale = torch.cat([torch.full((k,), self.norms[n], dtype=torch.float64) for n, k in zip(names, numels)])
        self.num_params = hessian.num_params
        self.device = hessian.device
        self.dtype = hessian.dtype
        self.settings: dict[str, Any] = {**dict(getattr(hessian, "settings", {}) or {}),
                                         "operator": "layer-normalised Hessian D H D, D = diag(||w_t||)"}

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """D H D V for the k columns of V, D = diag(||w_t|| per parameter tensor): one pass of the wrapped
        Hessian's ``matmat`` over the data."""
        d = self.scale.to(V.device, V.dtype)[:, None]
        return d * self.hessian.matmat(d * V)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """D H D v (``matmat`` of one column)."""
        return self.matmat(v[:, None])[:, 0]


def last_linear_layer(model: nn.Module) -> str:
    """The parameter name of the weight of the model's last ``nn.Linear`` (or 1x1-kernel
    ``nn.Conv2d`` acting as the classifier, as in All-CNN-C), in module order."""
    name = None
    for module_name, m in model.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)):
            name = f"{module_name}.weight" if module_name else "weight"
    if name is None:
        raise ValueError("the model has no nn.Linear (or 1x1 convolution) layer")
    return name


def relative_flatness(model: nn.Module, loss_fn: Callable, data: Any, *, layer: str | None = None,
                      batch_size: int | None = None, bn_mode: str = "train", dense_up_to: int = 4096,
                      probes: int = 100, seed: int = 0) -> float:
    """Petzka et al.'s relative flatness kappa_Tr of the weight matrix ``layer`` (a parameter name;
    default the last linear layer's weight): sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}) = Tr((G kron I) H_W),
    G = W W^T, H_W the Hessian block of that layer of the mean loss over ``data`` (see
    ``curvature.HessianOperator`` for ``data``, ``batch_size``, ``bn_mode``). A 1x1 convolution's
    kernel is its (out, in) matrix.

    Exact (float64) from the dense block when the layer has at most ``dense_up_to`` weights;
    otherwise Hutchinson's estimate with ``probes`` Rademacher vectors z (seeded):
    mean_z z^T (G kron I) H_W z, whose expectation is the trace (one pass over the data for all
    probes). The products only differentiate through the layer, so they are cheap."""
    from .checks import positive_int
    from .curvature import HessianOperator, dense_hessian
    from .spectrum import hutchinson_trace

    layer = last_linear_layer(model) if layer is None else layer
    params = dict(model.named_parameters())
    if layer not in params:
        raise ValueError(f"layer {layer!r} is not a parameter of the model; names are {list(params)}")
    positive_int("probes", probes)
    W = params[layer].detach().double()
    if W.ndim == 4 and W.shape[2:] == (1, 1):
        W = W[:, :, 0, 0]
    if W.ndim != 2:
        raise ValueError(f"layer {layer!r} has shape {tuple(params[layer].shape)}: relative flatness needs a "
                         "weight matrix (a linear layer or a 1x1 convolution)")
    m, d = W.shape
    G = (W @ W.T).cpu()
    if m * d <= dense_up_to:
        H = dense_hessian(model, loss_fn, data, batch_size=batch_size, bn_mode=bn_mode, params=[layer],
                          max_params=dense_up_to, block=m * d)  # all columns in one pass over the data
        # H indexed ((s, j), (s', j')) row-major; Tr(H_{s,s'}) = sum_j H[(s, j), (s', j)]
        block_traces = H.reshape(m, d, m, d).diagonal(dim1=1, dim2=3).sum(-1)  # (m, m)
        return float((G * block_traces).sum())
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, bn_mode=bn_mode, params=[layer])
    return hutchinson_trace(_GramWeightedOperator(op, G, m, d), samples=probes, seed=seed, block=probes).value


class _GramWeightedOperator:
    """V -> (G kron I_d) H_W V for the layer's Hessian block H_W (an operator on its m x d weights,
    rows laid out one after the other): its trace is the relative flatness. Not symmetric, which
    Hutchinson's estimator z^T A z of Tr(A) does not need."""

    def __init__(self, hessian: Any, G: torch.Tensor, m: int, d: int):
        self.hessian, self.G, self.m, self.d = hessian, G, m, d
        self.num_params = m * d
        self.device = torch.device("cpu")
        self.dtype = hessian.dtype

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        HV = self.hessian.matmat(V).cpu().to(torch.float64)  # (m d, k)
        k = HV.shape[1]
        # (G kron I) u for each column u: with U as an (m, d) matrix, G @ U
        return (self.G @ HV.T.reshape(k, self.m, self.d)).reshape(k, self.m * self.d).T
