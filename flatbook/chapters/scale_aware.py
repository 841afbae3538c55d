"""Sharpness measures that respect the scale of the weights (beyond the paper).

The paper's conclusion is to "use flatness in conjunction with the weights' scale". For a
network with parameter tensors w_1, ..., w_T (each weight matrix, bias, BatchNorm affine is one
tensor t) and H the Hessian of the mean training loss over them:

* **weight-scaled**: lambda_1(H) ||w||^2 and Tr(H) ||w||^2 (||w|| over all parameters).
  Invariant when every weight is multiplied by one c and the loss does not change, as for weights
  that all feed BatchNorm (scale-invariant: H(c w) = H(w) / c^2); a ReLU network without
  BatchNorm changes its function under such a rescaling, and per-layer rescalings change the
  measure.
* **layer-normalised**: lambda_1 and trace of D H D, D = diag(||w_t||) per tensor
  (``flatbook.scale_measures.LayerNormalizedOperator``, where the invariance is derived);
* **relative flatness** (Petzka et al., 2021) of the last linear layer
  (``flatbook.scale_measures.relative_flatness``).

``measures_table(results)`` computes all of them for cached experiments.Results (``remeasure``
stores each measurement beside the weights); ``group_results`` puts results that differ only in
the treatment (weight decay, optimiser and its settings) in one group; ``rank_correlations``
gives, in each group, Kendall's tau between every measure and the validation accuracy: a sharpness
measure that "works" has tau < 0 (flatter, better); tau > 0 makes it a false friend there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .base import ChapterParameters
from .weight_decay import evaluated_images

__all__ = ["ScaleAwareParameters", "MEASURES", "TREATMENT_FIELDS", "group_key", "one_per_trained_model", "group_results",
           "outside_regime", "excluded_runs", "measures_table", "rank_correlations", "resolved_groups",
           "claims", "resolved_group_summary", "invariance_claims",
           "dinh_invariance", "invariance_display", "checked_groups", "pool_facts", "tau_summary", "resolved_sentence"]

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


@dataclass(frozen=True, kw_only=True)
class ScaleAwareParameters(ChapterParameters):
    """The scale-aware chapter's parameters, by the names of its parameters cell; construction
    checks them all (ValueError naming one)."""

    lanczos_steps: int | None
    probes: int
    min_runs: int
    models: list | None
    results_dir: str | None = None
    in_regime_only: bool = True
    workers: int = 1

    def __post_init__(self) -> None:
        from .. import checks
        from ..models import NAMES

        if self.lanczos_steps is not None:
            checks.positive_int("lanczos_steps", self.lanczos_steps)
        checks.positive_int("probes", self.probes)
        checks.positive_int("workers", self.workers)
        if checks.positive_int("min_runs", self.min_runs) < 2:
            raise ValueError(f"min_runs must be at least 2 (a rank correlation needs two runs), got {self.min_runs}")
        models = self.models
        if models is not None:
            if not isinstance(models, (list, tuple)) or not models or any(m not in NAMES for m in models):
                raise ValueError(f"models must be null or a non-empty list of {NAMES}, got {models!r}")
        checks.results_dir(self.results_dir)
        if not isinstance(self.in_regime_only, bool):
            raise ValueError(f"in_regime_only must be true or false, got {self.in_regime_only!r}")

    def training_plan(self) -> list:
        """Nothing: the chapter measures the runs the other chapters trained (from the cache)."""
        return []



def group_key(config: Any) -> str:
    """The config without its treatment fields (``TREATMENT_FIELDS``), as canonical JSON: runs with the
    same key differ only in the treatment."""
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
    return f"{config.model}{'(' + options + ')' if options else ''}, {data}, {config.epochs} ep, seed {config.seed}"


def outside_regime(result: Any) -> str:
    """Why ``result`` is outside the regime the false-friend question is about ("" when inside): by
    the book's one rule it must interpolate its training set (at least 99% training accuracy: a
    network near zero loss, where Theorem 1's logic applies; a collapsed run is no solution to rank),
    and any weight decay it had must have acted (decay exponent E >= 1)."""
    from ..claims import MIN_DECAY_EXPONENT, MIN_TRAIN_ACCURACY
    from ..decay import decay_exponent_of

    reasons = []
    if result.metrics["train_acc"] < MIN_TRAIN_ACCURACY:
        reasons.append(f"not interpolating (training accuracy below {100 * MIN_TRAIN_ACCURACY:g}%)")
    exponent = decay_exponent_of(result)
    if float(result.config.weight_decay) > 0 and not exponent >= MIN_DECAY_EXPONENT:
        reasons.append(f"weight decay barely acted (E below {MIN_DECAY_EXPONENT:g})")
    return "; ".join(reasons)


def excluded_runs(results: list[Any], models: list[str] | None = None) -> dict[str, int]:
    """How many runs with a spectrum (of ``models``; one per trained model) ``outside_regime`` leaves
    out, by reason."""
    out: dict[str, int] = {}
    for r in one_per_trained_model([r for r in results if r.spectrum is not None]):
        if r.spectrum is None or (models is not None and r.config.model not in models):
            continue
        reason = outside_regime(r)
        if reason:
            out[reason] = out.get(reason, 0) + 1
    return out


def one_per_trained_model(results: list[Any]) -> list[Any]:
    """``results`` with one result per trained model: entries that differ only in their spectrum
    settings (``experiments.SPECTRUM_FIELDS``: the calibration appendix measures a chapter's weights
    again over the whole split) hold the same weights, and counting them twice would weigh one model
    twice. The one kept is the cheapest measurement (fewest Hessian images x Lanczos steps x probes:
    the chapters' own), ties broken by cache key; the order of ``results`` is kept otherwise."""
    import json

    from ..experiments import training_part

    def trained(r: Any) -> str:
        return json.dumps(training_part(r.config), sort_keys=True, default=str)

    def cost(r: Any) -> tuple:
        c = r.config
        images = r.metrics["train_samples"] if c.hessian_samples is None else min(c.hessian_samples,
                                                                                  r.metrics["train_samples"])
        return images * c.lanczos_steps * c.probes, r.key

    best: dict[str, Any] = {}
    for r in results:
        k = trained(r)
        if k not in best or cost(r) < cost(best[k]):
            best[k] = r
    kept = {id(r) for r in best.values()}
    return [r for r in results if id(r) in kept]


def group_results(results: list[Any], min_runs: int = 2, models: list[str] | None = None,
                  in_regime_only: bool = True) -> dict[str, list[Any]]:
    """Results with a spectrum, one per trained model (``one_per_trained_model``), grouped by
    everything but the treatment (``TREATMENT_FIELDS``: the weight decay, and the optimiser with its
    learning rates, momentum and schedule); with ``in_regime_only`` only runs inside the regime
    (``outside_regime``); groups of fewer than ``min_runs`` runs are dropped. Keys are readable
    labels (made unique)."""
    groups: dict[str, list[Any]] = {}
    for r in one_per_trained_model([r for r in results if r.spectrum is not None]):
        if r.spectrum is None or (models is not None and r.config.model not in models):
            continue
        if in_regime_only and outside_regime(r):
            continue
        groups.setdefault(group_key(r.config), []).append(r)
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
                   progress: bool = True, workers: int = 1):
    """One row per result of ``groups`` (from ``group_results``): group, model, optimizer,
    weight_decay, val_acc (percent), weight_norm and the ``MEASURES``. The layer-normalised
    spectrum runs ``lanczos_steps`` Lanczos steps (None: the result's own) with ``probes`` probes
    over the result's own Hessian images and BatchNorm mode; relative flatness uses the same
    images. Every measurement is cached beside the result's weights (``remeasure``); ``workers``
    processes compute them (a speed setting: ``remeasure.many``)."""
    import pandas as pd

    from .. import remeasure

    members = [(label, r) for label, rs in groups.items() for r in rs]
    runs = [r for _, r in members]
    normalized_spectra = remeasure.many(runs, "spectrum", operator="layer-normalized", lanczos_steps=lanczos_steps,
                                        probes=probes, workers=workers, progress=progress)
    flatness = remeasure.many(runs, "relative_flatness", workers=workers, progress=progress)
    rows = []
    for (label, r), normalized, relative in zip(members, normalized_spectra, flatness):
        s, w = r.spectrum, r.metrics["weight_norm"]
        rows.append({"group": label, "model": r.config.model, "optimizer": r.config.optimizer,
                     "weight_decay": float(r.config.weight_decay), "val_acc": 100 * r.metrics["val_acc"],
                     "val_acc_se": 100 * math.sqrt(r.metrics["val_acc"] * (1 - r.metrics["val_acc"]) / evaluated_images(r)),
                     "weight_norm": w, "lambda_max": s.lambda_max, "trace": s.trace, "frobenius": s.frobenius,
                     "lambda_max_w2": s.lambda_max * w ** 2, "trace_w2": s.trace * w ** 2,
                     "normalized_lambda_max": normalized.lambda_max, "normalized_trace": normalized.trace,
                     "relative_flatness": relative})
    return pd.DataFrame(rows, columns=["group", "model", "optimizer", "weight_decay", "val_acc", "val_acc_se",
                                       "weight_norm", *MEASURES])


