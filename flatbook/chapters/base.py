"""What every chapter's parameter object shares.

A chapter's parameters are one frozen dataclass (``weight_decay.MlpParameters``,
``theorem.TheoremParameters``, ...), its fields named exactly as the notebook's parameters cell,
all keyword-only. Constructing it checks every value together (ValueError naming the parameter);
the notebook metadata ``flatbook.check`` names the class, so ``python -m flatbook run`` checks an
override before any kernel starts, and the notebook builds the same object from its own
namespace (``from_namespace(globals())``) after the parameters cell.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, Mapping

__all__ = ["ChapterParameters", "TrainingParameters", "CnnTrainingParameters", "SmallModelsParameters"]


@dataclass(frozen=True, kw_only=True)
class ChapterParameters:
    """Base of the chapters' parameter objects (module docstring)."""

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> "ChapterParameters":
        """The object built from the names of ``namespace`` (a notebook's ``globals()``) that are its
        fields; a field without a default that the namespace lacks is a ValueError naming it."""
        values, missing = {}, []
        for f in fields(cls):
            if not f.init:
                continue
            if f.name in namespace:
                values[f.name] = namespace[f.name]
            elif f.default is MISSING and f.default_factory is MISSING:
                missing.append(f.name)
        if missing:
            raise ValueError(f"{cls.__name__} needs the parameters {missing}")
        return cls(**values)

    def training_plan(self) -> list[Any]:
        """Every ``experiments.Config`` the chapter trains, in its order (an empty list when it trains
        nothing): ``python -m flatbook plan`` prices them and ``make book`` trains every chapter's plan
        first, in one pool. Every chapter says it; a class that does not is an error, not an empty plan."""
        raise NotImplementedError(f"{type(self).__name__} does not say what its chapter trains: define "
                                  "training_plan() (an empty list when it trains nothing)")

    def unused_parameters(self) -> dict[str, str]:
        """Parameters this run does not use, each with what it used instead (the run box shows it in
        place of the value): e.g. ``weight_decays`` when ``decay_exponents`` chose them. None here."""
        return {}


@dataclass(frozen=True, kw_only=True)
class TrainingParameters(ChapterParameters):
    """The settings of training and measuring one model that every weight-decay chapter's
    parameters cell has (names as in ``experiments.Config``)."""

    dataset: str
    train_per_class: int | None
    image_size: int | None
    epochs: int
    lr: float
    batch_size: int
    momentum: float
    lanczos_steps: int
    probes: int
    hessian_samples: int | None


@dataclass(frozen=True, kw_only=True)
class CnnTrainingParameters(TrainingParameters):
    """``TrainingParameters`` of a CIFAR architecture: the model, its options, the padding and the
    validation images."""

    model: str
    pad_to: int | None
    model_options: dict
    val_size: int
    channels_last: bool = False  # train in the channels-last layout (a config field, in the cache key)

    def __post_init__(self) -> None:
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"channels_last must be true or false, got {self.channels_last!r}")


@dataclass(frozen=True, kw_only=True)
class SmallModelsParameters(ChapterParameters):
    """The training settings shared by the Theorem 1 chapter and the Lanczos appendix (a logistic
    regression and the authors' MLP on 28x28 greyscale images)."""

    dataset: str
    image_size: int | None
    train_per_class: int | None
    epochs: int
    lr: float
    mlp_hidden: list
    seed: int
    results_dir: str | None = None
