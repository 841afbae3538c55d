"""The numerical side of the "Theorem 1" chapter: the models, the fitted set, the verdicts.

* ``check_theorem_parameters(...)``: every parameter of the chapter, checked together.
* ``chapter_configs(...)``: the experiments.Config of the logistic regression and of the MLP the
  chapter trains (no spectrum at training time; the chapter measures its own).
* ``fitted_subset(model, x, y, n)``: the first ``n`` training images the model classifies
  correctly. Theorem 1's premise is a training loss tending to 0; scaling the weights sends the
  loss to 0 only on correctly classified samples (on a misclassified one it grows without bound,
  and the residual term of the Hessian with it), so the Hessians of the scaling experiment are
  taken over this set, and the chapter says so.
* ``monotone_fraction(values)`` and ``scaling_verdict(df, transform)``: what a sweep shows
  (sharpness may first rise while the Jacobian grows, then fall once the softmax saturates),
  computed, never asserted.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .experiments import Config

ROUNDING_LIMIT = 1e-3  # relative asymmetry of the computed Hessian products
ROUNDING_LOSS = 1e-12  # mean loss below which 1 - p_c nears float64's rounding unit on the fitted images

__all__ = ["ROUNDING_LIMIT", "ROUNDING_LOSS", "check_theorem_parameters", "check_training_parameters", "chapter_configs", "fitted_subset", "monotone_fraction", "scaling_verdict"]


def _positive_int(name: str, v: Any, low: int = 1, high: int | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
        rng = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {rng}, got {v!r}")


def _positive_number(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")


def check_theorem_parameters(dataset: str, image_size: int | None, train_per_class: int | None, epochs: int,
                             lr: float, mlp_hidden: Sequence[int], fitted_samples: int, alpha_min: float,
                             alpha_max: float, num_alphas: int, lanczos_steps: int, probes: int,
                             exact_samples: int, exact_lanczos_steps: int, seed: int,
                             results_dir: str | None) -> None:
    """Every parameter of the Theorem 1 chapter (raises ValueError naming the bad one)."""
    for name, v in (("fitted_samples", fitted_samples), ("num_alphas", num_alphas), ("lanczos_steps", lanczos_steps),
                    ("probes", probes), ("exact_samples", exact_samples),
                    ("exact_lanczos_steps", exact_lanczos_steps)):
        _positive_int(name, v)
    _positive_number("alpha_min", alpha_min)
    _positive_number("alpha_max", alpha_max)
    if alpha_max < alpha_min:
        raise ValueError(f"alpha_max ({alpha_max}) must be at least alpha_min ({alpha_min})")
    check_training_parameters(dataset, image_size, train_per_class, epochs, lr, mlp_hidden, seed, results_dir)


def check_training_parameters(dataset: str, image_size: int | None, train_per_class: int | None, epochs: int,
                              lr: float, mlp_hidden: Sequence[int], seed: int,
                              results_dir: str | None) -> tuple[Config, Config]:
    """The training parameters shared by the Theorem 1 chapter and the Lanczos appendix, checked
    (ValueError naming the bad one); returns their resolved (logistic regression, MLP) configs."""
    if dataset not in ("mnist", "fashion-mnist"):
        raise ValueError(f"dataset must be 'mnist' or 'fashion-mnist' (28x28 greyscale), got {dataset!r}")
    if not (isinstance(mlp_hidden, (list, tuple)) and mlp_hidden
            and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in mlp_hidden)):
        raise ValueError(f"mlp_hidden must be a non-empty list of layer widths >= 1, got {mlp_hidden!r}")
    _positive_int("seed", seed, low=0)
    if results_dir is not None and not isinstance(results_dir, str):
        raise ValueError(f"results_dir must be null or a path, got {results_dir!r}")
    # ConfigError (a ValueError) names the field: epochs, lr, image_size, ...
    logreg, mlp = chapter_configs(dataset, image_size, train_per_class, epochs, lr, mlp_hidden, seed)
    return logreg.resolved(), mlp.resolved()


def chapter_configs(dataset: str, image_size: int | None, train_per_class: int | None, epochs: int, lr: float,
                    mlp_hidden: Sequence[int], seed: int) -> tuple[Config, Config]:
    """(logistic regression, MLP): SGD with momentum 0.9, batch 128, no weight decay, the paper's
    schedule; no spectrum (the chapter measures its own)."""
    common = dict(dataset=dataset, image_size=image_size, train_per_class=train_per_class, epochs=epochs, lr=lr,
                  seed=seed, spectrum=False)
    return (Config(model="logreg", **common),
            Config(model="mlp", model_options={"hidden": list(mlp_hidden)}, **common))


@torch.no_grad()
def fitted_subset(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (in data order) samples of (x, y) that ``model`` classifies correctly."""
    model = model.eval()
    correct = []
    for i in range(0, len(x), 4096):
        correct.append(model(x[i:i + 4096]).argmax(1) == y[i:i + 4096])
    idx = torch.nonzero(torch.cat(correct)).flatten()[:n]
    if len(idx) == 0:
        raise ValueError("the model classifies no training sample correctly")
    return x[idx], y[idx]