def rank_correlations(table):
    """Kendall's tau between each measure of ``MEASURES`` and the validation accuracy, within each
    group of ``table`` (from ``measures_table``): a DataFrame, measures x groups (NaN where a
    group's accuracies or a measure's values are all tied)."""
    import pandas as pd

    from ..stats import kendall_tau

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


PAPER_MEASURES = ("lambda_max", "trace", "frobenius")  # the sharpness measures the paper calls false friends


def claims(table, *, seed: int = 0) -> list[Any]:
    """One claim per measure of ``MEASURES``, by whose claim it is. For the paper's own measures
    (``PAPER_MEASURES``) the paper's thesis: "<measure> is a false friend: within a group, the solution
    sharper by it has the higher validation accuracy" (role "paper": supported = the false friend is
    seen here). For the scale-aware measures, about which the paper says nothing, the book's own check
    "<measure> ranks solutions as flatness should: within a group, the flatter solution by it has
    the higher validation accuracy" (role "check": passes = the measure works here). The effect is the
    mean within-group Kendall tau between the measure and the validation accuracy; the test is the
    stratified permutation test (``stats.stratified_rank_correlation``: accuracies permuted within each
    group), so under no association a claim is decided either way with probability at most 5%,
    whatever the number of groups (Holm-corrected over the chapter when shown). "untestable" when no
    arrangement of these groups could reach p < 0.05 (too few or too small groups)."""
    from .. import claims as cl
    from .. import stats

    out = []
    for m, description in MEASURES.items():
        groups = [(g[m].to_numpy(), g["val_acc"].to_numpy()) for _, g in table.groupby("group", sort=False)]
        corr = stats.stratified_rank_correlation(groups, seed=seed)
        evidence = [("groups", str(len(groups))), ("runs", str(sum(len(a) for a, _ in groups)))]
        if m in PAPER_MEASURES:
            out.append(cl.trend_claim(f"{m} ({description}) is a false friend: within a group, the solution sharper by "
                                      "it has the higher validation accuracy", corr, 1, evidence=evidence, role="paper"))
        else:
            out.append(cl.trend_claim(f"{m} ({description}) ranks solutions as flatness should: within a group, the "
                                      "solution flatter by it has the higher validation accuracy", corr, -1,
                                      evidence=evidence, role="check"))
    return out


