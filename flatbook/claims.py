"""Claims as objects: what a chapter concludes, with one of four outcomes, an effect size with its
interval, the minimum detectable effect, the evidence, and the regime it was measured in.

* ``supported``: the effect's confidence interval excludes "no effect" on the claimed side;
* ``contradicted``: it excludes "no effect" on the other side;
* ``inconclusive``: the interval holds "no effect"; ``mde`` says how large an effect this run
  could have detected (80% power), so "no significant difference" is never read as "not
  reproduced";
* ``untestable``: a regime condition the claim is about fails (weight decay that barely acted,
  one seed, no interpolation, too few points for any trend to reach p < 0.05): ``failed`` names
  it and by how much. The effect is still shown, for information.

``Condition`` is one regime requirement with its measured value. ``claim_from_estimate`` turns a
``flatbook.stats.Estimate`` into a Claim, ``trend_claim`` a ``RankCorrelation``, ``exact_claim`` a
deterministic check (a computed error against a tolerance: no sampling, the interval is the value).
``show(claims)`` displays them in a notebook, one line each, with a machine-readable copy
(mime type ``CLAIMS_MIME``) that tests read back with ``claims_in_notebook``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from .stats import Estimate, RankCorrelation, decide

__all__ = ["OUTCOMES", "Condition", "Claim", "claim_from_estimate", "trend_claim", "exact_claim", "show",
           "markdown", "CLAIMS_MIME", "claims_in_notebook", "decay_condition", "seeds_condition",
           "interpolation_condition", "resolution_condition", "MIN_DECAY_EXPONENT", "MIN_SEEDS",
           "MIN_TRAIN_ACCURACY", "MIN_VAL_IMAGES", "failed_conditions", "values_text", "checked_claim", "FACTS_MIME", "show_facts", "facts_in_notebook"]

OUTCOMES = ("supported", "contradicted", "inconclusive", "untestable")
CLAIMS_MIME = "application/vnd.flatbook.claims+json"
FACTS_MIME = "application/vnd.flatbook.facts+json"

MIN_DECAY_EXPONENT = 1.0  # about one e-fold of shrinkage by the weight-decay term alone
MIN_SEEDS = 2
MIN_TRAIN_ACCURACY = 0.99  # interpolation: eval-mode training accuracy, no augmentation
MIN_VAL_IMAGES = 4000  # validation images: binomial SE <= 0.5 points only at accuracies >= 89% (see below)


def _finite_or_nan(v: Any) -> float:
    return math.nan if v is None else float(v)


@dataclass(frozen=True)
class Condition:
    """One regime requirement: ``name``, the measured ``value``, the ``requirement`` in words, and
    whether it is ``met``; ``shortfall`` says by how much it is missed (empty when met)."""

    name: str
    value: float
    requirement: str
    met: bool
    shortfall: str = ""

    def line(self) -> str:
        mark = "met" if self.met else f"NOT met ({self.shortfall})" if self.shortfall else "NOT met"
        return f"{self.name} = {self.value:.4g} ({self.requirement}: {mark})"


def decay_condition(exponent: float, paper_exponent: float | None = None,
                    name: str = "decay exponent E of the largest weight decay") -> Condition:
    """E = sum_t lr_t wd / (1 - momentum) (SGD; sum_t lr_t wd for decoupled decay) of the largest
    weight decay must be >= 1: below it the weight-decay term alone shrinks the weights by less
    than a factor e over the whole run."""
    paper = f"; the paper's run: {paper_exponent:.3g}" if paper_exponent else ""
    met = exponent >= MIN_DECAY_EXPONENT
    short = "" if met else f"{MIN_DECAY_EXPONENT / exponent:.3g}x too small" if exponent > 0 else "no weight decay"
    return Condition(name, exponent, f"at least {MIN_DECAY_EXPONENT:g}{paper}", met, short)


def seeds_condition(seeds: int) -> Condition:
    met = seeds >= MIN_SEEDS
    return Condition("seeds per setting", seeds, f"at least {MIN_SEEDS}", met,
                     "" if met else f"{MIN_SEEDS - seeds} more needed: one seed cannot separate the effect from "
                                    "training noise")


def interpolation_condition(min_train_accuracy: float) -> Condition:
    met = min_train_accuracy >= MIN_TRAIN_ACCURACY
    return Condition("lowest training accuracy (eval mode)", 100 * min_train_accuracy,
                     f"at least {100 * MIN_TRAIN_ACCURACY:g}%: the near-zero-loss regime of Theorem 1", met,
                     "" if met else f"{100 * (MIN_TRAIN_ACCURACY - min_train_accuracy):.3g} points short")


def resolution_condition(val_images: int, val_se_points: float) -> Condition:
    """Validation accuracies resolved: at least ``MIN_VAL_IMAGES`` validation images. The condition
    counts images rather than bounding the binomial SE of one accuracy, sqrt(p (1 - p) / n), because
    that SE depends on the accuracy p: 4,000 images give 0.5 points at p = 89%, 0.7 at p = 75%, and the
    paper's own 5,000 images at its CIFAR-100 accuracy of 73.5% give 0.62, which a bound of 0.5 would
    call unresolved. The SE of this run is shown beside the count; what a claim can resolve is its
    own interval and minimum detectable effect."""
    met = val_images >= MIN_VAL_IMAGES
    return Condition("validation images", val_images,
                     f"at least {MIN_VAL_IMAGES:,} (binomial SE of one accuracy here: {val_se_points:.2f} points)", met,
                     "" if met else f"{MIN_VAL_IMAGES / val_images:.3g}x too few")


@dataclass(frozen=True)
class Claim:
    """A chapter's claim and what this run says of it (module docstring). ``effect`` is in the unit
    ``effect_name`` states; ``null`` is its no-effect value; ``low``/``high`` the ``level``
    interval (infinite when the uncertainty is unknown); ``mde`` the minimum detectable distance
    from ``null`` (NaN: unknown, or not applicable). ``evidence`` holds (name, value) pairs as text.
    ``failed`` (untestable only) names the regime conditions that fail."""

    statement: str
    outcome: str
    effect_name: str
    effect: float
    low: float
    high: float
    null: float
    level: float
    mde: float
    method: str
    evidence: tuple[tuple[str, str], ...] = ()
    regime: tuple[Condition, ...] = ()
    failed: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.outcome == "untestable" and not self.failed:
            raise ValueError("an untestable claim must name the regime condition that fails")

    def interval_text(self, digits: int = 3) -> str:
        if self.level == 1.0:
            return "computed exactly, no sampling"
        if math.isinf(self.low) and math.isinf(self.high) or (self.low == 0 and math.isinf(self.high)):
            return "interval unknown"
        while digits < 8 and self.low != self.high and f"{self.low:.{digits}g}" == f"{self.high:.{digits}g}":
            digits += 1  # enough digits to tell the ends apart
        return f"{self.level:.0%} CI [{self.low:.{digits}g}, {self.high:.{digits}g}]"

    def line(self) -> str:
        """One line: outcome, statement, effect with interval and MDE, the failing condition."""
        if math.isnan(self.mde):
            mde = ""
        elif self.null == 1.0:
            mde = f"; smallest ratio detectable at 80% power: {self.mde:.3g} (or 1/{self.mde:.3g})"
        else:
            mde = f"; smallest difference detectable at 80% power: {self.mde:.3g}"
        text = (f"**{self.outcome}**: {self.statement}. {self.effect_name} = {self.effect:.4g} "
                f"({self.interval_text()}{mde})")
        if self.outcome == "untestable":
            text += f". Untestable here: {self.failed}"
        return text

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = [list(e) for e in self.evidence]
        for k in ("effect", "low", "high", "null", "level", "mde"):
            v = d[k]
            d[k] = None if isinstance(v, float) and math.isnan(v) else ("inf" if v == math.inf else
                                                                         "-inf" if v == -math.inf else v)
        for c in d["regime"]:
            c["value"] = None if isinstance(c["value"], float) and math.isnan(c["value"]) else c["value"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Claim":
        def num(v: Any) -> float:
            if v is None:
                return math.nan
            return {"inf": math.inf, "-inf": -math.inf}[v] if isinstance(v, str) else float(v)

        regime = tuple(Condition(c["name"], _finite_or_nan(c["value"]), c["requirement"], bool(c["met"]),
                                 c.get("shortfall", "")) for c in d.get("regime", ()))
        return cls(statement=d["statement"], outcome=d["outcome"], effect_name=d["effect_name"],
                   effect=num(d["effect"]), low=num(d["low"]), high=num(d["high"]), null=num(d["null"]),
                   level=num(d["level"]), mde=num(d["mde"]), method=d["method"],
                   evidence=tuple((str(a), str(b)) for a, b in d.get("evidence", ())), regime=regime,
                   failed=d.get("failed", ""))


def values_text(values: Any) -> str:
    """Numbers as evidence text: "1.234, 5.678" (4 significant digits)."""
    import numpy as np

    return ", ".join(f"{v:.4g}" for v in np.asarray(values, dtype=float).ravel())


def failed_conditions(regime: Sequence[Condition]) -> str:
    """The conditions of ``regime`` that are not met, with their shortfalls, as one text ("" if none)."""
    return "; ".join(f"{c.name} = {c.value:.4g}, {c.requirement} ({c.shortfall})" if c.shortfall else
                     f"{c.name} = {c.value:.4g}, {c.requirement}" for c in regime if not c.met)


def claim_from_estimate(statement: str, estimate: Estimate, direction: int, effect_name: str, *,
                        regime: Sequence[Condition] = (), evidence: Iterable[tuple[str, str]] = ()) -> Claim:
    """The claim "the effect is above (``direction`` +1) / below (-1) its null value", decided by
    ``stats.decide`` unless a regime condition fails (then "untestable")."""
    regime = tuple(regime)
    failed = failed_conditions(regime)
    outcome = "untestable" if failed else decide(estimate, direction)
    return Claim(statement=statement, outcome=outcome, effect_name=effect_name, effect=estimate.value,
                 low=estimate.low, high=estimate.high, null=estimate.null, level=estimate.level, mde=estimate.mde,
                 method=estimate.method, evidence=tuple((str(a), str(b)) for a, b in evidence), regime=regime,
                 failed=failed)


def trend_claim(statement: str, correlation: RankCorrelation, direction: int, *, alpha: float = 0.05,
                regime: Sequence[Condition] = (), evidence: Iterable[tuple[str, str]] = ()) -> Claim:
    """A monotone trend (Kendall's tau > 0 for ``direction`` +1, < 0 for -1): "supported" when the
    permutation p-value is below ``alpha`` with tau on the claimed side, "contradicted" when below
    ``alpha`` on the other side, else "inconclusive"; "untestable" when even a perfect ordering of
    these points could not reach p < ``alpha`` (e.g. 3 points) or a regime condition fails."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    regime = tuple(regime) + (Condition("smallest p-value any ordering of these points can reach",
                                        correlation.p_floor, f"below {alpha:g}", correlation.p_floor < alpha,
                                        "" if correlation.p_floor < alpha else
                                        f"{correlation.n} points cannot show a trend"),)
    failed = failed_conditions(regime)
    if failed:
        outcome = "untestable"
    elif correlation.p_value < alpha and not math.isnan(correlation.tau):
        outcome = "supported" if correlation.tau * direction > 0 else "contradicted"
    else:
        outcome = "inconclusive"
    evidence = tuple((str(a), str(b)) for a, b in evidence) + (("permutation p-value", f"{correlation.p_value:.3g}"),
                                                               ("points", str(correlation.n)))
    return Claim(statement=statement, outcome=outcome, effect_name="Kendall tau", effect=correlation.tau,
                 low=correlation.low, high=correlation.high, null=0.0, level=0.95, mde=math.nan,
                 method=correlation.method, evidence=evidence, regime=regime, failed=failed)


