"""What the appendix "Lanczos, checked" (``book/lanczos.ipynb``) computes and displays, as functions,
so that its notebook holds parameters, prose and calls only.

Two real operators, the Hessians of the mean cross-entropy of a trained logistic regression
(closed form, ``theory.exact``) and of the authors' MLP (``dense_hessian``), over the first training
images, in float64, with their exact spectra (``eigvalsh``); Lanczos and SLQ run on the operators
themselves and on ``DiagonalOperator``s of the exact eigenvalues (the same distribution of estimates
at O(P) a product). The estimators' studies are ``lanczos_checks``'; the claims are
``lanczos_checks.lanczos_claims``.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

__all__ = ["MEASURES", "chapter_models", "chapter_data", "exact_spectra", "ritz_histories", "single_probe_spectra",
           "identity_check", "identity_sentence", "diagonal_operators", "show_densities", "show_estimator_grids",
           "quadrature_checks", "quadrature_table", "ghost_effects", "ghost_summary_table", "ghost_estimates_table",
           "describe_ghosts", "ghosts_sentence", "ghost_densities", "density_table", "density_sentence",
           "precision_table", "float32_lambda_error", "paper_run_errors", "trace_and_frobenius_errors",
           "spread_table", "paper_run_sentence", "paper_errors_by_model", "exact_table", "one_probe_spreads"]

MEASURES = ("lambda_max", "trace", "frobenius")
LOGREG, MLP = "logistic regression", "MLP"


def chapter_models(logreg_config: Any, mlp_config: Any, results_dir: Any = None) -> dict[str, Any]:
    """{"logistic regression": model, "MLP": model}, trained (or read from the cache), in float64."""
    from ..experiments import run

    return {LOGREG: run(logreg_config, results_dir=results_dir).load_model().double(),
            MLP: run(mlp_config, results_dir=results_dir).load_model().double()}


def chapter_data(x: Any, y: Any, logreg_samples: int, mlp_samples: int) -> dict[str, tuple]:
    """The first ``logreg_samples`` / ``mlp_samples`` training images (float64) for each model."""
    return {LOGREG: (x[:logreg_samples].double(), y[:logreg_samples]), MLP: (x[:mlp_samples].double(), y[:mlp_samples])}


def exact_spectra(models: dict[str, Any], data: dict[str, tuple]) -> dict[str, Any]:
    """For each model: its Hessian over its data (logistic regression in closed form, the MLP by
    ``dense_hessian``), its eigenvalues (``eigvalsh`` of the symmetrised matrix), the operator
    (``HessianOperator``, batches of 1,000) and the exact measures (``lanczos_checks.exact_measures``);
    with a table of sizes, seconds and the matrix's relative asymmetry. Returns a dict with keys
    operators, eigenvalues, exact_values, timing (a DataFrame)."""
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from ..curvature import HessianOperator, dense_hessian
    from ..theory import exact
    from .lanczos_checks import exact_measures

    operators, eigenvalues, exact_values, timing = {}, {}, {}, {}
    for name, model in models.items():
        x, y = data[name]
        t0 = time.perf_counter()
        H = torch.as_tensor(exact.logreg_hessian(model, x) if name == LOGREG
                            else dense_hessian(model, F.cross_entropy, (x, y), batch_size=len(y)))
        t1 = time.perf_counter()
        asymmetry = float((H - H.T).norm() / H.norm())
        eigenvalues[name] = torch.linalg.eigvalsh((H + H.T) / 2).numpy()
        timing[name] = {"parameters": H.shape[0], "images": len(y), "Hessian s": t1 - t0,
                        "eigvalsh s": time.perf_counter() - t1, "relative asymmetry": asymmetry}
        operators[name] = HessianOperator(model, F.cross_entropy, (x, y), batch_size=1000)
        exact_values[name] = exact_measures(eigenvalues[name])
        del H
    return {"operators": operators, "eigenvalues": eigenvalues, "exact_values": exact_values,
            "timing": pd.DataFrame(timing).T}


def ritz_histories(operators: dict[str, Any], eigenvalues: dict[str, np.ndarray], steps: int, seed: int):
    """(histories, convergence): each operator's Ritz values after every step (``ritz_history``, drawn
    with the exact eigenvalues) and the steps until lambda_1, lambda_2, lambda_3 are within 1e-8."""
    import pandas as pd

    from . import plots
    from .lanczos_checks import ritz_history, steps_to_converge

    histories = {}
    for name, op in operators.items():
        histories[name] = ritz_history(op, steps, seed=seed)
        plots.plot_ritz_history(histories[name], eigenvalues[name], title=f"{name}: Ritz values per Lanczos step")
    convergence = pd.DataFrame({name: {f"steps until lambda_{k} is within 1e-8": steps_to_converge(
        hist, eigenvalues[name], k, rtol=1e-8) for k in (1, 2, 3)} for name, hist in histories.items()}).T
    return histories, convergence


def single_probe_spectra(operators: dict[str, Any], steps: int, seed: int) -> dict[str, Any]:
    """{"<name> (<P> parameters)": one-probe SLQ of ``steps`` steps} for the stem figure."""
    from ..spectrum import slq

    return {f"{name} ({op.num_params} parameters)": slq(op, steps=steps, probes=1, seed=seed) for name, op in operators.items()}


def identity_check(model: Any, x: Any, samples: int, seed: int, steps: int = 60) -> float:
    """Lanczos on H = Q diag(lambda) Q^T from v against Lanczos on diag(lambda) from Q^T v, for the
    closed-form Hessian of ``model`` (a small logistic regression) over the first ``samples`` images:
    the largest difference of the ``steps`` Ritz values, relative to ||H||_2 (0 in exact arithmetic)."""
    import torch

    from ..spectrum import DiagonalOperator, MatrixOperator, lanczos
    from ..theory import exact

    H = exact.logreg_hessian(model, x[:samples])
    lam, Q = torch.linalg.eigh(H)
    v = torch.randn(H.shape[0], 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    on_matrix = lanczos(MatrixOperator(H), steps=steps, start=v).ritz()[0]
    on_diagonal = lanczos(DiagonalOperator(lam), steps=steps, start=Q.T @ v).ritz()[0]
    return float(np.nanmax(np.abs(on_matrix - on_diagonal)) / float(lam.abs().max()))


def identity_sentence(error: float, steps: int = 60) -> str:
    """*Computed:* the identity check's largest difference."""
    return (f"*Computed:* largest difference between the {steps} Ritz values of the two runs, relative to "
            f"$\\|H\\|_2$: {error:.1e}.")


