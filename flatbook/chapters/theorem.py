"""The numerical side of the "Theorem 1" chapter: the models, the fitted set, the verdicts.

* ``TheoremParameters`` and ``GedankenParameters``: every parameter of the two chapters, checked
  together on construction.
* ``chapter_configs(...)``: the experiments.Config of the logistic regression and of the MLP the
  chapter trains (no spectrum at training time; the chapter measures its own).
* ``fitted_subset(model, x, y, n)``: the first ``n`` training images the model classifies
  correctly. Theorem 1 is about the TRAINING loss going to 0, i.e. a network that fits every
  training image; scaling the weights sends the loss to 0 only on correctly classified samples
  (on a misclassified one it grows without bound, and the residual term of the Hessian with it).
  The chapter's models do not fit every training image, so its scaling experiments apply the
  theorem to the fitted images taken as a training set of their own: a Hessian over this subset
  is NOT the Hessian of the models' training loss, and the chapter says so.
* ``monotone_fraction(values)`` and ``scaling_verdict(df, transform)``: what a sweep shows
  (sharpness may first rise while the Jacobian grows, then fall once the softmax saturates),
  computed, never asserted.
* ``checked_claim(...)``: ``claims.exact_claim`` for a deterministic check that is measured on this
  run (not an identity), optionally gated by regime conditions ("untestable" when one fails) and
  with a lower bound instead of an upper one (``at_least``).
* ``theorem1_claims(...)`` and ``gedanken_claims(...)``: the two chapters' conclusions as
  ``flatbook.claims.Claim`` objects. Exact computations (algebra, closed forms, exact rescalings)
  carry the method "exact computation (no sampling)" and hold at any size and training; what the
  trained models show (the shape of a sweep, Dinh's factor) carry the method "measured ...".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .. import checks
from ..experiments import Config
from .base import ChapterParameters, SmallModelsParameters

ROUNDING_LIMIT = 1e-3  # relative asymmetry of the computed Hessian products (spectrum.check_operator)
ROUNDING_LOSS = 1e-12  # mean loss below which 1 - p_c nears float64's rounding unit on the fitted images

__all__ = ["ROUNDING_LIMIT", "ROUNDING_LOSS", "MEASURED", "TheoremParameters", "GedankenParameters",
           "check_training_parameters",
           "chapter_configs", "fitted_subset", "monotone_fraction", "scaling_verdict", "lambda_path_sentence",
           "checked_claim",
           "theorem1_claims", "gedanken_claims"]

MEASURED = "measured on this run (deterministic given its seeds)"
MIN_STEPS_AFTER_PEAK = 3  # "falls from its maximum" is tested only with at least 3 grid steps after it


@dataclass(frozen=True, kw_only=True)
class TheoremParameters(SmallModelsParameters):
    """The Theorem 1 chapter's parameters, by the names of its parameters cell; construction checks
    them all (ValueError naming one)."""

    fitted_samples: int
    alpha_min: float
    alpha_max: float
    num_alphas: int
    lanczos_steps: int
    probes: int
    exact_samples: int
    exact_lanczos_steps: int

    def __post_init__(self) -> None:
        for name in ("fitted_samples", "num_alphas", "lanczos_steps", "probes", "exact_samples",
                     "exact_lanczos_steps"):
            checks.positive_int(name, getattr(self, name))
        checks.finite_number("alpha_min", self.alpha_min, minimum=0, strict=True)
        checks.finite_number("alpha_max", self.alpha_max, minimum=0, strict=True)
        if self.alpha_max < self.alpha_min:
            raise ValueError(f"alpha_max ({self.alpha_max}) must be at least alpha_min ({self.alpha_min})")
        check_training_parameters(dataset=self.dataset, image_size=self.image_size,
                                  train_per_class=self.train_per_class, epochs=self.epochs, lr=self.lr,
                                  mlp_hidden=self.mlp_hidden, seed=self.seed, results_dir=self.results_dir)

    def training_plan(self) -> list:
        """The two experiments.Configs the chapter trains (logistic regression, MLP)."""
        return list(chapter_configs(dataset=self.dataset, image_size=self.image_size,
                                    train_per_class=self.train_per_class, epochs=self.epochs, lr=self.lr,
                                    mlp_hidden=self.mlp_hidden, seed=self.seed))



@dataclass(frozen=True, kw_only=True)
class GedankenParameters(ChapterParameters):
    """The Gedanken chapter's parameters (the deep linear model exp(X w_1 ... w_depth)), by the names
    of its parameters cell; construction checks them all (ValueError naming one)."""

    depth: int
    X: float
    counterexample_point: list | None
    directions: list | None
    scale_min: float
    scale_max: float
    num_scales: int
    verify_depths_up_to: int

    def __post_init__(self) -> None:
        from ..theory import symbolic

        symbolic.check_depth(self.depth)
        X = self.X
        if isinstance(X, bool) or not isinstance(X, (int, float)) or not math.isfinite(X) or X == 0:
            raise ValueError(f"X must be a non-zero finite number (X = 0 makes the loss 1 everywhere), got {X!r}")
        symbolic.resolve_point(self.counterexample_point, self.depth)
        symbolic.resolve_directions(self.directions, self.depth, X)
        symbolic.scale_grid(self.scale_min, self.scale_max, self.num_scales)
        checks.integer("verify_depths_up_to", self.verify_depths_up_to, 2, 8, why="SymPy time grows fast")

    def training_plan(self) -> list:
        """Nothing: the Gedanken chapter is exact algebra."""
        return []



def check_training_parameters(*, dataset: str, image_size: int | None, train_per_class: int | None, epochs: int,
                              lr: float, mlp_hidden: Sequence[int], seed: int,
                              results_dir: str | None) -> tuple[Config, Config]:
    """The training parameters shared by the Theorem 1 chapter and the Lanczos appendix, checked
    (ValueError naming the bad one); returns their resolved (logistic regression, MLP) configs."""
    if dataset not in ("mnist", "fashion-mnist"):
        raise ValueError(f"dataset must be 'mnist' or 'fashion-mnist' (28x28 greyscale), got {dataset!r}")
    if not (isinstance(mlp_hidden, (list, tuple)) and mlp_hidden
            and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in mlp_hidden)):
        raise ValueError(f"mlp_hidden must be a non-empty list of layer widths >= 1, got {mlp_hidden!r}")
    checks.seed(seed)
    checks.results_dir(results_dir)
    # ConfigError (a ValueError) names the field: epochs, lr, image_size, ...
    logreg, mlp = chapter_configs(dataset=dataset, image_size=image_size, train_per_class=train_per_class,
                                  epochs=epochs, lr=lr, mlp_hidden=mlp_hidden, seed=seed)
    return logreg.resolved(), mlp.resolved()


def chapter_configs(*, dataset: str, image_size: int | None, train_per_class: int | None, epochs: int, lr: float,
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
        # falls from its maximum: every later step goes down (the claim needs MIN_STEPS_AFTER_PEAK of them)
        out[f"{measure}_steps_after_peak"] = len(values) - 1 - peak
        out[f"{measure}_falls_after_peak"] = bool(peak < len(values) - 1
                                                  and monotone_fraction(values[peak:]) == 1.0)
    return out


def lambda_path_sentence(verdicts: dict[str, dict[str, Any]], first_alpha: float) -> str:
    """What lambda_1 did along each scaling sweep (``scaling_verdict`` of each, by name), computed:
    falls from the start; rises over the whole grid (its largest value at the last scale); or rises,
    peaks inside the grid and ends at some multiple of its start. Then what that means: a rise is the
    same classifier made SHARPER over those scales; the exact limits say it flattens eventually, and
    whether this grid got that far is for the checks to say."""
    parts, rose = [], False
    for name, v in verdicts.items():
        up, end = v["lambda_max_peak_over_first"], v["lambda_max_last_over_first"]
        if up <= 1.01:
            parts.append(f"{name}: $\\lambda_1$ falls from the start, to {end:.3g} times its starting value")
            continue
        rose = True
        if v["lambda_max_steps_after_peak"] == 0:
            parts.append(f"{name}: $\\lambda_1$ **rises over the whole grid**, to {end:.3g} times its value at "
                         f"$\\alpha$ = {first_alpha:g} (its largest value is at the last scale)")
        else:
            parts.append(f"{name}: $\\lambda_1$ first **rises**, up to {up:.3g} times its value at $\\alpha$ = "
                         f"{first_alpha:g} (peak at $\\alpha$ = {v['lambda_max_peak_alpha']:.3g}), then ends at "
                         f"{end:.3g} times its starting value")
    out = "*Computed:* " + "; ".join(parts) + "."
    if rose:
        out += (" Where it rises, the same classifier is *sharper* over that range of scales. The exact limits above "
                "are for logistic regression and a ReLU network on one activation piece; a scaled ReLU network keeps "
                "its activation pattern and its margins grow linearly in the scale, so the same polynomial-times-"
                "exponential argument says it flattens eventually, which no limit here computes for these trained "
                "networks: the checks below say whether this grid of scales got that far.")
    return out


# --- claims ------------------------------------------------------------------------------------


def checked_claim(statement: str, value: float, bound: float, effect_name: str, *, at_least: bool = False,
                  regime: Sequence[Any] = (), evidence: Sequence[tuple[str, str]] = (), method: str = MEASURED,
                  role: str = "check", paper_claim: str = "", component: str = ""):
    """``claims.checked_claim`` with this module's default ``method`` (``MEASURED``)."""
    from ..claims import checked_claim as check

    return check(statement, value, bound, effect_name, at_least=at_least, regime=regime, evidence=evidence,
                 method=method, role=role, paper_claim=paper_claim, component=component)


