"""flatbook.decay: the decay exponent E against sums by hand (SGD with its momentum factor, decoupled
decay, the paper's schedules), the training split it counts steps over, and the weight decays
that reach a given E."""

from __future__ import annotations

import pytest


def test_decay_exponent_against_hand_sums():
    from flatbook.experiments import paper_config
    from flatbook.schedules import paper_lr
    from flatbook.decay import decay_exponent

    # constant lr 0.1, 300 images in batches of 128 (3 steps an epoch), 2 epochs, momentum 0.9
    c = paper_config("mlp", epochs=2, schedule="constant", lr=0.1, weight_decay=1e-3)
    assert decay_exponent(c, 300) == pytest.approx(6 * 0.1 * 1e-3 / (1 - 0.9), rel=1e-12)
    # the paper's schedule for PreResNet on CIFAR-100: 352 steps an epoch, 300 epochs
    p = paper_config("preresnet164", weight_decay=5e-4)
    expected = sum(paper_lr(e, 300, 0.1, 0.01) for e in range(300)) * 352 * 5e-4 / 0.1
    assert decay_exponent(p, 45_000) == pytest.approx(expected, rel=1e-12)
    assert decay_exponent(p) == decay_exponent(p, 45_000)  # the paper's split by default
    # decoupled decay (Gadam): no momentum factor; the averaging schedule
    from flatbook.schedules import averaging_lr

    g = paper_config("vgg16bn", optimizer="gadam", lr=5e-4, weight_decay=0.25, averaging_start=161, lr_averaging=2.5e-4)
    expected = sum(averaging_lr(e, 161, 5e-4, 2.5e-4) for e in range(300)) * 352 * 0.25
    assert decay_exponent(g, 45_000) == pytest.approx(expected, rel=1e-12)
    assert decay_exponent(c.replace(weight_decay=0.0), 300) == 0.0
    with pytest.raises(ValueError, match="adam"):
        decay_exponent(c.replace(optimizer="adam"), 300)
    with pytest.raises(ValueError, match="train_samples"):
        decay_exponent(c, 0)


def test_train_split_size():
    from flatbook.experiments import paper_config
    from flatbook.decay import train_split_size

    assert train_split_size(paper_config("wrn28x10")) == 45_000
    assert train_split_size(paper_config("mlp")) == 55_000
    assert train_split_size(paper_config("mlp", val_size=1000)) == 59_000
    assert train_split_size(paper_config("wrn28x10", train_per_class=10)) == 1_000  # 100 classes
    assert train_split_size(paper_config("mlp", train_per_class=10)) == 100


def test_decay_exponent_of_a_two_epoch_paper_schedule_by_hand():
    """The paper's schedule over 2 epochs keeps lr0 in both (t = 0 and t = 0.5 <= 0.5); over 5 epochs
    the factors are 1, 1, 1, 1 - 0.99 * 0.25 and 1 - 0.99 * 0.75. 300 images in batches of 128: 3 steps."""
    from flatbook.experiments import paper_config
    from flatbook.decay import decay_exponent

    two = paper_config("preresnet164", epochs=2, lr=0.1, weight_decay=2e-3)
    assert decay_exponent(two, 300) == pytest.approx(3 * (0.1 + 0.1) * 2e-3 / (1 - 0.9), rel=1e-12)
    five = two.replace(epochs=5)
    factors = [1, 1, 1, 1 - 0.99 * 0.25, 1 - 0.99 * 0.75]
    assert decay_exponent(five, 300) == pytest.approx(3 * 0.1 * sum(factors) * 2e-3 / 0.1, rel=1e-12)


def test_weight_decays_for_exponents_invert_the_decay_exponent():
    from flatbook.experiments import paper_config
    from flatbook.decay import decay_exponent, weight_decays_for_exponents

    base = paper_config("wrn28x10", dataset="fashion-mnist", train_per_class=200, image_size=14, pad_to=16,
                        model_options={"depth": 10, "width": 1}, epochs=40, val_size=4000)
    wds = weight_decays_for_exponents(base, [0.0, 1.5, 37.2])
    assert wds[0] == 0.0 and wds[1] == pytest.approx(1.5 / 457.84, rel=1e-3)
    for e, wd in zip([1.5, 37.2], wds[1:]):
        achieved = decay_exponent(base.replace(weight_decay=wd))
        assert e <= achieved <= e * (1 + 1e-3)  # rounded up to 4 digits: never below the target
    assert decay_exponent(base.replace(weight_decay=weight_decays_for_exponents(base, [1.0])[0])) >= 1.0
    assert wds == weight_decays_for_exponents(base, [0.0, 1.5, 37.2])  # the same floats every time
    for bad in ([], [1.0, 1.0], [-1.0], [float("nan")], "1.5"):
        with pytest.raises(ValueError, match="decay_exponents"):
            weight_decays_for_exponents(base, bad)