def diagonal_operators(eigenvalues: dict[str, np.ndarray]) -> dict[str, Any]:
    """A ``DiagonalOperator`` of each model's exact eigenvalues."""
    from ..spectrum import DiagonalOperator

    return {name: DiagonalOperator(e) for name, e in eigenvalues.items()}


def show_densities(eigenvalues: dict[str, np.ndarray], diagonal: dict[str, Any], steps: int, probes: int,
                   seed: int) -> None:
    """For each model: the exact spectrum's histogram against the SLQ density of ``probes`` probes,
    smoothed with a Gaussian of 1% of the spectral range."""
    from ..spectrum import slq
    from . import plots

    for name, e in eigenvalues.items():
        multi = slq(diagonal[name], steps=steps, probes=probes, seed=seed)
        plots.plot_density_vs_histogram(e, multi, 0.01 * (e.max() - e.min()), title=f"{name}: exact spectrum and SLQ density")


def show_estimator_grids(diagonal: dict[str, Any], exact_values: dict[str, dict], steps_grid: Sequence[int],
                         probes_grid: Sequence[int], repeats: int, seed: int) -> dict[str, Any]:
    """For each model: SLQ's errors over the grid of steps x probes, RMS over ``repeats`` seeds
    (``estimator_grid``, ``summarise_grid``), drawn and displayed; returns the summaries."""
    from IPython.display import Markdown, display

    from . import plots
    from .lanczos_checks import estimator_grid, summarise_grid

    summaries = {}
    for name, op in diagonal.items():
        grid = estimator_grid(op, exact_values[name], steps_grid, probes_grid, repeats, seed=seed, progress=True)
        summaries[name] = summarise_grid(grid)
        plots.plot_estimator_errors(summaries[name], title=f"{name}: SLQ errors of one run (RMS over {repeats} seeds)")
        display(Markdown(f"**{name}**"))
        display(summaries[name].style.format("{:.2e}", subset=[c for c in summaries[name].columns if "error" in c]))
    return summaries


