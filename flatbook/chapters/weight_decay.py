"""The weight-decay experiments' tables and claims (the paper's Section 4), from Results.

* ``PAPER_REPORTED``: the numbers the paper reports, keyed by (model, dataset), then quantity, then
  weight decay (from its text and tables, quoted as such; see PAPER.md); ``paper_numbers(model)``
  gives them as their own table with the dataset they were measured on. Missing entries are
  absent, never invented.
* ``seed_table(results)``: one row per weight decay over the seeds of a sweep: means, seed-to-seed
  SDs, the binomial SE of one validation accuracy, the Ritz residual of lambda_1, the weight
  norm's late change and the decay exponent; the paper's numbers beside them only when the
  dataset is the paper's.
* ``sweep_claims(results)`` and ``grid_claims(results)``: the paper's claims as
  ``flatbook.claims.Claim`` objects (four outcomes, effect sizes with intervals, regime gates;
  see their docstrings). ``run_facts(results)``: what the runs measured about their own regime.
* ``forward_flops(config)`` and ``paper_cost(result, paper)``: what the paper's own setting
  would cost, extrapolated from a measured run of a smaller one by FLOP counts.
* ``paper_decay_exponent(model)``: the decay exponent E of the paper's own run
  (``flatbook.decay``: how far the weight-decay term alone could shrink the weights).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from .. import checks
from ..decay import decay_exponent, decay_exponent_of, train_split_size, weight_norm_change
from .base import TrainingParameters

__all__ = ["PAPER_REPORTED", "PAPER_WEIGHT_DECAYS", "paper_numbers", "paper_dataset", "paper_decay_exponent",
           "seed_table", "sweep_claims", "grid_claims", "validation_images", "evaluated_images", "interpolation_note",
           "decay_per_step_fact", "run_facts", "trained_models_fact", "paper_num_params",
           "LogregParameters", "MlpParameters", "SweepParameters",
           "chapter_config", "CNN_MODELS",
           "cnn_chapter_config", "forward_flops", "paper_cost",
           "paper_numbers_heading", "first_seed_results", "histories_by_weight_decay", "spectra_by_weight_decay",
           "sweep_speed_sentence", "exact_check_table", "exact_check_claim", "exact_trace_sentence"]

# The paper's reported numbers (PAPER.md, "Numbers the paper reports"), accuracies in percent, keyed
# by (model, dataset): a number measured on MNIST or CIFAR-100 is never set beside a Fashion-MNIST row.
PAPER_REPORTED: dict[tuple[str, str], dict[str, dict[float, float]]] = {
    ("logreg", "mnist"): {"val_acc": {0.0: 93.48, 1e-4: 94.00, 5e-4: 94.08},
                          "lambda_max": {0.0: 12.26, 1e-4: 14.17, 5e-4: 15.84}},
    ("mlp", "mnist"): {"val_acc": {0.0: 94.4, 1e-4: 96.46, 5e-4: 96.7},
                       "gap": {0.0: 0.48, 1e-4: 0.51, 5e-4: 0.04}},
    ("allcnnc", "cifar100"): {"train_acc": {0.0: 86.3, 1e-4: 87.9, 5e-4: 86.0},
                              "gap": {0.0: 32.4, 1e-4: 32.5, 5e-4: 31.1}},
    ("preresnet164", "cifar100"): {"train_acc": {0.0: 99.987, 1e-4: 99.985, 5e-4: 99.87},
                                   "test_acc": {0.0: 72.78, 1e-4: 75.56, 5e-4: 76.76}},
    ("wrn28x10", "cifar100"): {"train_acc": {0.0: 99.984, 1e-4: 99.984, 5e-4: 99.982},
                               "val_acc": {0.0: 75.2, 1e-4: 79.5, 5e-4: 80.6}},
}
PAPER_WEIGHT_DECAYS = (0.0, 1e-4, 5e-4)


def paper_dataset(model: str) -> str:
    """The dataset on which the paper reports ``model``'s Section 4 numbers."""
    for (m, d) in PAPER_REPORTED:
        if m == model:
            return d
    raise ValueError(f"the paper reports no Section 4 numbers for model {model!r}; models are "
                     f"{sorted({m for m, _ in PAPER_REPORTED})}")


def paper_numbers(model: str):
    """The paper's reported numbers for ``model`` (a DataFrame indexed by weight decay, one column per
    quantity, NaN where it reports none) and the dataset they were measured on."""
    import pandas as pd

    dataset = paper_dataset(model)
    table = pd.DataFrame(PAPER_REPORTED[(model, dataset)])
    table.index.name = "weight_decay"
    return table.sort_index(), dataset


def paper_decay_exponent(model: str) -> float:
    """E of the paper's largest weight decay (5e-4) in the paper's own setting for ``model``
    (``experiments.paper_config``: its epochs, learning rate and schedule; the training split it
    used, 45,000 CIFAR or 55,000 MNIST images), computed by ``decay_exponent``."""
    from ..experiments import paper_config

    return decay_exponent(paper_config(model, weight_decay=max(PAPER_WEIGHT_DECAYS)))


_PERCENT = ("train_acc", "val_acc", "test_acc", "gap")


