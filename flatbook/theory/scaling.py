"""Same classifier, different sharpness: weight rescalings of ReLU networks and what they do to
the Hessian.

For a network of Linear layers and ReLUs (``nn.Sequential`` of Flatten / Linear / ReLU, e.g.
``models.build("logreg")`` or ``"mlp"``), with Linear layers l = 1..L, ReLU positive
homogeneity (relu(a t) = a relu(t), a > 0) gives three transforms (each returns a copy):

* ``scale_output(model, alpha)``: W_L, b_L <- alpha W_L, alpha b_L. Logits z <- alpha z.
* ``scale_all(model, alpha)``: with a = alpha^(1/L), W_l <- a W_l and b_l <- a^l b_l for every
  l, so hidden layer l's output is multiplied by a^l and the logits by a^L = alpha: the same
  logits as ``scale_output``, with the growth spread evenly over the layers.
* ``dinh(model, alpha, layer)``: W_l, b_l <- alpha W_l, alpha b_l and W_(l+1) <- W_(l+1) / alpha
  for the chosen ReLU layer l (Dinh et al. 2017): the SAME function, hence the same loss.

For alpha > 0 the first two multiply every logit margin z_c - z_k by a positive factor, so the
predicted class of every input is unchanged (``argmax`` is scale invariant, ties aside) while
the cross-entropy goes to 0 as the factor grows on correctly classified data.

``scaling_sweep`` measures, for each alpha, on the given data (train mode; no BatchNorm here):
mean cross-entropy, accuracy, how many predictions differ from alpha = 1's, ||w||, and the
Hessian's lambda_1, trace and Frobenius norm from ``spectrum.slq``, and the relative asymmetry
|u^T H v - v^T H u| / max(|Hu|, |Hv|) of the computed products for random unit vectors u, v
(``spectrum.check_operator``): their rounding error. It grows with alpha, because once the correct class's probability rounds to 1
the gradient's p_c - 1 has no correct digit left; rows with asymmetry above about 1e-3 are
rounding, not curvature.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import finite_number, positive_int

__all__ = ["TRANSFORMS", "linear_layers", "scale_output", "scale_all", "dinh", "scaling_sweep"]


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of a Flatten/Linear/ReLU ``nn.Sequential``, in order; anything else is
    refused (the rescalings rely on positive homogeneity)."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"the rescalings need an nn.Sequential of Flatten/Linear/ReLU, got {type(model).__name__}")
    for m in model:
        if not isinstance(m, (nn.Linear, nn.ReLU, nn.Flatten)):
            raise ValueError(f"the rescalings need Flatten/Linear/ReLU layers only (positively homogeneous), "
                             f"found {type(m).__name__}")
    layers = [m for m in model if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError("the model has no Linear layer")
    return layers


def _check_alpha(alpha: float) -> float:
    finite_number("alpha", alpha, minimum=0, strict=True)
    return float(alpha)


@torch.no_grad()
def scale_output(model: nn.Module, alpha: float) -> nn.Module:
    """A copy with the last Linear layer's weight and bias multiplied by ``alpha``."""
    alpha = _check_alpha(alpha)
    out = copy.deepcopy(model)
    last = linear_layers(out)[-1]
    last.weight.mul_(alpha)
    if last.bias is not None:
        last.bias.mul_(alpha)
    return out


@torch.no_grad()
def scale_all(model: nn.Module, alpha: float) -> nn.Module:
    """A copy with W_l <- a W_l, b_l <- a^l b_l (l = 1..L, a = alpha^(1/L)): logits times alpha."""
    alpha = _check_alpha(alpha)
    out = copy.deepcopy(model)
    layers = linear_layers(out)
    a = alpha ** (1.0 / len(layers))
    for depth, layer in enumerate(layers, start=1):
        layer.weight.mul_(a)
        if layer.bias is not None:
            layer.bias.mul_(a**depth)
    return out


