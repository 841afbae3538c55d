"""What the Theorem 1 chapter (``book/theorem1.ipynb``, the paper's Section 3) computes and displays,
as functions, so that its notebook holds parameters, prose and calls only.

The SymPy part (``theory.crossentropy``) shows the cross-entropy Hessian, its Kronecker form for
logistic regression and the limits along scalings of separating weights; the trained part scales a
trained logistic regression and MLP (``theory.scaling``) and measures the Hessian of the mean
cross-entropy over correctly classified training images (float64, SLQ); the exact part sets the
engine's products and Lanczos against the closed-form logistic-regression Hessian
(``theory.exact``). The verdicts and claims are ``theorem``'s; the ``show_*`` functions display.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import sympy as sp

from .gedanken import show_math

__all__ = ["derivative_checks", "show_kron_hessian", "show_separable_limits", "show_relu_example", "train_models",
           "summary_table", "scaling_sweeps", "SWEEP_COLUMNS", "show_sweep_tables", "sweep_verdicts", "verdict_table",
           "mlp_scaling_sentence", "everything_sweep", "everything_sentence", "dinh_alphas", "dinh_sentence",
           "engine_check", "exact_vs_lanczos", "null_space_report", "null_space_sentence", "gap_sentence"]

SWEEP_COLUMNS = ["alpha", "loss", "accuracy", "predictions_changed", "lambda_max", "trace", "frobenius", "asymmetry"]


def derivative_checks(d: Any):
    """Whether SymPy's cross-entropy of K logits (``crossentropy.logit_derivatives``) is -log softmax_c,
    its gradient p - y and its Hessian diag(p) - p p^T."""
    import pandas as pd

    return pd.DataFrame({"computed": [d.equals_minus_log_softmax, d.gradient_is_p_minus_y,
                                      d.hessian_is_diag_p_minus_ppT]},
                        index=["loss = -log softmax_c", "gradient = p - y", "Hessian = diag(p) - p p^T"])


def show_kron_hessian(lr: dict) -> bool:
    """Display W~ and the Kronecker form of logistic regression's Hessian with SymPy's verdict
    (``crossentropy.logreg_kron_hessian``); returns whether it holds exactly."""
    from IPython.display import Math, display

    show_math(r"\tilde W", lr["W_tilde"])
    display(Math(r"\nabla_w^2 \ell = \big(\mathrm{diag}(p) - p p^\top\big) \otimes \tilde x \tilde x^\top"
                 + (r"\quad\text{(SymPy: exact)}" if lr["agree"] else r"\quad\text{(SymPy: NOT equal)}")))
    return bool(lr["agree"])


def _limits_row(K: int, sl: Any) -> dict[str, Any]:
    lambda_to_zero = (sl.trace_limit == 0) if sl.lambda_max_limit is None else (sl.lambda_max_limit == 0)
    return {"classes": K, "Hessian entries": len(sl.entry_limits),
            "entries with limit 0": sum(e == 0 for e in sl.entry_limits),
            "loss -> 0": sl.loss_limit == 0, "trace -> 0": sl.trace_limit == 0, "lambda_1 -> 0": lambda_to_zero,
            "loss ~ C exp(-m alpha), C": str(sl.loss_rate_constant),
            "trace ~ C exp(-m alpha), C": str(sl.trace_rate_constant), "all vanish": sl.all_vanish}


def show_separable_limits(classes: Sequence[int] = (2, 3)) -> tuple[list, Any]:
    """For each number of classes K: display the separable example, L and Tr H along alpha W~*, their
    limits and rate constants, and the eigenvalues where SymPy finds them
    (``crossentropy.scaling_limits``); returns (the limits, a table of them indexed by K). Lambda_1
    -> 0 follows from Tr H -> 0 when the eigenvalues are not explicit (a PSD Hessian)."""
    import pandas as pd
    from IPython.display import Markdown, Math, display

    from ..theory import crossentropy

    limits, rows = [], []
    for K in classes:
        xs, ys, Ws = crossentropy.separable_example(K)
        sl = crossentropy.scaling_limits(K)
        limits.append(sl)
        display(Markdown(f"**{K} classes**: inputs " + ", ".join(f"${sp.latex(x.T)}$" for x in xs)
                         + f", labels {ys}, $\\tilde W^* = {sp.latex(Ws)}$, smallest margin $m = {sp.latex(sl.margin)}$."))
        show_math(r"L(\alpha)", sl.loss)
        show_math(r"\mathrm{Tr}\,H(\alpha)", sl.trace)
        display(Math(r"\lim_{\alpha\to\infty} L = " + sp.latex(sl.loss_limit)
                     + r",\quad \lim_{\alpha\to\infty} \mathrm{Tr}\,H = " + sp.latex(sl.trace_limit)
                     + r",\quad \lim L\,e^{m\alpha} = " + sp.latex(sl.loss_rate_constant)
                     + r",\quad \lim \mathrm{Tr}(H)\,e^{m\alpha} = " + sp.latex(sl.trace_rate_constant)))
        if sl.eigenvalues is not None:
            display(Math(r"\mathrm{eig}\,H(\alpha):\ " + ",\\quad ".join(
                sp.latex(value) + (rf"\ (\times {mult})" if mult > 1 else "") for value, mult in sl.eigenvalues.items())))
        rows.append(_limits_row(K, sl))
    return limits, pd.DataFrame(rows).set_index("classes")


def show_relu_example(relu: dict) -> None:
    """Display the two-layer ReLU example of Eq. (9) (``crossentropy.relu_net_example``): f(w), whether
    the split equals SymPy's Hessian, the Gauss-Newton trace and the residual's norm along the scaling,
    and their limits and rate constants."""
    from IPython.display import Markdown, Math, display

    show_math("f(w)", relu["f"])
    display(Markdown(f"Eq. (9)'s split equals SymPy's direct Hessian: **{relu['agree']}**; "
                     f"weights scaled from ${sp.latex(relu['point'])}$, margin $m = {relu['margin']}$."))
    show_math(r"\mathrm{Tr}\,(\text{Gauss-Newton})(\alpha)", relu["gauss_newton_trace"])
    show_math(r"\|\text{residual}\|_F^2(\alpha)", relu["residual_frobenius_squared"])
    display(Math(r"\lim_{\alpha\to\infty} \mathrm{Tr}\,GN = " + sp.latex(relu["gauss_newton_limit"])
                 + r",\quad \lim \|R\|_F^2 = " + sp.latex(relu["residual_limit"])
                 + r",\quad \lim \frac{\mathrm{Tr}\,GN}{\alpha^2 e^{-m\alpha^2}} = "
                 + sp.latex(relu["gauss_newton_rate_constant"])
                 + r",\quad \lim \frac{\|R\|_F}{e^{-m\alpha^2}} = " + sp.latex(relu["residual_rate_constant"])))


def train_models(configs: dict[str, Any], results_dir: Any = None) -> dict[str, Any]:
    """{name: experiments.Result} of each config (cached runs are read, others trained)."""
    from ..experiments import run

    return {name: run(cfg, results_dir=results_dir) for name, cfg in configs.items()}


def summary_table(results: dict[str, Any]):
    """One row per trained model: parameters, training images, final training loss and accuracy,
    validation accuracy, weight norm and whether it came from the cache."""
    import pandas as pd

    return pd.DataFrame({name: {"parameters": r.metrics["num_params"], "training images": r.metrics["train_samples"],
                                "train loss": r.metrics["train_loss"], "train acc": r.metrics["train_acc"],
                                "val acc": r.metrics["val_acc"], "||w||": r.metrics["weight_norm"], "cached": r.cached}
                         for name, r in results.items()}).T


def scaling_sweeps(models: dict[str, Any], x: Any, y: Any, *, fitted_samples: int, alphas: Sequence[float],
                   lanczos_steps: int, probes: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sweeps, fitted): for each model, its correctly classified images among the first
    ``fitted_samples`` (``theorem.fitted_subset``) and the sweep that scales its last layer by alpha;
    and the MLP's sweep that scales all its layers (``scaling.scaling_sweep``, float64)."""
    from ..theory import scaling
    from .theorem import fitted_subset

    sweeps, fitted = {}, {}
    for name, model in models.items():
        fitted[name] = fitted_subset(model, x, y, fitted_samples)
        sweeps[f"{name}: last layer x alpha"] = scaling.scaling_sweep(
            model, fitted[name], alphas, "output", steps=lanczos_steps, probes=probes, seed=seed, progress=True)
    sweeps["MLP: all layers x alpha"] = scaling.scaling_sweep(
        models["MLP"], fitted["MLP"], alphas, "all", steps=lanczos_steps, probes=probes, seed=seed, progress=True)
    return sweeps, fitted


