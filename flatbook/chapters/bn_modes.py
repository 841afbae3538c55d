"""BatchNorm: which Hessian? (the paper's Appendix C) The same trained weights, measured twice.

A BatchNorm layer computes its output with the statistics of the batch in training mode and
with its running statistics in evaluation mode. The Hessian of the training loss therefore
depends on a choice the other parameters do not have:

* ``bn_mode="train"``: every batch is normalised with its own mean and variance, so each
  image's loss depends on the whole batch (the function differentiated is not the deployed
  one, and it changes with the batch composition). The paper's main experiments use it.
* ``bn_mode="eval"``: the running statistics, constants for the Hessian: the deployed model,
  whose predictions the validation accuracy measures.

Scale invariance (train mode). If weights w feed a BatchNorm layer directly (a conv or linear
layer whose output is the layer's input), the batch-normalised output does not change when w is
multiplied by c > 0 (the batch mean and standard deviation are multiplied by c too), nor when
the layer's bias or a channel's pre-activations are shifted together (the mean absorbs the
shift). So L(c w) = L(w) for every c, and differentiating once and twice:

    g(c w) = g(w) / c,        H(c w) = H(w) / c^2  on the block of w,

and w^T g(w) = 0, H(w) w = -g(w) (Euler). Weight decay shrinks such weights, and shrinking them
sharpens this block by 1 / c^2 while the function stays the same: Dinh et al.'s rescaling done by
the optimiser. Exact when BatchNorm's epsilon is 0; with epsilon > 0 (1e-5 in torch) the
denominator sqrt(var + eps) breaks it at the order eps / var. In eval mode the statistics are
constants, the output scales with w, and nothing of this holds.

* ``BnModesParameters(...)``: every parameter of the appendix, checked together on construction.
* ``mode_table(results, eval_spectra)``: one row per (weight decay, mode) with the mean over seeds
  of lambda_1, trace, Frobenius norm and the validation accuracy (and their seed-to-seed SD);
  ``ratio_tables(table)``: the ratios of those means, eval / train per weight decay and most /
  least regularised per mode (descriptive; the claims below carry the uncertainty).
* ``mode_claims(results, eval_spectra)``: the appendix's conclusions as ``flatbook.claims.Claim``
  objects, paired by seed (``stats.ratio_over_seeds``); "untestable" with fewer than 2 seeds.
* ``batchnorm_fed_weights(model, x)``: the weights whose output goes straight into a BatchNorm
  layer; ``scale_invariance(model, loss_fn, data, param, c)``: the invariance above, measured
  (loss, gradient and Hessian-block errors, by products on random vectors or a dense block);
  ``result_scale_invariance(result, c)``: the same on a cached trained model, in both modes;
  ``invariance_claims(rows)``: its claims.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..claims import values_text
from .base import CnnTrainingParameters

__all__ = ["PAPER_REPORTED", "MEASURES", "MODE_EQUIVALENCE_RATIO", "NEGLIGIBLE_EPS", "BnModesParameters", "mode_table",
           "ratio_tables", "mode_claims", "batchnorm_fed_weights", "scale_invariance", "result_scale_invariance",
           "invariance_claims",
           "models_sentence", "first_seed_spectra", "regularised_heading", "invariance_reference", "invariance_table",
           "invariance_sentence", "paper_exponent_of", "rows_by_epsilon"]

# Appendix C, WRN-28x10 on CIFAR-100 with BatchNorm in eval mode (the paper's numbers, quoted)
PAPER_DATASET = "cifar100"  # the data of the paper's Appendix C runs
PAPER_REPORTED = {"wrn28x10": {"frobenius": {0.0: 9.8e-12, 5e-4: 4.9e-5}, "val_acc": {0.0: 75.2, 5e-4: 80.6}}}
PAPER_EVAL_LAMBDA_RATIO = "nearly 1000"  # the paper's words for the eval-mode lambda_1 ratio, WRN-28x10
MEASURES = {"lambda_max": "lambda_1", "frobenius": "the Frobenius norm"}
MODE_EQUIVALENCE_RATIO = 1.1  # "the mode does not change lambda_1" means: by less than 10% either way
NEGLIGIBLE_EPS = 1e-30  # a BatchNorm epsilon far below any channel variance: the invariance without its epsilon term


@dataclass(frozen=True, kw_only=True)
class BnModesParameters(CnnTrainingParameters):
    """The BatchNorm appendix's parameters, by the names of its parameters cell; construction checks
    them all (ValueError naming one); the model must have BatchNorm layers (without them both modes
    are the same Hessian)."""

    weight_decays: list
    seeds: list
    results_dir: str | None = None
    val_every: int = 1
    workers: int = 1

    def __post_init__(self) -> None:
        import torch

        from .. import checks
        from ..experiments import build_model

        super().__post_init__()
        checks.positive_int("workers", self.workers)
        from ..train import has_batchnorm
        from .weight_decay import CNN_MODELS

        if self.model not in CNN_MODELS + ("vgg16bn",):
            raise ValueError(f"model must be one of {CNN_MODELS + ('vgg16bn',)}, got {self.model!r}")
        checks.weight_decays("weight_decays", self.weight_decays)
        seeds = checks.seed_list(self.seeds)
        checks.results_dir(self.results_dir)
        for s in seeds:
            config = self.base_config().replace(seed=s, spectrum_seed=s).resolved()
        with torch.device("meta"):
            if not has_batchnorm(build_model(config)):
                raise ValueError(f"model {self.model!r} has no BatchNorm layer: train and eval mode give the same "
                                 "Hessian")

    def training_plan(self) -> list:
        """Every experiments.Config the chapter trains (weight decays x seeds; the eval-mode spectra
        measure the same weights again)."""
        from ..seeds import seeded

        return [seeded(self.base_config(), seed=s).replace(weight_decay=float(wd)) for s in self.seeds
                for wd in self.weight_decays]

    def base_config(self):
        """The experiments.Config of the first seed at weight decay 0 (train-mode BatchNorm Hessian)."""
        from .weight_decay import cnn_chapter_config

        return cnn_chapter_config(model=self.model, dataset=self.dataset, train_per_class=self.train_per_class,
                                  image_size=self.image_size, pad_to=self.pad_to, model_options=self.model_options,
                                  epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, momentum=self.momentum,
                                  lanczos_steps=self.lanczos_steps, probes=self.probes,
                                  hessian_samples=self.hessian_samples, bn_mode="train",
                                  val_size=self.val_size, seed=int(self.seeds[0]),
                                  channels_last=self.channels_last).replace(val_every=self.val_every)



def _paired_spectra(results: Sequence[Any], eval_spectra: Sequence[Any]) -> dict[tuple[float, int], tuple[Any, Any, Any]]:
    """{(weight decay, seed): (result, train-mode spectrum, eval-mode spectrum)}."""
    if len(results) != len(eval_spectra) or not results:
        raise ValueError(f"one eval-mode spectrum per result expected, got {len(eval_spectra)} for {len(results)}")
    out: dict[tuple[float, int], tuple[Any, Any, Any]] = {}
    for r, s in zip(results, eval_spectra):
        if r.config.bn_mode != "train" or r.spectrum is None:
            raise ValueError("each result must carry its train-mode spectrum (bn_mode 'train', spectrum on)")
        key = (float(r.config.weight_decay), int(r.config.seed))
        if key in out:
            raise ValueError(f"duplicate weight decay and seed: {key}")
        out[key] = (r, r.spectrum, s)
    return out


def mode_table(results: Sequence[Any], eval_spectra: Sequence[Any]):
    """A DataFrame indexed by (weight_decay, bn_mode): ``seeds``, the mean over seeds of lambda_max,
    trace, frobenius and val_acc (percent), ``<measure>_sd`` their seed-to-seed standard deviation
    (NaN with one seed), and the paper's numbers where it reports them (eval mode,
    ``PAPER_REPORTED``; only for runs on the paper's own data, ``PAPER_DATASET``: beside another
    data set's rows they would invite a comparison of values that means nothing). ``results``:
    experiments.Results whose spectra are in train mode (any weight decays x seeds); ``eval_spectra``:
    the same models' spectra in eval mode, in the same order."""
    import pandas as pd

    paired = _paired_spectra(results, eval_spectra)
    rows = []
    for wd in sorted({k[0] for k in paired}):
        runs = [v for k, v in sorted(paired.items()) if k[0] == wd]
        first = runs[0][0].config  # the paper's numbers sit beside ours only for its own data (CIFAR-100)
        paper = PAPER_REPORTED.get(first.model, {}) if first.dataset == PAPER_DATASET else {}
        for mode, index in (("train", 1), ("eval", 2)):
            row: dict[str, Any] = {"weight_decay": wd, "bn_mode": mode, "seeds": len(runs)}
            for q in ("lambda_max", "trace", "frobenius"):
                v = np.array([getattr(run[index], q) for run in runs], dtype=float)
                row[q] = float(v.mean())
                row[f"{q}_sd"] = float(v.std(ddof=1)) if len(v) > 1 else math.nan
            acc = np.array([100 * run[0].metrics["val_acc"] for run in runs])
            row["val_acc"] = float(acc.mean())
            row["val_acc_sd"] = float(acc.std(ddof=1)) if len(acc) > 1 else math.nan
            if mode == "eval":
                for quantity, by_wd in paper.items():
                    row[f"paper_{quantity}"] = by_wd.get(wd, math.nan)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["weight_decay", "bn_mode"]).sort_index()


