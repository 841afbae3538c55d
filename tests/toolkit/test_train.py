"""Training (flatbook.train): optimiser steps against hand-written formulas, schedules, BatchNorm
recompute, iterate averaging, exact checkpoint resume, errors; on tiny models and data, on the CPU."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flatbook.train as train
from flatbook.batching import TensorBatches
from flatbook.schedules import averaging_lr, paper_lr
from flatbook.train import (
    HISTORY_COLUMNS,
    NonFiniteLoss,
    evaluate,
    fit,
    recompute_bn,
    weight_norm,
)

CPU = dict(device="cpu", progress=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_data(n=64, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def linear(d=5, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, classes)


def state_copy(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def linear_grad(W, b, x, y):
    """Gradient of the MEAN cross-entropy of logits x W^T + b, in float64, by hand."""
    x = x.double()
    logits = x @ W.T + b
    p = torch.softmax(logits, dim=1)
    G = (p - F.one_hot(y, W.shape[0]).double()) / len(x)
    return G.T @ x, G.sum(0)


def params64(model):
    return model.weight.detach().double().clone(), model.bias.detach().double().clone()


# --- optimiser steps ------------------------------------------------------------------------


def test_one_sgd_step_is_l2_decay_on_all_parameters():
    x, y = toy_data()
    model = linear()
    W, b = params64(model)
    lr, wd = 0.5, 0.1
    fit(model, (x, y), optimizer="sgd", lr=lr, epochs=1, batch_size=len(x), momentum=0.9, weight_decay=wd,
        schedule="constant", **CPU)
    gW, gb = linear_grad(W, b, x, y)
    W1, b1 = W - lr * (gW + wd * W), b - lr * (gb + wd * b)  # first step: buf = g
    torch.testing.assert_close(model.weight.detach().double(), W1, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.bias.detach().double(), b1, atol=1e-6, rtol=0)
    # the test can tell: without decay on the bias the result is far away
    assert (model.bias.detach().double() - (b - lr * gb)).abs().max() > 1e-3


def test_two_sgd_steps_with_momentum():
    x, y = toy_data()
    model = linear(seed=1)
    W, b = params64(model)
    lr, wd, mu = 0.3, 0.05, 0.9
    fit(model, (x, y), optimizer="sgd", lr=lr, epochs=2, batch_size=128, momentum=mu, weight_decay=wd,
        schedule="constant", **CPU)
    gW, gb = linear_grad(W, b, x, y)
    bufW, bufb = gW + wd * W, gb + wd * b
    W1, b1 = W - lr * bufW, b - lr * bufb
    gW, gb = linear_grad(W1, b1, x, y)
    bufW, bufb = mu * bufW + gW + wd * W1, mu * bufb + gb + wd * b1
    W2, b2 = W1 - lr * bufW, b1 - lr * bufb
    torch.testing.assert_close(model.weight.detach().double(), W2, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.bias.detach().double(), b2, atol=1e-6, rtol=0)
    no_momentum = W1 - lr * (gW + wd * W1)
    assert (model.weight.detach().double() - no_momentum).abs().max() > 1e-3


def adam_reference(W, b, x, y, *, lr, wd, steps, decoupled, betas=(0.9, 0.999), eps=1e-8):
    ws = [W.clone(), b.clone()]
    m = [torch.zeros_like(t) for t in ws]
    v = [torch.zeros_like(t) for t in ws]
    for t in range(1, steps + 1):
        grads = linear_grad(ws[0], ws[1], x, y)
        new = []
        for i, (w, g) in enumerate(zip(ws, grads)):
            if decoupled:
                w = w * (1 - lr * wd)
            else:
                g = g + wd * w
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            mhat, vhat = m[i] / (1 - betas[0] ** t), v[i] / (1 - betas[1] ** t)
            new.append(w - lr * mhat / (vhat.sqrt() + eps))
        ws = new
    return ws


@pytest.mark.parametrize("steps", [1, 2])
def test_adam_is_coupled_and_adamw_decoupled(steps):
    x, y = toy_data(seed=2)
    lr, wd = 0.01, 0.5
    out = {}
    for name in ("adam", "adamw"):
        model = linear(seed=2)
        W, b = params64(model)
        fit(model, (x, y), optimizer=name, lr=lr, epochs=steps, batch_size=len(x), weight_decay=wd,
            schedule="constant", **CPU)
        ref = adam_reference(W, b, x, y, lr=lr, wd=wd, steps=steps, decoupled=name == "adamw")
        torch.testing.assert_close(model.weight.detach().double(), ref[0], atol=2e-6, rtol=0)
        torch.testing.assert_close(model.bias.detach().double(), ref[1], atol=2e-6, rtol=0)
        out[name] = model.weight.detach().clone()
    assert (out["adam"] - out["adamw"]).abs().max() > 1e-4


def test_adam_and_adamw_agree_without_weight_decay():
    x, y = toy_data(seed=3)
    weights = []
    for name in ("adam", "adamw"):
        model = linear(seed=3)
        fit(model, (x, y), optimizer=name, lr=0.01, epochs=2, batch_size=16, schedule="constant", **CPU)
        weights.append(model.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], atol=1e-7, rtol=0)


# --- learning rates -------------------------------------------------------------------------


def record_rates(monkeypatch):
    """Wrap _train_epoch: record (rate argument, the optimiser's lr) per epoch."""
    seen = []
    real = train._train_epoch

    def spy(model, opt, batches, bf16, epoch, rate, *rest):
        seen.append((rate, [g["lr"] for g in opt.param_groups]))
        return real(model, opt, batches, bf16, epoch, rate, *rest)

    monkeypatch.setattr(train, "_train_epoch", spy)
    return seen


@pytest.mark.parametrize("kwargs, expected", [
    (dict(schedule="paper"), [paper_lr(e, 10, 0.1) for e in range(10)]),
    (dict(schedule="paper", lr_ratio=0.05), [paper_lr(e, 10, 0.1, 0.05) for e in range(10)]),
    (dict(schedule="constant"), [0.1] * 10),
    (dict(schedule="constant", averaging_start=6), [0.1] * 10),
    (dict(optimizer="gadam", averaging_start=6, lr_averaging=0.02), [averaging_lr(e, 6, 0.1, 0.02) for e in range(10)]),
    (dict(optimizer="sgd", averaging_start=4), [averaging_lr(e, 4, 0.1, 0.1 * 0.01) for e in range(10)]),
])
def test_recorded_lr_follows_the_schedule(monkeypatch, kwargs, expected):
    x, y = toy_data(n=20)
    seen = record_rates(monkeypatch)
    history = fit(linear(), (x, y), lr=0.1, epochs=10, batch_size=20, **{**CPU, **kwargs})
    assert history.column("lr") == expected
    assert [r for r, _ in seen] == expected
    assert all(groups == [r] for r, groups in seen)  # the optimiser used that rate
    assert len(set(expected)) > 1 or kwargs.get("schedule") == "constant"


# --- BatchNorm recompute --------------------------------------------------------------------


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(2)
        self.fc1 = nn.Linear(2 * 3 * 3, 6)
        self.bn1 = nn.BatchNorm1d(6, momentum=0.3)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.bn0(x).flatten(1)
        return self.fc2(self.bn1(F.relu(self.fc1(h))))


def bn_reference(model, batches):
    """Equal-weight average over batches of batch means and unbiased variances, by hand (float64)."""
    stats = {"bn0": [], "bn1": []}
    W, c = model.fc1.weight.detach().double(), model.fc1.bias.detach().double()
    for xb, _ in batches:
        xb = xb.double()
        m0 = xb.mean(dim=(0, 2, 3))
        v0b = xb.var(dim=(0, 2, 3), unbiased=False)
        v0 = xb.var(dim=(0, 2, 3), unbiased=True)
        stats["bn0"].append((m0, v0))
        z = (xb - m0.view(1, -1, 1, 1)) / (v0b.view(1, -1, 1, 1) + model.bn0.eps).sqrt()
        z = z * model.bn0.weight.detach().double().view(1, -1, 1, 1) + model.bn0.bias.detach().double().view(1, -1, 1, 1)
        h = F.relu(z.flatten(1) @ W.T + c)
        stats["bn1"].append((h.mean(0), h.var(0, unbiased=True)))
    return {k: (torch.stack([m for m, _ in v]).mean(0), torch.stack([s for _, s in v]).mean(0))
            for k, v in stats.items()}


@pytest.mark.parametrize("training", [True, False])
def test_recompute_bn_is_an_equal_weight_average(training):
    torch.manual_seed(0)
    model = BNNet()
    with torch.no_grad():
        model.bn0.weight.uniform_(0.5, 2.0)
        model.bn0.bias.normal_()
        for bn in (model.bn0, model.bn1):  # old statistics must not count
            bn.running_mean.fill_(7.0)
            bn.running_var.fill_(9.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(25, 2, 3, 3, generator=g) * 3 + 1
    batches = [(x[:10], None), (x[10:20], None), (x[20:], None)]  # unequal sizes: 10, 10, 5
    params = state_copy(model)
    model.train(training)
    recompute_bn(model, batches)
    ref = bn_reference(model, batches)
    for name in ("bn0", "bn1"):
        bn = getattr(model, name)
        torch.testing.assert_close(bn.running_mean.double(), ref[name][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), ref[name][1], atol=1e-5, rtol=1e-5)
        assert int(bn.num_batches_tracked) == 3
    # size-weighted statistics would be different: the test can tell
    pooled = torch.cat([xb for xb, _ in batches]).double().mean(dim=(0, 2, 3))
    assert (pooled - ref["bn0"][0]).abs().max() > 1e-3
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert model.bn0.momentum == 0.1 and model.bn1.momentum == 0.3
    for k in ("fc1.weight", "fc1.bias", "fc2.weight", "bn0.weight", "bn1.bias"):
        assert torch.equal(model.state_dict()[k], params[k])


def test_recompute_bn_without_batchnorm_is_a_no_op():
    model = linear()
    before = state_copy(model)
    recompute_bn(model, [(torch.full((4, 5), math.nan), None)])
    assert_state_equal(before, state_copy(model))


# --- iterate averaging ----------------------------------------------------------------------


def mlp(seed=0, bn=False):
    torch.manual_seed(seed)
    if bn:
        return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_gadam_averages_the_adamw_iterates_of_the_last_epochs():
    x, y = toy_data(n=96, d=6, seed=4)
    xv, yv = toy_data(n=40, d=6, seed=5)
    kw = dict(lr=0.01, weight_decay=0.05, batch_size=32, schedule="constant", seed=7, **CPU)
    init = mlp(seed=4)
    runs = {}
    for name, epochs in (("adamw3", 3), ("adamw4", 4)):
        runs[name] = copy.deepcopy(init)
        h = fit(runs[name], (x, y), (xv, yv), optimizer="adamw", epochs=epochs, **kw)
        runs[name + "h"] = h
    gadam = copy.deepcopy(init)
    h = fit(gadam, (x, y), (xv, yv), optimizer="gadam", epochs=4, averaging_start=3, **kw)
    for p, p3, p4 in zip(gadam.parameters(), runs["adamw3"].parameters(), runs["adamw4"].parameters()):
        expected = (p3.detach().double() + p4.detach().double()) / 2
        torch.testing.assert_close(p.detach().double(), expected, atol=1e-7, rtol=0)
        assert (p4.detach().double() - expected).abs().max() > 1e-4  # averaging made a difference
    assert h.column("averaged") == [0, 0, 1, 2]
    # the training trajectory is AdamW's; evaluations use the averaged weights
    assert h.column("train_loss") == runs["adamw4h"].column("train_loss")
    assert h.column("val_loss")[:3] == runs["adamw4h"].column("val_loss")[:3]  # epoch 3: the average of one
    assert h[-1]["val_loss"] == pytest.approx(evaluate(gadam, xv, yv)[0], rel=1e-6)
    assert h[-1]["weight_norm"] == weight_norm(gadam)


def test_gadam_leaves_batchnorm_statistics_of_the_averaged_weights():
    x, y = toy_data(n=64, d=6, seed=6)
    kw = dict(lr=0.01, weight_decay=0.05, batch_size=64, schedule="constant", **CPU)  # one batch: order-free
    init = mlp(seed=6, bn=True)
    last = copy.deepcopy(init)
    fit(last, (x, y), optimizer="adamw", epochs=4, **kw)
    model = copy.deepcopy(init)
    fit(model, (x, y), optimizer="gadam", epochs=4, averaging_start=2, **kw)
    check = copy.deepcopy(model)
    recompute_bn(check, [(x, y)])
    bn, ref, bn_last = model[1], check[1], last[1]
    torch.testing.assert_close(bn.running_mean, ref.running_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(bn.running_var, ref.running_var, atol=1e-6, rtol=1e-6)
    # the last iterate's statistics are measurably different
    assert (bn_last.running_mean - bn.running_mean).abs().max() > 1e-4


def test_last_history_row_describes_the_returned_averaged_bn_model():
    x, y = toy_data(n=70, d=6, seed=8)
    xv, yv = toy_data(n=30, d=6, seed=9)
    model = mlp(seed=8, bn=True)
    h = fit(model, (x, y), (xv, yv), optimizer="gadam", lr=0.01, epochs=4, averaging_start=2, batch_size=16,
            schedule="constant", **CPU)
    loss, _ = evaluate(model, xv, yv)
    assert h[-1]["val_loss"] == pytest.approx(loss, rel=1e-7, abs=0)


def test_gadam_with_dropout_before_batchnorm_is_independent_of_the_global_rng():
    x, y = toy_data(n=64, d=6, seed=10)

    def net():
        torch.manual_seed(10)
        return nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

    states = []
    for global_seed in (0, 1):
        model = net()
        torch.manual_seed(global_seed)
        rng = torch.get_rng_state()
        fit(model, (x, y), optimizer="gadam", lr=0.01, epochs=3, averaging_start=2, batch_size=16, seed=3, **CPU)
        assert torch.equal(torch.get_rng_state(), rng)
        states.append(state_copy(model))
    assert_state_equal(*states)


# --- checkpoints ----------------------------------------------------------------------------


def conv_net():
    torch.manual_seed(11)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3))


def image_data(n=64, seed=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("settings", [
    dict(optimizer="sgd", lr=0.05, weight_decay=1e-3),
    dict(optimizer="gadam", lr=0.01, weight_decay=1e-2, averaging_start=2),
    dict(optimizer="sgd", lr=0.05, weight_decay=1e-3, channels_last=True),
])
def test_resume_after_interruption_is_exact(tmp_path, monkeypatch, settings):
    x, y = image_data()
    val = image_data(n=20, seed=13)
    kw = dict(epochs=4, batch_size=16, augment="crop-flip", seed=3, **settings, **CPU)
    full = conv_net()
    h_full = fit(full, (x, y), val, **kw)

    calls = []
    real = train._train_epoch

    def interrupt_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_train_epoch", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        fit(conv_net(), (x, y), val, checkpoint_dir=tmp_path, checkpoint_every=1, **kw)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 2
    monkeypatch.setattr(train, "_train_epoch", real)

    resumed = conv_net()
    h = fit(resumed, (x, y), val, checkpoint_dir=tmp_path, checkpoint_every=1, **kw)
    assert_state_equal(state_copy(full), state_copy(resumed))
    assert without_seconds(h) == without_seconds(h_full)
    assert len(h) == 4 and all(isinstance(r["seconds"], float) for r in h)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp files left
    # the checkpoint does differ from the initial weights (the test can fail)
    assert not torch.equal(conv_net()[0].weight, resumed[0].weight)


def test_checkpoint_of_other_settings_is_an_error(tmp_path):
    x, y = image_data(n=32)
    kw = dict(epochs=2, batch_size=16, checkpoint_dir=tmp_path, **CPU)
    fit(conv_net(), (x, y), lr=0.05, **kw)
    model = conv_net()
    before = state_copy(model)
    with pytest.raises(ValueError, match="checkpoint") as info:
        fit(model, (x, y), lr=0.02, **kw)
    assert str(tmp_path) in str(info.value)
    assert_state_equal(before, state_copy(model))
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="unreadable"):
        fit(conv_net(), (x, y), lr=0.05, **kw)


# --- non-finite losses ----------------------------------------------------------------------


def test_nan_input_names_epoch_step_and_lr():
    x, y = toy_data(n=64)
    x[37, 2] = math.nan
    batches = TensorBatches(x, y, 16, shuffle=True, seed=5)
    step = next(i for i, (xb, _) in enumerate(batches) if torch.isnan(xb).any()) + 1
    with pytest.raises(NonFiniteLoss) as info:
        fit(linear(), (x, y), lr=0.1, epochs=3, batch_size=16, seed=5, **CPU)
    msg = str(info.value)
    assert f"epoch 1, step {step} of 4" in msg and "learning rate 0.1" in msg


class NaNAtCall(nn.Module):
    """A linear layer whose train-mode forward returns NaN at its ``at``-th call."""

    def __init__(self, at):
        super().__init__()
        torch.manual_seed(0)
        self.lin, self.at, self.calls = nn.Linear(5, 3), at, 0

    def forward(self, x):
        out = self.lin(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = out * math.nan
        return out


def test_non_finite_loss_in_a_later_epoch_names_it():
    x, y = toy_data(n=64)
    with pytest.raises(NonFiniteLoss, match=r"at epoch 2, step 2 of 4 \(learning rate 0\.05\)"):
        fit(NaNAtCall(at=6), (x, y), lr=0.05, epochs=3, batch_size=16, schedule="constant", **CPU)


def test_huge_learning_rate_raises_non_finite_loss():
    x, y = toy_data(n=64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    with pytest.raises(NonFiniteLoss) as info:
        fit(model, (x * 100, y), lr=1e30, epochs=3, batch_size=16, schedule="constant", **CPU)
    assert re.search(r"non-finite training loss (nan|inf|-inf) at epoch \d, step \d of 4 \(learning rate 1e\+30\)",
                     str(info.value)), str(info.value)


# --- argument validation --------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, word", [
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(epochs=0), "epochs"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(optimizer="gadam"), "averaging_start"),
    (dict(averaging_start=4, epochs=3), "averaging_start"),
    (dict(bf16=True), "bf16"),
    (dict(train=("short",)), "train"),
    (dict(val=("short",)), "val"),
    (dict(lr=0.0), "lr"),
    (dict(momentum=1.0), "momentum"),
    (dict(batch_size=0), "batch_size"),
    (dict(schedule="cosine"), "schedule"),
    (dict(lr_averaging=0.01), "lr_averaging"),
])
def test_bad_arguments_fail_before_training(monkeypatch, kwargs, word):
    x, y = toy_data(n=20)
    kwargs = dict(kwargs)
    train_pair, val_pair = (x, y), (x, y)
    if kwargs.get("train") == ("short",):
        kwargs.pop("train")
        train_pair = (x, y[:-1])
    if kwargs.get("val") == ("short",):
        kwargs.pop("val")
        val_pair = (x[:-2], y)
    model = linear()
    before = state_copy(model)

    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(train, "_train_epoch", no_training)
    with pytest.raises(ValueError, match=word):
        fit(model, train_pair, val_pair, **{"epochs": 3, **CPU, **kwargs})
    assert_state_equal(before, state_copy(model))


