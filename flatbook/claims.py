"""Claims as objects: what a chapter concludes, whose claim it is, one of four outcomes, an effect
size with its interval, the minimum detectable effect, the evidence, and the regime it was measured in.

Every claim has a ROLE, and the outcome words belong to the role, so a word never means the
opposite of what a reader counts it as:

* ``paper``: the paper's own claim, stated as the paper states it. ``supported`` (the effect's
  confidence interval excludes "no effect" on the paper's side), ``contradicted`` (on the other
  side), ``inconclusive`` (the interval holds "no effect"; ``mde`` says how large an effect this
  run could have detected at 80% power, so "no significant difference" is never read as "not
  reproduced") or ``untestable`` (a regime condition the claim is about fails: weight decay that
  barely acted, one seed, no interpolation, too few points for any trend to reach p < 0.05;
  ``failed`` names it and by how much; the effect is still shown);
* ``correction``: the book's correction of the paper (e.g. "Eq. (3) is not the Hessian"):
  ``confirmed`` or ``refuted`` (and inconclusive / untestable as above);
* ``check``: the book's own check of its method or expectation (an identity, a numerical
  property, a premise): ``passes`` or ``fails`` (inconclusive / untestable as above).

A paper claim that is a COMPONENT of one of the paper's composite claims (``paper_claim`` names
it, ``component`` which part: e.g. "weight-decay" / "sharper") is primary: the composite's
verdict is the conjunction of its components (``conjunction``), which needs no multiplicity
correction (an intersection-union test). Every other decided statistical claim of a chapter is
secondary and goes through Holm's step-down correction within the chapter (``holm``). A decided
effect within 1.5x its minimum detectable effect is marked ``marginal``.

``Condition`` is one regime requirement with its measured value. ``claim_from_estimate`` turns a
``flatbook.stats.Estimate`` into a Claim, ``trend_claim`` a ``RankCorrelation``, ``exact_claim`` a
deterministic check (a computed error against a tolerance: no sampling, the interval is the value).
``show(claims)`` displays them in a notebook, one list per role (the paper's composite verdicts
first), with a machine-readable copy (mime type ``CLAIMS_MIME``) that tests and the scoreboard read
back with ``claims_in_notebook``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Sequence

from .stats import Estimate, RankCorrelation, decide, p_value

__all__ = ["OUTCOMES", "ROLES", "ROLE_OUTCOMES", "ROLE_TITLES", "conjunction", "holm", "MARGINAL_FACTOR", "Condition",
           "Claim", "claim_from_estimate", "two_sided_claim", "trend_claim", "exact_claim", "show",
           "markdown", "composite_lines", "CLAIMS_MIME", "claims_in_notebook", "decay_condition", "seeds_condition",
           "interpolation_condition", "resolution_condition", "MIN_DECAY_EXPONENT", "MIN_SEEDS",
           "MIN_TRAIN_ACCURACY", "MIN_VAL_IMAGES", "failed_conditions", "values_text", "checked_claim", "FACTS_MIME",
           "show_facts", "facts_in_notebook"]

ROLES = ("paper", "correction", "check")
ROLE_OUTCOMES = {"paper": ("supported", "contradicted", "inconclusive", "untestable"),
                 "correction": ("confirmed", "refuted", "inconclusive", "untestable"),
                 "check": ("passes", "fails", "inconclusive", "untestable")}
ROLE_TITLES = {"paper": "The paper's claims", "correction": "The book's corrections of the paper",
               "check": "The book's own checks"}
OUTCOMES = ROLE_OUTCOMES["paper"]
MARGINAL_FACTOR = 1.5  # a decided effect closer to the null than 1.5x its MDE is marked marginal
HOLM_ALPHA = 0.05
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
        """One line: the measured value, the requirement and whether it is met (with the shortfall)."""
        mark = "met" if self.met else f"NOT met ({self.shortfall})" if self.shortfall else "NOT met"
        return f"{self.name} = {self.value:.4g} ({self.requirement}: {mark})"


def decay_condition(exponent: float, paper_exponent: float | None = None,
                    name: str = "decay exponent E of the largest weight decay") -> Condition:
    """E = sum_t lr_t wd / (1 - momentum) (SGD; sum_t lr_t wd for decoupled decay) of the largest
    weight decay must be >= 1: below it the weight-decay term alone shrinks the weights by less
    than a factor e over the whole run."""
    paper = f" (the paper's run, for comparison: {paper_exponent:.3g})" if paper_exponent else ""
    met = exponent >= MIN_DECAY_EXPONENT
    short = "" if met else f"{MIN_DECAY_EXPONENT / exponent:.3g}x too small" if exponent > 0 else "no weight decay"
    return Condition(name, exponent, f"must be at least {MIN_DECAY_EXPONENT:g}{paper}", met, short)


def seeds_condition(seeds: int) -> Condition:
    """The regime condition "at least MIN_SEEDS seeds per setting": one seed cannot separate an effect
    from training noise."""
    met = seeds >= MIN_SEEDS
    return Condition("seeds per setting", seeds, f"at least {MIN_SEEDS}", met,
                     "" if met else f"{MIN_SEEDS - seeds} more needed: one seed cannot separate the effect from "
                                    "training noise")


def interpolation_condition(min_train_accuracy: float) -> Condition:
    """The regime condition "lowest training accuracy (eval mode) at least MIN_TRAIN_ACCURACY": the
    near-zero-loss regime of Theorem 1; ``min_train_accuracy`` is a fraction in [0, 1]."""
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


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return role


def _word(role: str, decision: str) -> str:
    """The ``role``'s word for a decision made in the paper's words ("supported" = the statement
    holds, "contradicted" = its opposite holds, "inconclusive", "untestable")."""
    return ROLE_OUTCOMES[_check_role(role)][OUTCOMES.index(decision)]


@dataclass(frozen=True)
class Claim:
    """A chapter's claim and what this run says of it (module docstring). ``outcome`` is one of
    ``ROLE_OUTCOMES[role]``. ``effect`` is in the unit ``effect_name`` states; ``null`` is its
    no-effect value; ``low``/``high`` the ``level`` interval (infinite when the uncertainty is
    unknown, NaN when the claim is decided by a p-value alone); ``mde`` the minimum detectable
    distance from ``null`` (NaN: unknown, or not applicable). ``evidence`` holds (name, value)
    pairs as text. ``failed`` (untestable only) names the regime conditions that fail.
    ``paper_claim``/``component``: the paper's composite claim this one is a part of (primary; role
    "paper" only). ``p_value``: two-sided p of "no effect" (NaN for exact checks). ``marginal``: decided,
    but within ``MARGINAL_FACTOR`` times its MDE. ``adjustment``: what Holm's correction did."""

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
    role: str = "paper"
    paper_claim: str = ""
    component: str = ""
    p_value: float = math.nan
    marginal: bool = False
    adjustment: str = ""

    def __post_init__(self) -> None:
        _check_role(self.role)
        if self.outcome not in ROLE_OUTCOMES[self.role]:
            raise ValueError(f"outcome of a {self.role!r} claim must be one of {ROLE_OUTCOMES[self.role]}, "
                             f"got {self.outcome!r}")
        if self.outcome == "untestable" and not self.failed:
            raise ValueError("an untestable claim must name the regime condition that fails")
        if self.paper_claim and self.role != "paper":
            raise ValueError(f"only a 'paper' claim can be part of the paper's claim {self.paper_claim!r}; "
                             f"this one is a {self.role!r} claim")
        if bool(self.paper_claim) != bool(self.component):
            raise ValueError("paper_claim and component go together (both set for a primary claim, or neither)")

    @property
    def decision(self) -> str:
        """The outcome in role-free words: "holds", "fails", "inconclusive" or "untestable"."""
        return ("holds", "fails", "inconclusive", "untestable")[ROLE_OUTCOMES[self.role].index(self.outcome)]

    @property
    def primary(self) -> bool:
        """True for a component of one of the paper's enumerated claims (``paper_claim`` set): no Holm
        correction; every other decided claim is secondary."""
        return bool(self.paper_claim)

    def interval_text(self, digits: int = 3) -> str:
        """The interval as text: "95% CI [low, high]", "unknown (one seed)" when no interval could be
        computed, or what a deterministic measurement has in its place."""
        if self.level == 1.0:
            return ("computed, no sampling" if self.method.startswith("exact computation")
                    else "measured, deterministic given its seeds: no interval")
        if math.isnan(self.low) and math.isnan(self.high):
            return f"permutation p = {self.p_value:.3g}" if not math.isnan(self.p_value) else "no interval"
        if math.isinf(self.low) and math.isinf(self.high) or (self.low == 0 and math.isinf(self.high)):
            return "interval unknown"
        while digits < 8 and self.low != self.high and f"{self.low:.{digits}g}" == f"{self.high:.{digits}g}":
            digits += 1  # enough digits to tell the ends apart
        return f"{self.level:.0%} CI [{self.low:.{digits}g}, {self.high:.{digits}g}]"

    def outcome_text(self) -> str:
        """The outcome word in bold, with "(marginal)" when the effect lies within MARGINAL_FACTOR times
        its minimum detectable effect."""
        return f"**{self.outcome}**" + (" (marginal)" if self.marginal else "")

    def effect_text(self) -> str:
        """The effect with its interval: "ratio ... = 9.1 (95% CI [2.2, 38])"."""
        return f"{self.effect_name} = {self.effect:.4g} ({self.interval_text()})"

    def line(self) -> str:
        """One line: outcome, statement, effect with interval and MDE, the failing condition."""
        if math.isnan(self.mde):
            mde = ""
        elif self.null == 1.0:
            mde = f"; smallest ratio detectable at 80% power: {self.mde:.3g} (or 1/{self.mde:.3g})"
        else:
            mde = f"; smallest difference detectable at 80% power: {self.mde:.3g}"
        text = (f"{self.outcome_text()}: {self.statement}. {self.effect_name} = {self.effect:.4g} "
                f"({self.interval_text()}{mde})")
        if self.marginal:
            text += (f". Marginal: |log ratio| is within {MARGINAL_FACTOR:g}x the log of the smallest detectable ratio"
                     if self.null == 1.0 else
                     f". Marginal: the effect is within {MARGINAL_FACTOR:g}x the smallest detectable one")
        if self.adjustment:
            text += f". {self.adjustment}"
        if self.outcome == "untestable":
            text += f". Untestable here: {self.failed}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field (infinities as "inf"/"-inf", NaN as None): what a notebook
        stores beside the rendered claim, read back by ``from_dict``."""
        d = asdict(self)
        d["evidence"] = [list(e) for e in self.evidence]
        for k in ("effect", "low", "high", "null", "level", "mde", "p_value"):
            v = d[k]
            d[k] = None if isinstance(v, float) and math.isnan(v) else ("inf" if v == math.inf else
                                                                         "-inf" if v == -math.inf else v)
        for c in d["regime"]:
            c["value"] = None if isinstance(c["value"], float) and math.isnan(c["value"]) else c["value"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Claim":
        """The Claim that ``to_dict`` wrote (None back to NaN, "inf" back to infinity)."""
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
                   failed=d.get("failed", ""), role=d.get("role", "paper"), paper_claim=d.get("paper_claim", ""),
                   component=d.get("component", ""), p_value=num(d.get("p_value")),
                   marginal=bool(d.get("marginal", False)), adjustment=d.get("adjustment", ""))


def conjunction(components: Sequence[Claim]) -> str:
    """The verdict on a composite paper claim ("A and B") from its component claims: "untestable"
    if any component is untestable (a part measured outside its regime can neither support nor
    contradict, so it takes precedence and the parts' own outcomes stay visible beside the verdict),
    else "supported" if every component is supported, else "contradicted" if any is contradicted,
    else "inconclusive". Each component is tested at 2.5% one-sided, and the conjunction is
    supported only when every one is: an intersection-union test, so its false-"supported" rate
    stays at most 2.5% with no correction. "contradicted" is a union over the parts (any one), so
    with m parts its false rate can reach m x 2.5%; the parts' intervals say which one."""
    components = list(components)
    if not components:
        raise ValueError("a composite claim needs at least one component")
    if any(c.role != "paper" for c in components):
        raise ValueError("the components of a paper claim must be 'paper' claims")
    outcomes = [c.outcome for c in components]
    if "untestable" in outcomes:
        return "untestable"
    if all(o == "supported" for o in outcomes):
        return "supported"
    if "contradicted" in outcomes:
        return "contradicted"
    return "inconclusive"


def holm(claims: Sequence[Claim], alpha: float = HOLM_ALPHA) -> list[Claim]:
    """Holm's step-down correction over a chapter's SECONDARY tested claims (not primary, not
    untestable, with a p-value): sort their p-values p_(1) <= ... <= p_(m); the adjusted p of the
    i-th is max over j <= i of min(1, (m - j + 1) p_(j)). A decided secondary claim whose adjusted p
    exceeds ``alpha`` becomes "inconclusive"; every tested secondary claim records its adjusted p in
    ``adjustment``. Primary claims, exact checks and untestable claims pass unchanged. The
    family-wise rate of a wrong decision among the secondary claims is then at most ``alpha``."""
    claims = list(claims)
    family = [i for i, c in enumerate(claims)
              if not c.primary and c.outcome != "untestable" and not math.isnan(c.p_value)]
    m = len(family)
    if m == 0:
        return claims
    order = sorted(family, key=lambda i: claims[i].p_value)
    adjusted: dict[int, float] = {}
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * claims[i].p_value))
        adjusted[i] = running
    out = list(claims)
    for i in family:
        c = claims[i]
        note = f"Holm over the {m} tested secondary claims of this chapter: adjusted p = {adjusted[i]:.3g}"
        outcome = c.outcome
        if c.decision in ("holds", "fails") and adjusted[i] > alpha:
            outcome = ROLE_OUTCOMES[c.role][2]
            note += f" > {alpha:g}, so not decided (p = {c.p_value:.3g} before the correction)"
        out[i] = replace(c, outcome=outcome, adjustment=note, marginal=c.marginal and outcome == c.outcome)
    return out


