"""One figure style for the whole book (seaborn, colour-blind safe) and the book's figure types."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ..theory.symbolic import RaySpectrum

__all__ = ["use_book_style", "palette", "plot_ray_measures", "plot_sharpness_vs_loss", "plot_eigenvalues_vs_trace",
           "plot_scaling", "plot_spectrum_stems", "plot_exact_vs_ritz", "plot_sorted_abs_eigenvalues",
           "plot_ritz_history", "plot_density_vs_histogram", "plot_estimator_errors", "plot_error_distribution",
           "plot_training_curves", "plot_against_weight_decay"]

_MEASURE_LABELS = {
    "log10_loss": r"$\log_{10} L$",
    "log10_trace": r"$\log_{10} \mathrm{Tr}(H)$",
    "log10_spectral_norm": r"$\log_{10} \|H\|_2$",
    "log10_lambda_max": r"$\log_{10} \lambda_{\max}(H)$",
    "log10_frobenius": r"$\log_{10} \|H\|_F$",
}


def use_book_style() -> None:
    """Seaborn 'whitegrid' with the colour-blind palette; sizes readable in the rendered book."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titlesize": "medium",
                         "figure.constrained_layout.use": True})


def palette(n: int) -> list:
    return sns.color_palette("colorblind", n)


def _panels(n: int, ncols: int, width: float, height: float, sharex: bool = False):
    """A figure with ``n`` panels, ``ncols`` per row (fewer if n is smaller), each width x height
    inches; the unused cells of the last row are hidden. Returns (fig, flat array of axes)."""
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), sharex=sharex, squeeze=False)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _direction_label(d: Sequence[float]) -> str:
    return "d = (" + ", ".join(f"{v:g}" for v in d) + ")"


def plot_ray_measures(
    spectra: Sequence[RaySpectrum],
    measures: Sequence[str] = ("log10_loss", "log10_trace", "log10_spectral_norm"),
    title: str | None = None,
):
    """One panel per measure (two per row): its log10 against the weight scale t (log x axis),
    a line per direction."""
    unknown = [m for m in measures if m not in _MEASURE_LABELS]
    if unknown:
        raise ValueError(f"unknown measures {unknown}; allowed: {sorted(_MEASURE_LABELS)}")
    if not spectra:
        raise ValueError("plot_ray_measures needs at least one RaySpectrum")
    fig, axes = _panels(len(measures), 2, 4.6, 3.4, sharex=True)
    colours = palette(len(spectra))
    for ax, m in zip(axes, measures):
        for sp_, c in zip(spectra, colours):
            ax.plot(sp_.scales, getattr(sp_, m), color=c, label=_direction_label(sp_.direction))
        ax.set_xscale("log")
        ax.set_xlabel("weight scale $t$ (weights $w = t\\,d$)")
        ax.set_ylabel(_MEASURE_LABELS[m])
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_sharpness_vs_loss(spectra: Sequence[RaySpectrum], title: str | None = None):
    """Sharpness against the loss itself: log10 ||H||_2 and log10 Tr(H) against log10 L.

    The x axis runs from high loss (left) to low loss (right), the direction an optimiser moves.
    """
    if not spectra:
        raise ValueError("plot_sharpness_vs_loss needs at least one RaySpectrum")
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6), sharex=True)
    for sp_, c in zip(spectra, palette(len(spectra))):
        for ax, m in zip(axes, ("log10_spectral_norm", "log10_trace")):
            ax.plot(sp_.log10_loss, getattr(sp_, m), color=c, label=_direction_label(sp_.direction))
            ax.set_ylabel(_MEASURE_LABELS[m])
    for ax in axes:
        ax.set_xlabel(r"$\log_{10} L$ (lower loss to the right)")
        if not ax.xaxis_inverted():
            ax.invert_xaxis()
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_eigenvalues_vs_trace(eigenvalues: Sequence[float], trace: float, title: str = ""):
    """The exact Hessian's eigenvalues as stems, with its trace as a line.

    The paper's Eq. (4) claims ``Tr(H) = lambda_1(H)``: if it held, the top stem would touch the line.
    """
    fig, ax = plt.subplots(figsize=(6, 3.4))
    eig = np.asarray(eigenvalues)
    ax.stem(np.arange(1, eig.size + 1), eig, linefmt="-", basefmt=" ", label="eigenvalues of the exact $H$")
    ax.axhline(trace, color=palette(2)[1], ls="--", label=f"Tr(H) = {trace:.4g} (Eq. (4)'s claimed $\\lambda_1$)")
    ax.set_xlabel("eigenvalue index (ascending)")
    ax.set_ylabel("value")
    ax.set_xticks(np.arange(1, eig.size + 1))
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