def ratio_tables(table):
    """From ``mode_table``: (eval / train of the seed means, per weight decay, for lambda_max, trace
    and frobenius; most / least regularised per mode). Ratios of means, descriptive only."""
    import pandas as pd

    wds = sorted(set(table.index.get_level_values(0)))
    if len(wds) < 2:
        raise ValueError("the ratios compare weight decays: at least two are needed")
    qs = ("lambda_max", "trace", "frobenius")
    eval_over_train = pd.DataFrame({q: {wd: float(table.loc[(wd, "eval"), q] / table.loc[(wd, "train"), q])
                                        for wd in wds} for q in qs}).rename_axis("weight decay")
    regularised = pd.DataFrame({mode: {q: float(table.loc[(wds[-1], mode), q] / table.loc[(wds[0], mode), q])
                                       for q in qs} for mode in ("train", "eval")}).T.rename_axis("bn_mode")
    return eval_over_train, regularised


def regularised_sentence(regularised) -> str:
    """A computed reading of ``ratio_tables``' second table (lambda_1 of the most regularised solution
    over the least, per mode, ratios of seed means): the two ratios, whether each mode makes the
    regularised solution sharper (above 1) or flatter, and which mode shows the larger effect; the
    train-mode scale invariance (next section) explains a train-mode effect only. Descriptive: the
    claims say what the seeds resolve."""
    t, e = float(regularised.loc["train", "lambda_max"]), float(regularised.loc["eval", "lambda_max"])

    def reads(r: float) -> str:
        return "sharper" if r > 1 else "flatter" if r < 1 else "as sharp"

    out = (f"*Computed:* by $\\lambda_1$ the most regularised solution is {t:.3g}x the least regularised one in train "
           f"mode ({reads(t)}) and {e:.3g}x in eval mode ({reads(e)}), ratios of seed means.")
    if (t > 1) == (e > 1):
        bigger = "eval" if e > t else "train"
        out += f" Both modes rank the solutions alike; the effect is larger in {bigger} mode."
    else:
        out += " The modes disagree on which solution is sharper: the choice of mode decides the answer."
    if e > 1:
        out += (" The scale invariance of the next section, which holds in train mode only, cannot be the whole "
                "reason for the eval-mode ratio.")
    return out


