"""What the Gedanken chapter (``book/gedanken.ipynb``, the paper's Section 2) computes and displays,
as functions, so that its notebook holds parameters, prose and calls only.

The model is the deep linear network L(w) = exp(-X w_1 ... w_n) of ``theory.symbolic``: each
function takes that module's derivation (``derive_gedanken``) and returns exact SymPy results, tables
of them, or the chapter's computed sentences; the ``show_*`` functions display LaTeX in a notebook.
The claims are ``theorem.gedanken_claims``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import sympy as sp

__all__ = ["show_math", "ResidualFacts", "residual_facts", "residual_sentence", "point_substitution",
           "comparison_table", "comparison_sentence", "show_symmetric_eigenvalues", "depth_table", "depth_agreement",
           "show_ray_limits", "show_path_limits", "path_sentence", "peak_table", "interior_peaks",
           "sharpness_title", "peak_sentence"]


def show_math(lhs: str, expr: Any) -> None:
    """Display ``lhs = <LaTeX of expr>`` as display maths in a notebook."""
    from IPython.display import Math, display

    display(Math(lhs + " = " + sp.latex(expr)))


@dataclass(frozen=True)
class ResidualFacts:
    """What the term Eq. (3) drops shows, exactly: ``nonzero_entries`` of H - g g^T / L that do not
    simplify to 0, whether its diagonal is zero, ``trace_gap`` = Tr(g g^T / L) - Tr(H) simplified, the
    products P_i = prod_{j != i} w_j, ``eq4_gap`` = Tr(H) - X sum_i P_i^2 L (Eq. (4) as printed, X in
    place of X^2), whether that gap vanishes at this X, and whether Tr(H) = X^2 L sum_i P_i^2 exactly."""

    nonzero_entries: int
    diagonal_zero: bool
    trace_gap: Any
    products: list
    eq4_gap: Any
    eq4_holds_here: bool
    trace_formula_is_exact: bool


def residual_facts(derivation: Any, X: float) -> ResidualFacts:
    """``ResidualFacts`` of ``derivation`` (``symbolic.derive_gedanken``) at the input ``X``."""
    depth = len(derivation.weights)
    w, Xs, L = derivation.weights, derivation.X, derivation.loss
    residual = derivation.residual_term
    nonzero = sum(int(sp.simplify(e) != 0) for e in residual)
    diagonal_zero = all(sp.simplify(residual[i, i]) == 0 for i in range(depth))
    trace_gap = sp.simplify(derivation.rank_one_term.trace() - derivation.trace)
    products = [sp.Mul(*[w[j] for j in range(depth) if j != i]) for i in range(depth)]
    squares = sum(p**2 for p in products)
    eq4_gap = sp.factor(sp.simplify(derivation.trace - Xs * squares * L))
    return ResidualFacts(nonzero_entries=nonzero, diagonal_zero=diagonal_zero, trace_gap=trace_gap, products=products,
                         eq4_gap=eq4_gap, eq4_holds_here=bool(sp.simplify(eq4_gap.subs(Xs, sp.nsimplify(X))) == 0),
                         trace_formula_is_exact=bool(sp.simplify(derivation.trace - Xs**2 * squares * L) == 0))


def residual_sentence(facts: ResidualFacts) -> str:
    """*Computed:* whether the dropped term is zero (so whether Eq. (3) is the Hessian), whether its
    diagonal is zero, and whether the traces of Eq. (3)'s matrix and of the Hessian agree."""
    nonzero = facts.nonzero_entries > 0
    return (f"*Computed:* the term Eq. (3) drops is **{'non-zero' if nonzero else 'zero'}**, so Eq. (3) "
            f"{'is not' if nonzero else 'is'} the Hessian; its diagonal is "
            f"**{'zero' if facts.diagonal_zero else 'not zero'}**, and Tr(Eq. 3) - Tr(H) simplifies to "
            f"`{facts.trace_gap}`: the trace of Eq. (3)'s matrix {'equals' if facts.trace_gap == 0 else 'differs from'} "
            "the trace of the Hessian.")


def point_substitution(derivation: Any, point: Sequence[float], X: float) -> dict:
    """{w_i: point_i, X: X} as exact rationals (``sp.nsimplify``), to evaluate the derivation at a point."""
    subs = {wi: sp.nsimplify(v) for wi, v in zip(derivation.weights, point)}
    subs[derivation.X] = sp.nsimplify(X)
    return subs


