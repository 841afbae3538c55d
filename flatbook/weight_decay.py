"""The weight-decay experiments' tables and verdicts (the paper's Section 4), from Results.

* ``PAPER_REPORTED``: the numbers the paper reports for each model and weight decay (from its
  text and tables, quoted as such; see PAPER.md), keyed by model name, then by quantity, then by
  weight decay. Missing entries are absent, never invented.
* ``results_table(results)``: one row per weight decay, sorted: train/val/test accuracy, the
  generalisation gap (train - val accuracy), ||w||, lambda_1, trace and Frobenius norm (with
  standard errors when the spectrum had more than one probe), and, where the paper reports it,
  the paper's number beside ours.
* ``forward_flops(config)`` and ``paper_cost(result, paper)``: what the paper's own setting
  would cost, extrapolated from a measured run of a smaller one by FLOP counts.
* ``decay_exponent(config, train_samples)``: how far the weight-decay term alone could shrink
  the weights over a whole training run, to compare a short run with the paper's.
* ``trend(weight_decays, values)`` and ``verdict(table)``: whether a quantity increases with
  the weight decay, as the data say: "increasing" only if every step up in weight decay raises
  it, "decreasing" only if every step lowers it, otherwise "mixed", with Kendall's tau. The
  paper's claim reproduces when lambda_1 (trace, Frobenius) and the validation accuracy are
  both "increasing".
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["PAPER_REPORTED", "results_table", "trend", "verdict", "kendall_tau", "TRENDS", "check_logreg_parameters",
           "check_mlp_parameters", "chapter_config", "CNN_MODELS", "check_allcnnc_parameters",
           "check_preresnet_parameters", "check_wrn_parameters", "cnn_chapter_config", "forward_flops",
           "paper_cost", "decay_exponent", "train_split_size"]

TRENDS = ("increasing", "decreasing", "mixed", "flat")

# The paper's reported numbers (PAPER.md, "Numbers the paper reports"), accuracies in percent.
PAPER_REPORTED: dict[str, dict[str, dict[float, float]]] = {
    "logreg": {"val_acc": {0.0: 93.48, 1e-4: 94.00, 5e-4: 94.08},
               "lambda_max": {0.0: 12.26, 1e-4: 14.17, 5e-4: 15.84}},
    "mlp": {"val_acc": {0.0: 94.4, 1e-4: 96.46, 5e-4: 96.7},
            "gap": {0.0: 0.48, 1e-4: 0.51, 5e-4: 0.04}},
    "allcnnc": {"train_acc": {0.0: 86.3, 1e-4: 87.9, 5e-4: 86.0},
                "gap": {0.0: 32.4, 1e-4: 32.5, 5e-4: 31.1}},
    "preresnet164": {"train_acc": {0.0: 99.987, 1e-4: 99.985, 5e-4: 99.87},
                     "test_acc": {0.0: 72.78, 1e-4: 75.56, 5e-4: 76.76}},
    "wrn28x10": {"train_acc": {0.0: 99.984, 1e-4: 99.984, 5e-4: 99.982},
                 "val_acc": {0.0: 75.2, 1e-4: 79.5, 5e-4: 80.6}},
}

_PERCENT = ("train_acc", "val_acc", "test_acc", "gap")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between x and y (ties handled; NaN when either is constant)."""
    from scipy.stats import kendalltau

    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} values and y has {len(y)}")
    if len(x) < 2:
        return float("nan")
    return float(kendalltau(np.asarray(x, dtype=float), np.asarray(y, dtype=float)).statistic)


