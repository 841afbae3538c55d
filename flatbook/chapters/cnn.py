"""The driver of the three CIFAR-architecture weight-decay chapters (wd_allcnnc, wd_preresnet,
wd_wrn): one object holds a chapter's parameters, checked once, and every step the notebooks
show (training over weight decays x seeds, the regime facts, the spectra, the tables, the cost of
the paper's own setting, and the claims) is a method, so the three notebooks differ only in
their prose and the model they name.

The claims are ``weight_decay.sweep_claims`` with the regime of the paper's Section 4: the decay
exponent E of the largest weight decay >= 1 (the paper's E beside it), at least 2 seeds and
validation accuracies resolved (at least 4,000 validation images; ``claims.resolution_condition``
says why images rather than an SE bound). A condition that fails makes the claims "untestable" and
is named with its shortfall. Whether the runs interpolate (>= 99% training accuracy) is stated with
every claim, by the one rule ``weight_decay.interpolation_note`` applies to every model and to the
paper's own runs; it gates none of Section 4's claims, which the paper makes for non-interpolating
models too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import CnnTrainingParameters

__all__ = ["MODEL_NAMES", "CnnChapter", "AllCnnCChapter", "PreResNetChapter", "WideResNetChapter",
           "DecayGridParameters", "ablation_table", "ablation_sentence", "cost_sentence", "cost_table", "decay_grid_sentence"]

MODEL_NAMES = {"allcnnc": "All-CNN-C", "preresnet164": "PreResNet-164", "wrn28x10": "WideResNet-28-10"}


@dataclass(frozen=True, kw_only=True)
class CnnChapter(CnnTrainingParameters):
    """A CIFAR-architecture weight-decay chapter's parameters (the notebook's parameters cell, by
    keyword); construction checks them all (ValueError naming the parameter). ``val_every``:
    validate every k epochs (and the last); ``decay_exponents``: when given, the weight decays
    are those whose decay exponent E over this run is each of these values, in place of
    ``weight_decays``."""

    weight_decays: list | None
    bn_mode: str
    workers: int
    seeds: list
    results_dir: str | None = None
    val_every: int = 1
    decay_exponents: list | None = None
    _base: Any = field(default=None, init=False, repr=False, compare=False)
    _weight_decays: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .. import checks
        from .weight_decay import cnn_chapter_config

        super().__post_init__()
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {sorted(MODEL_NAMES)}, got {self.model!r}")
        if self.decay_exponents is None:
            checks.weight_decays("weight_decays", self.weight_decays)
        checks.positive_int("workers", self.workers)
        seeds = checks.seed_list(self.seeds)
        checks.results_dir(self.results_dir)
        base = cnn_chapter_config(model=self.model, dataset=self.dataset, train_per_class=self.train_per_class,
                                  image_size=self.image_size, pad_to=self.pad_to, model_options=self.model_options,
                                  epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, momentum=self.momentum,
                                  lanczos_steps=self.lanczos_steps, probes=self.probes,
                                  hessian_samples=self.hessian_samples, bn_mode=self.bn_mode,
                                  val_size=self.val_size, seed=seeds[0],
                                  channels_last=self.channels_last).replace(val_every=self.val_every)
        base.resolved()
        object.__setattr__(self, "_base", base)
        wds = list(self.weight_decays or [])
        if self.decay_exponents is not None:
            from ..decay import weight_decays_for_exponents

            wds = weight_decays_for_exponents(base, self.decay_exponents)
            checks.weight_decays("the weight decays of decay_exponents", wds)
        object.__setattr__(self, "_weight_decays", wds)

    @property
    def name(self) -> str:
        return MODEL_NAMES[self.model]

    def unused_parameters(self) -> dict[str, str]:
        """``weight_decays`` when ``decay_exponents`` chose the weight decays."""
        if self.decay_exponents is None:
            return {}
        return {"weight_decays": "decay_exponents chose " + ", ".join(f"{wd:.4g}" for wd in self.weight_decays_used)}

    @property
    def weight_decays_used(self) -> list[float]:
        """``weight_decays``, or, when ``decay_exponents`` is given, the weight decays whose decay
        exponent E over this run is each of them (``flatbook.decay.weight_decays_for_exponents``)."""
        return list(self._weight_decays)

    @property
    def base(self):
        """The experiments.Config of the first seed at weight decay 0."""
        return self._base

    def run(self) -> list[Any]:
        """Train (or load from the cache) every weight decay x seed; Results seed-major."""
        from ..seeds import seed_sweep

        return seed_sweep(self.base, self.weight_decays_used, self.seeds, workers=self.workers,
                          results_dir=self.results_dir)

    def training_plan(self) -> list[Any]:
        """Every experiments.Config ``run`` trains (weight decays x seeds), in its order."""
        from ..seeds import seeded

        return [seeded(self.base, seed=s).replace(weight_decay=float(wd)) for s in self.seeds
                for wd in self.weight_decays_used]

    def first_seed(self, results: list[Any]) -> list[Any]:
        return [r for r in results if r.config.seed == self.seeds[0]]

    def training_figure(self, results: list[Any]):
        from . import plots

        from ..models import model_label

        return plots.plot_training_curves(
            {f"weight decay {r.config.weight_decay:.3g}": r.history for r in self.first_seed(results)},
            title=f"{model_label(self.model, self.model_options)} on {self.dataset}: training (seed {self.seeds[0]})")

    def facts(self, results: list[Any]) -> list[tuple[str, str]]:
        from .weight_decay import run_facts

        return run_facts(results, self.model)

    def spectra_figure(self, results: list[Any]):
        from . import plots

        return plots.plot_spectrum_stems({f"wd {r.config.weight_decay:g}: val acc {100 * r.metrics['val_acc']:.2f}%":
                                          r.spectrum for r in self.first_seed(results)})

    def table(self, results: list[Any]):
        from .weight_decay import seed_table

        return seed_table(results)

    def paper_numbers(self):
        """(the paper's reported numbers for this model, the dataset it measured them on)."""
        from .weight_decay import paper_numbers

        return paper_numbers(self.model)

    def cost(self, results: list[Any]) -> dict[str, float]:
        """``weight_decay.paper_cost`` of the paper's three runs, scaled from the first run here."""
        from ..experiments import paper_config
        from .weight_decay import paper_cost

        return paper_cost(results[0], paper_config(self.model), runs=3)

    def claims(self, results: list[Any]) -> list[Any]:
        """The chapter's claims (module docstring)."""
        from .weight_decay import paper_decay_exponent, sweep_claims

        return sweep_claims(results, paper_exponent=paper_decay_exponent(self.model))


@dataclass(frozen=True, kw_only=True)
class AllCnnCChapter(CnnChapter):
    """The All-CNN-C chapter (``wd_allcnnc``): a CnnChapter of model "allcnnc"."""

    model: str = field(default="allcnnc", init=False)


@dataclass(frozen=True, kw_only=True)
class PreResNetChapter(CnnChapter):
    """The PreResNet chapter (``wd_preresnet``): a CnnChapter of model "preresnet164"."""

    model: str = field(default="preresnet164", init=False)


@dataclass(frozen=True, kw_only=True)
class WideResNetChapter(CnnChapter):
    """The WideResNet chapter (``wd_wrn``): a CnnChapter of model "wrn28x10"."""

    model: str = field(default="wrn28x10", init=False)


@dataclass(frozen=True, kw_only=True)
class DecayGridParameters(CnnTrainingParameters):
    """The decay-exponent appendix's parameters (``decay_exponent``): one seed and a grid of decay
    exponents on one CIFAR architecture; construction checks them all (ValueError naming one) and
    ``chapter`` is the CnnChapter that runs the grid."""

    decay_exponents: list
    bn_mode: str
    val_every: int
    seed: int
    workers: int
    results_dir: str | None = None
    ablation_epochs: list | None = None
    ablation_exponent: float | None = None
    _chapter: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from .. import checks

        super().__post_init__()
        checks.seed(self.seed)
        if self.decay_exponents is None:
            raise ValueError("decay_exponents must be a list of decay exponents (the grid)")
        names = ("model", "dataset", "train_per_class", "image_size", "pad_to", "model_options", "epochs", "lr",
                 "batch_size", "momentum", "decay_exponents", "lanczos_steps", "probes", "hessian_samples",
                 "bn_mode", "val_size", "val_every", "workers", "results_dir", "channels_last")
        chapter = CnnChapter(weight_decays=None, seeds=[self.seed], **{n: getattr(self, n) for n in names})
        object.__setattr__(self, "_chapter", chapter)
        if (self.ablation_epochs is None) != (self.ablation_exponent is None):
            raise ValueError("ablation_epochs and ablation_exponent go together: both None, or a list of epoch "
                             f"counts and one decay exponent (got {self.ablation_epochs!r} and {self.ablation_exponent!r})")
        if self.ablation_epochs is not None:
            if not isinstance(self.ablation_epochs, (list, tuple)) or not self.ablation_epochs:
                raise ValueError(f"ablation_epochs must be a non-empty list of epoch counts, got {self.ablation_epochs!r}")
            for e in self.ablation_epochs:
                checks.positive_int("ablation_epochs", e)
            checks.finite_number("ablation_exponent", self.ablation_exponent, minimum=0, strict=True)

    @property
    def chapter(self) -> CnnChapter:
        """The CnnChapter of the grid (its ``weight_decays_used`` are those of ``decay_exponents``)."""
        return self._chapter

    def training_plan(self) -> list[Any]:
        """Every experiments.Config the grid trains (one seed, each decay exponent's weight decay),
        then the ablation's (``ablation_configs``)."""
        from ..experiments import unique_configs

        return unique_configs(self._chapter.training_plan() + self.ablation_configs())

    def ablation_configs(self) -> list[Any]:
        """The ablation: for the chapter's epochs and each of ``ablation_epochs``, the run without
        weight decay and the run whose weight decay reaches ``ablation_exponent`` over that many
        epochs. E = (steps) x eta x gamma / (1 - mu) for one schedule, so at one E a run of fewer
        epochs has a proportionally larger shrinkage per step eta gamma / (1 - mu): the pairs separate
        "how long weight decay acted" (E, the same) from "how hard each step pushed" (empty without
        an ablation)."""
        from ..decay import weight_decays_for_exponents
        from ..seeds import seeded

        if self.ablation_epochs is None:
            return []
        out = []
        for epochs in [self.epochs] + [int(e) for e in self.ablation_epochs if int(e) != self.epochs]:
            base = seeded(self._chapter.base.replace(epochs=int(epochs)), seed=self.seed)
            wd = weight_decays_for_exponents(base, [self.ablation_exponent])[0]
            out += [base.replace(weight_decay=0.0), base.replace(weight_decay=wd)]
        return out

    def run_ablation(self) -> list[Any]:
        """The ablation's Results (``ablation_configs``, in order), from the cache where present."""
        from ..experiments import run_many

        configs = self.ablation_configs()
        if not configs:
            raise ValueError("no ablation: set ablation_epochs and ablation_exponent")
        return run_many(configs, workers=self.workers, results_dir=self.results_dir)


def ablation_table(results: list[Any]):
    """One row per epoch count of the ablation (``DecayGridParameters.ablation_configs``' results,
    pairs of no weight decay and weight decay): the epochs, the weight decay, its decay
    exponent E, its shrinkage per step eta gamma / (1 - mu) at the peak learning rate, the training
    and validation accuracies (percent) and lambda_1 with weight decay, and lambda_1 and ||w|| with
    weight decay over without (same learning rate, same seed)."""
    import pandas as pd

    from ..decay import decay_exponent_of, decay_per_step

    rows = []
    for plain, decayed in zip(results[0::2], results[1::2]):
        if plain.config.weight_decay != 0 or decayed.config.epochs != plain.config.epochs:
            raise ValueError("ablation results come in pairs: no weight decay, then weight decay, at one epoch count")
        rows.append({"epochs": decayed.config.epochs, "weight_decay": decayed.config.weight_decay,
                     "decay_exponent": decay_exponent_of(decayed), "decay_per_step": decay_per_step(decayed.config),
                     "train_acc": 100 * decayed.metrics["train_acc"], "val_acc": 100 * decayed.metrics["val_acc"],
                     "lambda_max": decayed.spectrum.lambda_max,
                     "lambda_max_ratio": decayed.spectrum.lambda_max / plain.spectrum.lambda_max,
                     "weight_norm_ratio": decayed.metrics["weight_norm"] / plain.metrics["weight_norm"]})
    return pd.DataFrame(rows).set_index("epochs")


def ablation_sentence(table) -> str:
    """What the ablation table shows, computed: how far the lambda_1 ratio (with / without weight
    decay) moves across the epoch counts at one E, against how far eta gamma / (1 - mu) moves;
    with one seed, a picture, not a test."""
    if len(table) < 2:
        return "*Computed:* the ablation has one epoch count only: nothing to compare."
    r, s = table["lambda_max_ratio"], table["decay_per_step"]
    spread_r = float(r.max() / r.min())
    spread_s = float(s.max() / s.min())
    fitted = int((table["train_acc"] >= 99.0).sum())
    rank_r, rank_s = list(r.rank(method="first")), list(s.rank(method="first"))
    order = ("rising with" if rank_r == rank_s else
             "falling as it rises: larger with gentler steps" if rank_r == list(s.rank(method="first", ascending=False))
             else "not ordered by")
    return (f"*Computed:* at E = {table['decay_exponent'].median():.3g}, runs of {table.index.min():g} to "
            f"{table.index.max():g} epochs change the shrinkage per step eta gamma / (1 - mu) by a factor "
            f"{spread_s:.3g}; the lambda_1 ratio (with over without weight decay) goes from {r.min():.3g} to "
            f"{r.max():.3g}, a factor {spread_r:.3g}, {order} the shrinkage per step; {fitted} of the {len(table)} "
            "runs with weight decay fit their training set (at least 99%). One seed: a picture of which quantity "
            "carries the effect, not a test.")




def cost_sentence(cost: dict[str, float], device: str) -> str:
    """*Computed:* what the paper's three runs of the chapter's network cost (``CnnChapter.cost``: FLOPs
    per forward pass and their ratio to this run's, PFLOP of training and of Lanczos, and days at this
    run's measured speed on ``device``, scaled by FLOPs), and why a GPU's time is only an assumption."""
    return (f"*Computed:* the paper's network needs {cost['forward_flops'] / 1e9:.3g} GFLOP per forward pass, "
            f"{cost['flop_ratio']:,.0f}x this run's. Its three runs: {cost['train_flops'] / 1e15:,.0f} PFLOP of training "
            f"and {cost['hessian_flops'] / 1e15:,.0f} PFLOP of Lanczos. At this run's measured speed on {device}, scaled "
            f"by FLOPs, that is about **{cost['cpu_seconds'] / 86400:,.1f} days**. On a GPU the time is the FLOPs over the "
            "rate it sustains on these small convolutions at batch 128, which is far below its peak and was not measured "
            "for this page (`benchmarks/train.py` measures images per second where a GPU is present):")


def cost_table(cost: dict[str, float], rates: tuple[float, ...] = (5, 20, 50)):
    """Hours of the paper's three runs (``cost["flops"]``) at each assumed sustained rate (TFLOP/s),
    rounded to 0.1 h, indexed by the rate."""
    import pandas as pd

    return pd.DataFrame({"sustained TFLOP/s (assumed)": list(rates),
                         "hours for the paper's three runs": [cost["flops"] / rate / 1e12 / 3600 for rate in rates]}
                        ).set_index("sustained TFLOP/s (assumed)").round(1)


def decay_grid_sentence(table, paper_exponent: float) -> str:
    """*Computed:* the decay exponents the grid spans against the paper's, the largest E at which the
    network still fits its training set (at least 99%) with its lambda_1 and validation accuracy
    against the smallest weight decay's, and from which E the training accuracy falls (``table``:
    ``DecayGrid.table``, ordered by weight decay)."""
    fits = table[table["train_acc"] >= 99.0]
    breaks = table[table["train_acc"] < 99.0]
    text = (f"*Computed:* the paper's run has $E$ = {paper_exponent:.3g}. Here the weight decays from "
            f"{table.index.min():g} to {table.index.max():g} give $E$ from {table['decay_exponent'].min():.3g} to "
            f"{table['decay_exponent'].max():.3g}. ")
    if len(fits):
        largest = fits.iloc[-1]
        text += (f"The largest $E$ at which the network still fits its training set (at least 99%) is "
                 f"**{largest['decay_exponent']:.3g}**, where $\\lambda_1$ is "
                 f"{largest['lambda_max'] / table['lambda_max'].iloc[0]:.3g} times its value at the smallest weight decay "
                 f"and the validation accuracy {largest['val_acc'] - table['val_acc'].iloc[0]:+.2f} points from it")
    else:
        text += "No run of the grid fits its training set (at least 99%)"
    if len(breaks):
        return text + (f"; from $E$ = {breaks['decay_exponent'].min():.3g} on, the training accuracy falls, to "
                       f"{breaks['train_acc'].min():.1f}% at the worst: there the run no longer tests a claim about "
                       "fitted solutions.")
    return text + "; every run of the grid fits its training set."
