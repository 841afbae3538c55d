"""flatbook.theory.scaling: the rescalings keep the classifier, change the Hessian as predicted, and the
sweep's numbers equal exact ones (float64, tiny models)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flatbook import dense_hessian, models
from flatbook.theory.scaling import TRANSFORMS, dinh, linear_layers, log_grid, scale_all, scale_output, scaling_sweep
from flatbook.spectrum import start_vectors


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _mlp(seed: int = 0, hidden=(4, 5)) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", in_features=6, hidden=list(hidden), num_classes=3).double()


def _logreg(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("logreg", in_features=6, num_classes=3).double()


def _randomise_biases(model: nn.Module, seed: int = 0) -> nn.Module:
    """Default biases are small; make them O(1) so that bias scalings are really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64))
    return model


def _data(N: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (N,), generator=g)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


ALPHAS = [1e-3, 0.3, 1.0, 2.0, 7.5, 1e3]


# --- the transforms -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_logreg, _mlp, lambda: _mlp(1, hidden=(3,)), lambda: _mlp(2, hidden=(4, 3, 5))])
@pytest.mark.parametrize("transform", [scale_output, scale_all])
def test_output_and_all_multiply_the_logits_by_alpha(make, transform):
    model = _randomise_biases(make(), seed=3)
    x, _ = _data()
    state = _state(model)
    with torch.no_grad():
        z = model(x)
        for a in ALPHAS:
            scaled = transform(model, a)
            assert scaled is not model
            zs = scaled(x)
            torch.testing.assert_close(zs, a * z, rtol=1e-12, atol=0)
            assert torch.equal(zs.argmax(1), z.argmax(1))
            # margins z_c - z_k (c = predicted class) scale by alpha
            c = z.argmax(1, keepdim=True)
            torch.testing.assert_close(zs.gather(1, c) - zs, a * (z.gather(1, c) - z), rtol=1e-12, atol=1e-15)
    assert _same_state(model, state)


def test_scale_output_touches_only_the_last_layer_and_scale_all_spreads_alpha():
    model = _randomise_biases(_mlp(hidden=(4, 5)), seed=1)
    a = 8.0
    out = scale_output(model, a)
    allm = scale_all(model, a)
    L0, L1 = linear_layers(model), linear_layers(out)
    for l0, l1 in zip(L0[:-1], L1[:-1]):
        assert torch.equal(l0.weight, l1.weight) and torch.equal(l0.bias, l1.bias)
    torch.testing.assert_close(L1[-1].weight, a * L0[-1].weight, rtol=1e-15, atol=0)
    torch.testing.assert_close(L1[-1].bias, a * L0[-1].bias, rtol=1e-15, atol=0)
    # three Linear layers: a = 8^(1/3) = 2, biases 2, 4, 8
    for depth, (l0, l2) in enumerate(zip(L0, linear_layers(allm)), start=1):
        torch.testing.assert_close(l2.weight, 2.0 * l0.weight, rtol=1e-14, atol=0)
        torch.testing.assert_close(l2.bias, 2.0**depth * l0.bias, rtol=1e-14, atol=0)


def test_dinh_keeps_the_function_and_the_loss():
    model = _randomise_biases(_mlp(hidden=(4, 5)), seed=2)
    x, y = _data()
    state = _state(model)
    with torch.no_grad():
        z = model(x)
        for layer in (0, 1):
            for a in ALPHAS:
                d = dinh(model, a, layer)
                torch.testing.assert_close(d(x), z, rtol=1e-12, atol=1e-12)
                assert F.cross_entropy(d(x), y).item() == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-12)
    assert _same_state(model, state)