_SCALING_LABELS = {"loss": "training loss", "lambda_max": r"$\lambda_1(H)$", "trace": r"$\mathrm{Tr}(H)$",
                   "frobenius": r"$\|H\|_F$", "accuracy": "accuracy", "weight_norm": r"$\|w\|_2$"}


def plot_scaling(sweeps: dict, measures: Sequence[str] = ("loss", "lambda_max", "trace", "frobenius"),
                 title: str | None = None):
    """Measures against the scale alpha (log-log; two panels per row), one line per sweep
    (``sweeps``: label -> DataFrame from ``scaling.scaling_sweep``). Non-positive values (a
    negative trace estimate) are left out of the log axes."""
    unknown = [m for m in measures if m not in _SCALING_LABELS]
    if unknown:
        raise ValueError(f"unknown measures {unknown}; allowed: {sorted(_SCALING_LABELS)}")
    if not sweeps:
        raise ValueError("plot_scaling needs at least one sweep")
    fig, axes = _panels(len(measures), 2, 4.6, 3.3, sharex=True)
    markers = "osD^v<>"
    for (label, df), c, mk in zip(sweeps.items(), palette(len(sweeps)), markers * 10):
        for ax, m in zip(axes, measures):
            values = np.asarray(df[m], dtype=float)
            ok = values > 0
            ax.plot(np.asarray(df["alpha"])[ok], values[ok], marker=mk, ms=4, color=c, label=label)
    for ax, m in zip(axes, measures):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"scale $\alpha$")
        ax.set_ylabel(_SCALING_LABELS[m])
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_spectrum_stems(spectra: dict, title: str | None = None, ncols: int = 3):
    """The paper's figure: for each SLQ spectrum (``spectra``: panel title -> Spectrum), Ritz
    values (x) against their quadrature weights (y, log scale), all probes pooled."""
    if not spectra:
        raise ValueError("plot_spectrum_stems needs at least one spectrum")
    fig, axes = _panels(len(spectra), ncols, 4.2, 3.2)
    colour = palette(1)[0]
    for ax, (name, sp_) in zip(axes, spectra.items()):
        nodes = np.asarray(sp_.nodes).ravel()
        weights = np.asarray(sp_.weights).ravel()
        keep = ~np.isnan(nodes) & (weights > 0)
        ax.vlines(nodes[keep], 1e-300, weights[keep], color=colour, lw=1.2)
        ax.plot(nodes[keep], weights[keep], "o", color=colour, ms=3)
        ax.set_yscale("log")
        low = weights[keep].min() if keep.any() else 1e-10
        ax.set_ylim(max(low / 3, 1e-30), 1.5)
        ax.set_xlabel("Ritz value")
        ax.set_ylabel("weight")
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return fig