def monotone_fraction(values: Sequence[float], decreasing: bool = True) -> float:
    """The fraction of consecutive steps in which ``values`` move the stated way (1.0 = monotone)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return float("nan")
    d = np.diff(v)
    return float(np.mean(d < 0 if decreasing else d > 0))


def scaling_verdict(df, transform: str) -> dict[str, Any]:
    """What a ``scaling.scaling_sweep`` table shows (rows whose products' relative asymmetry
    exceeds ``ROUNDING_LIMIT``, or, except for "dinh", whose loss is below ``ROUNDING_LOSS``, are
    left out and counted): predictions unchanged; for "output"/"all":
    whether the loss decreases (trailing exact zeros, an underflowed loss, count once), the
    loss, lambda_1 and Frobenius ratios from the first to the last alpha, and for lambda_1 and
    Frobenius the alpha of their maximum, peak / first, last / first, last / peak, and whether
    they fall monotonically from a maximum that is not the last point; for "dinh":
    the loss constant and the lambda_1 ratio."""
    out: dict[str, Any] = {"transform": transform,
                           "predictions_unchanged": bool((df["predictions_changed"] == 0).all())}
    if "asymmetry" in df:  # rows whose products are rounding noise say nothing about curvature
        reliable = df["asymmetry"] <= ROUNDING_LIMIT
        if transform != "dinh":  # (Dinh keeps the loss: no rounding from confidence)
            reliable &= df["loss"] >= ROUNDING_LOSS
        out["rows_at_rounding_level"] = int((~reliable).sum())
        df = df[reliable]
    if len(df) == 0:
        raise ValueError("every row of the sweep is at rounding level; use a smaller alpha range")
    first, last = df.iloc[0], df.iloc[-1]
    out["lambda_max_ratio"] = float(last["lambda_max"] / first["lambda_max"])
    if transform == "dinh":
        out["loss_max_relative_change"] = float(np.max(np.abs(df["loss"] / first["loss"] - 1)))
        return out
    out["loss_ratio"] = float(last["loss"] / first["loss"])
    out["frobenius_ratio"] = float(last["frobenius"] / first["frobenius"])
    loss = df["loss"].to_numpy(dtype=float)
    end = len(loss)
    while end > 1 and loss[end - 1] == 0 and loss[end - 2] == 0:  # a loss that underflowed to 0 stays there:
        end -= 1                                                  # keep its first 0, drop the rest
    out["loss_decreasing"] = bool(end < 2 or monotone_fraction(loss[:end]) == 1.0)
    for measure in ("lambda_max", "frobenius"):
        values = df[measure].to_numpy(dtype=float)
        peak = int(np.argmax(values))
        out[f"{measure}_peak_alpha"] = float(df["alpha"].iloc[peak])
        out[f"{measure}_last_over_peak"] = float(values[-1] / values[peak])
        out[f"{measure}_peak_over_first"] = float(values[peak] / values[0])
        out[f"{measure}_last_over_first"] = float(values[-1] / values[0])
        # falls from its maximum: the maximum is not the last point and every later step goes down
        out[f"{measure}_falls_after_peak"] = bool(peak < len(values) - 1
                                                  and monotone_fraction(values[peak:]) == 1.0)
    return out