# --- history, evaluate, weight_norm ---------------------------------------------------------


def test_history_columns_types_and_values():
    x, y = toy_data(n=70, d=6, seed=20)
    xv, yv = toy_data(n=30, d=6, seed=21)
    init = mlp(seed=20, bn=True)
    model = copy.deepcopy(init)
    lr, wd, mu, bs, seed = 0.05, 1e-3, 0.9, 32, 4
    h = fit(model, (x, y), (xv, yv), lr=lr, weight_decay=wd, momentum=mu, epochs=2, batch_size=bs,
            schedule="constant", seed=seed, **CPU)
    assert len(h) == 2 and list(h[0]) == list(HISTORY_COLUMNS)
    assert h.column("epoch") == [1, 2] and h.column("averaged") == [0, 0]
    for row in h:
        assert all(type(row[c]) is int for c in ("epoch", "averaged"))
        assert all(type(row[c]) is float for c in HISTORY_COLUMNS if c not in ("epoch", "averaged"))
        assert row["seconds"] > 0
    with pytest.raises(KeyError, match="columns"):
        h.column("loss")
    frame = h.to_frame()
    assert list(frame.index) == [1, 2] and list(frame.columns) == list(HISTORY_COLUMNS[1:])
    # the last row describes the returned model
    assert (h[-1]["val_loss"], h[-1]["val_acc"]) == evaluate(model, xv, yv)
    assert h[-1]["weight_norm"] == weight_norm(model)

    # train loss/accuracy: the size-weighted mean over the epoch's mini-batches (sizes 32, 32, 6),
    # replayed by hand with the same seeded batches and the same SGD update
    ref = copy.deepcopy(init)
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=mu, weight_decay=wd)
    batches = TensorBatches(x, y, bs, shuffle=True, seed=seed)
    for epoch in range(2):
        ref.train()
        losses, hits, sizes = [], 0, []
        for xb, yb in batches:
            out = ref(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            hits += int((out.argmax(1) == yb).sum())
            sizes.append(len(yb))
        recompute_bn(ref, TensorBatches(x, y, bs, shuffle=True, seed=seed + 7919))  # statistics do not matter here
        weighted = sum(loss * s for loss, s in zip(losses, sizes)) / sum(sizes)
        assert sizes == [32, 32, 6]
        assert h[epoch]["train_loss"] == pytest.approx(weighted, rel=1e-5)
        assert h[epoch]["train_acc"] == hits / 70
        assert abs(weighted - sum(losses) / len(losses)) > 1e-4  # an unweighted mean would differ
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_history_without_validation_has_nan_val_columns():
    x, y = toy_data(n=20)
    h = fit(linear(), (x, y), epochs=1, batch_size=8, **CPU)
    assert math.isnan(h[0]["val_loss"]) and math.isnan(h[0]["val_acc"])
    assert h.to_list() == [dict(h[0])] and h.to_list()[0] is not h[0]


def test_evaluate_matches_a_manual_cross_entropy_in_eval_mode():
    torch.manual_seed(30)
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    x, y = toy_data(n=53, seed=31)
    model.train()
    loss, acc = evaluate(model, x, y, batch_size=10)  # batches of 10, the last of 3
    assert model.training  # the flag is restored
    # by hand, in float64: eval-mode BN (running statistics), no dropout
    model = model.requires_grad_(False)
    W1, b1 = model[0].weight.double(), model[0].bias.double()
    bn = model[1]
    h = x.double() @ W1.T + b1
    h = (h - bn.running_mean.double()) / (bn.running_var.double() + bn.eps).sqrt() * bn.weight.double() + bn.bias.double()
    logits = torch.relu(h) @ model[4].weight.double().T + model[4].bias.double()
    manual = (torch.logsumexp(logits, 1) - logits[torch.arange(53), y]).mean()
    assert loss == pytest.approx(float(manual), rel=1e-6)
    assert acc == int((logits.argmax(1) == y).sum()) / 53
    assert 0 < acc < 1
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, x, y, batch_size=0)