def trend(weight_decays: Sequence[float], values: Sequence[float], rtol: float = 0.0,
          se: Sequence[float] | None = None, z: float = 2.0) -> str:
    """How ``values`` move as the weight decay grows: "increasing" (every step up raises the
    value), "decreasing" (every step lowers it), "flat" (no step changes it), else "mixed". A
    step between neighbouring weight decays counts as a change only if it exceeds ``rtol``
    relative to the smaller weight decay's value AND, when the values' standard errors ``se`` are
    given, ``z`` times the standard error of the difference, sqrt(se_i^2 + se_j^2). Needs at
    least two distinct weight decays; NaN values make it "mixed"."""
    wd = np.asarray(weight_decays, dtype=float)
    v = np.asarray(values, dtype=float)
    if wd.shape != v.shape or wd.ndim != 1:
        raise ValueError(f"weight_decays and values must be 1-D of one length, got {wd.shape} and {v.shape}")
    if len(np.unique(wd)) != len(wd) or len(wd) < 2:
        raise ValueError(f"trend needs at least two distinct weight decays, got {list(weight_decays)}")
    if not (isinstance(rtol, (int, float)) and rtol >= 0):
        raise ValueError(f"rtol must be a number >= 0, got {rtol!r}")
    if np.isnan(v).any():
        return "mixed"
    order = np.argsort(wd)
    d = np.diff(v[order])
    tol = rtol * np.maximum(np.abs(v[order][:-1]), np.finfo(float).tiny)
    if se is not None:
        e = np.asarray(se, dtype=float)
        if e.shape != v.shape or (e < 0).any() or np.isnan(e).any():
            raise ValueError(f"se must hold one standard error >= 0 per value, got {list(se)}")
        if not (isinstance(z, (int, float)) and z >= 0):
            raise ValueError(f"z must be a number >= 0, got {z!r}")
        tol = np.maximum(tol, z * np.hypot(e[order][:-1], e[order][1:]))
    up, down = d > tol, d < -tol
    if up.all():
        return "increasing"
    if down.all():
        return "decreasing"
    if not (up | down).any():
        return "flat"
    return "mixed"


def results_table(results: Sequence[Any]):
    """A DataFrame indexed by weight decay (see the module docstring) from experiments.Results
    of ONE model (same config except the weight decay). Accuracies and the gap in percent."""
    import pandas as pd

    if not results:
        raise ValueError("no results")
    models = {r.config.model for r in results}
    if len(models) != 1:
        raise ValueError(f"results of one model expected, got {sorted(models)}")
    model = models.pop()
    rows = []
    for r in results:
        m = r.metrics
        row = {"weight_decay": float(r.config.weight_decay),
               "train_acc": 100 * m["train_acc"], "val_acc": 100 * m["val_acc"], "test_acc": 100 * m["test_acc"],
               "gap": 100 * (m["train_acc"] - m["val_acc"]), "train_loss": m["train_loss"],
               "weight_norm": m["weight_norm"],
               # binomial standard error of the validation accuracy (val_size images)
               "val_acc_se": 100 * math.sqrt(m["val_acc"] * (1 - m["val_acc"]) / r.config.val_size)}
        if r.spectrum is not None:
            s = r.spectrum
            row.update({"lambda_max": s.lambda_max, "trace": s.trace, "frobenius": s.frobenius})
            if s.probes > 1:
                row.update({"lambda_max_se": s.lambda_max_se, "trace_se": s.trace_se, "frobenius_se": s.frobenius_se})
        for quantity, by_wd in PAPER_REPORTED.get(model, {}).items():
            paper = by_wd.get(row["weight_decay"])
            row[f"paper_{quantity}"] = paper if paper is not None else math.nan
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("weight_decay").set_index("weight_decay")
    if table.index.duplicated().any():
        raise ValueError(f"duplicate weight decays: {sorted(table.index[table.index.duplicated()])}")
    return table


def verdict(table, rtol: float = 0.0) -> dict[str, Any]:
    """For each of lambda_max, trace, frobenius, weight_norm, val_acc, test_acc, gap present in
    ``table`` (from ``results_table``): its trend in the weight decay and Kendall's tau (a step
    within two standard errors counts as no change where the table has a ``<quantity>_se``
    column: the validation accuracy always, the spectrum's measures with probes > 1); and
    ``reproduced``: True when lambda_max AND val_acc are both "increasing" (the paper's claim:
    the better-generalising, regularised solutions are sharper), with one line saying so."""
    wd = list(table.index)
    out: dict[str, Any] = {}
    for q in ("lambda_max", "trace", "frobenius", "weight_norm", "val_acc", "test_acc", "gap"):
        if q in table:
            se = table[f"{q}_se"] if f"{q}_se" in table else None
            out[q] = {"trend": trend(wd, table[q], rtol, se=se), "kendall_tau": kendall_tau(wd, table[q])}
    sharp, acc = out.get("lambda_max", {}).get("trend"), out.get("val_acc", {}).get("trend")
    out["reproduced"] = sharp == "increasing" and acc == "increasing"
    if sharp is None:
        out["summary"] = "no spectrum: the sharpness claim cannot be checked"
    elif out["reproduced"]:
        out["summary"] = "reproduced: lambda_1 and validation accuracy both increase with the weight decay"
    else:
        out["summary"] = (f"not reproduced: lambda_1 is {sharp} and validation accuracy is {acc} "
                          "in the weight decay (steps within two standard errors count as flat)")
    return out


