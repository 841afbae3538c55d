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
    assert claims.exact_claim("agrees", 1e-12, 1e-9).outcome == "passes"  # the book's own check by default
    bad = claims.exact_claim("agrees", 1e-3, 1e-9)
    assert bad.outcome == "fails" and "computed, no sampling" in bad.line()
    assert claims.exact_claim("agrees", 1e-12, 1e-9, role="paper").outcome == "supported"
    assert claims.exact_claim("wrong", 1e-3, 1e-9, role="correction").outcome == "refuted"
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


def test_outcome_words_belong_to_the_role():
    est = stats.ratio_over_seeds([1.0, 1.1, 0.9], [2.0, 2.1, 1.8])
    for role, (yes, no, *_) in claims.ROLE_OUTCOMES.items():
        assert claims.claim_from_estimate("up", est, 1, "r", role=role).outcome == yes
        assert claims.claim_from_estimate("down", est, -1, "r", role=role).outcome == no
    with pytest.raises(ValueError, match="outcome of a 'check' claim"):
        claims.Claim("x", "supported", "e", 1.0, 0.0, 2.0, 0.0, 0.95, math.nan, "m", role="check")
    with pytest.raises(ValueError, match="role"):
        claims.Claim("x", "supported", "e", 1.0, 0.0, 2.0, 0.0, 0.95, math.nan, "m", role="mine")
    with pytest.raises(ValueError, match="only a 'paper' claim"):
        claims.claim_from_estimate("x", est, 1, "r", role="check", paper_claim="p", component="c")
    with pytest.raises(ValueError, match="go together"):
        claims.claim_from_estimate("x", est, 1, "r", paper_claim="p")


def _claim_with_p(p: float, *, outcome: str = "supported", primary: bool = False) -> claims.Claim:
    tags = {"paper_claim": "P", "component": "a"} if primary else {}
    return claims.Claim(f"p={p}", outcome, "d", 1.0, 0.5, 1.5, 0.0, 0.95, 0.3, "m", p_value=p, **tags)


def test_holm_against_a_hand_computed_step_down():
    # p = 0.01, 0.02, 0.03, 0.2 (m = 4): adjusted 0.04, 0.06, 0.06, 0.2 -> only the first stays decided
    ps = [0.03, 0.01, 0.2, 0.02]
    out = claims.holm([_claim_with_p(p, outcome="supported" if p < 0.05 else "inconclusive") for p in ps])
    adjusted = {0.01: 0.04, 0.02: 0.06, 0.03: 0.06, 0.2: 0.2}
    for c, p in zip(out, ps):
        assert f"adjusted p = {adjusted[p]:.3g}" in c.adjustment
    assert [c.outcome for c in out] == ["inconclusive", "supported", "inconclusive", "inconclusive"]
    # primary claims and exact checks are not in the family, and pass unchanged
    prim = _claim_with_p(0.04, primary=True)
    exact = claims.exact_claim("x", 0.0, 0.0)
    out = claims.holm([prim, exact, _claim_with_p(0.04)])
    assert out[0] == prim and out[1] == exact and out[2].outcome == "supported"  # m = 1: unadjusted
    assert claims.holm(claims.holm(out)) == out  # idempotent


def test_marginal_mark():
    # difference: se 1 with df inf -> mde = (1.96 + 0.84) = 2.80; an effect of 3 is decided but < 1.5 mde
    near = stats.Estimate(3.0, 1.04, 4.96, 1.0, math.inf, 0.95, stats.minimum_detectable(1.0, math.inf),
                          "difference", "m", 3)
    far = stats.Estimate(6.0, 4.04, 7.96, 1.0, math.inf, 0.95, near.mde, "difference", "m", 3)
    assert claims.claim_from_estimate("up", near, 1, "d").marginal
    assert "(marginal)" in claims.claim_from_estimate("up", near, 1, "d").line()
    assert not claims.claim_from_estimate("up", far, 1, "d").marginal
    ratio = stats.ratio_over_seeds([1.0, 1.0, 1.0], [2.0, 2.2, 1.9])  # log-scale distance against log(mde)
    c = claims.claim_from_estimate("up", ratio, 1, "r")
    assert c.marginal == (abs(math.log(ratio.value)) < 1.5 * math.log(ratio.mde))
    from dataclasses import replace

    assert "|log ratio| is within 1.5x the log of the smallest detectable ratio" in replace(c, marginal=True).line()
    assert "the effect is within 1.5x the smallest detectable one" in claims.claim_from_estimate("up", near, 1, "d").line()