def test_evaluate_default_batches_depend_on_the_device_not_the_result():
    from flatbook.train import default_eval_batch_size

    assert default_eval_batch_size("cpu") == 128 and default_eval_batch_size(torch.device("cpu")) == 128
    assert default_eval_batch_size("cuda") == 1000 and default_eval_batch_size("cuda:1") == 1000
    torch.manual_seed(32)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = toy_data(n=300, seed=33)  # 300 images: batches 128, 128, 44 by default
    default = evaluate(model, x, y)
    one_batch = evaluate(model, x, y, batch_size=300)
    assert default[0] == pytest.approx(one_batch[0], rel=1e-6) and default[1] == one_batch[1]


def test_weight_norm_is_the_float64_norm_of_all_parameters():
    torch.manual_seed(40)
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].running_mean.fill_(100.0)  # buffers are not parameters
        model[0].weight.mul_(1e3)
    manual = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))
    assert weight_norm(model) == pytest.approx(manual, rel=1e-12)
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    assert weight_norm(model) == pytest.approx(float(flat.norm()), rel=1e-12)


def test_val_every_skips_validation_without_changing_the_training():
    """Validating (and recomputing BatchNorm statistics) every 3rd epoch gives the same weights and the
    same rows at the validated epochs as every epoch; the other rows have NaN validation numbers. A
    network with dropout AND BatchNorm: the recompute's dropout draws must not move the training."""
    x, y = image_data(n=64, seed=21)
    xv, yv = image_data(n=32, seed=22)
    runs = {}
    for every in (1, 3):
        model = conv_net()
        h = fit(model, (x, y), (xv, yv), optimizer="sgd", lr=0.05, epochs=7, batch_size=16, seed=5,
                val_every=every, **CPU)
        runs[every] = (state_copy(model), h)
    assert_state_equal(runs[1][0], runs[3][0])
    full, sparse = runs[1][1], runs[3][1]
    assert full.column("train_loss") == sparse.column("train_loss")
    assert full.column("weight_norm") == pytest.approx(sparse.column("weight_norm"), rel=1e-12)
    for i, row in enumerate(sparse.rows):
        if (i + 1) % 3 == 0 or i == 6:
            assert row["val_loss"] == full[i]["val_loss"] and row["val_acc"] == full[i]["val_acc"]
        else:
            assert math.isnan(row["val_loss"]) and math.isnan(row["val_acc"])
    with pytest.raises(ValueError, match="val_every"):
        fit(conv_net(), (x, y), val_every=0, **CPU)