def mode_claims(results: Sequence[Any], eval_spectra: Sequence[Any], *, paper_exponent: float | None = None) -> list:
    """The appendix's claims, comparing the largest weight decay with the smallest, paired by seed
    (each seed's runs share their probe vectors and Hessian images):

    1-4. in each mode, lambda_1 and the Frobenius norm are LARGER at the largest weight decay
         (``stats.ratio_over_seeds``; regime: at least 2 seeds, decay exponent E >= 1); eval mode's
         lambda_1 is the primary claim (``paper_claims.BN_EVAL``), the others secondary;
    5.   per weight decay, the mode changes lambda_1 (eval / train over seeds; ``claims.two_sided_claim``:
         supported when the 95% interval excludes 1 on either side, contradicted when it lies within
         [1/``MODE_EQUIVALENCE_RATIO``, ``MODE_EQUIVALENCE_RATIO``]; regime: at least 2 seeds);
    6.   eval mode makes the regularised solution look sharper than train mode does: the lambda_1
         ratio (largest / smallest weight decay) is larger in eval mode (the paper: "nearly 1000"
         in eval mode for WRN-28x10).

    An interval that holds 1 is "inconclusive", never "the same"; the minimum detectable ratio
    says what this run could have seen."""
    from .. import claims as cl
    from .. import stats
    from ..decay import decay_exponent_of
    from .paper_claims import BN_EVAL, tag

    paired = _paired_spectra(results, eval_spectra)
    wds = sorted({k[0] for k in paired})
    if len(wds) < 2:
        raise ValueError(f"the claims compare weight decays: at least two are needed, got {wds}")
    lo, hi = wds[0], wds[-1]
    seeds = sorted(set(s for wd, s in paired if wd == lo) & set(s for wd, s in paired if wd == hi))
    if not seeds:
        raise ValueError(f"weight decays {lo:g} and {hi:g} share no seed")
    n = len(seeds)
    for wd in wds:
        missing = [s for s in seeds if (wd, s) not in paired]
        if missing:
            raise ValueError(f"weight decay {wd:g} lacks seeds {missing}")
    first = paired[(hi, seeds[0])][0]
    exponent = decay_exponent_of(first)
    seeds_ok = cl.seeds_condition(n)
    wd_regime = [cl.decay_condition(exponent, paper_exponent), seeds_ok]
    pair = f"weight decay {hi:g} / {lo:g}"
    index = {"train": 1, "eval": 2}

    def values(wd: float, mode: str, q: str) -> np.ndarray:
        return np.array([getattr(paired[(wd, s)][index[mode]], q) for s in seeds], dtype=float)

    def ratio_or_difference(a: np.ndarray, b: np.ndarray, label: str):
        est = stats.ratio_or_difference(a, b)
        return est, f"{'ratio' if est.scale == 'ratio' else 'difference'} of {label}"

    out = []
    for mode in ("train", "eval"):
        for q, label in MEASURES.items():
            a, b = values(lo, mode, q), values(hi, mode, q)
            est, name = ratio_or_difference(a, b, f"{label} ({pair}, {mode} mode)")
            evidence = [(f"{label} at wd {lo:g}, per seed", values_text(a)), (f"{label} at wd {hi:g}, per seed", values_text(b)),
                        ("seeds", values_text(seeds))]
            if mode == "eval" and q == "lambda_max":
                evidence.append(("the paper (WRN-28x10, CIFAR-100, eval mode)", f"ratio {PAPER_EVAL_LAMBDA_RATIO}"))
            if mode == "eval" and q == "frobenius" and first.config.model in PAPER_REPORTED \
                    and first.config.dataset == PAPER_DATASET:
                fro = PAPER_REPORTED[first.config.model]["frobenius"]
                evidence.append(("the paper (eval mode)", ", ".join(f"wd {k:g}: {v:g}" for k, v in fro.items())))
            parts = tag(BN_EVAL, "eval mode: lambda_1 larger with weight decay") if (mode, q) == ("eval", "lambda_max") else {}
            out.append(cl.claim_from_estimate(
                f"{mode} mode: {label} is larger at the largest weight decay (the regularised solution is sharper)",
                est, 1, name, regime=wd_regime, evidence=evidence, **parts))
    for wd in wds:
        a, b = values(wd, "train", "lambda_max"), values(wd, "eval", "lambda_max")
        est, name = ratio_or_difference(a, b, f"lambda_1, eval mode / train mode (wd {wd:g})")
        out.append(cl.two_sided_claim(
            f"the BatchNorm mode changes lambda_1 at weight decay {wd:g} (either way; the paper: \"a somewhat "
            f"different curvature profile\")", est, name, margin=MODE_EQUIVALENCE_RATIO,
            regime=[seeds_ok], evidence=[("train mode, per seed", values_text(a)), ("eval mode, per seed", values_text(b))]))
    ra = values(hi, "train", "lambda_max") / values(lo, "train", "lambda_max")
    rb = values(hi, "eval", "lambda_max") / values(lo, "eval", "lambda_max")
    if (ra > 0).all() and (rb > 0).all():
        est = stats.ratio_over_seeds(ra, rb)
        out.append(cl.claim_from_estimate(
            "eval mode makes the regularised solution look sharper than train mode does (its lambda_1 ratio, "
            f"{pair}, is larger in eval mode)", est, 1, f"eval-mode ratio / train-mode ratio of lambda_1 ({pair})",
            regime=wd_regime, evidence=[("train-mode ratio, per seed", values_text(ra)),
                                        ("eval-mode ratio, per seed", values_text(rb)),
                                        ("the paper's eval-mode ratio (WRN-28x10)", PAPER_EVAL_LAMBDA_RATIO)]))
    return out