def quadrature_checks(diagonal: dict[str, Any], steps_grid: Sequence[int], seed: int) -> dict[str, Any]:
    """``lanczos_checks.quadrature_identity`` of each model."""
    from .lanczos_checks import quadrature_identity

    return {name: quadrature_identity(op, steps_grid, seed=seed) for name, op in diagonal.items()}


def quadrature_table(quadrature: dict[str, Any]):
    """The quadrature checks of every model in one table, indexed by (model, steps)."""
    import pandas as pd

    return (pd.concat(quadrature, names=["model", "row"]).reset_index("row", drop=True).set_index("steps", append=True)
            [["trace", "hutchinson", "trace_rel_deviation", "frobenius", "frobenius_direct", "frobenius_rel_deviation"]])


def ghost_effects(operators: dict[str, Any], eigenvalues: dict[str, np.ndarray], steps: int, seed: int) -> dict[str, Any]:
    """``lanczos_checks.ghost_effect`` on each real operator (no density: that is ``ghost_densities``)."""
    from .lanczos_checks import ghost_effect

    return {name: ghost_effect(op, eigenvalues[name], steps, seed=seed, sigma_fractions=()) for name, op in operators.items()}


def ghost_summary_table(effects: dict[str, Any]):
    """Each ghost study's summary, one column per model."""
    import pandas as pd

    return pd.DataFrame({name: g.summary() for name, g in effects.items()})


def ghost_estimates_table(effects: dict[str, Any], exact_values: dict[str, dict]):
    """The relative errors of lambda_1, trace and Frobenius with and without reorthogonalisation, per model."""
    import pandas as pd

    rows = []
    for name, g in effects.items():
        for reorth, estimates in ((True, g.estimates_with), (False, g.estimates_without)):
            row = {"model": name, "reorthogonalisation": reorth}
            for m in MEASURES:
                row[f"{m} rel. error"] = (estimates[m] - exact_values[name][m]) / abs(exact_values[name][m])
            rows.append(row)
    return pd.DataFrame(rows).set_index(["model", "reorthogonalisation"])


def describe_ghosts(name: str, g: Any) -> str:
    """One model's ghost study in words: not converged, converged without ghosts, or the ghosts' count,
    weight and moments against the reorthogonalised run."""
    if not g.converged:
        return (f"{name}: $\\lambda_1$ has not converged in {g.steps} steps (top Ritz value off by "
                f"{g.top_error_with:.1e}), so no ghost can be expected")
    if g.ghosts_without <= 1:
        return f"{name}: $\\lambda_1$ converged, but no ghost copy appeared in {g.steps} steps"
    return (f"{name}: {g.ghosts_without} copies of $\\lambda_1$ without reorthogonalisation ({g.ghosts_with} with), "
            f"carrying together {g.top_weight_without:.6g} of the probe's weight against {g.top_weight_with:.6g} "
            f"for the single Ritz value with it (relative difference {abs(g.top_weight_ratio - 1):.1e}); the "
            f"moments $q^\\top H^k q$ agree with direct products to {max(g.moment_errors_without):.1e} (with "
            f"reorthogonalisation: {max(g.moment_errors_with):.1e})")


def ghosts_sentence(effects: dict[str, Any]) -> str:
    """*Computed, real operators:* ``describe_ghosts`` of every model."""
    return "*Computed, real operators:* " + "; ".join(describe_ghosts(name, g) for name, g in effects.items()) + "."