def plot_exact_vs_ritz(eigenvalues, spectrum, title: str | None = None, bins: int = 80):
    """Histogram of the exact eigenvalues (log count) with the Ritz values of one SLQ run
    marked on top: extreme eigenvalues are found, the bulk is only sampled."""
    e = np.asarray(eigenvalues, dtype=float).ravel()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.hist(e, bins=bins, color=palette(2)[0], alpha=0.8, label=f"exact eigenvalues ({e.size})")
    ax.set_yscale("log")
    nodes = np.asarray(spectrum.nodes).ravel()
    nodes = nodes[~np.isnan(nodes)]
    ax.plot(nodes, np.full(nodes.shape, 0.6), "|", ms=14, mew=1.2, color=palette(2)[1],
            label=f"Ritz values ({nodes.size}, {spectrum.settings.get('steps', '?')} steps)")
    ax.set_ylim(0.4, None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("count")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_sorted_abs_eigenvalues(eigenvalues, predicted_zeros: int, title: str | None = None):
    """|lambda| sorted ascending (log y) with the predicted number of exact zeros marked: the
    round-off floor, then the genuine curvature."""
    e = np.sort(np.abs(np.asarray(eigenvalues, dtype=float).ravel()))
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.plot(np.arange(1, e.size + 1), np.maximum(e, 1e-300), color=palette(1)[0])
    ax.axvline(predicted_zeros + 0.5, color=palette(3)[1], ls="--", label=f"predicted zeros: {predicted_zeros}")
    ax.set_yscale("log")
    ax.set_xlabel("index (ascending |eigenvalue|)")
    ax.set_ylabel(r"$|\lambda|$")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_ritz_history(history: np.ndarray, eigenvalues=None, title: str | None = None, show_top: int = 5):
    """Ritz values after each Lanczos step (dots), with the exact top eigenvalues (dashed)."""
    steps = history.shape[0]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for m in range(steps):
        row = history[m][~np.isnan(history[m])]
        ax.plot(np.full(row.shape, m + 1), row, ".", ms=2.5, color=palette(1)[0])
    if eigenvalues is not None:
        top = np.sort(np.asarray(eigenvalues, dtype=float))[::-1][:show_top]
        for v in top:
            ax.axhline(v, color=palette(2)[1], ls="--", lw=0.8)
        ax.plot([], [], "--", color=palette(2)[1], label=f"exact top {show_top} eigenvalues")
        ax.axhline(float(np.min(eigenvalues)), color=palette(3)[2], ls=":", lw=0.8, label="exact smallest")
        ax.legend(fontsize="small", loc="center right")
    ax.set_xlabel("Lanczos step $m$")
    ax.set_ylabel("Ritz values of $T_m$")
    if title:
        ax.set_title(title)
    return fig


def plot_density_vs_histogram(eigenvalues, spectrum, sigma: float, title: str | None = None, bins: int = 120):
    """The exact eigenvalue density (histogram normalised to 1) against SLQ's smoothed density
    with Gaussian width sigma, on a log y axis."""
    e = np.asarray(eigenvalues, dtype=float).ravel()
    lo, hi = e.min() - 3 * sigma, e.max() + 3 * sigma
    grid = np.linspace(lo, hi, 2000)
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    ax.hist(e, bins=bins, range=(lo, hi), density=True, color=palette(2)[0], alpha=0.6, label="exact (histogram)")
    ax.plot(grid, np.maximum(spectrum.density(grid, sigma), 1e-12), color=palette(2)[1],
            label=f"SLQ density ({spectrum.probes} probe(s), {spectrum.settings.get('steps', '?')} steps, "
                  f"$\\sigma$ = {sigma:.3g})")
    ax.set_yscale("log")
    ax.set_ylim(1e-6, None)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_estimator_errors(summary, title: str | None = None):
    """The root-mean-square relative error of lambda_max, trace and Frobenius over repeats (the
    typical error of ONE run; log axes) against the number of Lanczos steps, one line per probe
    count (``lanczos_checks.summarise_grid``)."""
    measures = ("lambda_max", "trace", "frobenius")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharex=True)
    probes = sorted(summary["probes"].unique())
    for p, c in zip(probes, palette(len(probes))):
        d = summary[summary["probes"] == p].sort_values("steps")
        for ax, m in zip(axes, measures):
            ax.plot(d["steps"], np.maximum(d[f"{m}_rel_rms"], 1e-17), marker="o", ms=4, color=c,
                    label=f"{p} probe{'s' if p > 1 else ''}")
    for ax, m in zip(axes, measures):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Lanczos steps")
        ax.set_ylabel("RMS relative error")
        ax.set_title(_SCALING_LABELS[m])
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_error_distribution(errors: dict, title: str | None = None):
    """Histograms of relative errors over independent runs (``errors``: label -> array)."""
    fig, axes = plt.subplots(1, len(errors), figsize=(4.2 * len(errors), 3.2), squeeze=False)
    for ax, (label, values), c in zip(axes.ravel(), errors.items(), palette(len(errors))):
        v = np.asarray(values, dtype=float)
        ax.hist(v, bins=min(20, max(5, v.size // 2)), color=c, alpha=0.85)
        ax.axvline(0, color="0.2", lw=0.8)
        ax.set_xlabel("relative error")
        ax.set_ylabel("runs")
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    return fig


def plot_training_curves(histories: dict, title: str | None = None):
    """Per-epoch training loss (log y), validation accuracy and weight norm, one line per run
    (``histories``: label -> list of history rows from ``train.fit`` / ``Result.history``). A run
    validated every k-th epoch has NaN in between: its validation line joins the validated epochs,
    with a marker on each."""
    if not histories:
        raise ValueError("plot_training_curves needs at least one history")
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.4), sharex=True)
    for (label, rows), c in zip(histories.items(), palette(len(histories))):
        epochs = [r["epoch"] for r in rows]
        axes[0].plot(epochs, [r["train_loss"] for r in rows], color=c, label=label)
        validated = [(r["epoch"], 100 * r["val_acc"]) for r in rows
                     if r.get("val_acc") is not None and np.isfinite(r["val_acc"])]
        if validated:
            axes[1].plot(*zip(*validated), color=c, label=label, marker="o", markersize=3)
        axes[2].plot(epochs, [r["weight_norm"] for r in rows], color=c, label=label)
    axes[0].set_yscale("log")
    for ax, name in zip(axes, ("training loss (running mean)", "validation accuracy (%)", r"$\|w\|_2$")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_against_weight_decay(table, measures: Sequence[str] = ("lambda_max", "weight_norm", "val_acc"),
                              title: str | None = None):
    """Measures of a ``weight_decay.seed_table`` against the weight decay (symlog
    x axis, so that 0 is shown), one panel each, with standard-error bars where the table has them
    (``<m>_se``, else the seed mean's ``<m>_sd / sqrt(seeds)``; none with one seed)."""
    labels = {"lambda_max": r"$\lambda_1(H)$", "trace": r"$\mathrm{Tr}(H)$", "frobenius": r"$\|H\|_F$",
              "weight_norm": r"$\|w\|_2$", "val_acc": "validation accuracy (%)", "test_acc": "test accuracy (%)",
              "gap": "train - val accuracy (%)"}
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 3.3), squeeze=False)
    wd = np.asarray(table.index, dtype=float)
    positive = wd[wd > 0]
    for ax, m in zip(axes.ravel(), measures):
        if m not in table:
            raise ValueError(f"the table has no column {m!r}")
        if f"{m}_se" in table:
            err = table[f"{m}_se"]
        elif f"{m}_sd" in table and "seeds" in table:  # seed table: standard error of the seed mean
            err = table[f"{m}_sd"] / np.sqrt(table["seeds"])
        else:
            err = None
        ax.errorbar(wd, table[m], yerr=err, marker="o", ms=5, capsize=3, color=palette(1)[0])
        ax.set_xscale("symlog", linthresh=positive.min() if positive.size else 1e-4)
        ax.set_xlabel("weight decay")
        ax.set_ylabel(labels.get(m, m))
    if title:
        fig.suptitle(title)
    return fig