def exact_claim(statement: str, error: float, tolerance: float, effect_name: str = "error", *,
                evidence: Iterable[tuple[str, str]] = (), method: str = "exact computation (no sampling)") -> Claim:
    """A deterministic check: "supported" when the computed ``error`` is at most ``tolerance``,
    else "contradicted". The interval is the value itself: nothing was sampled."""
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    error = float(error)
    outcome = "supported" if error <= tolerance else "contradicted"
    return Claim(statement=statement, outcome=outcome, effect_name=effect_name, effect=error, low=error, high=error,
                 null=float(tolerance), level=1.0, mde=math.nan, method=f"{method}; tolerance {tolerance:.3g}",
                 evidence=tuple((str(a), str(b)) for a, b in evidence))


def checked_claim(statement: str, value: float, bound: float, effect_name: str, *, at_least: bool = False,
                  regime: Sequence[Condition] = (), evidence: Iterable[tuple[str, str]] = (),
                  method: str = "measured on this run (deterministic given its seeds)") -> Claim:
    """A deterministic check of a measured value against a bound: "supported" when ``value`` is at
    most ``bound`` (at least, with ``at_least``), else "contradicted"; "untestable" when a regime
    condition fails (the value is still shown). Nothing was sampled, so the interval is the value
    itself (level 1), as in ``exact_claim``; ``method`` says what was computed."""
    if not (isinstance(bound, (int, float)) and math.isfinite(bound)):
        raise ValueError(f"bound must be a finite number, got {bound!r}")
    value = float(value)
    regime = tuple(regime)
    failed = failed_conditions(regime)
    if failed:
        outcome = "untestable"
    elif math.isnan(value):
        raise ValueError(f"{statement!r}: the checked value is NaN")
    else:
        outcome = "supported" if (value >= bound if at_least else value <= bound) else "contradicted"
    return Claim(statement=statement, outcome=outcome, effect_name=effect_name, effect=value, low=value, high=value,
                 null=float(bound), level=1.0, mde=math.nan,
                 method=f"{method}; {'at least' if at_least else 'at most'} {bound:.3g}",
                 evidence=tuple((str(a), str(b)) for a, b in evidence), regime=regime, failed=failed)