def _is_marginal(estimate: Estimate, decision: str) -> bool:
    """A decided effect closer to its null than ``MARGINAL_FACTOR`` x its minimum detectable effect
    (on the log scale for a ratio, whose ``mde`` is itself a ratio)."""
    if decision not in ("supported", "contradicted") or math.isnan(estimate.mde):
        return False
    if estimate.scale == "ratio":
        return abs(math.log(estimate.value)) < MARGINAL_FACTOR * math.log(estimate.mde)
    return abs(estimate.value - estimate.null) < MARGINAL_FACTOR * estimate.mde


def values_text(values: Any) -> str:
    """Numbers as evidence text: "1.234, 5.678" (4 significant digits)."""
    import numpy as np

    return ", ".join(f"{v:.4g}" for v in np.asarray(values, dtype=float).ravel())


def failed_conditions(regime: Sequence[Condition]) -> str:
    """The conditions of ``regime`` that are not met, with their shortfalls, as one text ("" if none)."""
    return "; ".join(f"{c.name} = {c.value:.4g}, {c.requirement} ({c.shortfall})" if c.shortfall else
                     f"{c.name} = {c.value:.4g}, {c.requirement}" for c in regime if not c.met)


def claim_from_estimate(statement: str, estimate: Estimate, direction: int, effect_name: str, *,
                        regime: Sequence[Condition] = (), evidence: Iterable[tuple[str, str]] = (),
                        role: str = "paper", paper_claim: str = "", component: str = "") -> Claim:
    """The claim "the effect is above (``direction`` +1) / below (-1) its null value", decided by
    ``stats.decide`` unless a regime condition fails (then "untestable"), in ``role``'s words. The
    two-sided p-value (``stats.p_value``) is kept for Holm's correction; a decided effect within
    ``MARGINAL_FACTOR`` x its MDE is marked marginal."""
    regime = tuple(regime)
    failed = failed_conditions(regime)
    decision = "untestable" if failed else decide(estimate, direction)
    return Claim(statement=statement, outcome=_word(role, decision), effect_name=effect_name, effect=estimate.value,
                 low=estimate.low, high=estimate.high, null=estimate.null, level=estimate.level, mde=estimate.mde,
                 method=estimate.method, evidence=tuple((str(a), str(b)) for a, b in evidence), regime=regime,
                 failed=failed, role=role, paper_claim=paper_claim, component=component, p_value=p_value(estimate),
                 marginal=_is_marginal(estimate, decision))


