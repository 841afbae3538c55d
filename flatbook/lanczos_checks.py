"""Lanczos and SLQ held against exact spectra: the measurements of the "Lanczos, checked" appendix.

Given a symmetric operator with KNOWN eigenvalues (a dense Hessian small enough for
``torch.linalg.eigvalsh``), these functions run the estimators of ``flatbook.spectrum`` and
report their errors:

* ``exact_measures(eigenvalues)``: lambda_max, lambda_min, trace = sum lambda_i and
  Frobenius norm = sqrt(sum lambda_i^2) (exact).
* ``ritz_history(op, steps, seed)``: the Ritz values (eigenvalues of the leading m x m block of
  the tridiagonal T) after every step m = 1..steps of one Lanczos run: how extreme eigenvalues
  converge first.
* ``estimator_grid(op, exact, steps, probes, repeats)``: SLQ's lambda_max, trace and Frobenius
  estimates for every (steps, probes) pair, each repeated with ``repeats`` independent seeds,
  with relative errors (estimate - exact) / |exact|.
* ``ghost_count(nodes, lambda_max)``: how many Ritz values of one run lie within a relative
  ``rtol`` of the top eigenvalue: 1 with full reorthogonalisation; more ("ghost" copies) when
  Lanczos runs without it and loses orthogonality once the top Ritz value has converged.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .checks import positive_int
from .spectrum import SymmetricOperator, lanczos

__all__ = ["exact_measures", "ritz_history", "estimator_grid", "summarise_grid", "ghost_count",
           "check_lanczos_parameters", "steps_to_converge"]


def exact_measures(eigenvalues) -> dict[str, float]:
    e = np.asarray(eigenvalues, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("no eigenvalues")
    return {"lambda_max": float(e.max()), "lambda_min": float(e.min()), "trace": float(e.sum()),
            "frobenius": float(np.sqrt((e**2).sum()))}


def ritz_history(op: SymmetricOperator, steps: int, seed: int = 0, *, reorthogonalize: bool = True) -> np.ndarray:
    """(steps, steps) array: row m - 1 holds the m Ritz values after step m (ascending), NaN-padded."""
    positive_int("steps", steps)
    res = lanczos(op, steps=steps, probes=1, seed=seed, reorthogonalize=reorthogonalize)
    m_run = int(res.sizes[0])
    out = np.full((steps, steps), np.nan)
    for m in range(1, m_run + 1):
        T = np.diag(res.alphas[0, :m])
        if m > 1:
            off = res.betas[0, : m - 1]
            T += np.diag(off, 1) + np.diag(off, -1)
        out[m - 1, :m] = np.linalg.eigvalsh(T)
    return out


def estimator_grid(op: SymmetricOperator, exact: dict[str, float], steps: Sequence[int], probes: Sequence[int],
                   repeats: int = 5, seed: int = 0, *, reorthogonalize: bool = True, progress: bool = False):
    """A DataFrame, one row per (steps, probes, repeat): the SLQ estimates and their relative
    errors against ``exact`` (from ``exact_measures``).

    Repeat r makes ONE Lanczos run with max(steps) steps and max(probes) probes from seed
    ``seed + r``; the estimate for s steps and p probes uses the leading s x s blocks of the first
    p probes' T. That is exactly what a run with s steps from those start vectors computes (the
    recurrence builds T one row at a time), so the table costs ``repeats`` runs instead of
    repeats x len(steps) x len(probes). Across repeats every cell is independent; within a
    repeat the cells share probes (nested), as one growing computation would."""
    import pandas as pd

    from .spectrum import LanczosResult, Spectrum

    steps = [positive_int("steps", s) for s in steps]
    probes = [positive_int("probes", p) for p in probes]
    positive_int("repeats", repeats)
    if not steps or not probes:
        raise ValueError("steps and probes must each hold at least one value")
    P = int(op.num_params)
    max_steps, max_probes = max(steps), max(probes)
    runs = range(repeats)
    if progress:
        from tqdm.auto import tqdm

        runs = tqdm(runs, desc=f"SLQ grid ({max_probes} probes x {max_steps} steps per run)", unit="run")
    rows = []
    for r in runs:
        res = lanczos(op, steps=max_steps, probes=max_probes, seed=seed + r, reorthogonalize=reorthogonalize)
        for s in steps:
            m = min(s, res.alphas.shape[1])
            for p in probes:
                part = LanczosResult(res.alphas[:p, :m], res.betas[:p, :m], np.minimum(res.sizes[:p], m),
                                     res.seconds_per_product)
                nodes, weights = part.ritz()
                sp = Spectrum(nodes, weights, P, {"steps": s, "probes": p, "seed": seed + r})
                row = {"steps": s, "probes": p, "repeat": r}
                for name in ("lambda_max", "trace", "frobenius"):
                    value = getattr(sp, name)
                    row[name] = value
                    row[f"{name}_rel_error"] = (value - exact[name]) / abs(exact[name])
                rows.append(row)
    order = {(s, p, r): i for i, (s, p, r) in enumerate((s, p, r) for s in steps for p in probes for r in range(repeats))}
    rows.sort(key=lambda row: order[(row["steps"], row["probes"], row["repeat"])])
    return pd.DataFrame(rows)


def summarise_grid(grid) -> "pd.DataFrame":  # noqa: F821
    """Per (steps, probes): the mean relative error (the bias) with its standard error, and the
    root-mean-square relative error (the typical size of one run's error) over repeats."""
    cols = [c for c in grid.columns if c.endswith("_rel_error")]
    g = grid.groupby(["steps", "probes"])[cols]
    mean, se = g.mean(), g.sem()
    se.columns = [c.replace("_rel_error", "_rel_error_se") for c in se.columns]
    rms = g.agg(lambda v: float(np.sqrt(np.mean(np.square(v)))))
    rms.columns = [c.replace("_rel_error", "_rel_rms") for c in rms.columns]
    return mean.join(se).join(rms).reset_index()


def ghost_count(nodes, lambda_max: float, rtol: float = 1e-6) -> int:
    """How many Ritz values (one probe's, NaN ignored) are within rtol * |lambda_max| of lambda_max."""
    theta = np.asarray(nodes, dtype=np.float64).ravel()
    theta = theta[~np.isnan(theta)]
    return int((np.abs(theta - lambda_max) <= rtol * abs(lambda_max)).sum())


def check_lanczos_parameters(dataset: str, image_size: int | None, train_per_class: int | None, epochs: int,
                             lr: float, mlp_hidden: list[int], logreg_samples: int, mlp_samples: int, steps: int,
                             steps_grid: list[int], probes_grid: list[int], repeats: int, paper_runs: int,
                             seed: int, results_dir: str | None) -> None:
    """Every parameter of the "Lanczos, checked" appendix (raises ValueError naming the bad one)."""
    from .experiments import _build
    from .theorem import check_training_parameters

    for name, v in (("logreg_samples", logreg_samples), ("mlp_samples", mlp_samples), ("steps", steps),
                    ("repeats", repeats), ("paper_runs", paper_runs)):
        positive_int(name, v)
    for name, grid in (("steps_grid", steps_grid), ("probes_grid", probes_grid)):
        if not isinstance(grid, (list, tuple)) or not grid:
            raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {grid!r}")
        for v in grid:
            positive_int(name, v)
    _, mlp = check_training_parameters(dataset, image_size, train_per_class, epochs, lr, mlp_hidden, seed,
                                       results_dir)
    n = sum(p.numel() for p in _build(mlp).parameters())
    if n > 20_000:
        raise ValueError(f"the MLP has {n} parameters; its dense Hessian is limited to 20,000 "
                         "(choose a smaller mlp_hidden or image_size)")


def steps_to_converge(history: np.ndarray, eigenvalues, k: int = 1, rtol: float = 1e-8) -> int | None:
    """The first Lanczos step m (1-based) at which the k-th largest Ritz value of ``history``
    (from ``ritz_history``) is within ``rtol`` (relative) of the k-th largest exact eigenvalue;
    None if it never is within the run."""
    positive_int("k", k)
    target = np.sort(np.asarray(eigenvalues, dtype=np.float64).ravel())[::-1][k - 1]
    for m, row in enumerate(history, start=1):
        theta = np.sort(row[~np.isnan(row)])[::-1]
        if theta.size >= k and abs(theta[k - 1] - target) <= rtol * abs(target):
            return m
    return None
