"""The calibration appendix: how far each chapter's sharpness estimate is from the Hessian of the whole
training split, the Hessian the paper means.

The CNN chapters and the adaptive chapter estimate lambda_1 cheaply: a few Lanczos steps over a
random subsample of the training images (their ``hessian_samples`` and ``lanczos_steps``). The
paper's lambda_1 is the top eigenvalue of the Hessian of the mean training loss over the WHOLE
training split. For seed 0 of each chapter's runs (every weight decay or optimiser), this module
measures both, in both BatchNorm modes, on the same trained weights (the cache's: nothing is trained
again, ``experiments.run`` reuses the weights when only spectrum settings change):

* the chapter's estimate: its own config in ``bn_mode`` ("train" is what the chapters report);
* the reference: the whole training split, ``reference_steps`` (>= 50) Lanczos steps, one probe of
  the same seed, batches of 128, the same mode.

``calibration_table`` gives, per (chapter, setting, mode), both values, their ratio, the Ritz
residual ||H y - theta y|| of the reference's top Ritz pair and the bound it gives, and whether the
estimate is within the tolerance (10%). ``ratio_bias`` gives, per chapter and mode, the bias this
puts into the quantity the claims compare: lambda_1 at the largest weight decay (or Gadam) over
lambda_1 at the smallest (or SGD), subsample against whole split.

What the residual bounds: for a symmetric H and a unit Ritz vector y with Ritz value theta, some
eigenvalue of H lies within r = ||H y - theta y|| of theta (the Krylov-Bogoliubov bound); and every
Ritz value is at most lambda_1 (the Rayleigh quotient). So lambda_1 >= theta, and theta is within r of
lambda_1 only when the eigenvalue it has converged to is the top one, which the residual alone cannot
tell: the tables call it a residual, with that bound, not an error bar on lambda_1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .base import ChapterParameters

__all__ = ["CalibrationParameters", "MIN_REFERENCE_STEPS", "TOLERANCE", "reference_config", "compared_settings",
           "calibrate", "calibration_table", "ratio_bias", "calibration_claims", "coverage_sentence"]

MIN_REFERENCE_STEPS = 50  # the reference's Lanczos steps: at least this many
TOLERANCE = 0.10  # an estimate within 10% of the whole-split lambda_1 counts as calibrated
CALIBRATED_CHAPTERS = ("wd_allcnnc", "wd_preresnet", "wd_wrn", "adaptive")


@dataclass(frozen=True, kw_only=True)
class CalibrationParameters(ChapterParameters):
    """The calibration appendix's parameters (its notebook's parameters cell): the ``chapters`` to
    calibrate, the ``profile`` whose settings they ran with, the reference's Lanczos steps, the seed,
    the BatchNorm modes, and the tolerance."""

    chapters: list
    profile: str
    reference_steps: int = MIN_REFERENCE_STEPS
    seed: int = 0
    bn_modes: list = ("train", "eval")
    tolerance: float = TOLERANCE
    results_dir: str | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        from .. import checks

        if not isinstance(self.chapters, (list, tuple)) or not self.chapters:
            raise ValueError(f"chapters must be a non-empty list of {CALIBRATED_CHAPTERS}, got {self.chapters!r}")
        for c in self.chapters:
            if c not in CALIBRATED_CHAPTERS:
                raise ValueError(f"chapters: {c!r} is not a chapter with a subsampled sharpness estimate; "
                                 f"allowed: {CALIBRATED_CHAPTERS}")
        if not isinstance(self.profile, str) or not self.profile:
            raise ValueError(f"profile must be a profile name, got {self.profile!r}")
        checks.positive_int("reference_steps", self.reference_steps)
        if self.reference_steps < MIN_REFERENCE_STEPS:
            raise ValueError(f"reference_steps must be at least {MIN_REFERENCE_STEPS}, got {self.reference_steps}")
        checks.nonnegative_int("seed", self.seed)
        modes = list(self.bn_modes)
        if not modes or any(m not in ("train", "eval") for m in modes) or len(set(modes)) != len(modes):
            raise ValueError(f"bn_modes must be distinct values from ('train', 'eval'), got {self.bn_modes!r}")
        checks.finite_number("tolerance", self.tolerance, minimum=0, strict=True)
        checks.positive_int("workers", self.workers)

    def training_plan(self) -> list[Any]:
        """None of its own: every model it measures is trained by the chapter it calibrates."""
        return []


def reference_config(config: Any, reference_steps: int = MIN_REFERENCE_STEPS, bn_mode: str = "train") -> Any:
    """``config`` measured as the paper measures: the whole training split (``hessian_samples`` None),
    ``reference_steps`` Lanczos steps (at least the chapter's own), one probe, batches of 128, in
    ``bn_mode``; the same training, so the cache reuses the trained weights."""
    return config.replace(hessian_samples=None, lanczos_steps=max(int(reference_steps), int(config.lanczos_steps)),
                          probes=1, hessian_batch_size=128, bn_mode=bn_mode)


def compared_settings(configs: Sequence[Any]) -> list[Any]:
    """The two configs whose lambda_1 ratio a chapter's claims compare: in the order (SGD before Gadam,
    smaller weight decay first), the first and the last: no weight decay and the largest in the CNN
    chapters, SGD and Gadam in the adaptive chapter. A middle weight decay enters only the trend claim."""
    ordered = sorted(configs, key=lambda c: (c.optimizer == "gadam", float(c.weight_decay)))
    return ordered if len(ordered) <= 2 else [ordered[0], ordered[-1]]


def calibrate(plans: dict[str, Sequence[Any]], *, bn_modes: Sequence[str], reference_steps: int,
              results_dir: str | None = None, workers: int = 1, progress: bool = True) -> dict[str, list[dict[str, Any]]]:
    """For each chapter of ``plans`` (chapter -> its seed-0 configs), each of the two settings its claims
    compare (``compared_settings``) and each mode: the chapter's estimate and the whole-split reference
    (``reference_config``), as dicts of the config, the mode and the two ``experiments.Result``, in
    ``compared_settings``' order. Every measurement reuses the chapter's trained weights from the cache;
    the uncached ones run in ``workers`` processes (``experiments.run_many``: a speed setting, the
    results are the same bits with any number)."""
    from ..experiments import run_many

    items = [(name, c, mode) for name, configs in plans.items() for c in compared_settings(configs)
             for mode in bn_modes]
    if not items:
        raise ValueError("nothing to calibrate: plans hold no configs")
    estimates = run_many([c.replace(bn_mode=mode) for _, c, mode in items], workers=workers, results_dir=results_dir,
                         progress=progress)
    references = run_many([reference_config(c, reference_steps, mode) for _, c, mode in items], workers=workers,
                          results_dir=results_dir, progress=progress)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in plans}
    for (name, c, mode), e, r in zip(items, estimates, references):
        out[name].append({"config": c, "bn_mode": mode, "estimate": e, "reference": r})
    return out


def _setting(c: Any) -> str:
    return f"{'Gadam' if c.optimizer == 'gadam' else 'SGD'}, wd {c.weight_decay:.4g}"


def calibration_table(chapter_runs: dict[str, list[dict[str, Any]]], tolerance: float = TOLERANCE):
    """A DataFrame with one row per (chapter, setting, mode): the chapter's lambda_1 estimate (its steps
    and images), the whole-split lambda_1 (steps, images), estimate / reference, the reference's Ritz
    residual (the distance from its top Ritz value to the nearest eigenvalue is at most it), and
    whether the estimate is within ``tolerance``."""
    import pandas as pd

    rows = []
    for chapter, runs in chapter_runs.items():
        for item in runs:
            e, r = item["estimate"], item["reference"]
            ratio = e.spectrum.lambda_max / r.spectrum.lambda_max
            c = item["config"]
            rows.append({"chapter": chapter, "setting": _setting(c), "bn_mode": item["bn_mode"],
                         "estimate": e.spectrum.lambda_max,
                         "estimate_steps_images": f"{e.config.lanczos_steps} steps, "
                                                  f"{e.spectrum.settings.get('num_samples')} images",
                         "whole_split": r.spectrum.lambda_max,
                         "whole_split_steps_images": f"{r.config.lanczos_steps} steps, "
                                                     f"{r.spectrum.settings.get('num_samples')} images",
                         "ratio": ratio, "within_tolerance": bool(abs(ratio - 1) <= tolerance),
                         "whole_split_residual": r.spectrum.lambda_max_residual})
    return pd.DataFrame(rows)


def ratio_bias(table):
    """Per (chapter, mode): the claims' lambda_1 ratio (last setting over first, in the table's order,
    ``compared_settings``': largest weight decay over none, Gadam over SGD) from the estimates and from
    the whole split, and the bias (estimate ratio / whole-split ratio)."""
    import pandas as pd

    rows = []
    for (chapter, mode), g in table.groupby(["chapter", "bn_mode"], sort=False):
        first, last = g.iloc[0], g.iloc[-1]
        est = last["estimate"] / first["estimate"]
        ref = last["whole_split"] / first["whole_split"]
        rows.append({"chapter": chapter, "bn_mode": mode, "compared": f"{last['setting']} / {first['setting']}",
                     "ratio_estimated": est, "ratio_whole_split": ref, "bias": est / ref})
    return pd.DataFrame(rows)


def calibration_claims(table, bias, tolerance: float = TOLERANCE) -> list:
    """The book's own checks (role "check"), one per chapter and mode: the chapter's lambda_1 estimate
    is within ``tolerance`` of the whole-split lambda_1 at every setting, and the ratio its claims
    compare is within ``tolerance`` of the whole-split ratio. Deterministic given the seeds (one
    trained model per setting, one probe): no interval."""
    from ..claims import checked_claim

    out = []
    for (chapter, mode), g in table.groupby(["chapter", "bn_mode"], sort=False):
        worst = float((g["ratio"] - 1).abs().max())
        out.append(checked_claim(
            f"{chapter}, {mode} mode: the chapter's lambda_1 estimate is within {tolerance:.0%} of the whole training "
            "split's at every setting", worst, tolerance, "largest |estimate / whole split - 1|",
            evidence=[(row["setting"], f"{row['estimate']:.4g} / {row['whole_split']:.4g} = {row['ratio']:.3g}")
                      for _, row in g.iterrows()]))
        b = bias[(bias["chapter"] == chapter) & (bias["bn_mode"] == mode)].iloc[0]
        out.append(checked_claim(
            f"{chapter}, {mode} mode: the lambda_1 ratio its claims compare ({b['compared']}) is within {tolerance:.0%} "
            "of the whole split's", abs(float(b["bias"]) - 1), tolerance, "|estimated ratio / whole-split ratio - 1|",
            evidence=[("estimated ratio", f"{b['ratio_estimated']:.4g}"),
                      ("whole-split ratio", f"{b['ratio_whole_split']:.4g}")]))
    return out


def coverage_sentence(chapters: Sequence[str], seed: int, bn_modes: Sequence[str], table, bias,
                      tolerance: float = TOLERANCE) -> str:
    """What this build calibrated and what its checks say together, computed: the chapters, seed and
    modes covered (and the calibrated chapters left out, with the command that covers them), the range
    of the per-setting estimate / whole-split ratios, and, where the per-setting check fails while the
    ratio check passes, that the subsample misjudged both settings in the same direction."""
    covered = list(chapters)
    left = [c for c in CALIBRATED_CHAPTERS if c not in covered]
    out = (f"*Computed:* this build calibrates {', '.join(covered)} (seed {seed}, {' and '.join(bn_modes)} mode; the "
           "two settings each chapter's claims compare)")
    if left:
        out += (f"; {', '.join(left)} {'is' if len(left) == 1 else 'are'} not calibrated in this build (the budget of "
                "`make book`): `python -m flatbook run calibration --profile <the chapters' profile> -p chapters "
                f"\"{list(CALIBRATED_CHAPTERS)}\"` measures every one")
    lo, hi = float(table["ratio"].min()), float(table["ratio"].max())
    out += (f". Per setting, estimate / whole split runs from {lo:.3g} to {hi:.3g} ({int(table['within_tolerance'].sum())} "
            f"of {len(table)} within {tolerance:.0%}).")
    per_setting_fails, ratio_holds = [], []
    for (chapter, mode), g in table.groupby(["chapter", "bn_mode"], sort=False):
        b = bias[(bias["chapter"] == chapter) & (bias["bn_mode"] == mode)].iloc[0]
        same_sign = bool((g["ratio"] > 1).all() or (g["ratio"] < 1).all())
        if not g["within_tolerance"].all() and abs(float(b["bias"]) - 1) <= tolerance and same_sign:
            per_setting_fails.append(f"{chapter} ({mode})")
        if abs(float(b["bias"]) - 1) <= tolerance:
            ratio_holds.append(f"{chapter} ({mode})")
    if per_setting_fails:
        out += (f" In {'; '.join(per_setting_fails)} a setting's estimate misses by more than {tolerance:.0%} while the "
                "ratio the claims compare is within it: the subsample errs in the same direction at both settings, "
                "and a ratio cancels what they share.")
    out += f" The claims' ratio is within {tolerance:.0%} for {len(ratio_holds)} of {len(bias)} chapter-modes."
    return out