def show_sweep_tables(sweeps: dict[str, Any], fitted: dict[str, Any]) -> None:
    """Display each sweep's table (``SWEEP_COLUMNS``) under its label and image count."""
    from IPython.display import Markdown, display

    for label, df in sweeps.items():
        display(Markdown(f"**{label}** ({len(fitted[label.split(':')[0]][1])} images)"))
        display(df[SWEEP_COLUMNS].style.format({"alpha": "{:.3g}", "loss": "{:.3e}", "accuracy": "{:.4f}",
                                                "lambda_max": "{:.3e}", "trace": "{:.3e}", "frobenius": "{:.3e}",
                                                "asymmetry": "{:.1e}"}))


def sweep_verdicts(sweeps: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``theorem.scaling_verdict`` of each sweep (the last-layer sweeps as "output", the others "all")."""
    from .theorem import scaling_verdict

    return {label: scaling_verdict(df, "output" if "last" in label else "all") for label, df in sweeps.items()}


def verdict_table(verdicts: dict[str, dict[str, Any]]):
    """The sweeps' verdicts as a table, one row per sweep."""
    import pandas as pd

    return pd.DataFrame(verdicts).T


def mlp_scaling_sentence(sweeps: dict[str, Any], verdicts: dict[str, dict[str, Any]], alphas: Sequence[float]) -> str:
    """*Computed:* what scaling the MLP's layers did: predictions changed, the loss, lambda_1 and Frobenius
    ratios between the smallest and the largest scale above rounding level, and where the last-layer
    sweep's lambda_1 peaks and ends."""
    v_all, v_last = verdicts["MLP: all layers x alpha"], verdicts["MLP: last layer x alpha"]
    return (f"*Computed:* scaling the MLP's layers by $\\alpha$ from {alphas[0]:g} to {alphas[-1]:g} changed "
            f"{int(sweeps['MLP: all layers x alpha']['predictions_changed'].max())} predictions; between the smallest "
            f"and the largest scale whose products are above rounding level ({v_all['rows_at_rounding_level']} rows were "
            f"not), the loss was multiplied by {v_all['loss_ratio']:.3g}, $\\lambda_1$ by {v_all['lambda_max_ratio']:.3g} "
            f"and the Frobenius norm by {v_all['frobenius_ratio']:.3g}. Scaling the last layer only, $\\lambda_1$ is "
            f"largest at $\\alpha$ = {v_last['lambda_max_peak_alpha']:.3g} of {alphas[-1]:g} and ends at "
            f"{v_last['lambda_max_last_over_peak']:.2g} times that largest value.")


def everything_sweep(model: Any, x: Any, y: Any, *, fitted_samples: int, alphas: Sequence[float], lanczos_steps: int,
                     probes: int, seed: int) -> tuple[Any, int]:
    """(sweep, n): the MLP's last layer scaled by alpha over the first n = ``fitted_samples`` training
    images (at most all of them), misclassified ones included."""
    from ..theory import scaling

    n = min(fitted_samples, len(y))
    return scaling.scaling_sweep(model, (x[:n], y[:n]), alphas, "output", steps=lanczos_steps, probes=probes, seed=seed,
                                 progress=True), n


def everything_sentence(everything: Any, verdict: dict[str, Any], alphas: Sequence[float], n: int) -> str:
    """*Computed:* how the loss and lambda_1 change over all n images (misclassified ones included)."""
    return (f"*Computed:* on these {n} images (accuracy {everything['accuracy'].iloc[0]:.3f}) the loss changes by a "
            f"factor {verdict['loss_ratio']:.3g} and $\\lambda_1$ by {verdict['lambda_max_ratio']:.3g} from "
            f"$\\alpha$ = {alphas[0]:g} to {alphas[-1]:g}: the misclassified images' loss grows linearly in $\\alpha$, "
            "and their residual term $(p - y)\\nabla^2 f$ does not vanish, because $p - y$ tends to the difference of "
            "two one-hot vectors.")


def dinh_alphas(alphas: Sequence[float], largest: float = 100.0) -> list[float]:
    """The scales of the Dinh sweep: those of ``alphas`` up to ``largest`` (two decades already make the
    point), or the first one when none is."""
    chosen = [a for a in alphas if a <= largest]
    return chosen or list(alphas[:1])


def dinh_sentence(verdict: dict[str, Any], alphas: Sequence[float]) -> str:
    """*Computed:* the Dinh rescaling keeps the loss (to rounding) and every prediction while lambda_1 grows."""
    return (f"*Computed:* the loss stays the same to a relative {verdict['loss_max_relative_change']:.1e} (rounding), no "
            f"prediction changes, and $\\lambda_1$ grows by a factor {verdict['lambda_max_ratio']:.3g} from "
            f"$\\alpha$ = {alphas[0]:g} to {alphas[-1]:g}.")


def engine_check(model: Any, x: Any, y: Any, *, exact_samples: int, seed: int) -> dict[str, Any]:
    """The engine against the closed form on logistic regression, over the first ``exact_samples``
    training images, in float64: the closed-form Hessian H (``exact.logreg_hessian``), the operator
    (``HessianOperator``, one batch), ||H_engine v - H v|| / ||H v|| for a Gaussian v of ``seed``, and
    H's eigenvalues (``eigvalsh``). The model is copied, not changed."""
    import copy

    import torch
    import torch.nn.functional as F

    from ..curvature import HessianOperator
    from ..theory import exact

    logreg = copy.deepcopy(model)
    n = min(exact_samples, len(y))
    x_exact, y_exact = x[:n], y[:n]
    H = exact.logreg_hessian(logreg, x_exact)
    op = HessianOperator(logreg.double(), F.cross_entropy, (x_exact.double(), y_exact), batch_size=1000)
    v = torch.randn(op.num_params, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    error = float((op.matvec(v) - H @ v).norm() / (H @ v).norm())
    return {"H": H, "operator": op, "engine_error": error, "images": n, "x": x_exact, "y": y_exact,
            "eigenvalues": torch.linalg.eigvalsh(H).numpy(),
            "sentence": (f"*Computed:* on {n} training images, $\\|Hv_{{engine}} - Hv_{{closed form}}\\| / \\|Hv\\|$ = "
                         f"{error:.1e} ({op.num_params} parameters).")}


def exact_vs_lanczos(eigenvalues: np.ndarray, estimate: Any, steps: int):
    """The exact lambda_1..3, trace and Frobenius norm beside the Lanczos estimate's (top Ritz values of
    its one probe, SLQ's trace and Frobenius), with the relative error."""
    import pandas as pd

    top = np.sort(eigenvalues)[::-1][:5]
    nodes = estimate.nodes[0]
    ritz = np.sort(nodes[~np.isnan(nodes)])[::-1][:5]
    table = pd.DataFrame({"exact": {"lambda_1": top[0], "lambda_2": top[1], "lambda_3": top[2], "trace": eigenvalues.sum(),
                                    "Frobenius": np.sqrt((eigenvalues**2).sum())},
                          f"Lanczos, {steps} steps, 1 probe": {"lambda_1": ritz[0], "lambda_2": ritz[1], "lambda_3": ritz[2],
                                                               "trace": estimate.trace, "Frobenius": estimate.frobenius}})
    table["relative error"] = (table.iloc[:, 1] - table.iloc[:, 0]) / table.iloc[:, 0].abs()
    return table


def null_space_report(H: Any, eigenvalues: np.ndarray, x: Any, classes: int) -> dict[str, Any]:
    """The null space of logistic regression's Hessian, predicted against measured: the prediction
    (``exact.null_space_dimension``: softmax directions + data), the softmax null vectors' residual, the
    counts of |lambda| <= tol * lambda_1 at several tolerances (a table), the count at 1e-13, the gap
    after the predicted number of zeros, the rarely active pixels, and whether the prediction holds."""
    import pandas as pd

    from ..theory import exact

    predicted = exact.null_space_dimension(x, classes)
    residual = exact.softmax_null_residual(H, classes)
    abs_sorted = np.sort(np.abs(eigenvalues))
    k0 = predicted["total"]
    count = exact.zero_eigenvalue_count(eigenvalues, rtol=1e-13)
    counts = pd.DataFrame({"|lambda| <= tol * lambda_1, tol": [1e-14, 1e-13, 1e-11, 1e-9],
                           "count": [exact.zero_eigenvalue_count(eigenvalues, rtol=t) for t in (1e-14, 1e-13, 1e-11, 1e-9)]}
                          ).set_index("|lambda| <= tol * lambda_1, tol")
    return {"predicted": predicted, "null_residual": residual, "abs_sorted": abs_sorted, "k0": k0, "count": count,
            "counts": counts, "gap": abs_sorted[k0] / max(abs_sorted[k0 - 1], 1e-300),
            "rare": exact.rarely_active_features(x, max_fraction=0.01), "features": x.shape[1], "images": x.shape[0],
            "lambda_1": float(eigenvalues.max()), "zeros_match": bool(residual < 1e-12 and count >= k0)}


def null_space_sentence(report: dict[str, Any]) -> str:
    """*Computed:* the predicted null-space dimension, the softmax null vectors' residual, the smallest
    |eigenvalues| around the predicted count and how many lie at round-off level."""
    p, s, k0 = report["predicted"], report["abs_sorted"], report["k0"]
    return (f"*Computed:* rank of $\\tilde X$ = {p['rank']} of {p['features']}, so $d_0$ = {p['d0']} and the predicted "
            f"dimension of the null space is {p['softmax']} + {p['data']} = **{k0}**. The {p['softmax']} softmax "
            f"directions are null vectors to round-off: $\\|HN\\|_F / (\\|H\\|_F \\|N\\|_F)$ = {report['null_residual']:.1e}. "
            f"The {k0}-th smallest $|\\lambda|$ is {s[k0 - 1]:.2e}, the next ones {s[k0]:.2e}, {s[k0 + 1]:.2e}, ...; "
            f"{report['count']} eigenvalues lie below $10^{{-13}}\\lambda_1$ ($\\lambda_1$ = {report['lambda_1']:.4g}).")


def gap_sentence(report: dict[str, Any]) -> str:
    """*Computed:* whether the prediction holds, and whether a clean gap follows the zero eigenvalues
    (else why not: rarely active pixels)."""
    head = ("*Computed:* the prediction holds: the softmax directions are null vectors and at least as many eigenvalues "
            "sit at round-off level. " if report["zeros_match"] else "*Computed:* the prediction is NOT confirmed by this run. ")
    if report["gap"] > 1e6:
        return head + f"After them the spectrum jumps by a factor {report['gap']:.1e}: a clean gap."
    return head + (f"Right past them the spectrum has no clean gap (the next eigenvalue is only {report['gap']:.1e} times "
                   f"larger): {report['rare']} of the {report['features']} pixels differ from their most common value in "
                   f"at most 1% of these {report['images']} images, so their weights are barely constrained and their "
                   "curvature is tiny. A count of \"zero eigenvalues\" then depends on the tolerance; a rank argument from a "
                   "numerical spectrum is better made with the null vectors themselves, as above.")
