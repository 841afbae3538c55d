"""BatchNorm: which Hessian? (the paper's Appendix C) The same trained weights, measured twice.

A BatchNorm layer computes its output with the statistics of the batch in training mode and
with its running statistics in evaluation mode. The Hessian of the training loss therefore
depends on a choice the other parameters do not have:

* ``bn_mode="train"``: every batch is normalised with its own mean and variance, so each
  image's loss depends on the whole batch (the function differentiated is not the deployed
  one, and it changes with the batch composition). The paper's main experiments use it.
* ``bn_mode="eval"``: the running statistics, constants for the Hessian: the deployed model,
  whose predictions the validation accuracy measures.

``mode_table(results, eval_spectra)``: one row per (weight decay, mode) with lambda_1, trace,
Frobenius norm and the validation accuracy; ``verdict(table)``: the ratio eval / train of each
measure per weight decay, the ratio of the most to the least regularised solution in each mode,
and whether the regularised solution is the sharper one in each mode (the paper: in eval mode
the regularised WRN-28x10 is ~1000x sharper by lambda_1, Frobenius 4.9e-5 against 9.8e-12).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["PAPER_REPORTED", "check_bn_parameters", "mode_table", "verdict"]

# Appendix C, WRN-28x10 on CIFAR-100 with BatchNorm in eval mode (the paper's numbers, quoted)
PAPER_REPORTED = {"wrn28x10": {"frobenius": {0.0: 9.8e-12, 5e-4: 4.9e-5}, "val_acc": {0.0: 75.2, 5e-4: 80.6}}}


def check_bn_parameters(model: str, dataset: str, train_per_class: int | None, image_size: int | None,
                        pad_to: int | None, model_options: dict, epochs: int, lr: float, batch_size: int,
                        momentum: float, weight_decays: list[float], lanczos_steps: int, probes: int,
                        hessian_samples: int | None, val_size: int, seed: int, results_dir: str | None) -> None:
    """Every parameter of the BatchNorm appendix (ValueError naming it); the model must have
    BatchNorm layers (without them both modes are the same Hessian)."""
    import torch

    from .experiments import _build
    from .train import has_batchnorm
    from .weight_decay import CNN_MODELS, _check_weight_decays, cnn_chapter_config

    if model not in CNN_MODELS + ("vgg16bn",):
        raise ValueError(f"model must be one of {CNN_MODELS + ('vgg16bn',)}, got {model!r}")
    _check_weight_decays("weight_decays", weight_decays)
    if results_dir is not None and not isinstance(results_dir, str):
        raise ValueError(f"results_dir must be null or a path, got {results_dir!r}")
    config = cnn_chapter_config(model, dataset, train_per_class, image_size, pad_to, model_options, epochs, lr,
                                batch_size, momentum, lanczos_steps, probes, hessian_samples, "train", val_size,
                                seed).resolved()
    with torch.device("meta"):
        if not has_batchnorm(_build(config)):
            raise ValueError(f"model {model!r} has no BatchNorm layer: train and eval mode give the same Hessian")


def mode_table(results: Sequence[Any], eval_spectra: Sequence[Any]):
    """A DataFrame indexed by (weight_decay, bn_mode): lambda_max, trace, frobenius (and their
    standard errors with probes > 1), val_acc (percent), and the paper's numbers where it reports
    them (eval mode, ``PAPER_REPORTED``). ``results``: experiments.Results whose spectra are in
    train mode; ``eval_spectra``: the same models' spectra in eval mode, in the same order."""
    import pandas as pd

    if len(results) != len(eval_spectra) or not results:
        raise ValueError(f"one eval-mode spectrum per result expected, got {len(eval_spectra)} for {len(results)}")
    rows = []
    for r, eval_spectrum in zip(results, eval_spectra):
        if r.config.bn_mode != "train" or r.spectrum is None:
            raise ValueError("each result must carry its train-mode spectrum (bn_mode 'train', spectrum on)")
        paper = PAPER_REPORTED.get(r.config.model, {})
        for mode, s in (("train", r.spectrum), ("eval", eval_spectrum)):
            row = {"weight_decay": float(r.config.weight_decay), "bn_mode": mode, "lambda_max": s.lambda_max,
                   "trace": s.trace, "frobenius": s.frobenius, "val_acc": 100 * r.metrics["val_acc"]}
            if s.probes > 1:
                row.update({"lambda_max_se": s.lambda_max_se, "trace_se": s.trace_se, "frobenius_se": s.frobenius_se})
            if mode == "eval":
                for quantity, by_wd in paper.items():
                    row[f"paper_{quantity}"] = by_wd.get(row["weight_decay"], math.nan)
            rows.append(row)
    table = pd.DataFrame(rows).set_index(["weight_decay", "bn_mode"]).sort_index()
    if table.index.duplicated().any():
        raise ValueError("duplicate weight decays")
    return table


def verdict(table) -> dict[str, Any]:
    """From ``mode_table``: ``eval_over_train[q][wd]`` for q in lambda_max, trace, frobenius;
    ``regularised_over_unregularised[mode][q]`` (the largest weight decay's value over the
    smallest's); ``regularised_sharper[mode]`` (by lambda_1); ``mode_matters``: True when some
    lambda_1 or Frobenius norm changes by more than 10% between the modes."""
    wds = sorted(set(table.index.get_level_values(0)))
    if len(wds) < 2:
        raise ValueError("the verdict compares weight decays: at least two are needed")
    out: dict[str, Any] = {"eval_over_train": {}, "regularised_over_unregularised": {}, "regularised_sharper": {}}
    for q in ("lambda_max", "trace", "frobenius"):
        out["eval_over_train"][q] = {wd: float(table.loc[(wd, "eval"), q] / table.loc[(wd, "train"), q]) for wd in wds}
    for mode in ("train", "eval"):
        out["regularised_over_unregularised"][mode] = {
            q: float(table.loc[(wds[-1], mode), q] / table.loc[(wds[0], mode), q])
            for q in ("lambda_max", "trace", "frobenius")}
        out["regularised_sharper"][mode] = out["regularised_over_unregularised"][mode]["lambda_max"] > 1
    changes = [abs(math.log(v)) for q in ("lambda_max", "frobenius") for v in out["eval_over_train"][q].values()
               if v > 0]
    out["mode_matters"] = bool(changes) and max(changes) > math.log(1.1)
    return out