def two_sided_claim(statement: str, estimate: Estimate, effect_name: str, *, margin: float,
                    regime: Sequence[Condition] = (), evidence: Iterable[tuple[str, str]] = (),
                    role: str = "paper", paper_claim: str = "", component: str = "") -> Claim:
    """The claim "the effect differs from its null value" (either direction): it holds when the
    interval excludes the null; it FAILS when the interval lies wholly inside the equivalence margin
    (a ratio within [1/``margin``, ``margin``], a difference within +-``margin``: two one-sided tests,
    so "no change" is shown, not assumed from a wide interval); otherwise inconclusive. "untestable"
    when a regime condition fails. The margin is part of the statement's method."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    if estimate.scale == "ratio" and margin <= 1:
        raise ValueError(f"a ratio's equivalence margin must be > 1, got {margin!r}")
    regime = tuple(regime)
    failed = failed_conditions(regime)
    lo, hi = (1 / margin, margin) if estimate.scale == "ratio" else (estimate.null - margin, estimate.null + margin)
    if failed:
        decision = "untestable"
    elif not estimate.uncertainty_known:
        decision = "inconclusive"
    elif estimate.low > estimate.null or estimate.high < estimate.null:
        decision = "supported"
    elif lo <= estimate.low and estimate.high <= hi:
        decision = "contradicted"
    else:
        decision = "inconclusive"
    band = f"[1/{margin:g}, {margin:g}]" if estimate.scale == "ratio" else f"null +- {margin:g}"
    # the p-value of the decision made: "no effect" for a difference; for "no change" the larger of the two
    # one-sided p-values against the margins (TOST), so Holm's correction weighs the test actually done
    p = _equivalence_p(estimate, lo, hi) if decision == "contradicted" else p_value(estimate)
    return Claim(statement=statement, outcome=_word(role, decision), effect_name=effect_name, effect=estimate.value,
                 low=estimate.low, high=estimate.high, null=estimate.null, level=estimate.level, mde=estimate.mde,
                 method=f"{estimate.method}; two-sided, {_word(role, 'contradicted')} when the interval lies within {band}",
                 evidence=tuple((str(a), str(b)) for a, b in evidence), regime=regime, failed=failed, role=role,
                 paper_claim=paper_claim, component=component, p_value=p,
                 marginal=decision == "supported" and _is_marginal(estimate, decision))


def _equivalence_p(estimate: Estimate, lo: float, hi: float) -> float:
    """The two one-sided tests' p-value (the larger) that the effect lies inside [lo, hi] (on the
    log scale for a ratio), with the estimate's t (or normal) distribution."""
    from scipy.stats import norm, t

    value, low, high = estimate.value, lo, hi
    if estimate.scale == "ratio":
        value, low, high = math.log(value), math.log(lo), math.log(hi)
    if estimate.se == 0:
        return 0.0 if low < value < high else 1.0
    sf = (lambda z: norm.sf(z)) if math.isinf(estimate.df) else (lambda z: t.sf(z, estimate.df))
    return float(max(sf((value - low) / estimate.se), sf((high - value) / estimate.se)))