def markdown(claims: Sequence[Claim]) -> str:
    """A Markdown list, one claim a line, with its method and regime conditions beneath."""
    lines = []
    for c in claims:
        lines.append(f"- {c.line()}.")
        details = [f"method: {c.method}"]
        details += [f"{k}: {v}" for k, v in c.evidence]
        details += [cond.line() for cond in c.regime]
        lines.append("  <br><small>" + "; ".join(details).replace("|", "/") + "</small>")
    return "\n".join(lines)


def show(claims: Sequence[Claim]) -> None:
    """Display ``claims`` in a notebook: Markdown for the reader, JSON (``CLAIMS_MIME``) for tests."""
    from IPython.display import display

    claims = list(claims)
    if not all(isinstance(c, Claim) for c in claims):
        raise TypeError("show takes a list of Claim objects")
    display({"text/markdown": markdown(claims), CLAIMS_MIME: {"claims": [c.to_dict() for c in claims]}}, raw=True)


def claims_in_notebook(notebook: Any) -> list[Claim]:
    """Every Claim shown by ``show`` in an executed notebook (a path or a NotebookNode), in order."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4) if not hasattr(notebook, "cells") else notebook
    out: list[Claim] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for o in cell.get("outputs", []):
            payload = o.get("data", {}).get(CLAIMS_MIME)
            if payload is None:
                continue
            if isinstance(payload, str):
                payload = json.loads(payload)
            out.extend(Claim.from_dict(d) for d in payload["claims"])
    return out


def show_facts(facts: Sequence[tuple[str, str]]) -> None:
    """Display a run's regime facts (label, value) as a Markdown table, with a machine-readable copy
    (``FACTS_MIME``) that the chapter runner also copies into the page's opening box."""
    from IPython.display import display

    rows = [(str(a), str(b)) for a, b in facts]
    md = "\n".join(["| measured by this run | value |", "|---|---|"] +
                    [f"| {a} | {b.replace('|', '/')} |" for a, b in rows])
    display({"text/markdown": md, FACTS_MIME: {"facts": [list(r) for r in rows]}}, raw=True)


def facts_in_notebook(notebook: Any) -> list[tuple[str, str]]:
    """Every (label, value) shown by ``show_facts`` in an executed notebook (path or NotebookNode)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4) if not hasattr(notebook, "cells") else notebook
    out: list[tuple[str, str]] = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            payload = o.get("data", {}).get(FACTS_MIME)
            if payload is not None:
                payload = json.loads(payload) if isinstance(payload, str) else payload
                out.extend((str(a), str(b)) for a, b in payload["facts"])
    return out