@pytest.mark.parametrize("layer", [0, 1])
def test_dinh_hessian_transforms_exactly(layer):
    """H' = S^{-1} H S^{-1} with S = alpha on layer ``layer`` (weight and bias), 1/alpha on the next
    layer's weight, 1 elsewhere: the layer's block by 1/alpha^2, the next weight block by alpha^2."""
    model = _randomise_biases(_mlp(hidden=(4, 5)), seed=5)
    x, y = _data(30, seed=1)
    a = 3.0
    H = dense_hessian(model, F.cross_entropy, (x, y), batch_size=30)
    Hd = dense_hessian(dinh(model, a, layer), F.cross_entropy, (x, y), batch_size=30)
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    lin = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    s = []
    for n, k in zip(names, sizes):
        mod = n.rsplit(".", 1)[0]
        if mod == lin[layer]:
            s += [a] * k
        elif n == f"{lin[layer + 1]}.weight":
            s += [1 / a] * k
        else:
            s += [1.0] * k
    s = torch.tensor(s, dtype=torch.float64)
    expected = H / s[:, None] / s[None, :]
    scale = H.abs().max()
    torch.testing.assert_close(Hd, expected, rtol=0, atol=1e-12 * scale * a**2)
    # the blocks named in the docstring
    idx = np.cumsum([0] + sizes)
    first = slice(idx[2 * layer], idx[2 * layer + 2])  # weight and bias of the scaled layer
    nxt = slice(idx[2 * layer + 2], idx[2 * layer + 3])  # weight of the next layer
    torch.testing.assert_close(Hd[first, first], H[first, first] / a**2, rtol=1e-9, atol=1e-14)
    torch.testing.assert_close(Hd[nxt, nxt], H[nxt, nxt] * a**2, rtol=1e-9, atol=1e-14)
    # same function, different curvature
    e, ed = torch.linalg.eigvalsh(H), torch.linalg.eigvalsh(Hd)
    assert abs(ed.max() - e.max()) > 1e-3 * e.max()


def test_transforms_refuse_bad_alpha():
    model = _mlp()
    for bad in (0, 0.0, -1.0, float("nan"), float("inf"), True, "2", None, torch.tensor(2.0)):
        for t in (scale_output, scale_all):
            with pytest.raises(ValueError, match="alpha"):
                t(model, bad)
        with pytest.raises(ValueError, match="alpha"):
            dinh(model, bad)
    assert scale_output(model, 2) is not model  # an int is fine


def test_transforms_refuse_non_sequential_and_conv_models():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x)

    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    bn = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
    tanh = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    for t in TRANSFORMS.values():
        with pytest.raises(ValueError, match="Sequential"):
            t(Net(), 2.0)
        for m in (conv, bn, tanh):
            with pytest.raises(ValueError, match="Flatten/Linear/ReLU"):
                t(m, 2.0)
        with pytest.raises(ValueError, match="no Linear"):
            t(nn.Sequential(nn.Flatten(), nn.ReLU()), 2.0)
    with pytest.raises(ValueError, match="layer"):
        dinh(_logreg(), 2.0)  # one Linear layer: nothing to rebalance
    for bad in (-1, 2, 1.0, True, None):
        with pytest.raises(ValueError, match="layer"):
            dinh(_mlp(hidden=(4, 5)), 2.0, bad)


# --- the sweep ----------------------------------------------------------------------------------

COLUMNS = ["alpha", "loss", "accuracy", "predictions_changed", "weight_norm", "lambda_max", "lambda_max_se",
           "lambda_max_residual", "lambda_min", "lambda_min_se", "trace", "trace_se", "frobenius", "frobenius_se",
           "asymmetry"]


def _fitted_data(model, N=30, seed=0):
    x, _ = _data(N, seed)
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample correctly classified: the loss -> 0 with alpha
    return x, y