def _check_weight_decays(name: str, wds: Any) -> None:
    if not isinstance(wds, (list, tuple)) or len(wds) < 2:
        raise ValueError(f"{name} must be a list of at least two weight decays, got {wds!r}")
    for w in wds:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{name}: every weight decay must be a finite number >= 0, got {w!r}")
    if len(set(map(float, wds))) != len(wds):
        raise ValueError(f"{name} has repeated values: {wds!r}")


def _check_chapter(model: str, dataset: str, train_per_class: int | None, image_size: int | None, epochs: int,
                   lr: float, batch_size: int, momentum: float, weight_decays: list[float], lanczos_steps: int,
                   probes: int, hessian_samples: int | None, dense_weight_decays: list[float], workers: int,
                   seed: int, results_dir: str | None) -> None:
    from .checks import positive_int

    _check_weight_decays("weight_decays", weight_decays)
    _check_weight_decays("dense_weight_decays", dense_weight_decays)
    positive_int("workers", workers)
    if results_dir is not None and not isinstance(results_dir, str):
        raise ValueError(f"results_dir must be null or a path, got {results_dir!r}")
    chapter_config(model, dataset, train_per_class, image_size, epochs, lr, batch_size, momentum, lanczos_steps,
                   probes, hessian_samples, seed).resolved()


def check_logreg_parameters(dataset: str, train_per_class: int | None, image_size: int | None, epochs: int,
                            lr: float, batch_size: int, momentum: float, weight_decays: list[float],
                            lanczos_steps: int, probes: int, hessian_samples: int | None,
                            dense_weight_decays: list[float], exact_samples: int, workers: int, seed: int,
                            results_dir: str | None) -> None:
    """Every parameter of the logistic-regression weight-decay chapter (ValueError naming it)."""
    from .checks import positive_int

    positive_int("exact_samples", exact_samples)
    _check_chapter("logreg", dataset, train_per_class, image_size, epochs, lr, batch_size, momentum, weight_decays,
                   lanczos_steps, probes, hessian_samples, dense_weight_decays, workers, seed, results_dir)


def check_mlp_parameters(dataset: str, train_per_class: int | None, image_size: int | None, epochs: int,
                         lr: float, batch_size: int, momentum: float, weight_decays: list[float],
                         lanczos_steps: int, probes: int, hessian_samples: int | None,
                         dense_weight_decays: list[float], workers: int, seed: int,
                         results_dir: str | None) -> None:
    """Every parameter of the MLP weight-decay chapter (ValueError naming it)."""
    _check_chapter("mlp", dataset, train_per_class, image_size, epochs, lr, batch_size, momentum, weight_decays,
                   lanczos_steps, probes, hessian_samples, dense_weight_decays, workers, seed, results_dir)


def chapter_config(model: str, dataset: str, train_per_class: int | None, image_size: int | None, epochs: int,
                   lr: float, batch_size: int, momentum: float, lanczos_steps: int, probes: int,
                   hessian_samples: int | None, seed: int):
    """A weight-decay chapter's base experiments.Config (weight decay 0; sweeps replace it)."""
    from .experiments import Config

    return Config(model=model, dataset=dataset, train_per_class=train_per_class, image_size=image_size,
                  epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum, lanczos_steps=lanczos_steps,
                  probes=probes, hessian_samples=hessian_samples, seed=seed)


# --- the CIFAR architectures (All-CNN-C, PreResNet, WideResNet) -------------------------------

CNN_MODELS = ("allcnnc", "preresnet164", "wrn28x10")


