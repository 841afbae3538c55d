"""The paper's learning-rate schedules (the authors' code), per epoch.

``paper_lr(epoch, epochs, lr0, ratio=0.01)`` with t = epoch / epochs (epoch counted from 0):

    lr = lr0                                   if t <= 0.5
    lr = lr0 * (1 - (1 - ratio) (t - 0.5) / 0.4)   if t <= 0.9
    lr = lr0 * ratio                           otherwise

The iterate-averaging variant (Gadam, SWA) uses the same form with t = epoch / averaging_start
and ratio = lr_averaging / lr0, so the rate reaches lr_averaging by 0.9 of the way to the
averaging start and stays there.
"""

from __future__ import annotations

import math

__all__ = ["paper_lr", "averaging_lr"]


def _check(epoch: int, horizon: int, lr0: float, ratio: float, horizon_name: str) -> None:
    from .checks import nonnegative_int, positive_int

    nonnegative_int("epoch", epoch)
    positive_int(horizon_name, horizon)
    if not (isinstance(lr0, (int, float)) and math.isfinite(lr0) and lr0 > 0):
        raise ValueError(f"lr0 must be a positive finite number, got {lr0!r}")
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"the final ratio must be a positive finite number, got {ratio!r}")


def paper_lr(epoch: int, epochs: int, lr0: float, ratio: float = 0.01) -> float:
    """The learning rate of 0-based ``epoch`` out of ``epochs`` (constant, linear decay, floor)."""
    _check(epoch, epochs, lr0, ratio, "epochs")
    t = epoch / epochs
    if t <= 0.5:
        factor = 1.0
    elif t <= 0.9:
        factor = 1.0 - (1.0 - ratio) * (t - 0.5) / 0.4
    else:
        factor = ratio
    return lr0 * factor


def averaging_lr(epoch: int, averaging_start: int, lr0: float, lr_averaging: float) -> float:
    """The schedule with iterate averaging: the paper's form over ``averaging_start`` epochs,
    decaying to ``lr_averaging`` (e.g. Gadam on VGG-16-BN: lr0 5e-4, lr_averaging 2.5e-4,
    averaging from epoch 161)."""
    if not (isinstance(lr_averaging, (int, float)) and math.isfinite(lr_averaging) and lr_averaging > 0):
        raise ValueError(f"lr_averaging must be a positive finite number, got {lr_averaging!r}")
    return paper_lr(epoch, averaging_start, lr0, lr_averaging / lr0)
