"""flatbook.claims: the four outcomes, regime gates, and the round trip through a notebook."""

from __future__ import annotations

import math

import nbformat
import pytest

from flatbook import claims, stats


def test_claim_outcomes_and_regime_gate():
    est = stats.ratio_over_seeds([1.0, 1.1, 0.9], [2.0, 2.1, 1.8])
    ok = claims.claim_from_estimate("sharper", est, 1, "ratio", regime=[claims.decay_condition(1.5),
                                                                        claims.seeds_condition(3)])
    assert ok.outcome == "supported" and ok.failed == ""
    gated = claims.claim_from_estimate("sharper", est, 1, "ratio", regime=[claims.decay_condition(0.77, 37.2),
                                                                           claims.seeds_condition(3)])
    assert gated.outcome == "untestable"
    assert "0.77" in gated.failed and "1.3x too small" in gated.failed
    assert gated.effect == pytest.approx(est.value)  # the effect is still reported
    one = claims.claim_from_estimate("sharper", stats.ratio_over_seeds([1.0], [2.0]), 1, "ratio",
                                     regime=[claims.seeds_condition(1)])
    assert one.outcome == "untestable" and "one seed" in one.failed and "interval unknown" in one.line()
    with pytest.raises(ValueError, match="outcome"):
        claims.Claim("x", "reproduced", "e", 1.0, 0.0, 2.0, 0.0, 0.95, math.nan, "m")
    with pytest.raises(ValueError, match="untestable"):
        claims.Claim("x", "untestable", "e", 1.0, 0.0, 2.0, 0.0, 0.95, math.nan, "m")


def test_conditions():
    assert claims.interpolation_condition(0.995).met and not claims.interpolation_condition(0.985).met
    assert "1.5 points short" in claims.interpolation_condition(0.975).shortfall
    assert claims.resolution_condition(5000, 0.49).met and not claims.resolution_condition(1000, 1.2).met
    assert claims.resolution_condition(1000, 1.2).shortfall == "4x too few"
    assert claims.decay_condition(0.0).shortfall == "no weight decay"


def test_exact_claim():
    assert claims.exact_claim("agrees", 1e-12, 1e-9).outcome == "supported"
    bad = claims.exact_claim("agrees", 1e-3, 1e-9)
    assert bad.outcome == "contradicted" and "computed exactly" in bad.line()
    with pytest.raises(ValueError, match="tolerance"):
        claims.exact_claim("x", 0.0, -1.0)


def test_claims_round_trip_through_json_and_a_notebook():
    est = stats.paired_accuracy_difference([[1, 0, 1, 1], [1, 1, 0, 1]], [[1, 1, 1, 1], [1, 1, 1, 0]])
    c1 = claims.claim_from_estimate("better", est, 1, "points", regime=[claims.seeds_condition(2)],
                                    evidence=[("per seed", "1, 2")])
    c2 = claims.claim_from_estimate("sharper", stats.ratio_over_seeds([1.0], [2.0]), 1, "ratio",
                                    regime=[claims.seeds_condition(1)])
    for c in (c1, c2):
        assert claims.Claim.from_dict(c.to_dict()) == c
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("claims.show(...)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/markdown": claims.markdown([c1, c2]), claims.CLAIMS_MIME: {"claims": [c1.to_dict(), c2.to_dict()]}})]
    nb.cells.append(cell)
    nbformat.validate(nb)
    assert claims.claims_in_notebook(nb) == [c1, c2]
