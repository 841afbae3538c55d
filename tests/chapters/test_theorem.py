"""flatbook.chapters.theorem's claim builders: ``checked_claim``, the Theorem 1 chapter's and the Gedanken
chapter's claims, on constructed inputs (and, for the Gedanken experiment, SymPy's own exact
derivation at the paper's counter-example, whose numbers are known)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import sympy as sp

from flatbook import claims as cl
from flatbook.theory import symbolic
from flatbook.chapters import theorem


def test_checked_claim_bounds_regime_and_method():
    c = theorem.checked_claim("small", 1e-9, 1e-6, "error")
    assert c.decision == "holds" and c.effect == c.low == c.high == 1e-9 and c.null == 1e-6 and c.level == 1.0
    assert c.method.startswith(theorem.MEASURED) and "at most 1e-06" in c.method and math.isnan(c.mde)
    assert theorem.checked_claim("small", 1e-3, 1e-6, "error").decision == "fails"
    assert theorem.checked_claim("big", 12.0, 10.0, "factor", at_least=True).decision == "holds"
    assert theorem.checked_claim("big", 9.0, 10.0, "factor", at_least=True).decision == "fails"
    cond = cl.Condition("steps", 3, "at least 10", False, "7 short")
    u = theorem.checked_claim("gated", 0.0, 1.0, "error", regime=[cond], evidence=[("a", 1)])
    assert u.outcome == "untestable" and "steps = 3, at least 10 (7 short)" in u.failed and u.effect == 0.0
    assert u.evidence == (("a", "1"),)
    # a Claim: it round-trips through the notebook's JSON like any other
    assert cl.Claim.from_dict(u.to_dict()) == u
    exact = theorem.checked_claim("identity", 0, 0, "error", method="exact computation (no sampling)")
    assert exact.method.startswith("exact computation") and exact.decision == "holds"
    with pytest.raises(ValueError, match="bound"):
        theorem.checked_claim("x", 1.0, math.inf, "error")
    with pytest.raises(ValueError, match="NaN"):
        theorem.checked_claim("x", math.nan, 1.0, "error")


def _sweep(alphas, loss, lam, fro, changed=0, accuracy=1.0):
    return pd.DataFrame({"alpha": alphas, "loss": loss, "lambda_max": lam, "frobenius": fro,
                         "predictions_changed": [changed] * len(alphas), "accuracy": [accuracy] * len(alphas),
                         "asymmetry": [1e-12] * len(alphas)})


def _theorem_inputs(**change):
    alphas = [1.0, 10.0, 100.0, 1e3, 1e4]  # the MLP's maximum has 3 grid steps after it
    sweeps = {"logreg: last layer": _sweep(alphas, [1.0, 0.1, 1e-2, 1e-3, 1e-4], [5.0, 1.0, 0.5, 0.1, 0.01],
                                           [6.0, 1.0, 0.5, 0.1, 0.02]),
              "MLP: last layer": _sweep(alphas, [1.0, 0.1, 1e-2, 1e-3, 1e-4], [5.0, 8.0, 1.0, 0.1, 0.01],
                                        [6.0, 9.0, 1.0, 0.1, 0.02])}
    verdicts = {k: theorem.scaling_verdict(df, "output") for k, df in sweeps.items()}
    zero = sp.Integer(0)
    inputs = dict(
        derivatives=SimpleNamespace(equals_minus_log_softmax=True, gradient_is_p_minus_y=True,
                                    hessian_is_diag_p_minus_ppT=True),
        kron_agrees=True,
        separable_limits=[SimpleNamespace(loss_limit=zero, trace_limit=zero, entry_limits=sp.zeros(2, 2),
                                          lambda_max_limit=zero)],
        relu={"agree": True, "gauss_newton_limit": zero, "residual_limit": zero},
        sweeps=sweeps, verdicts=verdicts,
        dinh_verdict={"loss_max_relative_change": 1e-15, "lambda_max_ratio": 1e3}, dinh_alphas=[1.0, 100.0],
        everything=_sweep(alphas, [1.0, 5.0, 50.0, 500.0, 5e3], [1.0] * 5, [1.0] * 5, accuracy=0.9),
        engine_error=1e-15, null_residual=1e-16, zero_count=800, predicted_zeros=785)
    inputs.update(change)
    return inputs


def test_theorem1_claims_on_constructed_inputs():
    claims = theorem.theorem1_claims(**_theorem_inputs())
    assert len(claims) == 15
    exact = [c for c in claims if c.method.startswith("exact computation")]
    assert len(exact) == 9 and all(c.decision == "holds" for c in exact)
    measured = [c for c in claims if c.method.startswith(theorem.MEASURED)]
    assert len(measured) == 6 and all(c.decision == "holds" for c in measured)
    by = {c.statement: c for c in claims}
    lam = next(c for s, c in by.items() if s.startswith("the scale grid reaches the limit"))
    assert lam.effect == pytest.approx(0.01 / 5.0)
    dinh = next(c for s, c in by.items() if "more than a factor 10" in s)
    assert dinh.effect == pytest.approx(1e3)
    premise = next(c for s, c in by.items() if "premise" in s)
    assert premise.effect == pytest.approx(5e3)


def test_falls_after_its_peak_cannot_pass_on_a_peak_at_the_end_of_the_grid():
    """The maximum at the second-to-last grid point: one falling step would pass trivially, so the
    claim is untestable until the grid is extended (issue 20)."""
    alphas = [1.0, 10.0, 100.0, 1e3, 1e4]
    late = {"MLP: last layer": _sweep(alphas, [1.0, 0.1, 1e-2, 1e-3, 1e-4], [1.0, 2.0, 4.0, 8.0, 7.0],
                                      [1.0, 2.0, 4.0, 8.0, 7.0])}
    claims = theorem.theorem1_claims(**_theorem_inputs(
        sweeps=late, verdicts={k: theorem.scaling_verdict(df, "output") for k, df in late.items()}))
    falls = [c for c in claims if "falls monotonically from its maximum" in c.statement]
    assert len(falls) == 2 and all(c.outcome == "untestable" for c in falls)
    assert all("1, at least 3" in c.failed and "extend alpha" in c.failed for c in falls)
    grid = next(c for c in claims if c.statement.startswith("the scale grid reaches the limit"))
    assert grid.outcome == "fails" and grid.effect == pytest.approx(7.0)


def test_theorem1_claims_report_failures():
    zero = sp.Integer(0)
    claims = theorem.theorem1_claims(**_theorem_inputs(
        derivatives=SimpleNamespace(equals_minus_log_softmax=True, gradient_is_p_minus_y=False,
                                    hessian_is_diag_p_minus_ppT=True),
        separable_limits=[SimpleNamespace(loss_limit=zero, trace_limit=sp.Integer(1), entry_limits=sp.zeros(2, 2),
                                          lambda_max_limit=None)],
        zero_count=700, engine_error=1e-3,
        dinh_verdict={"loss_max_relative_change": 1e-15, "lambda_max_ratio": 0.5}))
    by = {c.statement.split(":")[0].split(",")[0]: c for c in claims}
    outcomes = {c.statement: c.decision for c in claims}
    assert by["softmax cross-entropy"].decision == "fails" and by["softmax cross-entropy"].effect == 1
    assert next(c for c in claims if c.statement.startswith("separable")).effect == 1
    assert next(c for c in claims if c.statement.startswith("at least as many")).effect == 85
    assert next(c for c in claims if "engine" in c.statement).decision == "fails"
    assert next(c for c in claims if "more than a factor 10" in c.statement).decision == "fails"
    assert sum(o == "fails" for o in outcomes.values()) == 5
    # every image fitted: the premise claim cannot be tested
    alphas = [1.0, 10.0, 100.0, 1e3, 1e4]
    fitted = _theorem_inputs(everything=_sweep(alphas, [1.0, 0.1, 0.01, 1e-3, 1e-4], [1.0, 0.5, 0.1, 0.05, 0.01],
                                               [1] * 5, accuracy=1.0))
    premise = theorem.theorem1_claims(**fitted)[-1]
    assert premise.outcome == "untestable" and "every image is fitted" in premise.failed


@pytest.fixture(scope="module")
def gedanken():
    d = symbolic.derive_gedanken(3)
    point = symbolic.resolve_point(None, 3)
    rays = [symbolic.ray_limits(d, r, 1.0) for r in symbolic.resolve_directions(None, 3, 1.0)]
    t = sp.Symbol("t", positive=True)
    path = symbolic.path_limits(d, symbolic.unbalanced_path(3, 1.0, t), 1.0, t)
    return d, point, rays, path


def _gedanken_claims(gedanken, **change):
    d, point, rays, path = gedanken
    args = dict(residual_nonzero_entries=sum(int(sp.simplify(e) != 0) for e in d.residual_term),
                trace_gap_is_zero=True, trace_formula_is_exact=True, eq4_holds_here=True, X=1.0,
                comparison=symbolic.trace_versus_lambda(d, point, 1.0), depth_agreement={2: True, 3: True},
                ray_limits=rays, path=path)
    args.update(change)
    return theorem.gedanken_claims(**args)


def test_gedanken_claims_at_the_papers_counterexample(gedanken):
    d, point, rays, path = gedanken
    claims = _gedanken_claims(gedanken)
    assert [c.decision for c in claims] == ["holds"] * 7
    assert all(c.method.startswith("exact computation") for c in claims)
    assert claims[0].effect == 6  # the six off-diagonal entries X L P_ij
    tr = claims[3]
    # Tr = 0.759253, lambda_1 = 0.621354: the other two eigenvalues sum to 0.1379
    assert tr.effect == pytest.approx((0.759253 - 0.621354) / 0.759253, rel=1e-5)
    cmp = symbolic.trace_versus_lambda(d, point, 1.0)
    assert tr.effect == pytest.approx(abs(sum(cmp.eigenvalues[:-1])) / cmp.trace, rel=1e-12)
    assert "sum to 0" in tr.statement
    assert claims[6].effect == 1 and "does not" in claims[6].statement
    # a point where the other eigenvalues sum to zero (depth 2: X w1 w2 = -1/2): the equality holds there
    d2 = symbolic.derive_gedanken(2)
    c2 = _gedanken_claims(gedanken, comparison=symbolic.trace_versus_lambda(d2, [1.0, -0.5], 1.0))
    assert c2[3].decision == "fails" and c2[3].effect < 1e-12


def test_gedanken_claims_report_failures_and_untestable_rays(gedanken):
    d, point, rays, path = gedanken
    growing = [r for r in rays if not r.loss_goes_to_zero]
    claims = _gedanken_claims(gedanken, residual_nonzero_entries=0, trace_gap_is_zero=False,
                              trace_formula_is_exact=False, eq4_holds_here=False, X=2.0,
                              depth_agreement={2: True, 3: False}, ray_limits=growing)
    assert [c.decision for c in claims[:3]] == ["fails"] * 3
    assert claims[2].evidence == (("Eq. (4) as printed at X = 2", "differs"),)
    assert claims[4].decision == "fails" and claims[4].effect == 1
    assert claims[5].outcome == "untestable" and "loss -> 0" in claims[5].failed
    flat_path = SimpleNamespace(loss_limit=sp.Integer(0), trace_limit=sp.Integer(0))
    assert _gedanken_claims(gedanken, path=flat_path)[6].decision == "fails"


def test_lambda_path_sentence_tells_a_rise_over_the_whole_grid_from_a_peak():
    from flatbook.chapters.theorem import lambda_path_sentence

    def v(peak, last, after, at=1e4):
        return {"lambda_max_peak_over_first": peak, "lambda_max_last_over_first": last,
                "lambda_max_steps_after_peak": after, "lambda_max_peak_alpha": at}

    text = lambda_path_sentence({"a": v(1.0, 1e-6, 10), "b": v(4.4e5, 4.4e5, 0), "c": v(1.2e3, 1e3, 1, 3981.0)}, 1.0)
    assert "a: $\\lambda_1$ falls from the start, to 1e-06" in text
    assert "b: $\\lambda_1$ **rises over the whole grid**, to 4.4e+05" in text and "peak at" not in text.split("; c")[0]
    assert "c: $\\lambda_1$ first **rises**, up to 1.2e+03" in text and "(peak at $\\alpha$ = 3.98e+03)" in text
    assert "flattens eventually" in text
    assert "flattens" not in lambda_path_sentence({"a": v(1.0, 0.5, 3)}, 1.0)
