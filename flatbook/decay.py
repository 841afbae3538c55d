"""How long weight decay acts in a training run: the decay exponent.

Weight decay alone shrinks the weights as w -> w exp(-E) over a run, with

    E = sum over optimisation steps t of lr_t * wd / (1 - momentum)   (SGD with L2: the heavy-ball
                                                                       steady state amplifies it)
    E = sum over optimisation steps t of lr_t * wd                    (decoupled decay: AdamW, Gadam)

so E compares how long weight decay acted in runs of different lengths, schedules and optimisers
(a short run with the paper's coefficients has a far smaller E than the paper's run). It is not a
prediction of ||w||, which the loss gradient also moves.

* ``decay_exponent(config, train_samples)`` and ``decay_exponent_of(result)``;
* ``weight_decays_for_exponents(config, exponents)``: the weight decays that reach given E;
* ``train_split_size(config)``: the training images a config trains on (steps per epoch);
* ``weight_norm_change(result)``: the relative change of ||w|| over the last epochs of a run.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["decay_exponent", "decay_exponent_of", "weight_decays_for_exponents", "train_split_size",
           "weight_norm_change"]


def train_split_size(config: Any) -> int:
    """The number of training images ``config`` trains on: the training file less the last
    ``val_size`` images, or the class-balanced subset (``train_per_class`` per class) of it."""
    from .data import TRAIN_FILE_SIZES
    from .experiments import Config, num_classes

    c = Config.from_dict(config).resolved()
    n = TRAIN_FILE_SIZES[c.dataset] - c.val_size
    if c.train_per_class is not None:
        n = min(n, c.train_per_class * num_classes(c.dataset))
    return n


def decay_exponent(config: Any, train_samples: int | None = None) -> float:
    """sum over every optimisation step t of lr_t * wd / (1 - momentum) for SGD with L2 (the
    heavy-ball steady state multiplies the decay term's step by 1 / (1 - momentum)), or of
    lr_t * wd for decoupled decay (AdamW, Gadam): the exponent E in w -> w exp(-E), how far the
    weight-decay term ALONE would shrink the weights over the run (ceil(train_samples /
    batch_size) steps an epoch, the config's schedule; ``train_samples`` None: the config's
    ``train_split_size``). It compares how long weight decay acts in
    two runs; it is not a prediction of ||w||, which the loss gradient also moves. Adam with
    coupled L2 is refused: its decay passes through the adaptive normalisation."""
    from .checks import positive_int
    from .experiments import Config
    from .train import learning_rate

    c = Config.from_dict(config).resolved()
    train_samples = train_split_size(c) if train_samples is None else positive_int("train_samples", train_samples)
    factor = _momentum_factor(c, "no decay exponent")
    steps = math.ceil(train_samples / c.batch_size)
    total_lr = sum(learning_rate(e, epochs=c.epochs, lr=c.lr, schedule=c.schedule, lr_ratio=c.lr_ratio,
                                 averaging_start=c.averaging_start, lr_averaging=c.lr_averaging)
                   for e in range(c.epochs)) * steps
    return total_lr * c.weight_decay * factor


def _momentum_factor(c: Any, refusal: str) -> float:
    """1 / (1 - momentum) for SGD with L2 (the heavy-ball steady state multiplies the decay step by
    it), 1 for decoupled decay; Adam with coupled L2 is refused (``refusal`` ends the message)."""
    if c.optimizer == "adam":
        raise ValueError(f"optimizer 'adam' couples the L2 term with the adaptive normalisation: {refusal}")
    return 1.0 / (1.0 - c.momentum) if c.optimizer == "sgd" else 1.0


def decay_per_step(config: Any) -> float:
    """How far the weight-decay term alone shrinks the weights in ONE step at the peak learning
    rate: eta_max * wd / (1 - momentum) for SGD with L2 (the heavy-ball steady state), eta_max * wd
    for decoupled decay. Two runs with the same decay exponent E can differ here: a short run
    reaches E with a large eta * gamma, which sets a different weight-norm equilibrium."""
    from .experiments import Config

    c = Config.from_dict(config).resolved()
    return c.lr * c.weight_decay * _momentum_factor(c, "no decay per step")


def decay_exponent_of(result: Any) -> float:
    """``decay_exponent`` of a Result's config over the training images it had; NaN where there is
    none (Adam's coupled L2)."""
    try:
        return decay_exponent(result.config, result.metrics.get("train_samples"))
    except ValueError:
        return math.nan


def weight_decays_for_exponents(config: Any, exponents: Sequence[float], train_samples: int | None = None) -> list[float]:
    """The weight decays whose decay exponent E (``decay_exponent``) over ``config``'s run is each of
    ``exponents``: E is linear in the weight decay, so wd = E / E(wd = 1), rounded UP to 4 significant
    digits (so E is at least the target; the same exponents give the same floats, so chapters that
    share runs share cache entries)."""
    from .checks import weight_decays
    from .experiments import Config

    weight_decays("decay_exponents", exponents, minimum=1, what="exponent")

    unit = decay_exponent(Config.from_dict(config).replace(weight_decay=1.0), train_samples)
    if unit <= 0:
        raise ValueError("this run's schedule gives no decay exponent (zero learning rate sum)")
    return [_round_up_4(e / unit) for e in exponents]


def _round_up_4(x: float) -> float:
    """``x`` rounded UP to 4 significant digits (so a weight decay chosen for an exponent E gives at
    least E, never 0.9999 for 1)."""
    if x <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(x)) - 3)
    return float(f"{math.ceil(x / step - 1e-9) * step:.4g}")


def weight_norm_change(result: Any, fraction: float = 0.2) -> float:
    """Relative change of ||w|| over the last ``fraction`` of the epochs (history rows):
    (||w||_last - ||w||_start) / ||w||_start, where start is the row ``fraction`` of the run before
    the end. Near 0: the weights have settled; large: weight decay (or the loss) still moves them."""
    norms = [row["weight_norm"] for row in result.history]
    if len(norms) < 2:
        return math.nan
    k = max(1, int(round(fraction * len(norms))))
    start = norms[-1 - k]
    return (norms[-1] - start) / start if start else math.nan