def test_p_value_agrees_with_the_interval():
    for a, b in (([1.0, 1.1, 0.9], [2.0, 2.1, 1.8]), ([1.0, 1.1, 0.9], [1.05, 1.0, 1.0]), ([1, 2, 3], [2, 2.5, 3.9])):
        est = stats.ratio_over_seeds(a, b)
        p = stats.p_value(est)
        assert (p < 0.05) == (est.low > 1 or est.high < 1)
    d = stats.difference_over_seeds([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])  # mean 2, se 1/sqrt(3), df 2
    from scipy.stats import t
    assert stats.p_value(d) == pytest.approx(2 * t.sf(2 / (1 / math.sqrt(3)), 2))


def test_two_sided_claim_can_fail():
    up = stats.ratio_over_seeds([1.0, 1.0, 1.0], [2.0, 2.1, 1.9])
    same = stats.ratio_over_seeds([1.0, 1.0, 1.0], [1.01, 0.995, 1.002])
    wide = stats.ratio_over_seeds([1.0, 1.0, 1.0], [3.0, 0.4, 1.0])
    assert claims.two_sided_claim("changes", up, "r", margin=1.1).outcome == "supported"
    down = stats.ratio_over_seeds([2.0, 2.1, 1.9], [1.0, 1.0, 1.0])
    assert claims.two_sided_claim("changes", down, "r", margin=1.1).outcome == "supported"
    assert claims.two_sided_claim("changes", same, "r", margin=1.1).outcome == "contradicted"
    assert claims.two_sided_claim("changes", wide, "r", margin=1.1).outcome == "inconclusive"
    with pytest.raises(ValueError, match="margin"):
        claims.two_sided_claim("changes", up, "r", margin=0.9)
    # "no change" carries its equivalence (TOST) p-value, so Holm's correction keeps it decided
    no_change = claims.two_sided_claim("changes", same, "r", margin=1.1)
    assert no_change.p_value < 0.01 and not no_change.marginal
    assert "two-sided, contradicted when the interval lies within [1/1.1, 1.1]" in no_change.method
    assert "two-sided, fails when" in claims.two_sided_claim("changes", same, "r", margin=1.1, role="check").method
    kept = claims.holm([no_change, _claim_with_p(0.001), _claim_with_p(0.002)])
    assert kept[0].outcome == "contradicted" and "adjusted p" in kept[0].adjustment


def test_trend_claim_prints_no_degenerate_interval():
    corr = stats.rank_correlation([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    c = claims.trend_claim("rises", corr, 1)
    assert c.outcome == "supported" and "[1, 1]" not in c.line() and "permutation p = " in c.line()
    assert claims.Claim.from_dict(c.to_dict()).to_dict() == c.to_dict()  # NaN ends travel as null


def test_conjunction_and_composite_lines():
    def part(outcome: str, name: str = "P") -> claims.Claim:
        failed = "seeds" if outcome == "untestable" else ""
        return claims.Claim("s", outcome, "d", 1.0, 0.5, 1.5, 0.0, 0.95, 0.3, "m", failed=failed,
                            paper_claim=name, component=outcome)

    assert claims.conjunction([part("supported"), part("supported")]) == "supported"
    assert claims.conjunction([part("supported"), part("inconclusive")]) == "inconclusive"
    assert claims.conjunction([part("contradicted"), part("inconclusive")]) == "contradicted"
    assert claims.conjunction([part("contradicted"), part("untestable")]) == "untestable"
    with pytest.raises(ValueError, match="at least one"):
        claims.conjunction([])
    md = claims.markdown([part("supported"), part("inconclusive"), claims.exact_claim("identity", 0, 0)])
    assert "**inconclusive**: the paper's claim *P*" in md
    assert md.index("Verdicts on the paper's claims") < md.index(claims.ROLE_TITLES["check"])