@pytest.mark.parametrize("transform", ["output", "all", "dinh"])
def test_scaling_sweep_is_exact_at_full_steps(transform):
    model = _randomise_biases(_mlp(hidden=(4, 5)), seed=7)
    x, y = _fitted_data(model)
    state = _state(model)
    alphas = [0.5, 1.0, 3.0]
    P = sum(p.numel() for p in model.parameters())
    df = scaling_sweep(model, (x, y), alphas, transform, steps=P + 10, seed=3, batch_size=11)
    assert _same_state(model, state)
    assert list(df.columns) == COLUMNS
    assert list(df["alpha"]) == alphas
    assert (df["predictions_changed"] == 0).all()
    assert (df["accuracy"] == 1.0).all()
    assert (df["asymmetry"] < 1e-12).all()
    v = start_vectors(P, 1, seed=3)[:, 0]  # the sweep's probe (seed 3)
    for a, row in zip(alphas, df.itertuples()):
        scaled = TRANSFORMS[transform](model, a)
        with torch.no_grad():
            logits = scaled(x)
        assert row.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-12)
        norm = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in scaled.parameters()))
        assert row.weight_norm == pytest.approx(norm, rel=1e-12)
        H = dense_hessian(scaled, F.cross_entropy, (x, y), batch_size=30)
        e = torch.linalg.eigvalsh(H).numpy()
        assert row.lambda_max == pytest.approx(e.max(), rel=1e-8)
        assert row.lambda_min == pytest.approx(e.min(), rel=1e-8, abs=1e-10 * abs(e).max())
        # one probe: with every step, SLQ's trace and Frobenius are the quadratic forms of the probe
        # (exact Gauss quadrature), P v^T H v and P v^T H^2 v: unbiased estimates, not the exact values
        assert row.trace == pytest.approx(P * float(v @ H @ v), rel=1e-8, abs=1e-10 * abs(e).sum())
        assert row.frobenius == pytest.approx(math.sqrt(P * float(v @ H @ H @ v)), rel=1e-8)
        assert math.isnan(row.trace_se) and math.isnan(row.lambda_max_se)
        assert row.lambda_max_residual < 1e-8 * e.max()  # every step: the Krylov space is invariant
    if transform == "dinh":
        assert np.allclose(df["loss"], df["loss"].iloc[0], rtol=1e-12, atol=0)
    else:
        assert (np.diff(df["loss"]) < 0).all()


def test_scaling_sweep_with_probes_has_standard_errors_and_keeps_predictions_on_any_labels():
    model = _mlp(seed=4)
    x, y = _data(40, seed=4)  # random labels: some samples misclassified
    df = scaling_sweep(model, (x, y), log_grid(0.1, 100.0, 4), "all", steps=5, probes=3, seed=1)
    assert list(df.columns) == COLUMNS and len(df) == 4
    assert (df["predictions_changed"] == 0).all()
    assert df["accuracy"].nunique() == 1
    assert (df["lambda_max_se"] > 0).all() and (df["trace_se"] > 0).all() and (df["frobenius_se"] > 0).all()
    assert (df["asymmetry"] < 1e-9).all()


def test_scaling_sweep_accepts_a_float32_model_and_computes_in_float64():
    torch.manual_seed(0)
    model32 = models.build("mlp", in_features=6, hidden=[4, 5], num_classes=3)
    model64 = copy.deepcopy(model32).double()
    x, y = _fitted_data(model64, seed=1)
    x = x.float()
    state = _state(model32)
    df = scaling_sweep(model32, (x, y), [1.0, 2.0], "output", steps=80, seed=0)
    assert _same_state(model32, state) and next(model32.parameters()).dtype == torch.float32
    H = dense_hessian(scale_output(model64, 2.0), F.cross_entropy, (x.double(), y), batch_size=30)
    assert df["lambda_max"].iloc[1] == pytest.approx(torch.linalg.eigvalsh(H).max().item(), rel=1e-8)


def test_scaling_sweep_refuses_bad_arguments():
    model = _mlp()
    data = _data(20)
    with pytest.raises(ValueError, match="transform"):
        scaling_sweep(model, data, [1.0], "bogus")
    with pytest.raises(ValueError, match="alphas"):
        scaling_sweep(model, data, [], "output")
    with pytest.raises(ValueError, match="alpha"):
        scaling_sweep(model, data, [1.0, -2.0], "output")
    with pytest.raises(ValueError, match="steps"):
        scaling_sweep(model, data, [1.0], "output", steps=0)
    with pytest.raises(ValueError, match="probes"):
        scaling_sweep(model, data, [1.0], "output", probes=0)
    with pytest.raises(ValueError, match="layer"):
        scaling_sweep(model, data, [1.0], "dinh", layer=5)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match="Flatten/Linear/ReLU"):
        scaling_sweep(conv, data, [1.0], "output")


# --- log_grid -----------------------------------------------------------------------------------