@dataclass(frozen=True, kw_only=True)
class SweepParameters(TrainingParameters):
    """The parameters of a weight-decay sweep chapter on MNIST-like data (logistic regression or the
    MLP), by the names of its parameters cell; construction checks them all (ValueError naming
    one). ``weight_decays``: the sweep (at least 2, distinct, >= 0); ``dense_weight_decays``: the
    denser grid of the first seed; ``seeds``: training and probe seeds."""

    MODEL: ClassVar[str] = ""

    weight_decays: list
    dense_weight_decays: list
    workers: int
    seeds: list
    results_dir: str | None = None

    def __post_init__(self) -> None:
        checks.seed_list(self.seeds)
        checks.weight_decays("weight_decays", self.weight_decays)
        checks.weight_decays("dense_weight_decays", self.dense_weight_decays)
        checks.positive_int("workers", self.workers)
        checks.results_dir(self.results_dir)
        self.base_config().resolved()  # ConfigError (a ValueError) names the field: epochs, lr, ...

    def training_plan(self) -> list:
        """Every experiments.Config the chapter trains (each seed x weight decay, and the first
        seed's dense grid), in the order it runs them."""
        from ..experiments import unique_configs
        from ..seeds import seeded

        base = self.base_config()
        plan = [seeded(base, seed=s).replace(weight_decay=float(wd)) for s in self.seeds for wd in self.weight_decays]
        plan += [seeded(base, seed=self.seeds[0]).replace(weight_decay=float(wd)) for wd in self.dense_weight_decays]
        return unique_configs(plan)

    def base_config(self):
        """The sweep's experiments.Config for the first seed at weight decay 0."""
        return chapter_config(model=self.MODEL, dataset=self.dataset, train_per_class=self.train_per_class,
                              image_size=self.image_size, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                              momentum=self.momentum, lanczos_steps=self.lanczos_steps, probes=self.probes,
                              hessian_samples=self.hessian_samples, seed=int(self.seeds[0]))


@dataclass(frozen=True, kw_only=True)
class LogregParameters(SweepParameters):
    """The logistic-regression weight-decay chapter's parameters (``SweepParameters``) and
    ``exact_samples``, the training images of its closed-form Hessian."""

    MODEL: ClassVar[str] = "logreg"
    exact_samples: int

    def __post_init__(self) -> None:
        checks.positive_int("exact_samples", self.exact_samples)
        super().__post_init__()


@dataclass(frozen=True, kw_only=True)
class MlpParameters(SweepParameters):
    """The MLP weight-decay chapter's parameters (``SweepParameters``)."""

    MODEL: ClassVar[str] = "mlp"




def chapter_config(*, model: str, dataset: str, train_per_class: int | None, image_size: int | None, epochs: int,
                   lr: float, batch_size: int, momentum: float, lanczos_steps: int, probes: int,
                   hessian_samples: int | None, seed: int):
    """A weight-decay chapter's base experiments.Config (weight decay 0; sweeps replace it)."""
    from ..experiments import Config

    return Config(model=model, dataset=dataset, train_per_class=train_per_class, image_size=image_size,
                  epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum, lanczos_steps=lanczos_steps,
                  probes=probes, hessian_samples=hessian_samples, seed=seed)


# --- the CIFAR architectures (All-CNN-C, PreResNet, WideResNet) -------------------------------

CNN_MODELS = ("allcnnc", "preresnet164", "wrn28x10")


def cnn_chapter_config(*, model: str, dataset: str, train_per_class: int | None, image_size: int | None,
                       pad_to: int | None, model_options: dict, epochs: int, lr: float, batch_size: int,
                       momentum: float, lanczos_steps: int, probes: int, hessian_samples: int | None, bn_mode: str,
                       val_size: int, seed: int, channels_last: bool = False):
    """A CIFAR architecture's base experiments.Config for a weight-decay sweep (weight decay 0);
    ``channels_last``: train in the channels-last layout (faster convolutions on CPUs)."""
    from ..experiments import Config

    if model not in CNN_MODELS + ("vgg16bn",):
        raise ValueError(f"model must be one of {CNN_MODELS + ('vgg16bn',)}, got {model!r}")
    return Config(model=model, dataset=dataset, train_per_class=train_per_class, image_size=image_size,
                  pad_to=pad_to, model_options=model_options, epochs=epochs, lr=lr, batch_size=batch_size,
                  momentum=momentum, lanczos_steps=lanczos_steps, probes=probes, hessian_samples=hessian_samples,
                  bn_mode=bn_mode, val_size=val_size, seed=seed, channels_last=channels_last)


def _meta_model_and_image(config: Any) -> tuple[Any, Any]:
    """``config``'s model and one input image of the shape the experiment feeds it (after resizing
    and padding; flattened for the MNIST-like models), both on the meta device (no memory)."""
    import torch

    from ..data import NATIVE_SHAPES
    from ..experiments import Config, MNIST_LIKE_MODELS, build_model

    c = Config.from_dict(config).resolved()
    channels, size = NATIVE_SHAPES[c.dataset]
    if c.image_size is not None:
        size = c.image_size
    if c.pad_to is not None:
        size, channels = c.pad_to, 3
    shape = (1, size * size * channels) if c.model in MNIST_LIKE_MODELS else (1, 3, size, size)
    with torch.device("meta"):
        return build_model(c), torch.empty(shape)


