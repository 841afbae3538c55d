"""HessianOperator and dense_hessian against independent float64 references."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flatbook.curvature import METHODS, HessianOperator, dense_hessian



@pytest.fixture(autouse=True, scope="module")
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logreg(d=6, c=3):
    torch.manual_seed(0)
    return nn.Linear(d, c).double()


def mlp(d=5, h=4, c=3):
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, c)).double()


def bn_cnn(c=3):
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(3 * 4 * 4, c)
    ).double()


class ResidualBlock(nn.Module):
    def __init__(self, ch=2, c=3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, ch, 3, padding=1)
        self.bn = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.head = nn.Linear(ch * 5 * 5, c)

    def forward(self, x):
        h = self.conv1(x)
        h = h + self.conv2(torch.relu(self.bn(h)))
        return self.head(torch.relu(h).flatten(1))


def resnet():
    torch.manual_seed(3)
    return ResidualBlock().double()


def vector_data(n=23, d=5, c=3, seed=0):
    g = _gen(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def image_data(n=12, size=6, c=3, seed=0):
    g = _gen(seed)
    return torch.randn(n, 1, size, size, generator=g), torch.randint(0, c, (n,), generator=g)


LOSS = nn.CrossEntropyLoss()


def reference_hessian(model: nn.Module, x, y, train_bn: bool) -> torch.Tensor:
    """torch.autograd.functional.hessian of the mean loss on all of (x, y), on a deep copy."""
    ref = copy.deepcopy(model)
    ref.eval()
    if train_bn:
        for m in ref.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
                m.train()
    names = [n for n, _ in ref.named_parameters()]
    values = tuple(p.detach().clone() for p in ref.parameters())

    def loss(*flat):
        return LOSS(torch.func.functional_call(ref, dict(zip(names, flat)), (x,)), y)

    blocks = torch.autograd.functional.hessian(loss, values)
    sizes = [v.numel() for v in values]
    return torch.cat([torch.cat([blocks[i][j].reshape(sizes[i], sizes[j]) for j in range(len(values))], 1)
                      for i in range(len(values))], 0)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def _assert_unchanged(model, before):
    state, flags = before
    after = model.state_dict()
    assert state.keys() == after.keys()
    for k in state:
        assert torch.equal(state[k], after[k]), k
    assert flags == [m.training for m in model.modules()]


def rel(a, b):
    return float((a - b).norm() / b.norm())


CASES = [
    ("logreg", logreg, lambda: vector_data(d=6), "eval"),
    ("mlp", mlp, vector_data, "eval"),
    ("bn_cnn-eval", bn_cnn, image_data, "eval"),
    ("bn_cnn-train", bn_cnn, image_data, "train"),
    ("resnet-eval", resnet, lambda: image_data(size=5), "eval"),
    ("resnet-train", resnet, lambda: image_data(size=5), "train"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name, make_model, make_data, bn_mode", CASES, ids=[c[0] for c in CASES])
def test_dense_hessian_matches_autograd_reference_and_matvec(name, make_model, make_data, bn_mode, method):
    model, (x, y) = make_model(), make_data()
    model.train()  # the operator must not care, nor change it
    before = _state(model)
    # one batch in train mode (batch statistics of all the data); several batches otherwise
    bs = len(y) if bn_mode == "train" else 5
    H = dense_hessian(model, LOSS, (x, y), batch_size=bs, bn_mode=bn_mode, block=7, method=method)
    R = reference_hessian(model, x, y, train_bn=bn_mode == "train")
    assert rel(H, R) < 1e-10
    assert torch.allclose(H, H.T, atol=1e-12 * R.abs().max())
    op = HessianOperator(model, LOSS, (x, y), batch_size=bs, bn_mode=bn_mode, method=method)
    v = torch.randn(op.num_params, generator=_gen(5))
    assert rel(op.matvec(v).cpu(), H @ v) < 1e-10
    V = torch.randn(op.num_params, 3, generator=_gen(6))
    assert rel(op.matmat(V).cpu(), H @ V) < 1e-10
    for strategy in ("vmap", "loop"):
        op_s = HessianOperator(model, LOSS, (x, y), batch_size=bs, bn_mode=bn_mode, method=method,
                               block_strategy=strategy)
        assert rel(op_s.matmat(V).cpu(), H @ V) < 1e-10
    _assert_unchanged(model, before)


def test_logistic_regression_closed_form_and_zero_eigenvalues():
    d, c = 6, 3
    model, (x, y) = logreg(d, c), vector_data(n=40, d=d, c=c)
    H = dense_hessian(model, LOSS, (x, y), batch_size=16)
    # parameters are ordered (weight (c x d) row-major, bias (c)); closed form per sample:
    # (diag p - p p^T) kron x~ x~^T in the (class, feature) ordering with x~ = [x; 1]
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
    xt = torch.cat([x, torch.ones(len(x), 1)], 1)
    A = torch.einsum("nij,nkl->nikjl", torch.diag_embed(p) - p[:, :, None] * p[:, None, :],
                     xt[:, :, None] * xt[:, None, :]).mean(0)  # (c, d+1, c, d+1)
    # reorder: weight entries (i, k<d) first, then biases (i, k=d)
    order = [i * (d + 1) + k for i in range(c) for k in range(d)] + [i * (d + 1) + d for i in range(c)]
    closed = A.reshape(c * (d + 1), c * (d + 1))[order][:, order]
    assert rel(H, closed) < 1e-12
    eig = torch.linalg.eigvalsh(H)
    assert int((eig.abs() < 1e-12 * eig.abs().max()).sum()) >= d + 1  # softmax invariance


def test_batch_size_does_not_change_the_hessian_and_last_batch_is_weighted():
    model, (x, y) = mlp(), vector_data(n=23)
    Hs = [dense_hessian(model, LOSS, (x, y), batch_size=b) for b in (1, 4, 10, 23)]  # 23 = 2*10 + 3
    for H in Hs[1:]:
        assert rel(H, Hs[0]) < 1e-12
    # an iterable of uneven batches gives the same
    batches = [(x[:3], y[:3]), (x[3:20], y[3:20]), (x[20:], y[20:])]
    assert rel(dense_hessian(model, LOSS, batches), Hs[0]) < 1e-12
    R = reference_hessian(model, x, y, train_bn=False)
    assert rel(Hs[0], R) < 1e-10


def test_train_mode_batches_use_their_own_statistics():
    model, (x, y) = bn_cnn(), image_data(n=12)
    H_two = dense_hessian(model, LOSS, (x, y), batch_size=6, bn_mode="train")
    R = 0.5 * (reference_hessian(model, x[:6], y[:6], True) + reference_hessian(model, x[6:], y[6:], True))
    assert rel(H_two, R) < 1e-10
    H_one = dense_hessian(model, LOSS, (x, y), batch_size=12, bn_mode="train")
    assert rel(H_two, H_one) > 1e-3  # batch statistics genuinely depend on the batch


def test_weight_decay_shifts_every_eigenvalue_by_gamma():
    model, (x, y) = mlp(), vector_data()
    H0 = dense_hessian(model, LOSS, (x, y), batch_size=8)
    H1 = dense_hessian(model, LOSS, (x, y), batch_size=8, weight_decay=0.25)
    assert torch.allclose(torch.linalg.eigvalsh(H1), torch.linalg.eigvalsh(H0) + 0.25, atol=1e-12)


def test_parameter_restriction_is_the_diagonal_block():
    model, (x, y) = mlp(), vector_data()
    H = dense_hessian(model, LOSS, (x, y), batch_size=8)
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for p in model.parameters()]
    start = sum(sizes[:2])  # the second Linear's weight and bias: names[2], names[3]
    block = H[start:start + sizes[2] + sizes[3], start:start + sizes[2] + sizes[3]]
    Hb = dense_hessian(model, LOSS, (x, y), batch_size=8, params=[names[2], names[3]])
    assert rel(Hb, block) < 1e-12
    Hp = dense_hessian(model, LOSS, (x, y), batch_size=8, params=[model[2].weight, model[2].bias])
    assert torch.equal(Hp, Hb)


@pytest.mark.parametrize("method", METHODS)
def test_products_follow_the_current_weights(method):
    model, (x, y) = mlp(), vector_data()
    op = HessianOperator(model, LOSS, (x, y), batch_size=8, method=method)
    v = torch.randn(op.num_params, generator=_gen(2))
    before = op.matvec(v)
    with torch.no_grad():  # an in-place update, as an optimiser step makes
        model[0].weight.mul_(1.5)
    assert rel(op.matvec(v).cpu(), dense_hessian(model, LOSS, (x, y), batch_size=8) @ v) < 1e-10
    model[2].weight = nn.Parameter(model[2].weight.detach() * 0.5)  # a replaced parameter tensor
    after = op.matvec(v)
    assert rel(after.cpu(), dense_hessian(model, LOSS, (x, y), batch_size=8) @ v) < 1e-10
    assert rel(after, before) > 1e-3


def test_float32_model_products_accumulate_in_float64():
    model, (x, y) = mlp(), vector_data()
    H64 = dense_hessian(model, LOSS, (x, y), batch_size=8)
    model32 = copy.deepcopy(model).float()
    op = HessianOperator(model32, LOSS, (x.float(), y), batch_size=8)
    v = torch.randn(op.num_params, generator=_gen(1))
    out = op.matvec(v)
    assert out.dtype == torch.float64 and op.settings["dtype"] == "float32"
    assert rel(out, H64 @ v) < 1e-5


def test_settings_recorded():
    model, (x, y) = bn_cnn(), image_data()
    op = HessianOperator(model, LOSS, (x, y), batch_size=5, bn_mode="eval", weight_decay=1e-3)
    s = op.settings
    assert (s["bn_mode"], s["weight_decay"], s["num_samples"], s["num_batches"], s["batch_size"]) == ("eval", 1e-3, 12, 3, 5)
    assert s["num_params"] == op.num_params == sum(p.numel() for p in model.parameters())


# --- bad input ---------------------------------------------------------------------------


class _Shuffled:
    """A re-iterable whose batches change between passes (as a shuffling DataLoader's do)."""

    def __init__(self, x, y):
        self.x, self.y, self.calls = x, y, 0

    def __iter__(self):
        self.calls += 1
        cut = 4 if self.calls == 1 else 5
        yield self.x[:cut], self.y[:cut]
        yield self.x[cut:], self.y[cut:]


def test_bad_input_is_refused_up_front():
    model, (x, y) = mlp(), vector_data()
    with pytest.raises(ValueError, match="bn_mode must be one of"):
        HessianOperator(model, LOSS, (x, y), batch_size=4, bn_mode="inference")
    with pytest.raises(ValueError, match="method must be one of"):
        HessianOperator(model, LOSS, (x, y), batch_size=4, method="finite-differences")
    with pytest.raises(ValueError, match="block_strategy must be one of"):
        HessianOperator(model, LOSS, (x, y), batch_size=4, block_strategy="fast")
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        HessianOperator(model, LOSS, (x, y), batch_size=4, weight_decay=-1.0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        HessianOperator(model, LOSS, (x, y))
    with pytest.raises(ValueError, match="data is empty"):
        HessianOperator(model, LOSS, (x[:0], y[:0]), batch_size=4)
    with pytest.raises(ValueError, match="data is empty"):
        HessianOperator(model, LOSS, [])
    with pytest.raises(ValueError, match="RE-iterable"):
        HessianOperator(model, LOSS, iter([(x, y)]))
    frozen = mlp()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        HessianOperator(frozen, LOSS, (x, y), batch_size=4)
    with pytest.raises(ValueError, match="not a parameter name"):
        HessianOperator(model, LOSS, (x, y), batch_size=4, params=["nope"])
    op = HessianOperator(model, LOSS, (x, y), batch_size=4)
    with pytest.raises(ValueError, match=f"vector of length {op.num_params}"):
        op.matvec(torch.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        op.matvec(torch.full((op.num_params,), float("nan")))
    with pytest.raises(ValueError, match="data changed between passes"):  # found by the second pass
        HessianOperator(model, LOSS, _Shuffled(x, y)).matvec(torch.ones(op.num_params))


def test_non_finite_product_is_an_error():
    model, (x, y) = mlp(), vector_data()
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    op = HessianOperator(model, LOSS, (x, y), batch_size=4)
    with pytest.raises(ValueError, match="not finite"):
        op.matvec(torch.ones(op.num_params))


# --- review follow-ups: running statistics, custom norms, hooks, loaders, precision --------


def _with_trained_statistics(model, x, steps=3):
    """Give BatchNorm non-default running statistics (as a trained model has)."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(x * 3 + 1)
    return model


def test_eval_mode_uses_the_current_running_statistics():
    model, (x, y) = bn_cnn(), image_data()
    _with_trained_statistics(model, x)
    op = HessianOperator(model, LOSS, (x, y), batch_size=4, bn_mode="eval")
    v = torch.randn(op.num_params, generator=_gen(3))
    ref = reference_hessian(model, x, y, train_bn=False)
    assert rel(op.matvec(v).cpu(), ref @ v) < 1e-10  # non-default statistics are used, not reset ones
    _with_trained_statistics(model, x * -2)  # statistics move after the operator was built
    ref2 = reference_hessian(model, x, y, train_bn=False)
    assert rel(ref2, ref) > 1e-3
    assert rel(op.matvec(v).cpu(), ref2 @ v) < 1e-10
    state = copy.deepcopy(model.state_dict())
    fresh = bn_cnn()
    fresh.load_state_dict(state)
    model[1].running_var = model[1].running_var * 2  # a replaced buffer tensor is followed too
    assert rel(op.matvec(v).cpu(), reference_hessian(model, x, y, train_bn=False) @ v) < 1e-10


class HandmadeNorm(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(c))

    def forward(self, x):
        return x - (x.mean((0, 2, 3), keepdim=True) if self.training else self.running_mean.view(1, -1, 1, 1))


def test_unknown_norm_layers_are_refused_in_train_mode_and_instance_norm_works():
    torch.manual_seed(0)
    x, y = image_data()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), HandmadeNorm(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    with pytest.raises(ValueError, match="HandmadeNorm keeps running statistics"):
        HessianOperator(model, LOSS, (x, y), batch_size=4, bn_mode="train")
    HessianOperator(model, LOSS, (x, y), batch_size=4, bn_mode="eval")  # fine: running statistics
    inorm = nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2, affine=True, track_running_stats=True),
                          nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    _with_trained_statistics(inorm, x)
    for mode in ("train", "eval"):
        H = dense_hessian(inorm, LOSS, (x, y), batch_size=12, bn_mode=mode)
        R = reference_hessian(inorm, x, y, train_bn=mode == "train")
        assert rel(H, R) < 1e-10, mode
    assert rel(dense_hessian(inorm, LOSS, (x, y), batch_size=12, bn_mode="train"),
               dense_hessian(inorm, LOSS, (x, y), batch_size=12, bn_mode="eval")) > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_user_backward_hooks_do_not_run_or_change_products(method):
    model, (x, y) = mlp(), vector_data()
    H = dense_hessian(model, LOSS, (x, y), batch_size=8, method=method)
    calls = []
    model[0].register_full_backward_hook(lambda m, gi, go: calls.append(1) or tuple(g * 0 if g is not None else g for g in gi))
    model[2].register_forward_hook(lambda m, i, o: calls.append(2))
    H2 = dense_hessian(model, LOSS, (x, y), batch_size=8, method=method)
    assert torch.equal(H, H2)
    assert 1 not in calls  # the backward hook never ran (forward hooks are part of the function)


def test_shuffling_dataloader_is_refused():
    model, (x, y) = mlp(), vector_data()
    ds = torch.utils.data.TensorDataset(x, y)
    with pytest.raises(ValueError, match="RandomSampler yields different batches"):
        HessianOperator(model, LOSS, torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True))
    op = HessianOperator(model, LOSS, torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False))
    v = torch.randn(op.num_params, generator=_gen(0))
    assert rel(op.matvec(v), dense_hessian(model, LOSS, (x, y), batch_size=8) @ v) < 1e-12


def test_float32_products_are_accumulated_in_float64_exactly():
    model32 = mlp().float()
    x, y = vector_data(n=300)
    x = x.float()
    op = HessianOperator(model32, LOSS, (x, y), batch_size=1)
    v = torch.randn(op.num_params, generator=_gen(4))
    got = op.matvec(v)
    # reference: the same float32 per-sample products, summed in float64 by hand
    ref = torch.zeros(op.num_params, dtype=torch.float64)
    for i in range(len(y)):
        ref += HessianOperator(model32, LOSS, (x[i:i + 1], y[i:i + 1]), batch_size=1).matvec(v) / len(y)
    assert got.dtype == torch.float64
    assert rel(got, ref) < 1e-13  # float32 accumulation of 300 terms would be off by ~1e-7


def test_grads_and_requires_grad_are_untouched():
    model, (x, y) = mlp(), vector_data()
    LOSS(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model[2].bias.requires_grad_(False)
    dense_hessian(model, LOSS, (x, y), batch_size=8)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]


def test_more_bad_input():
    model, (x, y) = mlp(), vector_data()
    with pytest.raises(ValueError, match="must return the MEAN loss over the batch as a scalar"):
        HessianOperator(model, nn.CrossEntropyLoss(reduction="none"), (x, y), batch_size=8)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        HessianOperator(lambda t: t, LOSS, (x, y), batch_size=8)
    bn = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match="batch of size 1"):
        HessianOperator(bn, LOSS, (x[:9], y[:9]), batch_size=8, bn_mode="train")
    HessianOperator(bn, LOSS, (x[:9], y[:9]), batch_size=8, bn_mode="eval")


def test_models_with_cached_non_leaf_tensors_can_be_measured():
    class Caching(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3)
            self.last = None

        def forward(self, x):
            self.last = self.lin(x)
            return self.last

    model = Caching().double()
    x, y = vector_data()
    model(x)  # now holds a non-leaf tensor
    H = dense_hessian(model, LOSS, (x, y), batch_size=8)
    plain = Caching().double()
    plain.load_state_dict(model.state_dict())  # the reference deep-copies, so give it a clean model
    assert rel(H, reference_hessian(plain, x, y, train_bn=False)) < 1e-10