def test_log_grid():
    g = log_grid(0.01, 100.0, 5)
    assert g[0] == 0.01 and g[-1] == 100.0 and len(g) == 5
    assert np.allclose(g, [0.01, 0.1, 1.0, 10.0, 100.0], rtol=1e-12)
    assert all(isinstance(v, float) for v in g)
    assert np.allclose(np.diff(np.log(g)), np.log(10), rtol=1e-12)
    assert log_grid(2.0, 3.0, 1) == [2.0]
    assert log_grid(2.0, 2.0, 3) == [2.0, 2.0, 2.0]
    for args, name in [((0.0, 1.0, 3), "alpha"), ((1.0, -1.0, 3), "alpha"), ((1.0, float("inf"), 3), "alpha"),
                       ((1.0, 10.0, 0), "num"), ((1.0, 10.0, 2.0), "num"), ((1.0, 10.0, True), "num"),
                       ((10.0, 1.0, 3), "below")]:
        with pytest.raises(ValueError, match=name):
            log_grid(*args)


# --- theorem: the verdict helpers ---------------------------------------------------------------

import pandas as pd  # noqa: E402

from flatbook.chapters.theorem import (ROUNDING_LIMIT, TheoremParameters, fitted_subset,  # noqa: E402
                              monotone_fraction, scaling_verdict)


def _table(lambda_max, loss=None, frobenius=None, asymmetry=None, changed=None) -> pd.DataFrame:
    n = len(lambda_max)
    d = {"alpha": np.geomspace(1, 100, n), "loss": loss if loss is not None else np.geomspace(1, 1e-3, n),
         "predictions_changed": changed if changed is not None else [0] * n,
         "lambda_max": lambda_max, "frobenius": frobenius if frobenius is not None else lambda_max}
    if asymmetry is not None:
        d["asymmetry"] = asymmetry
    return pd.DataFrame(d)


def test_monotone_fraction():
    assert monotone_fraction([5, 4, 3, 1]) == 1.0
    assert monotone_fraction([1, 2, 3]) == 0.0
    assert monotone_fraction([1, 2, 3], decreasing=False) == 1.0
    assert monotone_fraction([3, 1, 2, 0]) == pytest.approx(2 / 3)
    assert monotone_fraction([2, 2, 2]) == 0.0 and monotone_fraction([2, 2, 2], decreasing=False) == 0.0
    assert monotone_fraction([1, np.nan, 0]) == 0.0  # NaN steps never count as moving
    assert math.isnan(monotone_fraction([1.0])) and math.isnan(monotone_fraction([]))


def test_scaling_verdict_decreasing_increasing_mixed():
    dec = scaling_verdict(_table([8.0, 4.0, 2.0, 1.0, 0.5]), "output")
    alphas = np.geomspace(1, 100, 5)
    assert dec["transform"] == "output" and dec["predictions_unchanged"] is True
    assert dec["loss_decreasing"] is True
    assert dec["lambda_max_falls_after_peak"] is True and dec["frobenius_falls_after_peak"] is True
    assert dec["lambda_max_peak_alpha"] == alphas[0] and dec["lambda_max_last_over_peak"] == pytest.approx(0.5 / 8)
    assert dec["lambda_max_ratio"] == pytest.approx(0.5 / 8.0) and dec["frobenius_ratio"] == pytest.approx(0.5 / 8.0)
    assert dec["loss_ratio"] == pytest.approx(1e-3)
    assert "rows_at_rounding_level" not in dec

    inc = scaling_verdict(_table([1.0, 2.0, 3.0, 4.0, 5.0], loss=[1.0, 2.0, 3.0, 4.0, 5.0]), "all")
    assert inc["loss_decreasing"] is False
    assert inc["lambda_max_falls_after_peak"] is False and inc["frobenius_falls_after_peak"] is False
    assert inc["lambda_max_peak_alpha"] == alphas[-1] and inc["lambda_max_last_over_peak"] == 1.0
    assert inc["lambda_max_ratio"] == 5.0

    # rises while the Jacobian grows, then falls: peak inside the grid
    rise_fall = scaling_verdict(_table([1.0, 3.0, 5.0, 4.0, 2.0]), "output")
    assert rise_fall["lambda_max_falls_after_peak"] is True
    assert rise_fall["lambda_max_peak_alpha"] == alphas[2]
    assert rise_fall["lambda_max_last_over_peak"] == pytest.approx(2 / 5)
    assert rise_fall["lambda_max_ratio"] == 2.0  # first to last: sharper, though falling after the peak

    # mixed: falls, then rises again after the peak
    for values in ([1.0, 5.0, 3.0, 4.0, 2.0], [9.0, 5.0, 4.0, 2.0, 3.0], [5.0, 3.0, 3.0, 1.0]):
        v = scaling_verdict(_table(values), "output")
        assert v["lambda_max_falls_after_peak"] is False and v["frobenius_falls_after_peak"] is False
    flat = scaling_verdict(_table([2.0, 2.0, 2.0, 2.0]), "output")
    assert flat["lambda_max_falls_after_peak"] is False
    nan = scaling_verdict(_table([4.0, 3.0, np.nan, 1.0]), "output")
    assert nan["lambda_max_falls_after_peak"] is False
    one = scaling_verdict(_table([4.0]), "output")
    assert one["lambda_max_falls_after_peak"] is False  # one value shows no trend
    # the loss and the curvature are judged separately
    v = scaling_verdict(_table([1.0, 2.0, 3.0], frobenius=[3.0, 2.0, 1.0]), "output")
    assert v["lambda_max_falls_after_peak"] is False and v["frobenius_falls_after_peak"] is True

    changed = scaling_verdict(_table([3.0, 2.0, 1.0], changed=[0, 1, 0]), "output")
    assert changed["predictions_unchanged"] is False