def cnn_chapter_config(model: str, dataset: str, train_per_class: int | None, image_size: int | None,
                       pad_to: int | None, model_options: dict, epochs: int, lr: float, batch_size: int,
                       momentum: float, lanczos_steps: int, probes: int, hessian_samples: int | None, bn_mode: str,
                       val_size: int, seed: int):
    """A CIFAR architecture's base experiments.Config for a weight-decay sweep (weight decay 0)."""
    from .experiments import Config

    if model not in CNN_MODELS + ("vgg16bn",):
        raise ValueError(f"model must be one of {CNN_MODELS + ('vgg16bn',)}, got {model!r}")
    return Config(model=model, dataset=dataset, train_per_class=train_per_class, image_size=image_size,
                  pad_to=pad_to, model_options=model_options, epochs=epochs, lr=lr, batch_size=batch_size,
                  momentum=momentum, lanczos_steps=lanczos_steps, probes=probes, hessian_samples=hessian_samples,
                  bn_mode=bn_mode, val_size=val_size, seed=seed)


def _check_cnn(model: str, dataset: str, train_per_class: int | None, image_size: int | None, pad_to: int | None,
               model_options: dict, epochs: int, lr: float, batch_size: int, momentum: float,
               weight_decays: list[float], lanczos_steps: int, probes: int, hessian_samples: int | None,
               bn_mode: str, val_size: int, workers: int, seed: int, results_dir: str | None) -> None:
    from .checks import positive_int

    _check_weight_decays("weight_decays", weight_decays)
    positive_int("workers", workers)
    if results_dir is not None and not isinstance(results_dir, str):
        raise ValueError(f"results_dir must be null or a path, got {results_dir!r}")
    cnn_chapter_config(model, dataset, train_per_class, image_size, pad_to, model_options, epochs, lr, batch_size,
                       momentum, lanczos_steps, probes, hessian_samples, bn_mode, val_size, seed).resolved()


def check_allcnnc_parameters(**parameters: Any) -> None:
    """Every parameter of the All-CNN-C weight-decay chapter (ValueError naming it)."""
    _check_cnn("allcnnc", **parameters)


def check_preresnet_parameters(**parameters: Any) -> None:
    """Every parameter of the PreResNet weight-decay chapter (ValueError naming it)."""
    _check_cnn("preresnet164", **parameters)


def check_wrn_parameters(**parameters: Any) -> None:
    """Every parameter of the WideResNet weight-decay chapter (ValueError naming it)."""
    _check_cnn("wrn28x10", **parameters)