def comparison_table(cmp: Any):
    """Tr(H), lambda_1(H), ||H||_2 and the eigenvalues of the exact Hessian beside Eq. (3)'s rank-one
    matrix (``symbolic.trace_versus_lambda``)."""
    import pandas as pd

    return pd.DataFrame({"exact H (this chapter)": [cmp.trace, cmp.lambda_max, cmp.spectral_norm,
                                                    ", ".join(f"{e:.6g}" for e in cmp.eigenvalues)],
                         "Eq. (3)'s rank-one H": [cmp.paper_trace, cmp.paper_lambda_max, cmp.paper_lambda_max, "rank one"]},
                        index=["Tr(H)", "lambda_1(H)", "||H||_2", "eigenvalues"])


def comparison_sentence(cmp: Any, point: Sequence[float], X: float) -> str:
    """*Computed:* Tr(H) against lambda_1(H) at ``point``: whether they agree, by how much lambda_1 misses
    the trace and why (the other eigenvalues' sum), and the two for Eq. (3)'s matrix."""
    gap = (cmp.lambda_max - cmp.trace) / abs(cmp.trace)
    text = (f"*Computed* at $w = ({', '.join(f'{v:g}' for v in point)})$, $X = {X:g}$ (loss {cmp.loss:.4g}): "
            f"Tr(H) = {cmp.trace:.6g}, λ₁(H) = {cmp.lambda_max:.6g}. ")
    if cmp.trace_equals_lambda_max:
        text += f"Tr(H) = λ₁(H) holds here (the other eigenvalues sum to {cmp.trace - cmp.lambda_max:.3g}). "
    else:
        text += (f"**Tr(H) = λ₁(H) fails**: λ₁ is {'below' if gap < 0 else 'above'} the trace by "
                 f"{100 * abs(gap):.1f}% of the trace, because the other eigenvalues sum to "
                 f"{cmp.trace - cmp.lambda_max:.6g}, not to 0. ")
    return text + f"For Eq. (3)'s matrix the two agree ({cmp.paper_trace:.6g} and {cmp.paper_lambda_max:.6g})."


def show_symmetric_eigenvalues(symmetric: dict) -> None:
    """Display each eigenvalue of H / L at the symmetric point with its multiplicity."""
    from IPython.display import Math, display

    for value, multiplicity in symmetric.items():
        display(Math(sp.latex(value) + r"\quad (\times %d)" % multiplicity))


def depth_table(up_to: int):
    """For each depth n from 2 to ``up_to`` (at least 2): whether the closed-form Hessian equals SymPy's
    (``symbolic.closed_form_hessian``) and Tr(H) in LaTeX, indexed by depth."""
    import pandas as pd

    from ..theory import symbolic

    rows = []
    for n in range(2, max(2, up_to) + 1):
        d_n = symbolic.derive_gedanken(n)
        difference = (d_n.hessian - symbolic.closed_form_hessian(d_n)).applyfunc(sp.simplify)
        rows.append({"depth": n, "closed form == SymPy Hessian": difference == sp.zeros(n, n),
                     "Tr(H)": "$" + sp.latex(d_n.trace) + "$"})
    return pd.DataFrame(rows).set_index("depth")


def depth_agreement(table) -> dict[int, bool]:
    """{depth: whether the closed form equals SymPy's Hessian} from ``depth_table``."""
    return {int(n): bool(v) for n, v in table["closed form == SymPy Hessian"].items()}


def show_ray_limits(derivation: Any, rays: Sequence[Sequence[float]], X: float) -> tuple[list, Any]:
    """For each direction d of ``rays``: display L, Tr H and their limits along w = t d
    (``symbolic.ray_limits``); returns (the RayLimits, a table of directions, X D, whether the loss
    goes to 0 and the limits of Tr(H) and ||H||_F^2)."""
    import pandas as pd
    from IPython.display import Markdown, Math, display

    from ..theory import symbolic

    results, rows = [], []
    for d in rays:
        rl = symbolic.ray_limits(derivation, d, X)
        results.append(rl)
        xd = float(rl.X * sp.Mul(*rl.direction))
        display(Markdown(f"**Direction $d = ({', '.join(f'{v:g}' for v in d)})$**, $X D = {xd:g}$:"))
        show_math(r"L(t)", rl.loss_along_ray)
        show_math(r"\mathrm{Tr}\,H(t)", rl.trace_along_ray)
        display(Math(r"\lim_{t\to\infty} L = " + sp.latex(rl.loss_limit)
                     + r",\quad \lim_{t\to\infty} \mathrm{Tr}\,H = " + sp.latex(rl.trace_limit)
                     + r",\quad \lim_{t\to\infty} \|H\|_F^2 = " + sp.latex(rl.frobenius_squared_limit)))
        rows.append({"direction": str(tuple(d)), "X D": xd, "loss -> 0": rl.loss_goes_to_zero,
                     "lim Tr(H)": str(rl.trace_limit), "lim ||H||_F^2": str(rl.frobenius_squared_limit)})
    return results, pd.DataFrame(rows)