def test_scaling_verdict_leaves_out_and_counts_rounding_rows():
    big = 10 * ROUNDING_LIMIT
    # the last two rows are rounding noise that would look like a fall after a peak
    df = _table([4.0, 5.0, 6.0, 7.0, 1e-9, 1e-12], asymmetry=[0.0, 1e-9, ROUNDING_LIMIT, 1e-6, big, np.inf])
    v = scaling_verdict(df, "output")
    assert v["rows_at_rounding_level"] == 2
    assert v["lambda_max_ratio"] == pytest.approx(7.0 / 4.0)  # last reliable row: asymmetry <= limit is kept
    assert v["lambda_max_falls_after_peak"] is False and v["lambda_max_last_over_peak"] == 1.0
    assert scaling_verdict(df.drop(columns="asymmetry"), "output")["lambda_max_falls_after_peak"] is True
    # a NaN asymmetry is not reliable either
    v = scaling_verdict(_table([3.0, 2.0, 1.0], asymmetry=[0.0, np.nan, 0.0]), "output")
    assert v["rows_at_rounding_level"] == 1
    # rounding rows do not hide changed predictions
    v = scaling_verdict(_table([3.0, 2.0, 1.0], asymmetry=[0.0, 0.0, big], changed=[0, 0, 2]), "output")
    assert v["predictions_unchanged"] is False
    with pytest.raises(ValueError, match="rounding"):
        scaling_verdict(_table([3.0, 2.0], asymmetry=[big, 1.0]), "output")
    with pytest.raises(ValueError, match="rounding"):
        scaling_verdict(_table([3.0, 2.0], asymmetry=[big, 1.0]), "dinh")


def test_scaling_verdict_dinh():
    df = _table([1.0, 4.0, 16.0], loss=[0.7, 0.7 * (1 + 1e-13), 0.7 * (1 - 3e-13)])
    v = scaling_verdict(df, "dinh")
    assert v["lambda_max_ratio"] == 16.0
    assert v["loss_max_relative_change"] == pytest.approx(3e-13, rel=1e-2)
    assert "loss_decreasing" not in v and "lambda_max_falls_after_peak" not in v


def test_scaling_verdict_loss_underflow_to_zero_at_the_end_still_decreasing():
    v = scaling_verdict(_table([4.0, 3.0, 2.0, 1.0], loss=[0.5, 1e-100, 0.0, 0.0]), "output")
    assert v["loss_decreasing"]


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_scaling_verdict_rising_after_zeros_is_not_decreasing():
    v = scaling_verdict(_table([4.0, 3.0, 2.0, 1.0], loss=[0.0, 0.0, 0.3, 0.9]), "output")
    assert v["loss_decreasing"] is False