# --- scale invariance in train mode ------------------------------------------------------------

def batchnorm_fed_weights(model, x) -> list[tuple[str, str]]:
    """(weight parameter name, BatchNorm module name) for every Conv/Linear layer whose output is
    used by ONE operation only, a BatchNorm layer: read off the autograd graph of a forward pass
    of ``x`` (so functional code counts too: a stem conv whose output also enters a residual
    addition or a shortcut is left out; Dropout and Identity in eval mode pass the tensor
    through). Runs on a copy in eval mode: nothing of the model changes."""
    import torch
    from torch import nn

    shadow = copy.deepcopy(model).eval()
    layer_nodes: dict[str, Any] = {}
    bn_nodes: dict[Any, str] = {}
    handles = []

    def hook(name):
        def record(module, inputs, output):
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                bn_nodes[output.grad_fn] = name
            elif isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                layer_nodes[name] = output.grad_fn
        return record

    for name, m in shadow.named_modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.conv._ConvNd, nn.Linear)):
            handles.append(m.register_forward_hook(hook(name)))
    try:
        with torch.enable_grad():
            out = shadow(x)
    finally:
        for h in handles:
            h.remove()
    parents: dict[Any, list[Any]] = {}
    seen, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None:
                parents.setdefault(child, []).append(node)
                stack.append(child)
    found = []
    for name, node in layer_nodes.items():
        users = parents.get(node, [])
        if len(users) == 1 and users[0] in bn_nodes and node is not None:
            found.append((f"{name}.weight", bn_nodes[users[0]]))
    return found


