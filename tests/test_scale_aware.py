"""Scale-aware sharpness: exact references (dense float64 Hessians, closed forms) and the
invariances that define the measures."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatbook import scaling
from flatbook.curvature import HessianOperator, dense_hessian
from flatbook.scale_aware import LayerNormalizedOperator, last_linear_layer, relative_flatness, tensor_norms

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()


def _data(n=40, seed=1, d=4, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def _normalized_dense(model, data, **kw):
    op = LayerNormalizedOperator(HessianOperator(model, F.cross_entropy, data, batch_size=16, **kw), model)
    return op.matmat(torch.eye(op.num_params, dtype=torch.float64)).cpu()


def test_layer_normalized_operator_is_D_H_D():
    model, data = _mlp(), _data()
    H = dense_hessian(model, F.cross_entropy, data, batch_size=16)
    names = [n for n, _ in model.named_parameters()]
    norms = tensor_norms(model, names)
    d = torch.cat([torch.full((p.numel(),), norms[n], dtype=torch.float64) for n, p in model.named_parameters()])
    assert norms["0.weight"] == pytest.approx(float(model[0].weight.detach().norm()), rel=1e-15)
    torch.testing.assert_close(_normalized_dense(model, data), d[:, None] * H * d[None, :], rtol=1e-12, atol=1e-14)
    # its trace is sum_t ||w_t||^2 Tr(H_tt)
    start, expected = 0, 0.0
    for n, p in model.named_parameters():
        k = p.numel()
        expected += norms[n] ** 2 * float(H[start:start + k, start:start + k].trace())
        start += k
    assert float(_normalized_dense(model, data).trace()) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("layer, alpha", [(0, 7.0), (1, 0.05)])
def test_layer_normalized_spectrum_is_invariant_to_dinh_rescaling(layer, alpha):
    model, data = _mlp(2), _data(seed=3)
    scaled = scaling.dinh(model, alpha, layer=layer)
    x, _ = data
    torch.testing.assert_close(scaled(x), model(x), rtol=1e-12, atol=1e-12)  # the same function
    H0 = dense_hessian(model, F.cross_entropy, data, batch_size=16)
    H1 = dense_hessian(scaled, F.cross_entropy, data, batch_size=16)
    plain0, plain1 = torch.linalg.eigvalsh(H0), torch.linalg.eigvalsh(H1)
    assert abs(plain1[-1] / plain0[-1] - 1) > 0.1  # the plain Hessian's lambda_1 moves ...
    N0, N1 = _normalized_dense(model, data), _normalized_dense(scaled, data)
    torch.testing.assert_close(N1, N0, rtol=1e-9, atol=1e-12)  # ... the normalised one is the same matrix


def test_layer_normalized_is_invariant_to_the_scale_of_a_weight_before_batchnorm():
    torch.manual_seed(5)
    # eps ~ 0: with BatchNorm's usual eps = 1e-5 the invariance holds only up to eps / variance
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, eps=1e-14), nn.ReLU(), nn.Linear(6, 3)).double()
    data = _data(n=32, seed=6)
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[0].weight.mul_(10.0)
        scaled[0].bias.mul_(10.0)  # BatchNorm (batch statistics) removes the scale: the same loss
    H0 = dense_hessian(model, F.cross_entropy, data, batch_size=16)
    H1 = dense_hessian(scaled, F.cross_entropy, data, batch_size=16)
    k = model[0].weight.numel()
    assert float(H1[:k, :k].trace()) == pytest.approx(float(H0[:k, :k].trace()) / 100, rel=1e-9)
    torch.testing.assert_close(_normalized_dense(scaled, data), _normalized_dense(model, data), rtol=1e-8, atol=1e-12)


def test_relative_flatness_of_logistic_regression_against_its_closed_form():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(5, 4)).double()
    x, y = _data(n=30, seed=8, d=5, classes=4)
    kappa = relative_flatness(model, F.cross_entropy, (x, y), batch_size=7)
    # H_{(s,j),(s',j')} = mean_n x_j x_j' A_n[s, s'], A_n = diag p - p p^T, so
    # kappa = mean_n ||x_n||^2 sum_{s,s'} (W W^T)[s, s'] A_n[s, s']
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        W = model[0].weight
        G = W @ W.T
        A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        expected = float(((x ** 2).sum(1) * (G[None] * A).sum((1, 2))).mean())
    assert kappa == pytest.approx(expected, rel=1e-12)


def test_relative_flatness_is_invariant_to_rescaling_the_features():
    model, data = _mlp(9), _data(seed=10)
    scaled = scaling.dinh(model, 13.0, layer=1)  # the penultimate features x13, the classifier / 13
    assert last_linear_layer(model) == "4.weight"
    k0 = relative_flatness(model, F.cross_entropy, data, batch_size=16)
    k1 = relative_flatness(scaled, F.cross_entropy, data, batch_size=16)
    assert k0 > 0 and k1 == pytest.approx(k0, rel=1e-9)
    # the plain trace of the classifier's block is not invariant
    H0 = dense_hessian(model, F.cross_entropy, data, batch_size=16, params=["4.weight"])
    H1 = dense_hessian(scaled, F.cross_entropy, data, batch_size=16, params=["4.weight"])
    assert float(H1.trace()) == pytest.approx(169 * float(H0.trace()), rel=1e-9)


def test_relative_flatness_hutchinson_estimate_for_a_large_layer():
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(6, 5)).double()
    x, y = _data(n=25, seed=13, d=6, classes=5)
    exact = relative_flatness(model, F.cross_entropy, (x, y), batch_size=10)
    # 30 weights > dense_up_to: the estimate, unbiased; with 4,000 probes within a few percent
    estimates = [relative_flatness(model, F.cross_entropy, (x, y), batch_size=10, dense_up_to=10, probes=4000,
                                   seed=s) for s in range(3)]
    assert len(set(estimates)) == 3  # really random
    assert np.mean(estimates) == pytest.approx(exact, rel=0.03)
    assert relative_flatness(model, F.cross_entropy, (x, y), batch_size=10, dense_up_to=10, probes=50, seed=7) == \
        relative_flatness(model, F.cross_entropy, (x, y), batch_size=10, dense_up_to=10, probes=50, seed=7)
    with pytest.raises(ValueError, match="probes"):
        relative_flatness(model, F.cross_entropy, (x, y), dense_up_to=10, probes=0)


def test_relative_flatness_of_a_1x1_convolution_classifier_and_errors():
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.Flatten()).double()
    x = torch.randn(10, 2, 3, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (10,))
    assert last_linear_layer(model) == "2.weight"
    kappa = relative_flatness(model, F.cross_entropy, (x, y), batch_size=5)
    # the same network with the classifier as a Linear layer on the 3 features
    lin = nn.Sequential(model[0], model[1], nn.Flatten(), nn.Linear(3, 4)).double()
    with torch.no_grad():
        lin[3].weight.copy_(model[2].weight[:, :, 0, 0])
        lin[3].bias.copy_(model[2].bias)
    assert kappa == pytest.approx(relative_flatness(lin, F.cross_entropy, (x, y), batch_size=5), rel=1e-12)
    with pytest.raises(ValueError, match="weight matrix"):
        relative_flatness(model, F.cross_entropy, (x, y), layer="0.weight")
    with pytest.raises(ValueError, match="not a parameter"):
        relative_flatness(model, F.cross_entropy, (x, y), layer="nope")
    with pytest.raises(ValueError, match="no nn.Linear"):
        last_linear_layer(nn.Sequential(nn.Conv2d(1, 1, 3)))
    with pytest.raises(ValueError, match="HessianOperator"):
        LayerNormalizedOperator(object(), model)


def test_remeasure_matches_the_experiment_and_caches(tmp_path):
    from flatbook import experiments, remeasure

    cfg = experiments.Config(model="logreg", dataset="fashion-mnist", image_size=7, train_per_class=10, epochs=2,
                             lr=0.05, lanczos_steps=10, probes=2, hessian_samples=60)
    r = experiments.run(cfg, results_dir=tmp_path / "r", progress=False)
    again = remeasure.spectrum(r, progress=False)  # the experiment's own settings: the same spectrum
    np.testing.assert_allclose(again.nodes, r.spectrum.nodes, rtol=1e-10, atol=1e-12)
    files = list((r.path / "measures").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["settings"]["bn_mode"] == "train" and stored["settings"]["lanczos_steps"] == 10
    # a cached measurement is read, not recomputed: edit it and see the edit
    stored["spectrum"]["nodes"][0][0] = 123.0
    files[0].write_text(json.dumps(stored))
    assert remeasure.spectrum(r, progress=False).nodes[0][0] == 123.0
    assert remeasure.spectrum(r, progress=False, recompute=True).nodes[0][0] != 123.0
    files[0].write_text("{ not json")  # unreadable: recomputed
    np.testing.assert_allclose(remeasure.spectrum(r, progress=False).nodes, r.spectrum.nodes, rtol=1e-10, atol=1e-12)
    # the layer-normalised operator: D H D with D = ||W|| and ||b||
    normalized = remeasure.spectrum(r, operator="layer-normalized", lanczos_steps=40, probes=1, progress=False)
    model = r.load_model()
    x, y = experiments.prepare_data(r.config, "train")
    idx = experiments.hessian_indices(len(y), 60, r.config.spectrum_seed)  # the run's Hessian images
    x, y = x[idx], y[idx]
    H = dense_hessian(model, F.cross_entropy, (x, y), batch_size=128)
    d = torch.cat([torch.full((p.numel(),), float(p.detach().double().norm()), dtype=torch.float64)
                   for p in model.parameters()])
    exact = torch.linalg.eigvalsh(d[:, None] * H * d[None, :])
    assert normalized.lambda_max == pytest.approx(float(exact[-1]), rel=1e-6)
    kappa = remeasure.relative_flatness(r)
    assert kappa == pytest.approx(relative_flatness(model, F.cross_entropy, (x, y), batch_size=128),
                                  rel=1e-10)
    assert len(list((r.path / "measures").glob("*.json"))) == 3
    # 490 weights (7x7 images, 10 classes): the Hutchinson estimate when the dense limit is lower
    estimate = remeasure.relative_flatness(r, dense_up_to=100, probes=2000)
    assert estimate == pytest.approx(kappa, rel=0.1) and estimate != kappa
    with pytest.raises(ValueError, match="operator"):
        remeasure.spectrum(r, operator="fisher")
    with pytest.raises(ValueError, match="bn_mode"):
        remeasure.spectrum(r, bn_mode="frozen")
    with pytest.raises(ValueError, match="probes"):
        remeasure.spectrum(r, probes=0)


def _fake(model, wd, val_acc, top, optimizer="sgd", epochs=5, val_size=1000, spectrum=True):
    from flatbook.experiments import Config
    from flatbook.spectrum import Spectrum

    config = Config(model=model, dataset="fashion-mnist", weight_decay=wd, optimizer=optimizer, epochs=epochs,
                    val_size=val_size, averaging_start=epochs if optimizer == "gadam" else None)
    s = Spectrum(np.array([[top, top / 2]]), np.full((1, 2), 0.5), num_params=10, settings={}) if spectrum else None
    return SimpleNamespace(config=config, metrics={"val_acc": val_acc, "weight_norm": 1.0}, spectrum=s)


def test_group_results_keeps_groups_that_differ_only_in_the_treatment():
    from flatbook.scale_aware import group_results

    runs = [_fake("mlp", 0.0, 0.8, 1.0), _fake("mlp", 1e-4, 0.81, 2.0), _fake("mlp", 5e-4, 0.82, 3.0, optimizer="gadam"),
            _fake("mlp", 0.0, 0.8, 1.0, epochs=7),  # another setting: a group of one, dropped
            _fake("logreg", 0.0, 0.7, 1.0), _fake("logreg", 1e-3, 0.7, 1.0, spectrum=False)]  # no spectrum: dropped
    groups = group_results(runs)
    assert list(groups) == ["mlp, fashion-mnist, 5 ep"]
    assert [(r.config.optimizer, r.config.weight_decay) for r in groups["mlp, fashion-mnist, 5 ep"]] == \
        [("gadam", 5e-4), ("sgd", 0.0), ("sgd", 1e-4)]  # sorted by optimiser, then weight decay
    assert group_results(runs, models=["logreg"]) == {}
    assert len(group_results(runs, min_runs=1)) == 3


def test_rank_correlations_and_resolved_groups_on_a_constructed_table():
    import pandas as pd

    from flatbook.scale_aware import MEASURES, rank_correlations, resolved_groups

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

    from flatbook.plots import plot_rank_correlations
    from flatbook.scale_aware import check_scale_aware_parameters

    fig = plot_rank_correlations(pd.DataFrame({"g": [1.0, -1.0, float("nan")]}, index=["a", "b", "c"]))
    assert len(fig.axes) == 2  # the heatmap and its colour bar
    with pytest.raises(ValueError, match="no rank"):
        plot_rank_correlations(pd.DataFrame())
    check_scale_aware_parameters(None, 1, 2, None, None)
    check_scale_aware_parameters(10, 2, 3, ["mlp"], "/tmp/x")
    for args, name in [((0, 1, 2, None, None), "lanczos_steps"), ((None, 0, 2, None, None), "probes"),
                       ((None, 1, 1, None, None), "min_runs"), ((None, 1, 2, ["resnet"], None), "models"),
                       ((None, 1, 2, [], None), "models"), ((None, 1, 2, None, 5), "results_dir")]:
        with pytest.raises(ValueError, match=name):
            check_scale_aware_parameters(*args)


def test_false_friend_claims_pool_groups_with_a_stratified_test():
    """Constructed measures table: in 6 groups of 3 runs, lambda_max rises with validation accuracy in
    every group (a false friend: supported), trace falls with it (the measure works: contradicted),
    the others are unrelated to it; resolved groups are summarised with their own tau and p."""
    import pandas as pd

    from flatbook import scale_aware

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
