"""Sharpness measures that respect the scale of the weights (beyond the paper).

The paper's conclusion is to "use flatness in conjunction with the weights' scale". For a
network with parameter tensors w_1, ..., w_T (each weight matrix, bias, BatchNorm affine is one
tensor t) and H the Hessian of the mean training loss over them:

* **weight-scaled**: lambda_1(H) ||w||^2 and Tr(H) ||w||^2 (||w|| over all parameters).
  Invariant when every weight is multiplied by one c and the loss does not change, as for weights
  that all feed BatchNorm (scale-invariant: H(c w) = H(w) / c^2); a ReLU network without
  BatchNorm changes its function under such a rescaling, and per-layer rescalings change the
  measure.
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

``measures_table(results)`` computes all of them for cached experiments.Results (``remeasure``
stores each measurement beside the weights); ``group_results`` puts results that differ only in
the treatment (weight decay, optimiser and its settings) in one group; ``rank_correlations``
gives, in each group, Kendall's tau between every measure and the validation accuracy: a sharpness
measure that "works" has tau < 0 (flatter, better); tau > 0 makes it a false friend there.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

__all__ = ["LayerNormalizedOperator", "relative_flatness", "last_linear_layer", "tensor_norms", "MEASURES",
           "group_results", "measures_table", "rank_correlations", "resolved_groups", "check_scale_aware_parameters",
           "claims", "resolved_group_summary", "invariance_claims"]

# the measures of ``measures_table``, with how they are computed
MEASURES = {
    "lambda_max": "lambda_1(H), the paper's sharpness",
    "trace": "Tr(H)",
    "frobenius": "||H||_F",
    "lambda_max_w2": "lambda_1(H) ||w||^2",
    "trace_w2": "Tr(H) ||w||^2",
    "normalized_lambda_max": "lambda_1(D H D), D = diag(||w_t||) per tensor",
    "normalized_trace": "Tr(D H D) = sum_t ||w_t||^2 Tr(H_tt)",
    "relative_flatness": "Petzka et al. (2021), last linear layer",
}
# config fields that make runs of one group differ (the "treatment"); all other fields must match
TREATMENT_FIELDS = ("weight_decay", "optimizer", "lr", "momentum", "averaging_start", "lr_averaging", "schedule",
                    "lr_ratio")


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
        self.settings: dict[str, Any] = {**dict(getattr(hessian, "settings", {}) or {}),
                                         "operator": "layer-normalised Hessian D H D, D = diag(||w_t||)"}

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        d = self.scale.to(V.device, V.dtype)[:, None]
        return d * self.hessian.matmat(d * V)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
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
    g = torch.Generator().manual_seed(seed)
    Z = torch.randint(0, 2, (m * d, probes), generator=g).double() * 2 - 1
    HZ = op.matmat(Z).cpu()
    # z^T (G kron I) u for u = H z: with U, Z as (m, d) matrices, sum(Z * (G @ U))
    values = [(Z[:, k].reshape(m, d) * (G @ HZ[:, k].reshape(m, d))).sum() for k in range(probes)]
    return float(torch.stack(values).mean())


def check_scale_aware_parameters(lanczos_steps: int | None, probes: int, min_runs: int, models: list[str] | None,
                                 results_dir: str | None) -> None:
    """Every parameter of the scale-aware chapter (ValueError naming it)."""
    from .checks import positive_int
    from .models import NAMES

    if lanczos_steps is not None:
        positive_int("lanczos_steps", lanczos_steps)
    positive_int("probes", probes)
    if positive_int("min_runs", min_runs) < 2:
        raise ValueError(f"min_runs must be at least 2 (a rank correlation needs two runs), got {min_runs}")
    if models is not None:
        if not isinstance(models, (list, tuple)) or not models or any(m not in NAMES for m in models):
            raise ValueError(f"models must be null or a non-empty list of {NAMES}, got {models!r}")
    if results_dir is not None and not isinstance(results_dir, str):
        raise ValueError(f"results_dir must be null or a path, got {results_dir!r}")


def _group_key(config: Any) -> str:
    import json

    d = {k: v for k, v in config.to_dict().items() if k not in TREATMENT_FIELDS}
    return json.dumps(d, sort_keys=True, default=str)


def _group_label(config: Any) -> str:
    options = ", ".join(f"{k}={v}" for k, v in sorted(config.model_options.items()))
    data = config.dataset
    if config.train_per_class is not None:
        data += f" {config.train_per_class}/class"
    if config.image_size is not None:
        data += f" {config.image_size}px"
    return f"{config.model}{'(' + options + ')' if options else ''}, {data}, {config.epochs} ep"


def group_results(results: list[Any], min_runs: int = 2, models: list[str] | None = None) -> dict[str, list[Any]]:
    """Results with a spectrum, grouped by everything but the treatment (``TREATMENT_FIELDS``: the
    weight decay, and the optimiser with its learning rates, momentum and schedule);
    groups of fewer than ``min_runs`` runs are dropped. Keys are readable labels (made unique)."""
    groups: dict[str, list[Any]] = {}
    for r in results:
        if r.spectrum is None or (models is not None and r.config.model not in models):
            continue
        groups.setdefault(_group_key(r.config), []).append(r)
    out: dict[str, list[Any]] = {}
    for members in groups.values():
        if len(members) < min_runs:
            continue
        label = _group_label(members[0].config)
        k = 2
        while label in out:
            label = f"{_group_label(members[0].config)} #{k}"
            k += 1
        out[label] = sorted(members, key=lambda r: (r.config.optimizer, r.config.weight_decay))
    return out


def measures_table(groups: dict[str, list[Any]], *, lanczos_steps: int | None = None, probes: int = 1,
                   progress: bool = True):
    """One row per result of ``groups`` (from ``group_results``): group, model, optimizer,
    weight_decay, val_acc (percent), weight_norm and the ``MEASURES``. The layer-normalised
    spectrum runs ``lanczos_steps`` Lanczos steps (None: the result's own) with ``probes`` probes
    over the result's own Hessian images and BatchNorm mode; relative flatness uses the same
    images. Every measurement is cached beside the result's weights (``remeasure``)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from . import remeasure

    members = [(label, r) for label, rs in groups.items() for r in rs]
    rows = []
    for label, r in tqdm(members, desc="scale-aware measures", unit="run", disable=not progress):
        s, w = r.spectrum, r.metrics["weight_norm"]
        normalized = remeasure.spectrum(r, operator="layer-normalized", lanczos_steps=lanczos_steps, probes=probes,
                                        progress=False)
        rows.append({"group": label, "model": r.config.model, "optimizer": r.config.optimizer,
                     "weight_decay": float(r.config.weight_decay), "val_acc": 100 * r.metrics["val_acc"],
                     "val_acc_se": 100 * math.sqrt(r.metrics["val_acc"] * (1 - r.metrics["val_acc"]) / r.config.val_size),
                     "weight_norm": w, "lambda_max": s.lambda_max, "trace": s.trace, "frobenius": s.frobenius,
                     "lambda_max_w2": s.lambda_max * w ** 2, "trace_w2": s.trace * w ** 2,
                     "normalized_lambda_max": normalized.lambda_max, "normalized_trace": normalized.trace,
                     "relative_flatness": remeasure.relative_flatness(r)})
    return pd.DataFrame(rows, columns=["group", "model", "optimizer", "weight_decay", "val_acc", "val_acc_se",
                                       "weight_norm", *MEASURES])


def rank_correlations(table):
    """Kendall's tau between each measure of ``MEASURES`` and the validation accuracy, within each
    group of ``table`` (from ``measures_table``): a DataFrame, measures x groups (NaN where a
    group's accuracies or a measure's values are all tied)."""
    import pandas as pd

    from .weight_decay import kendall_tau

    out = {}
    for label, g in table.groupby("group", sort=False):
        out[label] = {m: kendall_tau(g[m].to_numpy(), g["val_acc"].to_numpy()) for m in MEASURES}
    return pd.DataFrame(out).reindex(list(MEASURES))


def resolved_groups(table, z: float = 2.0) -> list[str]:
    """The groups of ``table`` (from ``measures_table``) whose best and worst validation accuracies
    differ by more than ``z`` standard errors of their difference: only there does a ranking by
    accuracy say more than the noise of the validation set."""
    out = []
    for label, g in table.groupby("group", sort=False):
        best, worst = g["val_acc"].idxmax(), g["val_acc"].idxmin()
        se = math.hypot(g.loc[best, "val_acc_se"], g.loc[worst, "val_acc_se"])
        if g.loc[best, "val_acc"] - g.loc[worst, "val_acc"] > z * se:
            out.append(label)
    return out


def claims(table, *, seed: int = 0) -> list[Any]:
    """One claim per measure of ``MEASURES``: "<measure> is a false friend: across the groups, the
    solution that is sharper by it has the higher validation accuracy". The effect is the mean
    within-group Kendall tau between the measure and the validation accuracy; the test is the
    stratified permutation test (``stats.stratified_rank_correlation``: accuracies permuted within each
    group), so under no association a claim comes out "supported" (or "contradicted") with
    probability at most 2.5% each, whatever the number of groups. "contradicted" means the measure
    works here (flatter goes with better). "untestable" when no arrangement of these groups could
    reach p < 0.05 (too few or too small groups)."""
    from . import claims as cl
    from . import stats

    out = []
    for m, description in MEASURES.items():
        groups = [(g[m].to_numpy(), g["val_acc"].to_numpy()) for _, g in table.groupby("group", sort=False)]
        corr = stats.stratified_rank_correlation(groups, seed=seed)
        out.append(cl.trend_claim(f"{m} ({description}) is a false friend: within a group, the solution sharper by it "
                                  "has the higher validation accuracy", corr, 1,
                                  evidence=[("groups", str(len(groups)))]))
    return out


def resolved_group_summary(table, measures: tuple[str, ...] = ("lambda_max", "normalized_lambda_max"),
                           z: float = 2.0) -> str:
    """One sentence per group whose accuracies are resolved beyond noise (``resolved_groups``): the
    within-group Kendall tau of each of ``measures`` with the validation accuracy, with its exact
    permutation p-value, and what that says (false friend / works / no evidence at 5%)."""
    from . import stats

    resolved = resolved_groups(table, z)
    if not resolved:
        return "No group's best and worst validation accuracies differ by more than two standard errors."
    parts = []
    for label in resolved:
        g = table[table["group"] == label]
        bits = []
        for m in measures:
            corr = stats.rank_correlation(g[m].to_numpy(), g["val_acc"].to_numpy())
            reading = ("no evidence either way at 5%" if corr.p_value >= 0.05 or np.isnan(corr.tau) else
                       "a false friend" if corr.tau > 0 else "flatter is better")
            bits.append(f"{m}: tau {corr.tau:+.2f}, p {corr.p_value:.2g} ({reading})")
        parts.append(f"{label} ({len(g)} runs): " + "; ".join(bits))
    return "; ".join(parts) + "."


def invariance_claims(invariance) -> list[Any]:
    """Exact claims on the Dinh-rescaling check (a DataFrame with rows "trained" and "Dinh x10" and
    columns loss, lambda_max, normalized_lambda_max, relative_flatness): the loss, the layer-normalised
    lambda_1 and the relative flatness are unchanged (relative change <= 1e-6: float64 and 30 Lanczos
    steps), while the paper's lambda_1 changes by more than 1% (the non-invariance the chapter is about)."""
    from . import claims as cl

    change = invariance.loc["Dinh x10"] / invariance.loc["trained"]
    out = [cl.exact_claim(f"{q} is unchanged by Dinh's rescaling", abs(float(change[q]) - 1.0), 1e-6,
                          "relative change") for q in ("loss", "normalized_lambda_max", "relative_flatness")]
    out.append(cl.exact_claim("the paper's lambda_1 is NOT invariant: it changes by more than 1%",
                              max(0.0, 0.01 - abs(float(change["lambda_max"]) - 1.0)), 0.0,
                              "shortfall of the relative change below 1%",
                              evidence=[("relative change of lambda_1", f"{float(change['lambda_max']) - 1:+.3g}")]))
    return out