def ghost_densities(diagonal: dict[str, Any], eigenvalues: dict[str, np.ndarray], steps: int, seed: int,
                    sigma_fractions: Sequence[float] = (1e-2, 3e-3, 1e-3)) -> dict[str, Any]:
    """``lanczos_checks.ghost_effect`` on each model's eigenvalues, with the smoothed densities'
    distances at each width (a share of the spectral range)."""
    from .lanczos_checks import ghost_effect

    return {name: ghost_effect(diagonal[name], e, steps, seed=seed, sigma_fractions=tuple(sigma_fractions))
            for name, e in eigenvalues.items()}


def density_table(densities: dict[str, Any]):
    """L1 distances of the smoothed densities (with / without reorthogonalisation against the probe's
    own measure, and the probe's measure against the exact density) per model and width."""
    import pandas as pd

    rows = [{"model": name, "sigma / range": f, "copies of lambda_1 without": g.ghosts_without,
             "L1(with, mu_q)": d["with vs probe"], "L1(without, mu_q)": d["without vs probe"],
             "L1(without, with)": d["without vs with"], "L1(mu_q, exact density)": d["probe vs exact"]}
            for name, g in densities.items() for f, d in g.density.items()]
    return pd.DataFrame(rows).set_index(["model", "sigma / range"])


def density_sentence(densities: dict[str, Any]) -> str:
    """*Computed, on the eigenvalues:* the density distances per model and width, in words."""
    parts = []
    for name, g in densities.items():
        widths = ", ".join(f"{100 * f:g}%: {d['with vs probe']:.1e} / {d['without vs probe']:.1e} against "
                           f"{d['probe vs exact']:.2g}" for f, d in g.density.items())
        parts.append(f"{name} ({g.ghosts_without} Ritz value{'s' if g.ghosts_without != 1 else ''} at $\\lambda_1$ "
                     f"without reorthogonalisation): {widths}")
    return ("*Computed, on the eigenvalues:* $L^1$ distance of the smoothed density from the probe's own measure "
            "$\\mu_q$, with / without reorthogonalisation, and of $\\mu_q$ from the exact density (one probe's sampling "
            "error), per width $\\sigma$ (share of the spectral range): " + "; ".join(parts) + ".")


def precision_table(models: dict[str, Any], data: dict[str, tuple], exact_values: dict[str, dict], steps: int, seed: int):
    """SLQ (one probe) on each model's operator in float64 and in float32 (model, data and Lanczos basis):
    the relative errors of lambda_1, trace and Frobenius against the exact values. The models are left
    in float64."""
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from ..curvature import HessianOperator
    from ..spectrum import slq

    rows = []
    for name, model in models.items():
        x, y = data[name]
        for dtype in (torch.float64, torch.float32):
            op = HessianOperator(model.to(dtype), F.cross_entropy, (x.to(dtype), y), batch_size=1000)
            spectrum = slq(op, steps=steps, probes=1, seed=seed, basis_dtype=dtype)
            row = {"model": name, "dtype": str(dtype).replace("torch.", "")}
            for m in MEASURES:
                row[f"{m} rel. error"] = (getattr(spectrum, m) - exact_values[name][m]) / abs(exact_values[name][m])
            rows.append(row)
        model.double()
    return pd.DataFrame(rows).set_index(["model", "dtype"])


def float32_lambda_error(table) -> float:
    """The largest |relative error| of lambda_1 in float32 (``precision_table``)."""
    return float(table.xs("float32", level="dtype")["lambda_max rel. error"].abs().max())


def paper_run_errors(diagonal: dict[str, Any], exact_values: dict[str, dict], steps: int, runs: int, seed: int):
    """(table, errors): ``runs`` one-probe SLQ runs of ``steps`` steps (the paper's setting) per model:
    the relative errors of each measure ({"<model>: <measure>": array}) and their median, 90th
    percentile and worst |error|."""
    import pandas as pd

    from .lanczos_checks import estimator_grid

    rows, errors = [], {}
    for name, op in diagonal.items():
        grid = estimator_grid(op, exact_values[name], [steps], [1], runs, seed=seed + 1000)
        for m in MEASURES:
            e = grid[f"{m}_rel_error"].to_numpy()
            errors[f"{name}: {m}"] = e
            rows.append({"model": name, "measure": m, "median |error|": np.median(np.abs(e)),
                         "90th percentile |error|": np.quantile(np.abs(e), 0.9), "worst |error|": np.abs(e).max()})
    return pd.DataFrame(rows).set_index(["model", "measure"]), errors