def forward_flops(config) -> int:
    """Floating-point operations of ONE forward pass of ``config``'s model on one input image of the
    shape the experiment feeds it (a multiply-add counts 2), counted by
    ``torch.utils.flop_counter`` on the meta device (no memory, no compute). Counts convolutions
    and matrix products, which dominate; BatchNorm, ReLU and pooling are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    model, x = _meta_model_and_image(config)
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
    from ..experiments import Config

    m_cfg, p_cfg = measured.config, Config.from_dict(paper).resolved()
    checks.positive_int("runs", runs)
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
    one = run_flops(p_cfg)
    train_flops, hessian_flops = one["train_flops"] * runs, one["hessian_flops"] * runs
    return {"forward_flops": float(f_paper), "flop_ratio": ratio, "train_flops": train_flops,
            "hessian_flops": hessian_flops, "flops": train_flops + hessian_flops, "cpu_seconds": cpu}


# floating-point operations an output element of a layer costs in a forward pass (elementwise work,
# counted per element a leaf module writes): BatchNorm computes statistics, subtracts, scales and
# shifts; ReLU, pooling, dropout and the rest about one each
_ELEMENTWISE_COST = {"BatchNorm": 4.0, "Flatten": 0.0, "Unflatten": 0.0, "Identity": 0.0}  # views cost nothing
# optimiser FLOPs per parameter and step: SGD with momentum and L2 decay (decay 2, momentum 2,
# update 2); Adam/AdamW (decay 2, two moments 5, bias-corrected update 6)
OPTIMIZER_FLOPS_PER_PARAMETER = {"sgd": 6.0, "adam": 13.0, "adamw": 13.0, "gadam": 13.0}


def forward_elementwise(config: Any) -> dict[str, float]:
    """Per input image, one forward pass of ``config``'s model on the meta device: ``elementwise``,
    the FLOPs of everything but convolutions and matrix products (each leaf module that is not a
    convolution or a linear layer writes its output's elements at ``_ELEMENTWISE_COST`` FLOPs an
    element: BatchNorm 4, others 1; additions written in ``forward`` code, such as residual sums,
    are not counted), and ``parameters``, the model's parameter count."""
    import torch
    from torch import nn

    model, x = _meta_model_and_image(config)
    written = [0.0]

    def count(module, _inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            cost = next((v for k, v in _ELEMENTWISE_COST.items() if k in type(module).__name__), 1.0)
            written[0] += cost * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if not list(m.children()) and not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    model.train()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return {"elementwise": written[0], "parameters": float(sum(p.numel() for p in model.parameters()))}


def run_flops(config: Any) -> dict[str, float]:
    """Floating-point operations of ONE experiment ``config`` (``forward_flops`` per image): the
    training, 3 forward passes per training image and epoch, and on each validated epoch (every
    ``val_every``-th and the last) a forward pass over the validation split and, for a network
    with BatchNorm, one statistics pass over the training images (two once iterate averaging has
    begun: the averaged weights get their own); the Hessian, about 6 forward passes per image and
    product (gradient and its derivative) over the Hessian images, ``lanczos_steps`` x ``probes``
    products (none with ``spectrum`` false). ``train_flops``, ``hessian_flops`` and their sum
    ``flops`` count convolutions and matrix products (``forward_flops``); ``elementwise_flops`` the
    rest of the same passes (``forward_elementwise`` times the same pass counts) and
    ``optimizer_flops`` the optimiser's steps (``OPTIMIZER_FLOPS_PER_PARAMETER`` x parameters x
    steps, and 2 x parameters per averaged epoch). The elementwise and optimiser work is
    memory-bound on a GPU: ``book.plan.plan_cost`` times it at its own, lower rate."""
    import torch

    from ..experiments import Config, build_model
    from ..train import has_batchnorm

    c = Config.from_dict(config).resolved()
    f = forward_flops(c)
    n_train = train_split_size(c)
    n_hessian = n_train if c.hessian_samples is None else min(c.hessian_samples, n_train)
    with torch.device("meta"):
        bn_pass = 1.0 if has_batchnorm(build_model(c)) else 0.0
    passes = 0.0  # forward passes over one image, summed over the run
    for epoch in range(1, c.epochs + 1):
        passes += 3.0 * n_train
        if epoch % c.val_every == 0 or epoch == c.epochs:
            averaging = c.averaging_start is not None and epoch >= c.averaging_start
            passes += c.val_size + bn_pass * n_train * (2.0 if averaging else 1.0)
    train_flops = f * passes
    hessian_passes = 6.0 * n_hessian * c.lanczos_steps * c.probes if c.spectrum else 0.0
    hessian_flops = f * hessian_passes
    other = forward_elementwise(c)
    steps = c.epochs * -(-n_train // c.batch_size)
    averaged_epochs = 0 if c.averaging_start is None else c.epochs - c.averaging_start + 1
    optimizer_flops = other["parameters"] * (OPTIMIZER_FLOPS_PER_PARAMETER[c.optimizer] * steps + 2.0 * averaged_epochs)
    return {"forward_flops": float(f), "train_flops": train_flops, "hessian_flops": hessian_flops,
            "flops": train_flops + hessian_flops, "elementwise_flops": other["elementwise"] * (passes + hessian_passes),
            "optimizer_flops": optimizer_flops}


# --- several seeds: the table and the claims ---------------------------------------------------

_SPECTRUM_MEASURES = ("lambda_max", "trace", "frobenius")


def seed_table(results: Sequence[Any]):
    """One row per weight decay over the seeds of a sweep of ONE model and dataset (same config but
    weight decay and seed): ``seeds``; the mean over seeds of train/val/test accuracy (percent), the
    gap, training loss, ||w||, lambda_1, trace and Frobenius norm, with ``<measure>_sd`` their
    seed-to-seed standard deviation (NaN with one seed); ``val_acc_se``, the binomial standard error
    of one run's validation accuracy; ``lambda_max_residual``, the largest Ritz residual of lambda_1;
    ``weight_norm_change``, the mean relative change of ||w|| over the last 20% of epochs; and
    ``decay_exponent`` E. Where the paper reports numbers for this model AND dataset, ``paper_*``
    columns beside them (``paper_numbers`` gives them as their own block otherwise)."""
    import pandas as pd

    if not results:
        raise ValueError("no results")
    models = {(r.config.model, r.config.dataset) for r in results}
    if len(models) != 1:
        raise ValueError(f"results of one model and dataset expected, got {sorted(models)}")
    model, dataset = models.pop()
    by_wd: dict[float, list[Any]] = {}
    for r in results:
        by_wd.setdefault(float(r.config.weight_decay), []).append(r)
    rows = []
    for wd, runs in sorted(by_wd.items()):
        seeds = [r.config.seed for r in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"weight decay {wd:g} has repeated seeds {sorted(seeds)}")
        values: dict[str, list[float]] = {}

        def add(name: str, v: float) -> None:
            values.setdefault(name, []).append(float(v))

        for r in runs:
            m = r.metrics
            for q in ("train_acc", "val_acc", "test_acc"):
                add(q, 100 * m[q])
            add("gap", 100 * (m["train_acc"] - m["val_acc"]))
            add("train_loss", m["train_loss"])
            add("weight_norm", m["weight_norm"])
            add("weight_norm_change", weight_norm_change(r))
            if r.spectrum is not None:
                add("lambda_max", r.spectrum.lambda_max)
                add("trace", r.spectrum.trace)
                add("frobenius", r.spectrum.frobenius)
                add("lambda_max_residual", r.spectrum.lambda_max_residual)
        row: dict[str, Any] = {"weight_decay": wd, "seeds": len(runs)}
        for q, v in values.items():
            if q == "lambda_max_residual":
                row[q] = float(np.nanmax(v)) if not np.isnan(v).all() else math.nan
                continue
            row[q] = float(np.mean(v))
            if q in ("train_acc", "val_acc", "gap", "weight_norm") + _SPECTRUM_MEASURES:
                row[f"{q}_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
        val_size = min(evaluated_images(r) for r in runs)
        row["val_acc_se"] = 100 * math.sqrt(row["val_acc"] / 100 * (1 - row["val_acc"] / 100) / val_size)
        row["decay_exponent"] = decay_exponent_of(runs[0])
        for quantity, paper in PAPER_REPORTED.get((model, dataset), {}).items():
            row[f"paper_{quantity}"] = paper.get(wd, math.nan)
        rows.append(row)
    return pd.DataFrame(rows).set_index("weight_decay")


def sweep_claims(results: Sequence[Any], *, paper_exponent: float | None = None, seed: int = 0) -> list[Any]:
    """The paper's Section 4 claims, tested on a sweep of weight decays x seeds of one model, comparing
    the largest weight decay with the smallest (normally 0), paired by seed. Primary (the two
    components of ``paper_claims.WEIGHT_DECAY``, "sharper AND better"):

    1. lambda_1 of the Hessian is LARGER (ratio over seeds);
    2. validation accuracy is HIGHER (paired over images and seeds, in points).

    Secondary (the paper's claims too; Holm-corrected when shown):

    3-4. the trace and the Frobenius norm are LARGER (ratio over seeds);
    5. the weights are SMALLER (ratio of ||w|| over seeds): the mechanism the claim rests on;
    6. lambda_1 is positively rank-associated with the weight decay over every run (Kendall tau,
       permutation p; an association, not monotonicity).

    The generalisation gap (train - val accuracy) is in the table but is no claim: a smaller gap
    from a lower training accuracy is not better generalisation, and "better" is claim 2.

    Regime (every claim but 5, which needs only seeds): the decay exponent E of the largest weight
    decay >= 1, at least 2 seeds, at least 4,000 validation images (``claims.resolution_condition``).
    A claim whose regime fails is "untestable", its effect still computed. ``paper_exponent``: the
    paper's E, shown beside ours.

    Interpolation is one rule for every model: Section 4's claims are not claims about interpolating
    networks (the paper makes them for logistic regression at 93% and All-CNN-C at 86% training
    accuracy), so it gates none of them; every claim states the lowest training accuracy of the
    runs and whether they interpolate (>= 99%), judged as the paper's own runs are
    (``interpolation_note``). Theorem 1, which IS about the zero-loss regime, is tested on fitted
    images only (``theorem``)."""
    from .. import claims as cl
    from .. import stats
    from ..seeds import paired_correct, paired_values
    from .paper_claims import WEIGHT_DECAY, tag

    results = list(results)
    if not results:
        raise ValueError("no results")
    table = seed_table(results)
    wds = list(table.index)
    if len(wds) < 2:
        raise ValueError(f"claims need at least two weight decays, got {wds}")
    lo, hi = wds[0], wds[-1]

    def setting(r: Any) -> float:
        return float(r.config.weight_decay)

    exponent = float(table.loc[hi, "decay_exponent"])
    n_seeds = int(table["seeds"].min())
    regime = [cl.decay_condition(exponent, paper_exponent), cl.seeds_condition(n_seeds),
              cl.resolution_condition(validation_images(results), float(table["val_acc_se"].max()))]
    fit = interpolation_note(results)
    pair = f"weight decay {hi:g} against {lo:g}"
    out = []
    have_spectrum = all(r.spectrum is not None for r in results)
    if have_spectrum:
        names = {"lambda_max": "lambda_1", "trace": "the Hessian trace", "frobenius": "the Hessian Frobenius norm"}
        for q, label in names.items():
            seeds, a, b = paired_values(results, setting, lo, hi, lambda r, q=q: getattr(r.spectrum, q))
            evidence = [(f"{label} at wd {lo:g}, per seed", cl.values_text(a)), (f"{label} at wd {hi:g}, per seed",
                        cl.values_text(b))]
            if q == "lambda_max":
                compared = [r for r in results if setting(r) in (lo, hi)]
                worst = max(compared, key=lambda r: r.spectrum.lambda_max_residual / r.spectrum.lambda_max)
                res, top = worst.spectrum.lambda_max_residual, worst.spectrum.lambda_max
                evidence.append(("largest Ritz residual of lambda_1 relative to its own lambda_1, compared runs",
                                 f"{res:.3g} of {top:.4g} ({res / top:.1e}; seed {worst.config.seed}, "
                                 f"wd {setting(worst):g})"))
            est = stats.ratio_or_difference(a, b)
            name = f"{'ratio' if est.scale == 'ratio' else 'difference'} of {label} ({pair})"
            parts = tag(WEIGHT_DECAY, "sharper: lambda_1 larger") if q == "lambda_max" else {}
            out.append(cl.claim_from_estimate(f"{label} is larger with more weight decay", est, 1, name,
                                              regime=regime, evidence=evidence, **parts))
    seeds, ca, cb = paired_correct(results, setting, lo, hi)
    est = stats.paired_accuracy_difference(ca, cb)
    est = stats.scaled(est, 100.0)
    out.append(cl.claim_from_estimate(
        "validation accuracy is higher with more weight decay", est, 1,
        f"validation accuracy difference, points ({pair})", regime=regime,
        evidence=[(f"val accuracy at wd {lo:g}, per seed (%)", cl.values_text(100 * ca.mean(axis=1))),
                  (f"val accuracy at wd {hi:g}, per seed (%)", cl.values_text(100 * cb.mean(axis=1))),
                  ("validation images", str(ca.shape[1]))], **tag(WEIGHT_DECAY, "better: validation accuracy higher")))
    _, wa, wb = paired_values(results, setting, lo, hi, lambda r: r.metrics["weight_norm"])
    out.append(cl.claim_from_estimate(
        "the weights are smaller with more weight decay (the mechanism)", stats.ratio_over_seeds(wa, wb), -1,
        f"ratio of ||w|| ({pair})", regime=[cl.seeds_condition(n_seeds)],
        evidence=[(f"||w|| at wd {lo:g}, per seed", cl.values_text(wa)), (f"||w|| at wd {hi:g}, per seed", cl.values_text(wb))]))
    if have_spectrum:
        x = [float(r.config.weight_decay) for r in results]
        y = [r.spectrum.lambda_max for r in results]
        corr = stats.rank_correlation(x, y, seed=seed)
        out.append(cl.trend_claim(f"lambda_1 is rank-associated with the weight decay: larger weight decay, larger "
                                  f"lambda_1 ({len(wds)} weight decays, {len(results)} runs)", corr, 1, regime=regime))
    return [dataclasses.replace(c, evidence=c.evidence + (fit,)) for c in out]


def evaluated_images(result: Any) -> int:
    """The validation images ``result`` was evaluated on: the length of its per-image record (the
    configured ``val_size`` only for a result without one), which a small split can fall short of."""
    record = getattr(result, "val_correct", None)
    return len(record) if record is not None else int(result.config.val_size)


def validation_images(results: Sequence[Any]) -> int:
    """The fewest validation images any of ``results`` was evaluated on (``evaluated_images``)."""
    return min(evaluated_images(r) for r in results)


def interpolation_note(results: Sequence[Any]) -> tuple[str, str]:
    """("lowest training accuracy (eval mode)", "86.3%: not interpolating (the rule: >= 99%)"), the
    same rule for every model and for the paper's own runs (its All-CNN-C: 86.3%, not
    interpolating; its PreResNet-164 and WRN-28x10: >= 99.87%, interpolating)."""
    from ..claims import MIN_TRAIN_ACCURACY

    low = min(r.metrics["train_acc"] for r in results)
    word = "interpolating" if low >= MIN_TRAIN_ACCURACY else "not interpolating"
    text = f"{100 * low:.2f}%: {word} (the rule: at least {100 * MIN_TRAIN_ACCURACY:g}%)"
    below = [r for r in results if r.metrics["train_acc"] < MIN_TRAIN_ACCURACY]
    if below and len(below) < len(results):  # name the runs that break the rule when they are the exception
        text += (f"; below it: {len(below)} of {len(results)} runs ("
                 + "; ".join(f"{r.config.optimizer} seed {r.config.seed}, wd {float(r.config.weight_decay):.4g}: "
                             f"{100 * r.metrics['train_acc']:.2f}%" for r in below[:4])
                 + ("; ..." if len(below) > 4 else "") + ")")
    return ("lowest training accuracy (eval mode)", text)


def paper_num_params(model: str) -> int:
    """Parameters of the paper's own ``model`` (its dataset's classes, native input), counted on the
    meta device."""
    import torch

    from ..experiments import build_model, paper_config

    with torch.device("meta"):
        return sum(p.numel() for p in build_model(paper_config(model).resolved()).parameters())


def run_facts(results: Sequence[Any], paper_model: str | None = None) -> list[tuple[str, str]]:
    """What a sweep's runs measured about their own regime, for the run box and the claims: seeds,
    training images and classes, parameters (beside the paper's model), the decay exponent E of each
    weight decay (and E / E_paper), the lowest training accuracy and the final training losses, the
    validation images and binomial SE, the weight norm's change over the last 20% of epochs, and
    where the trained models came from (cache or this run) and what they cost."""
    from ..experiments import num_classes

    results = list(results)
    if not results:
        raise ValueError("no results")
    table = seed_table(results)
    first = results[0]
    facts = [("seeds per weight decay", f"{int(table['seeds'].min())} ({sorted({r.config.seed for r in results})})"),
             ("training images, classes", f"{first.metrics['train_samples']:,}, {num_classes(first.config.dataset)} "
                                          f"({first.config.dataset})")]
    params = f"{int(first.metrics['num_params']):,}"
    if paper_model is not None:
        params += f" (the paper's {paper_model}: {paper_num_params(paper_model):,})"
    facts.append(("parameters", params))
    paper_e = paper_decay_exponent(paper_model) if paper_model is not None else None
    e_text = ", ".join(f"{wd:g}: {e:.3g}" + (f" ({e / paper_e:.2g}x the paper's)" if paper_e and wd > 0 else "")
                       for wd, e in table["decay_exponent"].items())
    facts.append(("decay exponent E by weight decay", e_text + (f"; the paper's run: {paper_e:.3g}" if paper_e else "")))
    facts.append(decay_per_step_fact(results, paper_model))
    facts.append(("lowest training accuracy (eval mode)", f"{100 * min(r.metrics['train_acc'] for r in results):.2f}%"))
    facts.append(("final training loss by weight decay (seed mean)",
                  ", ".join(f"{wd:g}: {v:.3g}" for wd, v in table["train_loss"].items())))
    facts.append(("validation images, binomial SE of one accuracy",
                  f"{validation_images(results):,}, at most {table['val_acc_se'].max():.2f} points"))
    facts.append(weight_norm_fact(table))
    facts.append(trained_models_fact(results))
    return facts


SETTLED_NORM_CHANGE = 0.01  # ||w|| changing less than 1% over the last 20% of epochs counts as settled


def weight_norm_fact(table) -> tuple[str, str]:
    """The run box's row for the weight-norm equilibrium (``seed_table``'s ``weight_norm_change``: the
    change of ||w|| over the last 20% of epochs, seed mean, 0 at equilibrium), per weight decay, with
    which weight decays have not settled (a change of at least ``SETTLED_NORM_CHANGE``): their
    solutions are still moving toward the equilibrium that a long run (the paper's 300 epochs) reaches,
    so their sharpness is a snapshot on the way."""
    changes = table["weight_norm_change"]
    text = ", ".join(f"{wd:g}: {100 * v:+.2g}%" for wd, v in changes.items())
    moving = [f"{wd:g}" for wd, v in changes.items() if abs(v) >= SETTLED_NORM_CHANGE]
    text += (f"; not settled (|change| of {100 * SETTLED_NORM_CHANGE:g}% or more) at weight decay {', '.join(moving)}: "
             "a snapshot on the way to the equilibrium" if moving else
             f"; every weight decay settled (|change| below {100 * SETTLED_NORM_CHANGE:g}%)")
    return ("weight-norm equilibrium: change of ||w|| over the last 20% of epochs (seed mean; 0 at equilibrium)", text)


def decay_per_step_fact(results: Sequence[Any], paper_model: str | None = None) -> tuple[str, str]:
    """The run box's row for the largest weight decay's shrinkage per step at the peak learning rate,
    eta gamma / (1 - mu) (``decay.decay_per_step``), beside the paper's run's: E says how long weight
    decay acted, this says how hard each step pushed, and with it where the weight norm settles."""
    from ..decay import decay_per_step
    from ..experiments import paper_config

    top = max(results, key=lambda r: float(r.config.weight_decay))
    ours = decay_per_step(top.config)
    text = f"{ours:.3g} (weight decay {float(top.config.weight_decay):.4g})"
    if paper_model is not None:
        paper = decay_per_step(paper_config(paper_model, weight_decay=max(PAPER_WEIGHT_DECAYS)))
        text += f"; the paper's run: {paper:.3g} ({ours / paper:.3g}x)"
    return ("shrinkage per step at the peak learning rate, eta gamma / (1 - mu), largest weight decay", text)


def trained_models_fact(results: Sequence[Any]) -> tuple[str, str]:
    """The run box's "trained models" row: how many of ``results`` this run trained and how many came
    from the cache, on which devices, and their training and Lanczos time in all."""
    cached = [r for r in results if r.cached]
    cost = sum(r.seconds.get("train", 0.0) + r.seconds.get("spectrum", 0.0) for r in results)
    devices = sorted({r.device for r in results})
    return ("trained models", f"{len(results) - len(cached)} trained by this run, {len(cached)} from the cache "
                              f"({'; '.join(devices)}); {cost / 60:.1f} min of training and Lanczos in all")


def grid_claims(results: Sequence[Any], *, paper_exponent: float | None = None, seed: int = 0,
                role: str = "paper", fitted_also: bool = False) -> list[Any]:
    """Trend claims over a grid of weight decays (any number of seeds): lambda_1 rises and ||w|| falls
    with the weight decay, each a rank association (Kendall's tau over every run with its permutation
    p-value, ``stats.rank_correlation``), the paper's direction extended to a denser grid (secondary;
    ``role`` "check" where a chapter uses the grid as the book's own picture of the regime).
    Validation accuracy is not tested over the grid: the paper claims it rises only up to 5e-4, and a
    grid reaching wd = 1e-2 (where a network collapses) would test a claim nobody made. Regime: E of
    the largest weight decay >= 1; a grid too small for any ordering to reach p < 0.05 makes the claim
    "untestable". Every run of the grid counts, fitted or not (the lowest training accuracy is in the
    evidence, ``interpolation_note``); with ``fitted_also`` a third claim tests lambda_1 over the runs
    that interpolate only (at least 99% training accuracy, ``claims.MIN_TRAIN_ACCURACY``), so that a
    collapsed run at the grid's end cannot carry or hide the trend. The runs' training noise is part
    of the scatter the permutation test measures, so one seed suffices here."""
    from .. import claims as cl
    from .. import stats

    results = list(results)
    table = seed_table(results)
    regime = [cl.decay_condition(float(table["decay_exponent"].iloc[-1]), paper_exponent)]
    x = [float(r.config.weight_decay) for r in results]
    out = []
    specs = [("lambda_1 rises with the weight decay (rank association)", lambda r: r.spectrum.lambda_max, 1),
             ("||w|| falls with the weight decay (rank association)", lambda r: r.metrics["weight_norm"], -1)]
    for statement, value, direction in specs:
        if statement.startswith("lambda") and any(r.spectrum is None for r in results):
            continue
        corr = stats.rank_correlation(x, [value(r) for r in results], seed=seed)
        out.append(cl.trend_claim(f"{statement} (grid of {len(table)} weight decays, {len(results)} runs)", corr,
                                  direction, regime=regime, evidence=[interpolation_note(results)], role=role))
    if fitted_also and all(r.spectrum is not None for r in results):
        fitted = [r for r in results if r.metrics["train_acc"] >= cl.MIN_TRAIN_ACCURACY]
        if len(fitted) >= 2:
            corr = stats.rank_correlation([float(r.config.weight_decay) for r in fitted],
                                          [r.spectrum.lambda_max for r in fitted], seed=seed)
            e_fit = float(seed_table(fitted)["decay_exponent"].iloc[-1])
            out.append(cl.trend_claim(
                f"lambda_1 rises with the weight decay over the runs that fit their training set (rank association; "
                f"{len(fitted)} of {len(results)} runs, at least {100 * cl.MIN_TRAIN_ACCURACY:g}% training accuracy)",
                corr, 1, regime=[cl.decay_condition(e_fit, paper_exponent)], evidence=[interpolation_note(fitted)],
                role=role))
    return out


# --- what the weight-decay notebooks display, as functions (the notebooks hold no control flow) ----


def paper_numbers_heading(paper_data: str, dataset: str) -> str:
    """The line above the paper's quoted table: on which data the paper ran, and, when that is not this
    page's ``dataset``, that only directions compare."""
    other = "" if paper_data == dataset else f", not this page's {dataset}: compare directions, not values"
    return f"The paper's own numbers, quoted (its runs on **{paper_data}**{other}):"


def first_seed_results(results: Sequence[Any], seed: int) -> list[Any]:
    """The results of ``results`` trained with ``seed`` (the first seed: the one whose curves and
    spectra a chapter draws), in their order."""
    return [r for r in results if r.config.seed == seed]


def histories_by_weight_decay(results: Sequence[Any]) -> dict[str, Any]:
    """{"weight decay <wd>": training history} of ``results`` (one seed), for the training figure."""
    return {f"weight decay {r.config.weight_decay:g}": r.history for r in results}


def spectra_by_weight_decay(results: Sequence[Any]) -> dict[str, Any]:
    """{"wd <wd>: val acc <acc>%": spectrum} of ``results`` (one seed), for the spectra figure."""
    return {f"wd {r.config.weight_decay:g}: val acc {100 * r.metrics['val_acc']:.2f}%": r.spectrum for r in results}


def sweep_speed_sentence(results: Sequence[Any], *, epochs: int, paper_epochs: int, paper_images: int = 55_000,
                         paper_runs: int = 3, paper_exponent: float | None = None) -> str:
    """*Computed:* how many runs of how many epochs on how many images, the mean seconds per epoch over
    every epoch of every run, and what the paper's setting (``paper_runs`` weight decays x
    ``paper_epochs`` epochs on ``paper_images`` images, one seed) takes at that speed, scaled by
    images; with ``paper_exponent``, the decay exponent of the paper's largest weight decay."""
    if not results:
        raise ValueError("no results")
    per_epoch = float(np.mean([row["seconds"] for r in results for row in r.history]))
    images = results[0].metrics["train_samples"]
    minutes = per_epoch * paper_runs * paper_epochs * paper_images / images / 60
    text = (f"*Computed:* {len(results)} runs of {epochs} epochs on {images} images; {per_epoch:.3f} s per epoch on "
            f"{results[0].device}. At that speed the paper's setting ({paper_runs} weight decays x {paper_epochs} "
            f"epochs on {paper_images:,} images, one seed) would take about {minutes:.1f} minutes.")
    if paper_exponent is not None:
        text += f" The paper's largest weight decay acted for $E$ = {paper_exponent:.2f} in the paper's run."
    return text


def exact_check_table(results: Sequence[Any], x_train: Any, *, exact_samples: int, lanczos_steps: int, probes: int,
                      seed: int):
    """One row per logistic-regression result (one seed): the exact lambda_1, trace and Frobenius norm of
    its Hessian over the first ``exact_samples`` training images (``theory.exact.logreg_hessian``, float64;
    ``lanczos_checks.exact_top_measures``) beside SLQ's estimates on the same matrix (``lanczos_steps``
    steps, ``probes`` probes, ``seed``), the SLQ trace's error and one probe's relative SD of the trace
    (``stats.one_probe_relative_sd``). Indexed by weight decay."""
    import pandas as pd

    from ..spectrum import MatrixOperator, slq
    from ..stats import one_probe_relative_sd
    from ..theory import exact
    from .lanczos_checks import exact_top_measures

    n = min(exact_samples, len(x_train))
    rows = []
    for r in results:
        H = exact.logreg_hessian(r.load_model().double(), x_train[:n])
        est = slq(MatrixOperator(H), steps=lanczos_steps, probes=probes, seed=seed)
        ex = exact_top_measures(H)
        rows.append({"weight decay": r.config.weight_decay, "exact lambda_1": ex["lambda_max"],
                     "Lanczos lambda_1": est.lambda_max, "Ritz residual": est.lambda_max_residual,
                     "exact trace": ex["trace"], "SLQ trace": est.trace,
                     "SLQ trace error (%)": 100 * (est.trace / ex["trace"] - 1),
                     "one-probe trace SD (%)": 100 * one_probe_relative_sd(ex["trace"], ex["frobenius"], H.shape[0]),
                     "exact Frobenius": ex["frobenius"], "SLQ Frobenius": est.frobenius})
    return pd.DataFrame(rows).set_index("weight decay")


def exact_check_claim(table):
    """The book's check on ``exact_check_table``: Lanczos lambda_1 agrees with the exact top eigenvalue
    to within its Ritz residual (the residual floored at 1e-12 of lambda_1, the rounding of a float64
    product); the largest relative error as evidence."""
    from ..claims import exact_claim

    error = np.abs(table["Lanczos lambda_1"] - table["exact lambda_1"])
    ratio = error / np.maximum(table["Ritz residual"], 1e-12 * table["exact lambda_1"])
    return exact_claim("Lanczos lambda_1 agrees with the exact top eigenvalue to within its Ritz residual",
                       float(np.max(ratio)), 1.0, "largest |Lanczos - exact| / Ritz residual",
                       evidence=[("largest relative error of lambda_1",
                                  f"{np.max(error / table['exact lambda_1']):.2g}")])


def exact_trace_sentence(table) -> str:
    """*Computed:* the SLQ trace errors of ``exact_check_table`` beside one probe's relative SD, and why
    a comparison of traces within a seed is paired."""
    errors = ", ".join(f"{x:+.1f}%" for x in table["SLQ trace error (%)"])
    sds = ", ".join(f"{x:.0f}%" for x in table["one-probe trace SD (%)"])
    return (f"*Computed:* the SLQ trace errs by {errors} on these models. One normalised probe's standard deviation "
            "is $\\sqrt{2P/(P+2)\\,(1/r_{\\rm eff} - 1/P)}$ of the trace, about $\\sqrt{2 / r_{\\rm eff}}$ "
            f"($r_{{\\rm eff}} = \\mathrm{{Tr}}(H)^2 / \\|H\\|_F^2$): {sds} here. With the same probe for every model "
            "the errors are shared: a comparison of traces within one seed is paired (its errors largely cancel), and "
            "the claims below pair the weight decays within each seed and take their intervals over seeds, whose probes "
            "are independent.")
