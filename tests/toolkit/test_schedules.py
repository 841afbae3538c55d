"""The paper's learning-rate schedule, at given epochs."""

from __future__ import annotations

import pytest

from flatbook.schedules import averaging_lr, paper_lr


@pytest.mark.parametrize("epoch, expected", [
    (0, 0.1), (150, 0.1),          # t <= 0.5: constant
    (151, 0.1 * (1 - 0.99 * (151 / 300 - 0.5) / 0.4)),
    (210, 0.1 * (1 - 0.99 * 0.2 / 0.4)),  # t = 0.7: halfway down the ramp = 0.0505
    (270, 0.001),                  # t = 0.9: the floor lr0 * 0.01
    (271, 0.001), (299, 0.001),
])
def test_paper_schedule_for_300_epochs(epoch, expected):
    assert paper_lr(epoch, 300, 0.1) == pytest.approx(expected, rel=1e-12)


def test_values_are_monotone_and_continuous():
    lrs = [paper_lr(e, 1000, 0.01) for e in range(1000)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[500] == pytest.approx(0.01) and lrs[900] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-4)
    assert max(abs(a - b) for a, b in zip(lrs, lrs[1:])) < 0.01 * 0.99 / 400 * 1.0001  # linear steps only


def test_averaging_variant_reaches_the_averaging_rate():
    assert averaging_lr(0, 161, 5e-4, 2.5e-4) == pytest.approx(5e-4)
    assert averaging_lr(80, 161, 5e-4, 2.5e-4) == pytest.approx(5e-4)  # t = 0.497
    assert averaging_lr(145, 161, 5e-4, 2.5e-4) == pytest.approx(2.5e-4)  # t = 0.9006: at the averaging rate
    assert averaging_lr(299, 161, 5e-4, 2.5e-4) == pytest.approx(2.5e-4)


@pytest.mark.parametrize("call, message", [
    (lambda: paper_lr(-1, 10, 0.1), "epoch must be an integer >= 0"),
    (lambda: paper_lr(0, 0, 0.1), "epochs must be an integer >= 1"),
    (lambda: paper_lr(0, 10, 0.0), "lr0 must be a positive"),
    (lambda: averaging_lr(0, 10, 0.1, -1.0), "lr_averaging must be a positive"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