def forward_flops(config) -> int:
    """Floating-point operations of ONE forward pass of ``config``'s model on one input image of the
    shape the experiment feeds it (a multiply-add counts 2), counted by
    ``torch.utils.flop_counter`` on the meta device (no memory, no compute). Counts convolutions
    and matrix products, which dominate; BatchNorm, ReLU and pooling are not counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .data import NATIVE_SHAPES
    from .experiments import Config, MNIST_LIKE_MODELS, _build

    c = Config.from_dict(config).resolved()
    channels, size = NATIVE_SHAPES[c.dataset]
    if c.image_size is not None:
        size = c.image_size
    if c.pad_to is not None:
        size, channels = c.pad_to, 3
    shape = (1, size * size * channels) if c.model in MNIST_LIKE_MODELS else (1, 3, size, size)
    with torch.device("meta"):
        model = _build(c)
        x = torch.empty(shape)
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def paper_cost(measured: Any, paper: Any, runs: int = 3) -> dict[str, float]:
    """What ``runs`` experiments with config ``paper`` would cost, from a measured Result of a
    smaller config, assuming time proportional to FLOPs (an approximation: a larger model usually
    runs closer to the device's peak, so the CPU estimate is more likely high than low).

    Returns: ``train_flops`` and ``hessian_flops`` of the paper's runs (a training image costs 3
    forward passes, plus 1 for the BatchNorm-statistics pass after every epoch when the network
    has BatchNorm, plus one forward pass over the validation split every epoch; a Hessian-vector
    product per image about 6: gradient and its derivative),
    ``flops`` (their sum), and ``cpu_seconds``: the measured seconds per training image-epoch and
    per Hessian image-product of ``measured``, scaled by the FLOP ratio of the two models.
    ``paper.hessian_samples`` None means the whole training split (the paper's choice)."""
    from .experiments import Config

    m_cfg, p_cfg = measured.config, Config.from_dict(paper).resolved()
    positive = isinstance(runs, int) and not isinstance(runs, bool) and runs >= 1
    if not positive:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    if measured.spectrum is None:
        raise ValueError("the measured result has no spectrum (spectrum=False): its Hessian cost is unknown")
    f_measured, f_paper = forward_flops(m_cfg), forward_flops(p_cfg)
    n_train = train_split_size(p_cfg)
    n_hessian = n_train if p_cfg.hessian_samples is None else min(p_cfg.hessian_samples, n_train)
    m_train_images = measured.metrics["train_samples"] * m_cfg.epochs
    m_hessian_images = (min(m_cfg.hessian_samples or measured.metrics["train_samples"],
                            measured.metrics["train_samples"]) * m_cfg.lanczos_steps * m_cfg.probes)
    p_train_images = n_train * p_cfg.epochs * runs
    p_hessian_images = n_hessian * p_cfg.lanczos_steps * p_cfg.probes * runs
    ratio = f_paper / f_measured
    cpu = (measured.seconds["train"] / m_train_images * p_train_images
           + measured.seconds["spectrum"] / m_hessian_images * p_hessian_images) * ratio
    import torch

    from .experiments import _build
    from .train import has_batchnorm

    with torch.device("meta"):
        bn_pass = 1.0 if has_batchnorm(_build(p_cfg)) else 0.0
    per_epoch = (3.0 + bn_pass) * n_train + p_cfg.val_size
    train_flops = f_paper * per_epoch * p_cfg.epochs * runs
    hessian_flops = 6.0 * f_paper * p_hessian_images
    return {"forward_flops": float(f_paper), "flop_ratio": ratio, "train_flops": train_flops,
            "hessian_flops": hessian_flops, "flops": train_flops + hessian_flops, "cpu_seconds": cpu}


def train_split_size(config: Any) -> int:
    """The number of training images ``config`` trains on: the training file less the last
    ``val_size`` images, or the class-balanced subset (``train_per_class`` per class) of it."""
    from .data import TRAIN_FILE_SIZES
    from .experiments import Config, _num_classes

    c = Config.from_dict(config).resolved()
    n = TRAIN_FILE_SIZES[c.dataset] - c.val_size
    if c.train_per_class is not None:
        n = min(n, c.train_per_class * _num_classes(c.dataset))
    return n


def decay_exponent(config: Any, train_samples: int | None = None) -> float:
    """sum over every optimisation step t of lr_t * wd / (1 - momentum) for SGD with L2 (the
    heavy-ball steady state multiplies the decay term's step by 1 / (1 - momentum)), or of
    lr_t * wd for decoupled decay (AdamW, Gadam): the exponent E in w -> w exp(-E), how far the
    weight-decay term ALONE would shrink the weights over the run (ceil(train_samples /
    batch_size) steps an epoch, the config's schedule; ``train_samples`` None: the config's
    ``train_split_size``). It compares how long weight decay acts in
    two runs; it is not a prediction of ||w||, which the loss gradient also moves. Adam with
    coupled L2 is refused: its decay passes through the adaptive normalisation."""
    from .checks import positive_int
    from .experiments import Config
    from .train import learning_rate

    c = Config.from_dict(config).resolved()
    train_samples = train_split_size(c) if train_samples is None else positive_int("train_samples", train_samples)
    if c.optimizer == "adam":
        raise ValueError("optimizer 'adam' couples the L2 term with the adaptive normalisation: no decay exponent")
    steps = math.ceil(train_samples / c.batch_size)
    total_lr = sum(learning_rate(e, epochs=c.epochs, lr=c.lr, schedule=c.schedule, lr_ratio=c.lr_ratio,
                                 averaging_start=c.averaging_start, lr_averaging=c.lr_averaging)
                   for e in range(c.epochs)) * steps
    factor = 1.0 / (1.0 - c.momentum) if c.optimizer == "sgd" else 1.0
    return total_lr * c.weight_decay * factor
