"""One figure style for the whole book (seaborn, colour-blind safe) and the book's figure types."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .symbolic import RaySpectrum

__all__ = ["use_book_style", "palette", "plot_ray_measures", "plot_sharpness_vs_loss", "plot_eigenvalues_vs_trace"]

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
    ncols = min(2, len(measures))
    nrows = -(-len(measures) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), sharex=True, squeeze=False)
    axes = axes.ravel()
    for ax in axes[len(measures):]:
        ax.set_visible(False)
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