def trend_claim(statement: str, correlation: RankCorrelation, direction: int, *, alpha: float = 0.05,
                regime: Sequence[Condition] = (), evidence: Iterable[tuple[str, str]] = (),
                role: str = "paper", paper_claim: str = "", component: str = "") -> Claim:
    """A rank ASSOCIATION (Kendall's tau > 0 for ``direction`` +1, < 0 for -1; not monotonicity):
    decided by its permutation p-value, "supported" when p < ``alpha`` with tau on the claimed side,
    "contradicted" when p < ``alpha`` on the other side, else "inconclusive" (in ``role``'s words);
    "untestable" when even a perfect ordering of these points could not reach p < ``alpha`` (e.g. 3
    points) or a regime condition fails. No interval is printed: a bootstrap of tau over a few points
    degenerates (all resamples of a perfectly ordered sample give tau = 1)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    regime = tuple(regime) + (Condition("smallest p-value any ordering of these points can reach",
                                        correlation.p_floor, f"must be below {alpha:g}", correlation.p_floor < alpha,
                                        "" if correlation.p_floor < alpha else
                                        f"{correlation.n} points cannot show a trend"),)
    failed = failed_conditions(regime)
    if failed:
        decision = "untestable"
    elif correlation.p_value < alpha and not math.isnan(correlation.tau):
        decision = "supported" if correlation.tau * direction > 0 else "contradicted"
    else:
        decision = "inconclusive"
    evidence = tuple((str(a), str(b)) for a, b in evidence) + (("permutation p-value", f"{correlation.p_value:.3g}"),
                                                               ("points", str(correlation.n)))
    if not math.isnan(getattr(correlation, "critical", math.nan)):
        evidence += (("the smallest |tau| this test can call significant at 5% (its resolution)",
                      f"{correlation.critical:.3g}"),)
    return Claim(statement=statement, outcome=_word(role, decision), effect_name="Kendall tau", effect=correlation.tau,
                 low=math.nan, high=math.nan, null=0.0, level=0.95, mde=math.nan,
                 method=correlation.method.split("; ")[0], evidence=evidence, regime=regime, failed=failed, role=role,
                 paper_claim=paper_claim, component=component, p_value=float(correlation.p_value))


def exact_claim(statement: str, error: float, tolerance: float, effect_name: str = "error", *,
                evidence: Iterable[tuple[str, str]] = (), method: str = "exact computation (no sampling)",
                role: str = "check", paper_claim: str = "", component: str = "") -> Claim:
    """A deterministic check: the statement holds when the computed ``error`` is at most
    ``tolerance`` ("passes" for the book's own check, the default role; "confirmed" for a correction;
    "supported" for the paper's claim), else it fails. The interval is the value itself: nothing was
    sampled."""
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    error = float(error)
    decision = "supported" if error <= tolerance else "contradicted"
    return Claim(statement=statement, outcome=_word(role, decision), effect_name=effect_name, effect=error, low=error,
                 high=error, null=float(tolerance), level=1.0, mde=math.nan, method=f"{method}; tolerance {tolerance:.3g}",
                 evidence=tuple((str(a), str(b)) for a, b in evidence), role=role, paper_claim=paper_claim,
                 component=component)


def checked_claim(statement: str, value: float, bound: float, effect_name: str, *, at_least: bool = False,
                  regime: Sequence[Condition] = (), evidence: Iterable[tuple[str, str]] = (),
                  method: str = "measured on this run (deterministic given its seeds)", role: str = "check",
                  paper_claim: str = "", component: str = "") -> Claim:
    """A deterministic check of a measured value against a bound: the statement holds when ``value``
    is at most ``bound`` (at least, with ``at_least``), in ``role``'s words (default: the book's own
    check, "passes"/"fails"); "untestable" when a regime condition fails (the value is still shown).
    Nothing was sampled, so the interval is the value itself (level 1), as in ``exact_claim``;
    ``method`` says what was computed."""
    if not (isinstance(bound, (int, float)) and math.isfinite(bound)):
        raise ValueError(f"bound must be a finite number, got {bound!r}")
    value = float(value)
    regime = tuple(regime)
    failed = failed_conditions(regime)
    if failed:
        decision = "untestable"
    elif math.isnan(value):
        raise ValueError(f"{statement!r}: the checked value is NaN")
    else:
        decision = "supported" if (value >= bound if at_least else value <= bound) else "contradicted"
    return Claim(statement=statement, outcome=_word(role, decision), effect_name=effect_name, effect=value, low=value,
                 high=value, null=float(bound), level=1.0, mde=math.nan,
                 method=f"{method}; {'at least' if at_least else 'at most'} {bound:.3g}",
                 evidence=tuple((str(a), str(b)) for a, b in evidence), regime=regime, failed=failed, role=role,
                 paper_claim=paper_claim, component=component)


def _claim_item(c: Claim) -> list[str]:
    details = [f"method: {c.method}"]
    details += [f"{k}: {v}" for k, v in c.evidence]
    details += [cond.line() for cond in c.regime]
    return [f"- {c.line()}.", "  <br><small>" + "; ".join(details).replace("|", "/") + "</small>"]


def composite_lines(claims: Sequence[Claim]) -> list[str]:
    """One line per composite paper claim among ``claims``: its verdict (``conjunction`` of its
    components, in order of appearance) and each component's effect with its interval."""
    groups: dict[str, list[Claim]] = {}
    for c in claims:
        if c.primary:
            groups.setdefault(c.paper_claim, []).append(c)
    lines = []
    for name, parts in groups.items():
        verdict = conjunction(parts)
        marginal = " (marginal)" if verdict == "supported" and any(p.marginal for p in parts) else ""
        effects = "; ".join(f"{p.component}: {p.effect_text()}" for p in parts)
        lines.append(f"- **{verdict}**{marginal}: the paper's claim *{name}* ({' AND '.join(p.component for p in parts)}). "
                     f"{effects}.")
    return lines


