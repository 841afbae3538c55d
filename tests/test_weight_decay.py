"""The weight-decay tables and verdicts: constructed inputs where the answer is known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from flatbook.spectrum import Spectrum
from flatbook.weight_decay import PAPER_REPORTED, kendall_tau, results_table, trend, verdict


@pytest.mark.parametrize("values, expected", [
    ([1.0, 2.0, 3.0], "increasing"),
    ([3.0, 2.0, 1.0], "decreasing"),
    ([1.0, 3.0, 2.0], "mixed"),
    ([2.0, 2.0, 2.0], "flat"),
    ([1.0, 1.0, 2.0], "mixed"),  # one step without a rise is not "increasing"
    ([1.0, float("nan"), 2.0], "mixed"),
])
def test_trend_on_constructed_inputs(values, expected):
    assert trend([0.0, 1e-4, 5e-4], values) == expected


def test_trend_sorts_by_weight_decay_and_uses_rtol():
    assert trend([5e-4, 0.0, 1e-4], [3.0, 1.0, 2.0]) == "increasing"
    assert trend([0.0, 1e-4], [1.0, 1.0005], rtol=1e-3) == "flat"
    assert trend([0.0, 1e-4], [1.0, 1.0005], rtol=0.0) == "increasing"
    for wds, vals in (([0.0, 0.0], [1.0, 2.0]), ([0.0], [1.0]), ([0.0, 1.0], [1.0])):
        with pytest.raises(ValueError):
            trend(wds, vals)


def test_kendall_tau():
    assert kendall_tau([0, 1, 2], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([0, 1, 2], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([0, 1, 2, 3], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    assert math.isnan(kendall_tau([0], [1]))


def _spectrum(top: float, probes: int = 1) -> Spectrum:
    nodes = np.array([[top, top / 2, 0.0]] * probes) * (1 + 0.01 * np.arange(probes))[:, None]
    weights = np.full((probes, 3), 1 / 3)
    return Spectrum(nodes, weights, num_params=30, settings={})


def _result(wd, val_acc, top, model="logreg", probes=1, spectrum=True):
    metrics = {"train_acc": 0.99, "val_acc": val_acc, "test_acc": val_acc - 0.01, "train_loss": 0.01,
               "weight_norm": 10 / (1 + 1000 * wd)}
    return SimpleNamespace(config=SimpleNamespace(model=model, weight_decay=wd), metrics=metrics,
                           spectrum=_spectrum(top, probes) if spectrum else None)


def test_results_table_columns_order_and_paper_numbers():
    table = results_table([_result(5e-4, 0.95, 3.0), _result(0.0, 0.93, 1.0), _result(1e-4, 0.94, 2.0)])
    assert list(table.index) == [0.0, 1e-4, 5e-4]
    for col in ("train_acc", "val_acc", "test_acc", "gap", "weight_norm", "lambda_max", "trace", "frobenius",
                "paper_val_acc", "paper_lambda_max"):
        assert col in table
    assert table.loc[0.0, "val_acc"] == pytest.approx(93.0)
    assert table.loc[0.0, "gap"] == pytest.approx(6.0)
    assert table.loc[5e-4, "paper_lambda_max"] == PAPER_REPORTED["logreg"]["lambda_max"][5e-4]
    assert "lambda_max_se" not in table  # one probe: no standard errors


def test_results_table_standard_errors_missing_paper_numbers_and_errors():
    table = results_table([_result(0.0, 0.9, 1.0, probes=3), _result(1e-3, 0.91, 2.0, probes=3)])
    assert "lambda_max_se" in table and table["lambda_max_se"].notna().all()
    assert math.isnan(table.loc[1e-3, "paper_val_acc"])  # the paper has no 1e-3 run: never invented
    with pytest.raises(ValueError, match="one model"):
        results_table([_result(0.0, 0.9, 1.0), _result(1e-4, 0.9, 1.0, model="mlp")])
    with pytest.raises(ValueError, match="duplicate"):
        results_table([_result(0.0, 0.9, 1.0), _result(0.0, 0.91, 1.0)])
    with pytest.raises(ValueError):
        results_table([])


@pytest.mark.parametrize("accs, tops, reproduced, sharp, acc", [
    ([0.93, 0.94, 0.95], [1.0, 2.0, 3.0], True, "increasing", "increasing"),
    ([0.93, 0.94, 0.95], [3.0, 2.0, 1.0], False, "decreasing", "increasing"),
    ([0.95, 0.94, 0.93], [1.0, 2.0, 3.0], False, "increasing", "decreasing"),
    ([0.93, 0.95, 0.94], [1.0, 3.0, 2.0], False, "mixed", "mixed"),
])
def test_verdict_cannot_say_reproduced_when_the_numbers_do_not(accs, tops, reproduced, sharp, acc):
    results = [_result(wd, a, t) for wd, a, t in zip([0.0, 1e-4, 5e-4], accs, tops)]
    v = verdict(results_table(results))
    assert v["reproduced"] is reproduced
    assert v["lambda_max"]["trend"] == sharp and v["val_acc"]["trend"] == acc
    assert v["summary"].startswith("reproduced" if reproduced else "not reproduced")
    assert v["weight_norm"]["trend"] == "decreasing"


def test_verdict_without_spectra():
    v = verdict(results_table([_result(0.0, 0.9, 1.0, spectrum=False), _result(1e-4, 0.91, 1.0, spectrum=False)]))
    assert v["reproduced"] is False and "no spectrum" in v["summary"]


def test_logreg_chapter_parameters_are_checked_with_the_name():
    from flatbook.weight_decay import check_logreg_parameters

    ok = dict(dataset="mnist", train_per_class=None, image_size=None, epochs=1000, lr=0.01, batch_size=128,
              momentum=0.9, weight_decays=[0.0, 1e-4, 5e-4], lanczos_steps=100, probes=1, hessian_samples=None,
              dense_weight_decays=[0.0, 1e-3], exact_samples=5000, workers=1, seed=0, results_dir=None)
    check_logreg_parameters(**ok)
    for change, name in [({"weight_decays": [0.0]}, "weight_decays"), ({"weight_decays": [0.0, -1e-4]}, "weight_decays"),
                         ({"dense_weight_decays": [1e-3, 1e-3]}, "dense_weight_decays"),
                         ({"epochs": 0}, "epochs"), ({"dataset": "cifar10"}, "dataset"), ({"workers": 0}, "workers"),
                         ({"lr": -1.0}, "lr"), ({"exact_samples": 0}, "exact_samples")]:
        with pytest.raises(ValueError, match=name):
            check_logreg_parameters(**{**ok, **change})


def test_mlp_chapter_parameters_and_config():
    from flatbook.weight_decay import chapter_config, check_mlp_parameters

    ok = dict(dataset="mnist", train_per_class=None, image_size=None, epochs=50, lr=0.01, batch_size=128,
              momentum=0.9, weight_decays=[0.0, 1e-4, 5e-4], lanczos_steps=100, probes=1, hessian_samples=None,
              dense_weight_decays=[0.0, 1e-3], workers=1, seed=0, results_dir=None)
    check_mlp_parameters(**ok)
    with pytest.raises(ValueError, match="momentum"):
        check_mlp_parameters(**{**ok, "momentum": 1.5})
    c = chapter_config("mlp", "mnist", None, None, 50, 0.01, 128, 0.9, 100, 1, None, 0).resolved()
    assert (c.model, c.epochs, c.lr, c.weight_decay, c.lanczos_steps, c.probes, c.normalization) == \
        ("mlp", 50, 0.01, 0.0, 100, 1, "mnist")