def theorem1_claims(*, derivatives: Any, kron_agrees: bool, separable_limits: Sequence[Any], relu: dict,
                    sweeps: dict[str, Any], verdicts: dict[str, dict], dinh_verdict: dict, dinh_alphas: Sequence[float],
                    everything: Any, engine_error: float, null_residual: float, zero_count: int,
                    predicted_zeros: int) -> list:
    """The Theorem 1 chapter's conclusions as Claims, from what its cells computed:

    ``derivatives`` (``crossentropy.logit_derivatives``), ``kron_agrees`` (``logreg_kron_hessian``'s
    "agree"), ``separable_limits`` (``crossentropy.scaling_limits`` for each class count), ``relu``
    (``crossentropy.relu_net_example``), ``sweeps`` and ``verdicts`` (the scaling sweeps over fitted
    images and their ``scaling_verdict``), ``dinh_verdict`` over ``dinh_alphas``, ``everything`` (the
    sweep over all images, fitted or not), ``engine_error`` (engine product against the closed form),
    ``null_residual`` (``exact.softmax_null_residual``), ``zero_count`` (eigenvalues below
    1e-13 lambda_1) and ``predicted_zeros`` (``exact.null_space_dimension``'s total).

    Identities (exact computation, hold whatever the training): 1. the cross-entropy derivatives;
    2. the Kronecker form; 3. the separable limits; 4. the ReLU piece; 5. the scalings keep every
    prediction; 6. Dinh's rescaling keeps the loss; 7. engine = closed form; 8. the softmax null
    directions; 9. at least as many round-off eigenvalues as predicted. Measured on the trained
    models: 10. the loss falls along every sweep; 11. lambda_1 ends below its start; 12-13.
    lambda_1 and the Frobenius norm fall monotonically past their maximum; 14. Dinh moves lambda_1
    by more than 10x; 15. with misclassified images the loss does not go to 0 (untestable if the
    model fits every image of that sweep)."""
    from ..claims import Condition, exact_claim
    from .paper_claims import THEOREM1, tag

    out = []
    failed = [name for name, ok in (("loss = -log softmax_c", derivatives.equals_minus_log_softmax),
                                    ("gradient = p - y", derivatives.gradient_is_p_minus_y),
                                    ("Hessian = diag(p) - p p^T", derivatives.hessian_is_diag_p_minus_ppT)) if not ok]
    out.append(exact_claim("softmax cross-entropy: loss = -log softmax_c, gradient = p - y, Hessian = diag(p) - p p^T "
                           "(SymPy, 3 classes)", len(failed), 0, "closed forms SymPy does not confirm",
                           evidence=[("not confirmed", ", ".join(failed) or "none")]))
    out.append(exact_claim("logistic regression: H = (diag p - p p^T) kron x~ x~^T (SymPy, 3 classes, 1 feature)",
                           0 if kron_agrees else 1, 0, "entries of the difference SymPy does not simplify to 0 (0/1)"))
    nonzero, classes = 0, []
    for sl in separable_limits:
        classes.append(str(len(sl.entry_limits)))
        nonzero += int(sl.loss_limit != 0) + int(sl.trace_limit != 0) + sum(int(e != 0) for e in sl.entry_limits)
        nonzero += int(sl.lambda_max_limit is not None and sl.lambda_max_limit != 0)
    out.append(exact_claim("separable data, weights scaled by alpha -> oo: the loss, every Hessian entry, the trace and "
                           "lambda_1 -> 0 (SymPy limits)", nonzero, 0, "limits that are not 0",
                           evidence=[("cases", f"{len(separable_limits)} (Hessian entries: {', '.join(classes)})")],
                           **tag(THEOREM1, "logistic regression: every Hessian entry -> 0")))
    relu_failed = int(not relu["agree"]) + int(relu["gauss_newton_limit"] != 0) + int(relu["residual_limit"] != 0)
    out.append(exact_claim("ReLU net on one activation piece: Eq. (9)'s split is the Hessian, and both its terms -> 0",
                           relu_failed, 0, "failed checks (split, Gauss-Newton limit, residual limit)",
                           **tag(THEOREM1, "ReLU network: both terms of the Hessian -> 0")))
    changed = sum(int(df["predictions_changed"].max()) for df in sweeps.values())
    alphas = [float(a) for df in sweeps.values() for a in df["alpha"]]
    out.append(exact_claim("scaling the last layer, or every layer, by alpha keeps every prediction",
                           changed, 0, "predictions changed (all sweeps)",
                           evidence=[("sweeps", str(len(sweeps))), ("alpha", f"{min(alphas):g} to {max(alphas):g}")]))
    out.append(exact_claim("Dinh et al.'s rescaling keeps the loss", dinh_verdict["loss_max_relative_change"], 1e-6,
                           "largest relative change of the loss",
                           evidence=[("alpha", f"{min(dinh_alphas):g} to {max(dinh_alphas):g}")]))
    out.append(exact_claim("the engine's Hessian-vector product equals logistic regression's closed form", engine_error,
                           1e-10, "relative error of the product"))
    out.append(exact_claim("softmax invariance: the predicted null directions are null vectors of H", null_residual,
                           1e-12, "||HN||_F / (||H||_F ||N||_F)"))
    out.append(exact_claim("at least as many eigenvalues lie below 1e-13 lambda_1 as the predicted null space has "
                           "dimensions", max(predicted_zeros - zero_count, 0), 0,
                           "predicted dimensions without a round-off eigenvalue",
                           evidence=[("predicted", str(predicted_zeros)), ("found", str(zero_count))]))
    out.append(checked_claim("on the fitted images the loss falls with alpha, in every sweep",
                             sum(int(not v["loss_decreasing"]) for v in verdicts.values()), 0,
                             "sweeps in which it does not"))
    out.append(checked_claim("the scale grid reaches the limit's regime: lambda_1 at the largest scale is below "
                             "lambda_1 at the smallest, in every sweep (a finite grid can fail this without "
                             "contradicting a limit)",
                             max(v["lambda_max_last_over_first"] for v in verdicts.values()), 1.0,
                             "largest ratio last / first",
                             evidence=[(k, f"x{v['lambda_max_last_over_first']:.3g}") for k, v in verdicts.items()]))
    for measure, label in (("lambda_max", "lambda_1"), ("frobenius", "the Frobenius norm")):
        fewest = min(v[f"{measure}_steps_after_peak"] for v in verdicts.values())
        room = Condition("fewest grid steps after the maximum, over the sweeps", fewest,
                         f"at least {MIN_STEPS_AFTER_PEAK}: a fall over fewer steps says little",
                         fewest >= MIN_STEPS_AFTER_PEAK,
                         "" if fewest >= MIN_STEPS_AFTER_PEAK else "the maximum is too close to the end of the grid: "
                                                                   "extend alpha")
        out.append(checked_claim(
            f"{label} falls monotonically from its maximum over the scale grid, in every sweep",
            sum(int(not v[f"{measure}_falls_after_peak"]) for v in verdicts.values()), 0, "sweeps in which it does not",
            regime=[room],
            evidence=[(k, f"peak at alpha {v[f'{measure}_peak_alpha']:.3g} ({v[f'{measure}_steps_after_peak']} steps "
                          f"before the end), last / peak {v[f'{measure}_last_over_peak']:.2g}")
                      for k, v in verdicts.items()]))
    r = dinh_verdict["lambda_max_ratio"]
    out.append(checked_claim("Dinh et al.'s rescaling moves lambda_1 by more than a factor 10 (same function)",
                             max(r, 1 / r), 10.0, "factor by which lambda_1 moves", at_least=True,
                             evidence=[("lambda_1 ratio last / first", f"{r:.3g}")]))
    accuracy = float(everything["accuracy"].iloc[0])
    misfit = Condition("training accuracy on these images", 100 * accuracy,
                       "below 100%: some image is misclassified", accuracy < 1.0,
                       "" if accuracy < 1.0 else "every image is fitted")
    v_all = scaling_verdict(everything, "output")
    out.append(checked_claim("with misclassified training images the loss does not go to 0 as the last layer is scaled "
                             "(Theorem 1's premise fails for these models' training loss)", v_all["loss_ratio"], 1.0,
                             "loss ratio, largest / smallest alpha", at_least=True, regime=[misfit]))
    return out


