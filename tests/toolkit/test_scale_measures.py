"""The scale-aware curvature measures of the toolkit (flatbook.scale_measures): the layer-normalised
Hessian D H D against dense float64 references and its invariances, Petzka et al.'s relative
flatness against closed forms, and their re-measurement of cached experiments (flatbook.remeasure)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatbook.curvature import HessianOperator, dense_hessian
from flatbook.scale_measures import LayerNormalizedOperator, last_linear_layer, relative_flatness, tensor_norms
from flatbook.theory import scaling

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
    idx = experiments.hessian_indices(len(y), 60, spectrum_seed=r.config.spectrum_seed)  # the run's Hessian images
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
