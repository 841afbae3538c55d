"""The scale-aware chapter's helpers (flatbook.chapters.scale_aware): grouping cached runs by
treatment, rank correlations of every measure with validation accuracy, the stratified
false-friend claims, on constructed tables where the answer is known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _fake(model, wd, val_acc, top, optimizer="sgd", epochs=5, val_size=1000, spectrum=True, train_acc=1.0):
    from flatbook.experiments import Config
    from flatbook.spectrum import Spectrum

    config = Config(model=model, dataset="fashion-mnist", weight_decay=wd, optimizer=optimizer, epochs=epochs,
                    val_size=val_size, averaging_start=epochs if optimizer == "gadam" else None)
    s = Spectrum(np.array([[top, top / 2]]), np.full((1, 2), 0.5), num_params=10, settings={}) if spectrum else None
    return SimpleNamespace(config=config, metrics={"val_acc": val_acc, "weight_norm": 1.0, "train_acc": train_acc,
                                                   "train_samples": 55_000}, spectrum=s, key=config.key())


def test_group_results_keeps_groups_that_differ_only_in_the_treatment():
    from flatbook.chapters.scale_aware import group_results

    runs = [_fake("mlp", 0.0, 0.8, 1.0), _fake("mlp", 1e-4, 0.81, 2.0), _fake("mlp", 5e-4, 0.82, 3.0, optimizer="gadam"),
            _fake("mlp", 0.0, 0.8, 1.0, epochs=7),  # another setting: a group of one, dropped
            _fake("logreg", 0.0, 0.7, 1.0), _fake("logreg", 1e-3, 0.7, 1.0, spectrum=False)]  # no spectrum: dropped
    groups = group_results(runs, in_regime_only=False)
    assert list(groups) == ["mlp, fashion-mnist, 5 ep, seed 0"]
    assert [(r.config.optimizer, r.config.weight_decay) for r in groups["mlp, fashion-mnist, 5 ep, seed 0"]] == \
        [("gadam", 5e-4), ("sgd", 0.0), ("sgd", 1e-4)]  # sorted by optimiser, then weight decay
    assert group_results(runs, models=["logreg"], in_regime_only=False) == {}
    assert len(group_results(runs, min_runs=1, in_regime_only=False)) == 3


def test_one_result_per_trained_model_the_chapters_measurement_kept():
    """The calibration appendix stores a chapter's weights again with whole-split spectrum settings:
    those entries are the same trained model and must not enter a group twice."""
    from flatbook.chapters.scale_aware import excluded_runs, group_results, one_per_trained_model

    chapter = [_fake("mlp", 0.0, 0.8, 1.0), _fake("mlp", 5e-2, 0.82, 3.0)]
    for r in chapter:
        r.config = r.config.replace(hessian_samples=1024, lanczos_steps=10)
    again = [_fake("mlp", 0.0, 0.8, 1.1), _fake("mlp", 5e-2, 0.82, 3.1)]  # whole split, 100 steps: same weights
    for r in again:
        r.key = r.config.key()
    kept = one_per_trained_model(again + chapter)
    assert kept == chapter  # the cheaper measurement of each model, in the given order
    groups = group_results(again + chapter)
    assert [r.config.hessian_samples for r in next(iter(groups.values()))] == [1024, 1024]
    collapsed = _fake("mlp", 1e-1, 0.1, 0.1, train_acc=0.1)
    twice = _fake("mlp", 1e-1, 0.1, 0.1, train_acc=0.1)
    twice.config = twice.config.replace(lanczos_steps=5)
    assert excluded_runs([collapsed, twice]) == {"not interpolating (training accuracy below 99%)": 1}


def test_only_runs_in_the_regime_are_pooled():
    from flatbook.chapters.scale_aware import excluded_runs, group_results, outside_regime

    from flatbook.decay import decay_exponent

    # 5 epochs of 55,000 images at lr 0.01: E is linear in the weight decay, 1e-4 barely acts, 5e-2 does
    fitted = [_fake("mlp", 0.0, 0.8, 1.0), _fake("mlp", 5e-2, 0.82, 3.0), _fake("mlp", 1e-1, 0.83, 4.0)]
    assert decay_exponent(fitted[1].config, 55_000) > 1 > decay_exponent(_fake("mlp", 1e-4, 0.8, 1.0).config, 55_000)
    short = _fake("mlp", 1e-4, 0.81, 2.0)
    collapsed = _fake("mlp", 2e-1, 0.10, 0.1, train_acc=0.1)
    assert outside_regime(fitted[1]) == "" and "barely acted" in outside_regime(short)
    assert "not interpolating" in outside_regime(collapsed)
    groups = group_results(fitted + [short, collapsed])
    assert [r.config.weight_decay for r in next(iter(groups.values()))] == [0.0, 5e-2, 1e-1]
    assert excluded_runs(fitted + [short, collapsed]) == {
        "weight decay barely acted (E below 1)": 1, "not interpolating (training accuracy below 99%)": 1}


def test_rank_correlations_and_resolved_groups_on_a_constructed_table():
    import pandas as pd

    from flatbook.chapters.scale_aware import MEASURES, rank_correlations, resolved_groups

    rows = []
    for group, accs, ses in (("a", [80.0, 82.0, 84.0], [0.5, 0.5, 0.5]), ("b", [80.0, 80.2, 80.4], [1.0, 1.0, 1.0])):
        for i, acc in enumerate(accs):
            row = {"group": group, "val_acc": acc, "val_acc_se": ses[i]}
            row.update({m: float(i + 1) for m in MEASURES})  # every measure increases with accuracy
            row["normalized_lambda_max"] = float(3 - i)  # this one decreases
            row["relative_flatness"] = 1.0  # tied
            rows.append(row)
    tau = rank_correlations(pd.DataFrame(rows))
    assert list(tau.index) == list(MEASURES) and list(tau.columns) == ["a", "b"]
    assert tau.loc["lambda_max", "a"] == pytest.approx(1.0) and tau.loc["normalized_lambda_max", "b"] == pytest.approx(-1.0)
    assert math.isnan(tau.loc["relative_flatness", "a"])
    # group a: 84 - 80 = 4 > 2 * sqrt(0.5^2 + 0.5^2); group b: 0.4 < 2 * sqrt(2)
    assert resolved_groups(pd.DataFrame(rows)) == ["a"]


def test_cached_results_lists_finished_entries_only(tmp_path):
    import warnings

    from flatbook import experiments

    cfg = experiments.Config(model="logreg", dataset="fashion-mnist", image_size=7, train_per_class=5, epochs=1,
                             lanczos_steps=4, hessian_samples=20)
    r = experiments.run(cfg, results_dir=tmp_path, progress=False)
    (tmp_path / "abc.partial").mkdir()  # an interrupted run
    (tmp_path / ".x.tmp").mkdir()  # an entry being written
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "result.json").write_text("{not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = experiments.cached_results(tmp_path)
    assert [x.key for x in found] == [r.key] and found[0].cached
    assert any("broken" in str(w.message) for w in caught)
    assert experiments.cached_results(tmp_path / "nothing") == []


def test_plot_rank_correlations_and_parameter_checks():
    import pandas as pd

    from flatbook.chapters.plots import plot_rank_correlations
    from flatbook.chapters.scale_aware import ScaleAwareParameters

    fig = plot_rank_correlations(pd.DataFrame({"g": [1.0, -1.0, float("nan")]}, index=["a", "b", "c"]))
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    with pytest.raises(ValueError, match="no rank"):
        plot_rank_correlations(pd.DataFrame())
    names = ("lanczos_steps", "probes", "min_runs", "models", "results_dir")
    ScaleAwareParameters(**dict(zip(names, (None, 1, 2, None, None))))
    ScaleAwareParameters(**dict(zip(names, (10, 2, 3, ["mlp"], "/tmp/x"))))
    for args, name in [((0, 1, 2, None, None), "lanczos_steps"), ((None, 0, 2, None, None), "probes"),
                       ((None, 1, 1, None, None), "min_runs"), ((None, 1, 2, ["resnet"], None), "models"),
                       ((None, 1, 2, [], None), "models"), ((None, 1, 2, None, 5), "results_dir")]:
        with pytest.raises(ValueError, match=name):
            ScaleAwareParameters(**dict(zip(names, args)))


def test_false_friend_claims_pool_groups_with_a_stratified_test():
    """Constructed measures table: in 6 groups of 3 runs, lambda_max rises with validation accuracy in
    every group (a false friend: supported), trace falls with it (the measure works: contradicted),
    the others are unrelated to it; resolved groups are summarised with their own tau and p."""
    import pandas as pd

    from flatbook.chapters import scale_aware

    rng = np.random.default_rng(0)
    rows = []
    for g in range(6):
        for i, acc in enumerate((80.0, 82.0, 84.0)):
            row = {"group": f"g{g}", "model": "mlp", "optimizer": "sgd", "weight_decay": [0.0, 1e-4, 5e-4][i],
                   "val_acc": acc + g, "val_acc_se": 0.3, "weight_norm": 1.0}
            for m in scale_aware.MEASURES:
                row[m] = float(rng.normal())
            row["lambda_max"] = 1.0 + i + rng.uniform(0, 0.1)
            row["trace"] = 10.0 - i
            rows.append(row)
    table = pd.DataFrame(rows)
    by = {c.statement.split(" ")[0]: c for c in scale_aware.claims(table)}
    assert set(by) == set(scale_aware.MEASURES)
    assert by["lambda_max"].outcome == "supported" and by["lambda_max"].effect == pytest.approx(1.0)
    assert by["trace"].outcome == "contradicted" and by["trace"].effect == pytest.approx(-1.0)
    summary = scale_aware.resolved_group_summary(table, measures=("lambda_max", "trace"))
    assert summary.count("tau +1.00") == 6 and summary.count("tau -1.00") == 6
    assert "p 0.33 (no evidence either way at 5%)" in summary  # 3 runs cannot show a trend
    few = table[table["group"] == "g0"]
    assert scale_aware.claims(few)[0].outcome == "untestable"  # one group of 3: no ordering reaches p < 0.05


def test_the_scale_aware_notebooks_helpers_on_constructed_inputs():
    import math

    import pandas as pd

    from flatbook.chapters import scale_aware

    table, sentence = scale_aware.dinh_invariance([])
    assert table is None and "No trained MLP in the cache" in sentence
    assert scale_aware.invariance_claims(None) == []
    with pytest.raises(RuntimeError, match="no group of at least 3 runs"):
        scale_aware.checked_groups([], min_runs=3, models=None, in_regime_only=True)
    tau = pd.DataFrame({"g1": [-0.5, 1.0, 0.0], "g2": [-1.0, math.nan, 0.5]}, index=["lambda_max", "trace", "frobenius"])
    summary = scale_aware.tau_summary(tau)
    assert summary.loc["lambda_max"].tolist() == [2, 0, 0, -0.75]
    assert summary.loc["trace"].tolist()[:3] == [0, 1, 1] and summary.loc["frobenius"].tolist()[:3] == [0, 1, 1]