def _batches(data: Any, batch_size: int | None):
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(hasattr(t, "shape") for t in data):
        if batch_size is None:
            raise ValueError("batch_size is needed for an (x, y) pair")
        x, y = data
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]
    if batch_size is not None:
        raise ValueError("batch_size must be None for a re-iterable of batches")
    return list(data)


def _loss_and_gradient(model, loss_fn: Callable, batches, name: str, bn_mode: str):
    """The mean loss over the batches (each weighted by its size) and its gradient for parameter
    ``name``, BatchNorm on batch statistics ("train", nothing updated: a copy) or running ones."""
    import torch
    from torch import nn

    shadow = copy.deepcopy(model).eval()
    if bn_mode == "train":
        for m in shadow.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    p = dict(shadow.named_parameters())[name]
    N = sum(len(y) for _, y in batches)
    total = 0.0
    grad = torch.zeros_like(p, dtype=torch.float64)
    for x, y in batches:
        loss = loss_fn(shadow(x), y) * (len(y) / N)
        (g,) = torch.autograd.grad(loss, [p])
        total += float(loss.detach())
        grad += g.double()
    return total, grad.flatten()


def scale_invariance(model, loss_fn: Callable, data: Any, param: str, c: float, *, batch_size: int | None = None,
                     bn_mode: str = "train", probes: int | None = 8, seed: int = 0, bn_eps: float | None = None,
                     bn_layer: str | None = None) -> dict[str, float]:
    """Multiply parameter ``param`` of a copy of ``model`` by ``c`` and compare (module docstring):

    * ``loss_change``: |L(c w) - L(w)| / |L(w)|;
    * ``gradient_error``: ||c g(c w) - g(w)|| / ||g(w)|| (g restricted to ``param``);
    * ``hessian_error``: ||c^2 H(c w) V - H(w) V||_F / ||H(w) V||_F on the block of ``param``, with V
      ``probes`` unit Gaussian vectors (seeded), or V = I (the dense block, ``probes=None``);
    * ``hessian_ratio``: ||H(c w) V||_F / ||H(w) V||_F (1 / c^2 under the invariance);
    * ``euler``: |w . g(w)| / (||w|| ||g(w)||), 0 under the invariance.

    All near 0 (rounding, and BatchNorm's epsilon) in train mode; of order 1 in eval mode. Use a
    float64 model and data to see the invariance to many digits. ``bn_eps``: set every BatchNorm
    layer's epsilon to this value first (in the copies; e.g. 1e-30, to see the identity without
    the epsilon term). ``bn_layer``: the BatchNorm layer ``param`` feeds; then ``eps_over_variance``
    is the largest epsilon / (batch variance of a channel) at its input (train mode, unscaled), the
    size of the epsilon term. Nothing of ``model`` changes."""
    import torch

    from ..curvature import BN_MODES, HessianOperator

    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
        raise ValueError(f"c must be a positive finite number, got {c!r}")
    named = dict(model.named_parameters())
    if param not in named:
        raise ValueError(f"param: {param!r} is not a parameter name of the model")
    if probes is not None:
        from ..checks import positive_int

        positive_int("probes", probes)
    batches = _batches(data, batch_size)
    if bn_eps is not None:
        if isinstance(bn_eps, bool) or not isinstance(bn_eps, (int, float)) or not math.isfinite(bn_eps) or bn_eps <= 0:
            raise ValueError(f"bn_eps must be a positive finite number, got {bn_eps!r}")
        model = copy.deepcopy(model)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eps = float(bn_eps)
    eps_over_variance = math.nan
    if bn_layer is not None:
        eps_over_variance = _eps_over_variance(model, batches, bn_layer)
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        dict(scaled.named_parameters())[param].mul_(c)
    w = named[param].detach().double().flatten()
    loss0, g0 = _loss_and_gradient(model, loss_fn, batches, param, bn_mode)
    loss1, g1 = _loss_and_gradient(scaled, loss_fn, batches, param, bn_mode)
    P = w.numel()
    if probes is None:
        V = torch.eye(P, dtype=torch.float64)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        V = torch.randn(P, probes, generator=gen, dtype=torch.float64)
        V /= V.norm(dim=0, keepdim=True)
    products = []
    for m in (model, scaled):
        op = HessianOperator(m, loss_fn, batches, bn_mode=bn_mode, params=[param])
        HV = torch.cat([op.matmat(V[:, a:a + 256]).cpu() for a in range(0, V.shape[1], 256)], dim=1)
        products.append(HV)
    H0, H1 = products
    gnorm = float(g0.norm())
    return {"c": float(c), "bn_mode": bn_mode, "parameters": P, "loss": loss0, "loss_scaled": loss1,
            "loss_change": abs(loss1 - loss0) / max(abs(loss0), 1e-300),
            "gradient_error": float((c * g1 - g0).norm()) / max(gnorm, 1e-300),
            "hessian_error": float((c**2 * H1 - H0).norm()) / max(float(H0.norm()), 1e-300),
            "hessian_ratio": float(H1.norm()) / max(float(H0.norm()), 1e-300),
            "euler": abs(float(w @ g0)) / max(float(w.norm()) * gnorm, 1e-300),
            "bn_eps": float(bn_eps) if bn_eps is not None else math.nan, "eps_over_variance": eps_over_variance}