@pytest.mark.parametrize("loss", [[0.5, 0.0, 0.4, 0.3], [0.0, 1.0], [0.0, 0.0, 0.0, 0.7]])
@pytest.mark.filterwarnings("ignore:divide by zero")
def test_scaling_verdict_does_not_call_a_rising_loss_decreasing(loss):
    v = scaling_verdict(_table(list(np.linspace(4.0, 1.0, len(loss))), loss=loss), "output")
    assert v["loss_decreasing"] is False


def test_scaling_verdict_on_a_real_sweep():
    model = _randomise_biases(_mlp(hidden=(4, 5)), seed=7)
    x, y = _fitted_data(model)
    df = scaling_sweep(model, (x, y), log_grid(1.0, 30.0, 5), "output", steps=40, seed=0)
    v = scaling_verdict(df, "output")
    assert v["predictions_unchanged"] and v["loss_decreasing"] and v["loss_ratio"] < 1
    lm = df["lambda_max"].to_numpy()
    peak = int(np.argmax(lm))
    assert v["lambda_max_peak_alpha"] == df["alpha"].iloc[peak]
    assert v["lambda_max_falls_after_peak"] == bool(peak < len(lm) - 1 and (np.diff(lm[peak:]) < 0).all())


def test_fitted_subset_returns_the_first_correct_samples_in_order():
    torch.manual_seed(0)
    model = _logreg()
    g = torch.Generator().manual_seed(3)
    N = 9000  # more than one 4096-sample chunk
    x = torch.randn(N, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    wrong = torch.rand(N, generator=g) < 0.4
    y[wrong] = (pred[wrong] + 1) % 3
    correct_idx = torch.nonzero(~wrong).flatten()
    for n in (1, 7, 5000, N):
        xs, ys = fitted_subset(model, x, y, n)
        expect = correct_idx[:n]
        assert torch.equal(xs, x[expect]) and torch.equal(ys, y[expect])
        with torch.no_grad():
            assert torch.equal(model(xs).argmax(1), ys)
    with pytest.raises(ValueError, match="no training sample"):
        fitted_subset(model, x[:50], (pred[:50] + 1) % 3, 10)


THEOREM_GOOD = dict(dataset="mnist", image_size=None, train_per_class=None, epochs=1, lr=0.01, mlp_hidden=[10, 100],
                    fitted_samples=100, alpha_min=0.5, alpha_max=50.0, num_alphas=6, lanczos_steps=50, probes=1,
                    exact_samples=200, exact_lanczos_steps=30, seed=0, results_dir=None)


def test_check_theorem_parameters_accepts_good_values():
    TheoremParameters(**THEOREM_GOOD)
    TheoremParameters(**{**THEOREM_GOOD, "dataset": "fashion-mnist", "image_size": 12, "alpha_min": 2,
                                "alpha_max": 2, "mlp_hidden": (5,), "results_dir": "results", "train_per_class": 3})


@pytest.mark.parametrize("name,bad", [
    ("dataset", "cifar100"), ("mlp_hidden", []), ("mlp_hidden", [4, 0]), ("mlp_hidden", "10"),
    ("fitted_samples", 0), ("num_alphas", 2.0), ("lanczos_steps", True), ("probes", -1), ("exact_samples", None),
    ("exact_lanczos_steps", 0), ("seed", -1), ("seed", 0.5), ("alpha_min", 0.0), ("alpha_min", float("nan")),
    ("alpha_max", -1.0), ("alpha_max", float("inf")), ("alpha_max", True), ("results_dir", 1),
    ("epochs", 0), ("lr", 0), ("image_size", 100), ("train_per_class", -2),
])
def test_check_theorem_parameters_names_the_bad_one(name, bad):
    with pytest.raises(ValueError, match=name):
        TheoremParameters(**{**THEOREM_GOOD, name: bad})


def test_check_theorem_parameters_alpha_order():
    with pytest.raises(ValueError, match="alpha_max .* alpha_min"):
        TheoremParameters(**{**THEOREM_GOOD, "alpha_min": 10.0, "alpha_max": 1.0})