def resolved_group_summary(table, measures: tuple[str, ...] = ("lambda_max", "normalized_lambda_max"),
                           z: float = 2.0) -> str:
    """One sentence per group whose accuracies are resolved beyond noise (``resolved_groups``): the
    within-group Kendall tau of each of ``measures`` with the validation accuracy, with its exact
    permutation p-value, and what that says (false friend / works / no evidence at 5%)."""
    from .. import stats

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
    steps), while the paper's lambda_1 changes by more than 1% (the non-invariance the chapter is about).
    None (no MLP in the cache, ``dinh_invariance``): no claims."""
    from .. import claims as cl

    if invariance is None:
        return []
    change = invariance.loc["Dinh x10"] / invariance.loc["trained"]
    out = [cl.exact_claim(f"{q} is unchanged by Dinh's rescaling", abs(float(change[q]) - 1.0), 1e-6,
                          "relative change") for q in ("loss", "normalized_lambda_max", "relative_flatness")]
    out.append(cl.exact_claim("the paper's lambda_1 is NOT invariant under Dinh's rescaling: it changes by more than 1%",
                              max(0.0, 0.01 - abs(float(change["lambda_max"]) - 1.0)), 0.0,
                              "shortfall of the relative change below 1%",
                              evidence=[("relative change of lambda_1", f"{float(change['lambda_max']) - 1:+.3g}")]))
    return out


# --- what the notebook computes and displays, as functions (the notebook holds no control flow) ---


def dinh_invariance(results: Sequence[Any], *, images: int = 1000, factor: float = 10.0, steps: int = 30):
    """(DataFrame or None, sentence): on the first cached MLP run of ``results`` with a spectrum, in float64
    over its first ``images`` training images, the loss, the paper's lambda_1 (SLQ, ``steps`` steps, one
    probe, seed 0), the layer-normalised lambda_1 and the last layer's relative flatness of the trained
    network and of the same function after Dinh et al.'s rescaling (the second layer times ``factor``,
    the last divided by it). None and a sentence that says so when the cache holds no MLP run."""
    import pandas as pd
    import torch

    from ..curvature import HessianOperator
    from ..experiments import prepare_data
    from ..scale_measures import LayerNormalizedOperator, relative_flatness
    from ..spectrum import slq
    from ..theory import scaling

    mlps = [r for r in results if r.config.model == "mlp" and r.spectrum is not None]
    if not mlps:
        return None, "*No trained MLP in the cache: run the {doc}`wd_mlp` chapter first.*"
    run = mlps[0]
    model = run.load_model().double()
    x, y = prepare_data(run.config, "train")
    n = min(images, len(y))
    data = (x[:n].double(), y[:n])
    loss_fn = torch.nn.functional.cross_entropy
    rows = []
    for name, net in (("trained", model), (f"Dinh x{factor:g}", scaling.dinh(model, factor, layer=1))):
        op = HessianOperator(net, loss_fn, data, batch_size=128)
        with torch.no_grad():
            loss = float(loss_fn(net(data[0]), data[1]))
        rows.append({"network": name, "loss": loss, "lambda_max": slq(op, steps=steps, probes=1, seed=0).lambda_max,
                     "normalized_lambda_max": slq(LayerNormalizedOperator(op, net), steps=steps, probes=1,
                                                  seed=0).lambda_max,
                     "relative_flatness": relative_flatness(net, loss_fn, data, batch_size=128)})
    table = pd.DataFrame(rows).set_index("network")
    change = table.iloc[1] / table.iloc[0]
    sentence = (f"*Computed* (float64, the first {n} training images of a cached MLP run, weight decay "
                f"{run.config.weight_decay:g}): the loss changes by a factor {change['loss']:.12f}, the paper's "
                f"$\\lambda_1$ by {change['lambda_max']:.4g}, the layer-normalised $\\lambda_1$ by "
                f"{change['normalized_lambda_max']:.12f} and the relative flatness by {change['relative_flatness']:.12f}.")
    return table, sentence


def invariance_display(table) -> Any:
    """What the notebook shows for ``dinh_invariance``'s table: the table to six digits, or an empty
    Markdown when there is none (its sentence says why)."""
    from IPython.display import Markdown

    return Markdown("") if table is None else table.style.format(precision=6)


def checked_groups(results: Sequence[Any], *, min_runs: int, models: list[str] | None, in_regime_only: bool,
                   results_dir: Any = None) -> dict[str, list[Any]]:
    """``group_results``, or a RuntimeError naming the cache when no group has ``min_runs`` runs."""
    groups = group_results(results, min_runs=min_runs, models=models, in_regime_only=in_regime_only)
    if not groups:
        from ..experiments import results_dir as cache_dir

        raise RuntimeError(f"no group of at least {min_runs} runs with spectra in the results cache "
                           f"({cache_dir(results_dir)}): run the other chapters first (make book)")
    return groups


def pool_facts(groups: dict[str, list[Any]], results: Sequence[Any], models: list[str] | None,
               in_regime_only: bool) -> list[tuple[str, str]]:
    """The regime facts of the pooled runs: runs and groups, the runs left out (and why), seeds per
    model, and where the trained models came from and what they cost."""
    members = [r for rs in groups.values() for r in rs]
    left_out = excluded_runs(results, models) if in_regime_only else {}
    per_model = "; ".join(f"{m} ({len({r.config.seed for r in members if r.config.model == m})} seeds)"
                          for m in sorted({r.config.model for r in members}))
    minutes = sum(r.seconds["train"] + r.seconds["spectrum"] for r in members) / 60
    return [("runs measured, groups", f"{len(members)}, {len(groups)}"),
            ("runs left out, outside the regime", "; ".join(f"{n}: {why}" for why, n in left_out.items()) or "none"),
            ("models (seeds)", per_model),
            ("trained models", f"all {len(members)} from the results cache, trained by the book's other chapters on "
                               f"{'; '.join(sorted({r.device for r in members}))}; {minutes:.1f} min of training and "
                               "Lanczos in all")]


def tau_summary(tau):
    """Per measure: in how many groups flatter is better (tau < 0), sharper is better (tau > 0), no
    ranking (tau NaN or 0), and the mean tau (``tau``: ``rank_correlations``)."""
    import pandas as pd

    return pd.DataFrame({"groups where flatter is better (tau < 0)": (tau < 0).sum(axis=1),
                         "groups where sharper is better (tau > 0)": (tau > 0).sum(axis=1),
                         "groups with no ranking (ties)": tau.isna().sum(axis=1) + (tau == 0).sum(axis=1),
                         "mean tau": tau.mean(axis=1)})


def resolved_sentence(table, tau) -> str:
    """*Computed:* how many groups resolve their validation accuracies (best and worst more than two
    standard errors apart), and what those groups show (``resolved_group_summary``)."""
    return (f"*Computed:* {len(resolved_groups(table))} of {len(tau.columns)} groups have validation accuracies whose "
            "best and worst differ by more than two standard errors. What they show: " + resolved_group_summary(table))