def _eps_over_variance(model, batches, bn_layer: str) -> float:
    """max over batches and channels of eps / Var at the input of BatchNorm layer ``bn_layer``
    (batch statistics, biased variance as BatchNorm uses), on a copy in train mode."""
    import torch
    from torch import nn

    shadow = copy.deepcopy(model).eval()
    modules = dict(shadow.named_modules())
    if bn_layer not in modules or not isinstance(modules[bn_layer], nn.modules.batchnorm._BatchNorm):
        raise ValueError(f"bn_layer: {bn_layer!r} is not a BatchNorm layer of the model")
    bn = modules[bn_layer]
    worst = [0.0]

    def record(module, inputs, output):
        x = inputs[0].detach()
        dims = [0] + list(range(2, x.ndim))
        var = x.double().var(dim=dims, unbiased=False)
        worst[0] = max(worst[0], float((module.eps / var).max()))

    for m in shadow.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    handle = bn.register_forward_hook(record)
    try:
        with torch.no_grad():
            for x, _ in batches:
                shadow(x)
    finally:
        handle.remove()
    return worst[0]


def result_scale_invariance(result: Any, scales: Sequence[float] = (0.5, 2.0), *, probes: int = 8, seed: int = 0,
                            param: str | None = None, data_root: Any = None,
                            batches: int | None = 2) -> tuple[str, str, list[dict]]:
    """``scale_invariance`` on a cached trained model (float64 copy, CPU), over the images its
    spectrum used (``experiments.hessian_indices``) in its Hessian batches (only the first ``batches``
    of them; None: all: the identity holds batch by batch, so two batches test it as well as all and
    cost a fraction of the time in float64), for each c in ``scales``:
    train mode with the model's own BatchNorm epsilon, train mode with epsilon ``NEGLIGIBLE_EPS``
    (the identity without the epsilon term), and eval mode. ``param``: the weight to scale
    (default: the smallest weight of ``batchnorm_fed_weights``). Returns (param, the BatchNorm
    layer it feeds, rows)."""
    import torch.nn.functional as F

    from ..experiments import hessian_indices, prepare_data

    c = result.config
    model = result.load_model("cpu").double()
    x, y = prepare_data(c, "train", data_root)
    idx = hessian_indices(len(y), c.hessian_samples, spectrum_seed=c.spectrum_seed)
    if batches is not None:
        from ..checks import positive_int

        idx = idx[: positive_int("batches", batches) * c.hessian_batch_size]
    data = (x[idx].double(), y[idx])
    fed = batchnorm_fed_weights(model, data[0][: min(len(idx), c.hessian_batch_size)])
    if not fed:
        raise ValueError(f"model {c.model!r} has no weight that feeds a BatchNorm layer directly")
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    if param is None:
        param, bn = min(fed, key=lambda pair: sizes[pair[0]])
    else:
        matches = [b for n, b in fed if n == param]
        if not matches:
            raise ValueError(f"param {param!r} does not feed a BatchNorm layer; candidates: {[n for n, _ in fed]}")
        bn = matches[0]
    rows = [scale_invariance(model, F.cross_entropy, data, param, s, batch_size=c.hessian_batch_size, bn_mode=mode,
                             probes=probes, seed=seed, bn_eps=eps, bn_layer=bn)
            for mode, eps in (("train", None), ("train", NEGLIGIBLE_EPS), ("eval", None)) for s in scales]
    return param, bn, rows