def show_path_limits(path: Any) -> None:
    """Display the unbalanced path w(t), L and Tr H along it, and their limits (``symbolic.path_limits``)."""
    from IPython.display import Math, display

    show_math(r"w(t)", sp.Matrix(path.path).T)
    show_math(r"L(t)", path.loss_along_path)
    show_math(r"\mathrm{Tr}\,H(t)", path.trace_along_path)
    display(Math(r"\lim_{t\to\infty} L = " + sp.latex(path.loss_limit)
                 + r",\quad \lim_{t\to\infty} \mathrm{Tr}\,H = " + sp.latex(path.trace_limit)
                 + r",\quad \lim_{t\to\infty} \|H\|_F^2 = " + sp.latex(path.frobenius_squared_limit)))


def path_sentence(path: Any) -> str:
    """*Computed:* the limits of the loss and the trace along the path, and whether zero loss left the
    Hessian non-flat there (a counterexample to "zero loss forces flatness")."""
    counterexample = bool(path.loss_limit == 0 and path.trace_limit != 0)
    return ("*Computed:* along this path the loss goes to "
            f"${sp.latex(path.loss_limit)}$ and the trace to ${sp.latex(path.trace_limit)}$: "
            + ("zero loss does **not** force a flat Hessian; the paper's argument needs the weights to grow together."
               if counterexample else "here the Hessian vanishes too."))


def peak_table(spectra: Sequence[Any], scales: Sequence[float]):
    """Per ray (``symbolic.spectrum_along_ray``): the scale t at which ||H||_2 peaks, the loss there,
    log10 ||H||_2 at the peak and at the largest scale, and log10 L at the largest scale."""
    import pandas as pd

    last = scales[-1]
    rows = []
    for s in spectra:
        i = int(np.nanargmax(s.log10_spectral_norm))
        rows.append({"direction": str(s.direction), "t at peak ||H||_2": s.scales[i], "loss at peak": 10 ** s.log10_loss[i],
                     "log10 ||H||_2 at peak": s.log10_spectral_norm[i],
                     f"log10 ||H||_2 at t = {last:g}": s.log10_spectral_norm[-1],
                     f"log10 L at t = {last:g}": s.log10_loss[-1]})
    return pd.DataFrame(rows)


def interior_peaks(spectra: Sequence[Any], scales: Sequence[float]) -> list[bool]:
    """Per ray: whether ||H||_2 peaks strictly inside the plotted scales (not at either end)."""
    return [0 < int(np.nanargmax(s.log10_spectral_norm)) < len(scales) - 1 for s in spectra]


def sharpness_title(interior: Sequence[bool]) -> str:
    """The sharpness-against-loss figure's title: a statement only when every ray peaks inside the range."""
    return ("Past the peak, lower loss means a flatter Hessian" if all(interior)
            else "Sharpness against the loss along each ray")


def peak_sentence(peaks: Any, interior: Sequence[bool], scales: Sequence[float]) -> str:
    """*Computed:* on how many rays ||H||_2 peaks inside the range, and how many orders of magnitude
    below its peak it is at the largest scale, per ray."""
    last = scales[-1]
    drops = ", ".join(f"{p - e:.1f}" for p, e in zip(peaks["log10 ||H||_2 at peak"], peaks[f"log10 ||H||_2 at t = {last:g}"]))
    return (f"*Computed:* ||H||₂ peaks inside the plotted range on {sum(interior)} of {len(interior)} rays; "
            f"at t = {last:g} it is below its peak by {drops} orders of magnitude.")