def trace_and_frobenius_errors(errors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The errors of ``paper_run_errors`` without lambda_1's (for the distribution figure)."""
    return {k: v for k, v in errors.items() if "lambda_max" not in k}


def spread_table(spreads: dict[str, dict], errors: dict[str, np.ndarray], runs: int):
    """Per model: r_eff, one probe's predicted relative SD of the trace (and the exact one for a unit
    probe) and of the Frobenius norm, beside the RMS errors measured over ``runs`` runs."""
    import pandas as pd

    def rms(key: str) -> float:
        return float(np.sqrt(np.mean(np.square(errors[key]))))

    return pd.DataFrame({name: {"r_eff = Tr(H)^2 / ||H||_F^2": s["r_eff"],
                                "trace: predicted relative SD sqrt(2 / r_eff)": s["trace_rel_sd"],
                                "trace: exact for a unit probe": s["trace_rel_sd_sphere"],
                                f"trace: measured RMS over {runs} runs": rms(f"{name}: trace"),
                                "Frobenius: predicted relative SD": s["frobenius_rel_sd"],
                                f"Frobenius: measured RMS over {runs} runs": rms(f"{name}: frobenius")}
                         for name, s in spreads.items()}).T


def paper_run_sentence(table, spreads: dict[str, dict], steps: int, classes: int) -> str:
    """*Computed:* with the paper's one probe, how close lambda_1 always is, how often the trace and
    Frobenius norm miss by how much, and one probe's relative SD from r_eff."""
    worst_trace = float(table.xs("trace", level="measure")["90th percentile |error|"].max())
    worst_frob = float(table.xs("frobenius", level="measure")["90th percentile |error|"].max())
    worst_lambda = float(table.xs("lambda_max", level="measure")["worst |error|"].max())
    per_model = ", ".join(f"{s['trace_rel_sd']:.2g} for {name} ($r_{{\\mathrm{{eff}}}}$ = {s['r_eff']:.3g})"
                          for name, s in spreads.items())
    return (f"*Computed:* with one probe and {steps} steps, $\\lambda_1$ is within a relative {worst_lambda:.1e} of the "
            f"exact value in every run, while one run in ten misses the trace by more than {100 * worst_trace:.0f}% and "
            f"the Frobenius norm by more than {100 * worst_frob:.0f}% (the worse of the two models). How far one probe's "
            "trace is off is set by the spectrum: its relative standard deviation is about $\\sqrt{2 / r_{\\mathrm{eff}}}$ "
            f"with $r_{{\\mathrm{{eff}}}} = \\mathrm{{Tr}}(H)^2 / \\|H\\|_F^2$, here {per_model} ({classes} classes). The "
            "paper's comparisons of trace and Frobenius norm between weight decays are meaningful only where the "
            "differences are larger than this; its $\\lambda_1$ comparisons are safe here, for two small models with well "
            "separated top eigenvalues (a clustered top of the spectrum converges more slowly).")


def paper_errors_by_model(errors: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """{model: {measure: errors}} from ``paper_run_errors``' flat dict."""
    return {name: {m: errors[f"{name}: {m}"] for m in MEASURES} for name in names}


def exact_table(exact_values: dict[str, dict]):
    """The exact measures (lambda_max, lambda_min, trace, Frobenius), one row per model."""
    import pandas as pd

    return pd.DataFrame(exact_values).T


def one_probe_spreads(eigenvalues: dict[str, np.ndarray]) -> dict[str, dict]:
    """``lanczos_checks.one_probe_spread`` of each model's eigenvalues."""
    from .lanczos_checks import one_probe_spread

    return {name: one_probe_spread(e) for name, e in eigenvalues.items()}