def invariance_claims(rows: Sequence[dict], param: str, exact_tolerance: float = 1e-8,
                      eps_tolerance: float = 0.05) -> list:
    """From ``result_scale_invariance``'s rows, when ``param`` (weights feeding a BatchNorm layer) is
    scaled by c:

    1. train mode without the epsilon term (rows with ``bn_eps`` set): the loss is unchanged, c
       times the gradient and c^2 times the Hessian block are unchanged, to ``exact_tolerance``
       (relative; rounding in float64): the identity, computed;
    2. train mode with the model's own epsilon: the Hessian block still scales as 1 / c^2 to
       ``eps_tolerance`` (the epsilon term's size, eps / var, is in the evidence);
    3. eval mode: the same scaling is NOT an invariance (the rescaled Hessian block differs by at
       least 0.1, relative).

    Deterministic: computed on one trained model, no sampling. Claim 1 is an identity (method
    "exact computation ..."): it holds for any weights; 2 and 3 are measured on this model."""
    from .theorem import checked_claim

    exact, own, evalm = rows_by_epsilon(rows)
    if not exact and not own:
        raise ValueError("no train-mode rows")
    method = "measured on the trained model in float64 (no sampling)"
    out = []
    if exact:
        ev = [("weight scaled", param), ("c", values_text([r["c"] for r in exact])),
              ("BatchNorm epsilon", f"{exact[0]['bn_eps']:.3g}"),
              ("||H(c w) V|| / ||H(w) V||", values_text([r["hessian_ratio"] for r in exact]))]
        worst = max(max(r["loss_change"], r["gradient_error"], r["hessian_error"]) for r in exact)
        out.append(checked_claim("train mode, BatchNorm's epsilon negligible: scaling the weights that feed a BatchNorm "
                                 "layer by c leaves the loss unchanged, the gradient scales as 1 / c and their Hessian "
                                 "block as 1 / c^2", worst, exact_tolerance,
                                 "largest relative change of L, c g and c^2 H V", evidence=ev,
                                 method="exact computation (no sampling): an identity, checked on the trained model "
                                        "in float64"))
    if own:
        ev = [("weight scaled", param), ("c", values_text([r["c"] for r in own])),
              ("largest eps / (channel variance) at the BatchNorm input",
               values_text([max(r.get("eps_over_variance", math.nan) for r in own)])),
              ("largest relative change of the loss", values_text([max(r["loss_change"] for r in own)])),
              ("largest relative change of c g", values_text([max(r["gradient_error"] for r in own)]))]
        out.append(checked_claim(f"train mode with the model's own BatchNorm epsilon: the Hessian block still scales as "
                                 f"1 / c^2, to within {eps_tolerance:.0%}", max(r["hessian_error"] for r in own),
                                 eps_tolerance, "largest ||c^2 H(c w) V - H(w) V|| / ||H(w) V||", evidence=ev,
                                 method=method))
    if evalm:
        out.append(checked_claim("eval mode: the same scaling is no invariance (the rescaled Hessian block changes)",
                                 min(r["hessian_error"] for r in evalm), 0.1,
                                 "smallest ||c^2 H(c w) V - H(w) V|| / ||H(w) V||", at_least=True,
                                 evidence=[("weight scaled", param)], method=method))
    return out


# --- what the notebook displays, as functions (the notebook holds no control flow) ---------------


def models_sentence(results: Sequence[Any], *, weight_decays: Sequence[float], seeds: Sequence[int],
                    hessian_samples: int | None, lanczos_steps: int, probes: int) -> str:
    """*Computed:* how many models (from the cache, trained here), their parameters, and the Hessian's
    images, Lanczos steps and probes."""
    first = results[0].metrics
    images = min(hessian_samples or first["train_samples"], first["train_samples"])
    cached = sum(bool(r.cached) for r in results)
    return (f"*Computed:* {len(results)} models ({cached} from the cache, {len(results) - cached} trained here; "
            f"{len(weight_decays)} weight decays x {len(seeds)} seed(s)), {first['num_params']:,} parameters; the Hessian "
            f"over {images:,} training images, {lanczos_steps} Lanczos steps, {probes} probe(s).")


def first_seed_spectra(results: Sequence[Any], eval_spectra: Sequence[Any], seed: int) -> dict[str, Any]:
    """{"wd <wd>, val acc <acc>%: train mode" / ": eval mode": spectrum} for the runs of ``seed``, the
    train-mode spectrum beside the eval-mode one of the same weights (for the stem figure)."""
    out = {}
    for r, s in zip(results, eval_spectra):
        if r.config.seed == seed:
            label = f"wd {r.config.weight_decay:g}, val acc {100 * r.metrics['val_acc']:.2f}%"
            out[f"{label}: train mode"] = r.spectrum
            out[f"{label}: eval mode"] = s
    return out