@torch.no_grad()
def dinh(model: nn.Module, alpha: float, layer: int = 0) -> nn.Module:
    """A copy computing the same function: Linear layer ``layer`` (0-based, followed by a ReLU)
    times ``alpha``, the next Linear layer's weight divided by ``alpha``."""
    alpha = _check_alpha(alpha)
    out = copy.deepcopy(model)
    layers = linear_layers(out)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(layers) - 1:
        raise ValueError(f"layer must be the index of a Linear layer followed by another (0 to {len(layers) - 2}), "
                         f"got {layer!r}")
    layers[layer].weight.mul_(alpha)
    if layers[layer].bias is not None:
        layers[layer].bias.mul_(alpha)
    layers[layer + 1].weight.div_(alpha)
    return out


TRANSFORMS: dict[str, Callable[..., nn.Module]] = {"output": scale_output, "all": scale_all, "dinh": dinh}


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096):
    losses, preds = [], []
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size]).double()
        losses.append(F.cross_entropy(logits, y[i:i + batch_size], reduction="sum"))
        preds.append(logits.argmax(1))
    return float(sum(losses)) / len(x), torch.cat(preds)


def scaling_sweep(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], alphas: Sequence[float],
                  transform: str = "output", *, layer: int = 0, steps: int = 50, probes: int = 1, seed: int = 0,
                  batch_size: int = 1000, dtype: torch.dtype = torch.float64, progress: bool = False):
    """A DataFrame, one row per alpha: alpha, loss, accuracy, predictions_changed (against the
    unscaled model), weight_norm, lambda_max, trace, frobenius (and their standard errors for
    probes > 1) of the Hessian of the mean cross-entropy over ``data`` for the transformed model
    (``transform`` in "output", "all", "dinh"). Computed in ``dtype`` (float64 by default: at
    large alpha the loss and the curvature underflow float32)."""
    import pandas as pd

    from ..curvature import HessianOperator
    from ..spectrum import check_operator, slq

    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; transforms are: {', '.join(TRANSFORMS)}")
    alphas = [_check_alpha(a) for a in alphas]
    if not alphas:
        raise ValueError("alphas must hold at least one value")
    positive_int("steps", steps)
    positive_int("probes", probes)
    linear_layers(model)
    base = copy.deepcopy(model).to(dtype).eval()
    x, y = data[0].to(dtype), data[1]
    _, reference = _predict(base, x, y)
    rows = []
    iterator = alphas
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(alphas, desc=f"scaling ({transform})", unit="alpha")
    for a in iterator:
        scaled = TRANSFORMS[transform](base, a, layer) if transform == "dinh" else TRANSFORMS[transform](base, a)
        loss, pred = _predict(scaled, x, y)
        op = HessianOperator(scaled, F.cross_entropy, (x, y), batch_size=batch_size)
        # the symmetry of the computed products measures their rounding error, which grows with alpha:
        # once p_c rounds to 1, p_c - 1 (in the gradient) loses all relative precision
        asymmetry = check_operator(op, seed=seed, rtol=float("inf"))
        sp = slq(op, steps=min(steps, op.num_params), probes=probes, seed=seed, check=False)
        rows.append({"alpha": a, "loss": loss, "accuracy": float((pred == y).double().mean()),
                     "predictions_changed": int((pred != reference).sum()),
                     "weight_norm": math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in scaled.parameters())),
                     **sp.summary(), "asymmetry": asymmetry})
    return pd.DataFrame(rows)


def log_grid(low: float, high: float, num: int) -> list[float]:
    """``num`` values from ``low`` to ``high`` evenly spaced in log scale (both included)."""
    _check_alpha(low)
    _check_alpha(high)
    positive_int("num", num)
    if high < low:
        raise ValueError(f"the grid's high end {high} is below its low end {low}")
    return [float(v) for v in np.geomspace(low, high, num)] if num > 1 else [float(low)]
