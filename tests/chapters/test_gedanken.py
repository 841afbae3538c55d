"""The Gedanken chapter's computations and sentences (flatbook.chapters.gedanken), against the exact
algebra of the depth-2 and depth-3 models and on constructed inputs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import sympy as sp

from flatbook.chapters import gedanken
from flatbook.theory import symbolic


def test_residual_facts_of_the_depth_3_model():
    facts = gedanken.residual_facts(symbolic.derive_gedanken(3), X=1.0)
    # H - g g^T / L is X L times the off-diagonal products: 6 non-zero entries, a zero diagonal
    assert facts.nonzero_entries == 6 and facts.diagonal_zero and facts.trace_gap == 0
    assert facts.trace_formula_is_exact  # Tr(H) = X^2 L sum_i P_i^2
    assert facts.eq4_holds_here  # Eq. (4) as printed (X for X^2) agrees at X = 1 ...
    assert not gedanken.residual_facts(symbolic.derive_gedanken(3), X=2.0).eq4_holds_here  # ... and nowhere else
    assert "**non-zero**, so Eq. (3) is not the Hessian; its diagonal is **zero**" in gedanken.residual_sentence(facts)
    assert "equals the trace of the Hessian" in gedanken.residual_sentence(facts)


def test_depth_table_and_point_substitution():
    table = gedanken.depth_table(3)
    assert list(table.index) == [2, 3] and gedanken.depth_agreement(table) == {2: True, 3: True}
    d = symbolic.derive_gedanken(2)
    subs = gedanken.point_substitution(d, [0.5, 2.0], 1.5)
    assert subs[d.weights[0]] == sp.Rational(1, 2) and subs[d.X] == sp.Rational(3, 2)


def test_the_comparison_and_path_sentences():
    cmp = SimpleNamespace(trace=10.0, lambda_max=8.0, spectral_norm=8.0, eigenvalues=[8.0, 2.5, -0.5], loss=0.125,
                          paper_trace=10.0, paper_lambda_max=10.0, trace_equals_lambda_max=False)
    text = gedanken.comparison_sentence(cmp, [2.0, 1.5, -1.0], 1.0)
    assert "$w = (2, 1.5, -1)$, $X = 1$ (loss 0.125)" in text
    assert "**Tr(H) = λ₁(H) fails**: λ₁ is below the trace by 20.0% of the trace" in text and "sum to 2, not to 0" in text
    assert gedanken.comparison_table(cmp).loc["eigenvalues", "exact H (this chapter)"] == "8, 2.5, -0.5"
    flat = SimpleNamespace(loss_limit=sp.Integer(0), trace_limit=sp.Integer(0))
    sharp = SimpleNamespace(loss_limit=sp.Integer(0), trace_limit=sp.Integer(3))
    assert gedanken.path_sentence(flat).endswith("here the Hessian vanishes too.")
    assert "does **not** force a flat Hessian" in gedanken.path_sentence(sharp)


def test_the_peak_helpers():
    scales = np.array([1.0, 10.0, 100.0])
    inside = SimpleNamespace(direction=(1, 1), scales=scales, log10_spectral_norm=np.array([0.0, 2.0, -3.0]),
                             log10_loss=np.array([-1.0, -2.0, -9.0]))
    edge = SimpleNamespace(direction=(1, 2), scales=scales, log10_spectral_norm=np.array([3.0, 2.0, 1.0]),
                           log10_loss=np.array([-1.0, -2.0, -3.0]))
    peaks = gedanken.peak_table([inside, edge], scales)
    assert peaks["t at peak ||H||_2"].tolist() == [10.0, 1.0] and peaks["loss at peak"].tolist() == [0.01, 0.1]
    interior = gedanken.interior_peaks([inside, edge], scales)
    assert interior == [True, False] and gedanken.sharpness_title(interior).startswith("Sharpness against")
    assert gedanken.sharpness_title([True]).startswith("Past the peak")
    assert gedanken.peak_sentence(peaks, interior, scales) == (
        "*Computed:* ||H||₂ peaks inside the plotted range on 1 of 2 rays; at t = 100 it is below its peak by "
        "5.0, 2.0 orders of magnitude.")