def plot_rank_correlations(tau, title: str | None = None):
    """A heatmap of Kendall's tau (rows: measures, columns: groups of runs) between each sharpness
    measure and the validation accuracy, on a colour-blind-safe diverging map (PuOr) from -1
    (flatter is better: the measure works) to +1 (sharper is better: a false friend)."""
    if tau.empty:
        raise ValueError("no rank correlations to plot (no group of runs)")
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * tau.shape[1], 0.45 * tau.shape[0] + 1.6))
    sns.heatmap(tau.astype(float), vmin=-1, vmax=1, center=0, cmap="PuOr_r", annot=True, fmt=".2f", ax=ax,
                cbar_kws={"label": "Kendall tau with validation accuracy"})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    if title:
        ax.set_title(title)
    return fig


def plot_decay_exponent_grid(table, paper_exponent: float | None = None, title: str | None = None):
    """How long weight decay acted, and what it did: from a ``weight_decay.seed_table`` over a grid of
    weight decays (one or more seeds), three panels against the decay exponent E (symlog x axis, so
    that E = 0 is shown): lambda_1 relative to the smallest weight decay's, and the training and
    validation accuracies (percent), with the 99% interpolation line and, where given, the paper's
    E marked. Error bars: the seed mean's standard error where there are several seeds."""
    if "decay_exponent" not in table or "lambda_max" not in table:
        raise ValueError("the table needs decay_exponent and lambda_max columns (weight_decay.seed_table)")
    e = np.asarray(table["decay_exponent"], dtype=float)
    ref = float(table["lambda_max"].iloc[0])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    color = palette(1)[0]

    def err(col):
        if f"{col}_sd" in table and "seeds" in table:
            return table[f"{col}_sd"] / np.sqrt(table["seeds"])
        return None

    rel_err = err("lambda_max")
    axes[0].errorbar(e, table["lambda_max"] / ref, yerr=None if rel_err is None else rel_err / ref, marker="o",
                     capsize=3, color=color)
    axes[0].axhline(1.0, color="grey", lw=0.8, ls=":")
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$\lambda_1$ / $\lambda_1$ at the smallest weight decay")
    axes[1].errorbar(e, table["train_acc"], yerr=err("train_acc"), marker="o", capsize=3, color=color)
    axes[1].axhline(99.0, color="grey", lw=0.8, ls="--", label="99%: interpolation")
    axes[1].set_ylabel("training accuracy (%)")
    axes[1].legend(fontsize="small")
    axes[2].errorbar(e, table["val_acc"], yerr=err("val_acc"), marker="o", capsize=3, color=color)
    axes[2].set_ylabel("validation accuracy (%)")
    positive = e[e > 0]
    for ax in axes:
        ax.set_xscale("symlog", linthresh=max(min(positive.min(), 1.0), 1e-3) if positive.size else 1.0)
        ax.set_xlabel(r"decay exponent $E = \sum_t \eta_t \gamma / (1 - \mu)$")
        ax.axvline(1.0, color="grey", lw=0.8, ls=":")
        if paper_exponent:
            ax.axvline(paper_exponent, color=palette(2)[1], lw=1.2, ls="--", label=f"the paper's E = {paper_exponent:.3g}")
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