def gedanken_claims(*, residual_nonzero_entries: int, trace_gap_is_zero: bool, trace_formula_is_exact: bool,
                    eq4_holds_here: bool, X: float, comparison: Any, depth_agreement: dict[int, bool],
                    ray_limits: Sequence[Any], path: Any) -> list:
    """The Gedanken chapter's findings about the paper's Section 2 as Claims, all exact (SymPy, or
    float64 eigenvalues of an exactly evaluated matrix), each stated as what the chapter
    establishes, from what its cells computed:

    1. Eq. (3) is not the Hessian: the term it drops has ``residual_nonzero_entries`` >= 1 non-zero
       entries; 2. its trace is still Tr(H) (``trace_gap_is_zero``); 3. Tr(H) = X^2 L sum_i P_i^2
       (``trace_formula_is_exact``; Eq. (4) as printed has X for X^2, ``eq4_holds_here`` says whether
       the two agree at this ``X``); 4. Tr(H) = lambda_1(H) fails at the comparison point
       (``comparison``, ``symbolic.trace_versus_lambda``): since Tr(H) = sum_i lambda_i, it holds
       exactly when the other eigenvalues sum to 0, and the effect is |lambda_2 + ... + lambda_n| /
       Tr(H) (at a point where they do sum to 0 this claim is contradicted: the equality holds
       there); 5. the closed form per depth (``depth_agreement``); 6. along the rays with loss -> 0
       (``symbolic.ray_limits``), Tr(H) and ||H||_F^2 -> 0 (untestable without such a ray); 7. zero
       loss does not force a flat Hessian: the unbalanced ``path`` (``symbolic.path_limits``)."""
    from ..claims import Claim, Condition, exact_claim
    from .paper_claims import GEDANKEN, tag

    exact = "exact computation (no sampling)"
    out = [checked_claim("Eq. (3) is not the Hessian: the term X L M it drops (P_ij off the diagonal) is not zero",
                         residual_nonzero_entries, 1, "entries of H - g g^T / L that are not 0 (SymPy)", at_least=True,
                         method=exact, role="correction"),
           exact_claim("the trace of Eq. (3)'s matrix is still Tr(H): the dropped term has a zero diagonal",
                       0 if trace_gap_is_zero else 1, 0, "Tr(Eq. 3) - Tr(H) does not simplify to 0 (0/1)",
                       role="paper"),
           exact_claim("Tr(H) = X^2 L sum_i P_i^2 (Eq. (4) as printed has X in place of X^2: the two agree only at "
                       "X = 1)", 0 if trace_formula_is_exact else 1, 0,
                       "Tr(H) - X^2 L sum_i P_i^2 does not simplify to 0 (0/1)",
                       evidence=[(f"Eq. (4) as printed at X = {X:g}", "agrees" if eq4_holds_here else "differs")],
                       role="correction")]
    point = ", ".join(f"{v:g}" for v in comparison.point)
    others = comparison.trace - comparison.lambda_max  # the sum of the other eigenvalues
    out.append(checked_claim(f"Tr(H) = lambda_1(H) (the paper's Eq. 4) fails at w = ({point}), X = {X:g}: the other "
                             "eigenvalues do not sum to 0, which is exactly when it would hold",
                             abs(others) / abs(comparison.trace), 1e-9, "|lambda_2 + ... + lambda_n| / Tr(H)",
                             at_least=True, method=exact, role="correction",
                             evidence=[("Tr(H)", f"{comparison.trace:.6g}"),
                                       ("lambda_1(H)", f"{comparison.lambda_max:.6g}"),
                                       ("eigenvalues", ", ".join(f"{e:.6g}" for e in comparison.eigenvalues))]))
    depths = sorted(depth_agreement)
    out.append(exact_claim(f"the closed form H_ij = L (X^2 P_i P_j + [i != j] X P_ij) is the Hessian for every depth "
                           f"from {depths[0]} to {depths[-1]}", sum(int(not ok) for ok in depth_agreement.values()), 0,
                           "depths at which it differs from SymPy's Hessian"))
    vanishing = [rl for rl in ray_limits if rl.loss_goes_to_zero]
    statement = "along rays w = t d on which the loss -> 0, Tr(H) and ||H||_F^2 -> 0 (SymPy limits)"
    bad = sum(int(rl.trace_limit != 0) + int(rl.frobenius_squared_limit != 0) for rl in vanishing)
    evidence = [("rays with loss -> 0", f"{len(vanishing)} of {len(ray_limits)}")]
    parts = tag(GEDANKEN, "Tr(H) and ||H||_F -> 0 along rays where the loss -> 0")
    if vanishing:
        out.append(exact_claim(statement, bad, 0, "limits that are not 0", evidence=evidence, **parts))
    else:
        cond = Condition("rays along which the loss -> 0", 0, "at least 1", False, "choose directions with X D < 0")
        out.append(Claim(statement=statement, outcome="untestable", effect_name="limits that are not 0", effect=0.0,
                         low=0.0, high=0.0, null=0.0, level=1.0, mde=math.nan, method=exact, evidence=tuple(evidence),
                         regime=(cond,), failed=f"{cond.name} = 0, {cond.requirement} ({cond.shortfall})", **parts))
    counterexample = int(path.loss_limit == 0 and path.trace_limit != 0)
    out.append(checked_claim("zero loss does not force a flat Hessian: along an unbalanced path the loss -> 0 while "
                             "Tr(H) does not", counterexample, 1, "paths found with loss -> 0 and Tr(H) not -> 0",
                             at_least=True, method=exact, role="correction",
                             evidence=[("the unbalanced path",
                                        f"loss -> {path.loss_limit}, Tr(H) -> {path.trace_limit}")]))
    return out