def regularised_heading(weight_decays: Sequence[float]) -> str:
    """The line above the table of most / least regularised ratios."""
    return (f"The most regularised solution (weight decay {max(weight_decays):g}) over the least "
            f"({min(weight_decays):g}), in each mode (ratios of the means over seeds):")


def invariance_reference(results: Sequence[Any], seed: int) -> Any:
    """The run whose weights the scale-invariance check rescales: the largest weight decay's, at ``seed``."""
    runs = [r for r in results if r.config.seed == seed]
    if not runs:
        raise ValueError(f"no run with seed {seed}")
    return max(runs, key=lambda r: r.config.weight_decay)


def invariance_table(rows: Sequence[dict]):
    """``result_scale_invariance``'s rows as a table indexed by (BatchNorm mode, epsilon, c): the
    loss change, gradient and Hessian errors, the Hessian block's norm ratio, Euler's identity and
    epsilon over the channel variance."""
    import pandas as pd

    table = pd.DataFrame(list(rows))
    table["BatchNorm epsilon"] = ["the model's" if pd.isna(e) else f"{e:g}" for e in table["bn_eps"]]
    return table.set_index(["bn_mode", "BatchNorm epsilon", "c"])[
        ["loss_change", "gradient_error", "hessian_error", "hessian_ratio", "euler", "eps_over_variance"]]


def rows_by_epsilon(rows: Sequence[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """``scale_invariance`` rows split three ways: train mode with an epsilon of its own set
    (``NEGLIGIBLE_EPS``), train mode with the model's epsilon (``bn_eps`` NaN or absent), eval mode."""
    def models_own(r: dict) -> bool:
        e = r.get("bn_eps")
        return e is None or (isinstance(e, float) and math.isnan(e))

    train = [r for r in rows if r["bn_mode"] == "train"]
    return ([r for r in train if not models_own(r)], [r for r in train if models_own(r)],
            [r for r in rows if r["bn_mode"] == "eval"])


def invariance_sentence(scaled_weight: str, fed_layer: str, rows: Sequence[dict]) -> str:
    """*Computed:* the scale-invariance check in words: train mode with BatchNorm's epsilon made
    negligible (the identity, to rounding), train mode with the model's own epsilon, and eval mode
    (no invariance), each by its worst relative change."""
    negligible, own, eval_rows = rows_by_epsilon(rows)
    if not (own and negligible and eval_rows):
        raise ValueError("the rows need train mode with the model's epsilon, train mode with a negligible one, and eval mode")

    def worst(which: Sequence[dict], key: str) -> float:
        return max(r[key] for r in which)

    scales = ", ".join(f"{r['c']:g}" for r in own)
    ratios = ", ".join(f"{r['hessian_ratio']:.4g} for c = {r['c']:g}" for r in negligible)
    return (f"*Computed:* `{scaled_weight}` ({rows[0]['parameters']:,} weights) feeds `{fed_layer}`. In train mode with "
            f"BatchNorm's epsilon made negligible ({negligible[0]['bn_eps']:g}), scaling it by c = {scales} changes the "
            f"loss by at most a relative {worst(negligible, 'loss_change'):.1e}, and c times the gradient and c^2 times "
            f"the Hessian block by at most {worst(negligible, 'gradient_error'):.1e} and "
            f"{worst(negligible, 'hessian_error'):.1e}: the identity, to rounding (the block's norm changes by {ratios}). "
            f"With the model's own epsilon, which is up to {worst(own, 'eps_over_variance'):.1e} of a channel's batch "
            f"variance at the input of `{fed_layer}`, the same numbers are {worst(own, 'loss_change'):.1e}, "
            f"{worst(own, 'gradient_error'):.1e} and {worst(own, 'hessian_error'):.1e}. In eval mode the scaling changes "
            f"the loss by up to {worst(eval_rows, 'loss_change'):.1e} and the rescaled Hessian block by "
            f"{min(r['hessian_error'] for r in eval_rows):.2g} to {worst(eval_rows, 'hessian_error'):.2g}: no invariance.")


def paper_exponent_of(model: str) -> float | None:
    """The decay exponent of the paper's largest weight decay for a CIFAR architecture ``model``;
    None for a model the paper's Section 4 did not train."""
    from .weight_decay import CNN_MODELS, paper_decay_exponent

    return paper_decay_exponent(model) if model in CNN_MODELS else None
