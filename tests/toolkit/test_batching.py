"""Tensor batching: seeded shuffles, fixed evaluation order, exact crop-and-flip, subsets, padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flatbook.batching import TensorBatches, balanced_subset, pad_to, random_crop_flip


def data(n=50):
    x = torch.arange(n * 2 * 4 * 4, dtype=torch.float32).reshape(n, 2, 4, 4)
    return x, torch.arange(n) % 5


def test_evaluation_batches_are_fixed_and_cover_everything_once():
    x, y = data(23)
    batches = TensorBatches(x, y, 5)
    first, second = list(batches), list(batches)
    assert [len(b[1]) for b in first] == [5, 5, 5, 5, 3] and len(batches) == 5
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
    assert torch.equal(torch.cat([b[0] for b in first]), x)
    assert [len(b[1]) for b in TensorBatches(x, y, 5, drop_last=True)] == [5] * 4


def test_shuffled_epochs_are_seeded_permutations():
    x, y = data(40)
    rng_before = torch.random.get_rng_state()
    a = TensorBatches(x, y, 8, shuffle=True, seed=3)
    e0, e1 = torch.cat([b[1] for b in a]), torch.cat([b[0][:, 0, 0, 0] for b in a])
    b = TensorBatches(x, y, 8, shuffle=True, seed=3)
    assert torch.equal(torch.cat([t[1] for t in b]), e0)  # same seed, same epoch 0
    b.set_epoch(1)
    assert torch.equal(torch.cat([t[0][:, 0, 0, 0] for t in b]), e1)  # resume at epoch 1
    assert sorted(e1.tolist()) == sorted(x[:, 0, 0, 0].tolist())  # a permutation: each sample once
    c = TensorBatches(x, y, 8, shuffle=True, seed=4)
    assert not torch.equal(torch.cat([t[1] for t in c]), e0) or not torch.equal(
        torch.cat([t[0][:, 0, 0, 0] for t in c]), x[:, 0, 0, 0])
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the global RNG is untouched


def test_crop_flip_is_a_window_of_the_zero_padded_image():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    out = random_crop_flip(x, torch.Generator().manual_seed(5), padding=2)
    gen = torch.Generator().manual_seed(5)  # replay the draws
    offsets = torch.randint(0, 5, (64, 2), generator=gen)
    flips = torch.rand(64, generator=gen) < 0.5
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(64):
        oy, ox = offsets[i].tolist()
        window = padded[i, :, oy:oy + 8, ox:ox + 8]
        assert torch.equal(out[i], window.flip(-1) if flips[i] else window)
    assert 10 < int(flips.sum()) < 54 and len({tuple(o) for o in offsets.tolist()}) > 10


def test_augmented_batches_are_reproducible():
    x, y = data(16)
    a = [b[0] for b in TensorBatches(x, y, 4, shuffle=True, seed=1, augment="crop-flip")]
    b = [b[0] for b in TensorBatches(x, y, 4, shuffle=True, seed=1, augment="crop-flip")]
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and a[0].shape == (4, 2, 4, 4)


def test_balanced_subset_and_padding():
    y = torch.tensor([0, 1, 2] * 10 + [0] * 5)
    idx = balanced_subset(y, 4, seed=0)
    assert torch.equal(torch.bincount(y[idx]), torch.tensor([4, 4, 4]))
    assert torch.equal(idx, torch.sort(idx).values) and torch.equal(idx, balanced_subset(y, 4, seed=0))
    with pytest.raises(ValueError, match="fewer than per_class=11"):
        balanced_subset(y, 11)
    img = torch.ones(2, 1, 28, 28)
    out = pad_to(img, 32, channels=3)
    assert out.shape == (2, 3, 32, 32)
    assert out[:, :, 2:30, 2:30].eq(1).all() and out.sum() == 2 * 3 * 28 * 28
    with pytest.raises(ValueError, match="smaller than the images"):
        pad_to(img, 20)


def test_bad_arguments():
    x, y = data(4)
    with pytest.raises(ValueError, match="augment must be one of"):
        TensorBatches(x, y, 2, augment="mixup")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        TensorBatches(x, y, 0)
    with pytest.raises(ValueError, match="x has 4 samples but y has 3"):
        TensorBatches(x, y[:3], 2)


def test_fixed_batches_feed_the_hessian_operator():
    from flatbook.curvature import HessianOperator, dense_hessian

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32, 5)).double()
    x, y = data(20)
    x = x.double() / 1000
    op = HessianOperator(model, torch.nn.CrossEntropyLoss(), TensorBatches(x, y, 6))
    v = torch.randn(op.num_params, dtype=torch.float64)
    ref = dense_hessian(model, torch.nn.CrossEntropyLoss(), (x, y), batch_size=6) @ v
    assert torch.allclose(op.matvec(v), ref, rtol=1e-12, atol=1e-15)