def markdown(claims: Sequence[Claim]) -> str:
    """Markdown lists, one per role (``ROLE_TITLES``): the paper's composite verdicts first, then its
    component claims, its secondary claims, the book's corrections and the book's own checks; one
    claim a line, with its method, evidence and regime conditions beneath."""
    claims = list(claims)
    lines: list[str] = []
    composites = composite_lines(claims)
    if composites:
        lines += ["**Verdicts on the paper's claims** (each the conjunction of its parts below)", ""] + composites + [""]
    sections = [("The paper's claims: the parts of its verdicts", [c for c in claims if c.primary]),
                ("The paper's claims" + (": secondary, Holm-corrected within the chapter" if any(c.primary for c in claims)
                                         else ""), [c for c in claims if c.role == "paper" and not c.primary]),
                (ROLE_TITLES["correction"], [c for c in claims if c.role == "correction"]),
                (ROLE_TITLES["check"], [c for c in claims if c.role == "check"])]
    for title, members in sections:
        if members:
            lines += [f"**{title}**", ""]
            for c in members:
                lines += _claim_item(c)
            lines.append("")
    return "\n".join(lines).rstrip("\n")


def show(claims: Sequence[Claim]) -> None:
    """Display a chapter's ``claims`` in a notebook: Markdown for the reader, JSON (``CLAIMS_MIME``) for
    tests and the scoreboard. Holm's correction (``holm``) is applied here, over the secondary claims
    of the list, so a chapter shows all its statistical claims in one call."""
    from IPython.display import display

    claims = list(claims)
    if not all(isinstance(c, Claim) for c in claims):
        raise TypeError("show takes a list of Claim objects")
    claims = holm(claims)
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
