"""What a chapter will train at a profile, before running it: its experiment configs and their cost.

``chapter_plan(name, profile, overrides)`` resolves the chapter's parameters exactly as
``python -m flatbook run`` does (notebook defaults, then the profile, then the overrides, checked
by the chapter's parameter class) and asks the parameter object for its ``training_plan()``: the
``experiments.Config`` of every model the chapter trains (chapters that train nothing, or reuse
the cache of others, plan none). ``plan_cost`` counts their floating-point operations
(``chapters.weight_decay.run_flops``: training passes and Hessian products; convolutions and matrix
products apart from the elementwise and optimiser work) and converts them to hours at ASSUMED
sustained rates per network family (``ASSUMED_TFLOPS``), an estimate until
``benchmarks/gpu_check.py`` measures the rates on the GPU at hand.

``python -m flatbook plan [CHAPTER ...] --profile P --output configs.json`` writes the configs as
a JSON list that ``python -m flatbook train configs.json`` computes (in one process, or under
torchrun on one node or several); the chapter then renders from the filled cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["chapter_plan", "seed_plans", "plan_cost", "train_first", "DEFAULT_TFLOPS", "ASSUMED_TFLOPS"]

# Assumed sustained rates on one modern GPU, in TFLOP/s (10^12 FLOP/s), none measured yet:
DEFAULT_TFLOPS = 20.0  # convolutions and matrix products of the CNNs (float32, batch 128)
ASSUMED_TFLOPS = {
    "cnn": DEFAULT_TFLOPS,
    # logistic regression and the MLP: 784-wide products of a 128-image batch launch kernels too
    # small to approach the peak
    "dense": 2.0,
    # BatchNorm, ReLU, pooling and the optimiser's updates: memory-bound (float32, about 1 FLOP for
    # every 8 to 12 bytes read and written, at a few TB/s)
    "elementwise": 0.3,
}
_DENSE_MODELS = ("logreg", "mlp")


def chapter_plan(name: str, profile: str = "paper", overrides: Mapping[str, Any] | None = None,
                 root: Path | None = None) -> list[Any]:
    """The experiments.Configs chapter ``name`` trains at ``profile`` with ``overrides``."""
    from .registry import get_chapter
    from .runner import resolve_parameters

    chapter = get_chapter(name, root)
    merged = resolve_parameters(chapter, profile, overrides, root)
    values = {**{n: p.default for n, p in chapter.parameters.items()}, **merged}
    built = chapter.build_parameters(values)
    if built is None:
        raise ValueError(f"chapter {name!r} names no parameter class (notebook metadata flatbook.check), so it "
                         "cannot say what it trains")
    return list(built.training_plan())


def seed_plans(names: Sequence[str], profile: str, seed: int = 0, root: Path | None = None) -> dict[str, list[Any]]:
    """For each chapter of ``names``: the configs it trains at ``profile`` with this ``seed`` (one per
    weight decay, or per optimiser), in the chapter's order (the calibration appendix measures these)."""
    out = {}
    for name in names:
        configs = [c for c in chapter_plan(name, profile, root=root) if c.seed == seed]
        if not configs:
            raise ValueError(f"chapter {name!r} trains no model with seed {seed} at profile {profile!r}")
        out[name] = configs
    return out


def plan_cost(configs: Sequence[Any], tflops: float = DEFAULT_TFLOPS) -> dict[str, float]:
    """Total FLOPs of ``configs`` (``run_flops``) and the hours they take at assumed sustained rates:
    the CNNs' convolutions and matrix products at ``tflops`` (10^12 FLOP/s; default the assumed 20),
    logistic regression's and the MLP's at ``ASSUMED_TFLOPS["dense"]``, the elementwise and optimiser
    work of all at ``ASSUMED_TFLOPS["elementwise"]``. ``flops`` = ``train_flops`` + ``hessian_flops``
    (convolutions and matrix products); ``elementwise_flops``, ``optimizer_flops`` beside them."""
    from ..checks import finite_number
    from ..chapters.weight_decay import run_flops
    from ..experiments import Config

    tflops = finite_number("tflops", tflops, minimum=0, strict=True)
    keys = ("train_flops", "hessian_flops", "elementwise_flops", "optimizer_flops")
    totals = {"runs": float(len(configs)), **{k: 0.0 for k in keys}}
    seconds = 0.0
    for c in configs:
        one = run_flops(c)
        for k in keys:
            totals[k] += one[k]
        dense = Config.from_dict(c).model in _DENSE_MODELS
        rate = ASSUMED_TFLOPS["dense"] if dense else tflops
        seconds += one["flops"] / (rate * 1e12)
        seconds += (one["elementwise_flops"] + one["optimizer_flops"]) / (ASSUMED_TFLOPS["elementwise"] * 1e12)
    totals["flops"] = totals["train_flops"] + totals["hessian_flops"]
    totals["hours"] = seconds / 3600
    return totals


def train_first(names: Sequence[str], profile: str, workers: int, *, root: Any = None, echo=print,
                progress: bool = True) -> int:
    """Train every run the chapters ``names`` plan at ``profile`` (``book.plan.chapter_plan``; chapters
    with their own ``results_dir`` are left to themselves) before any chapter executes: one pool of
    ``workers`` processes for the whole book, the costliest runs first (FLOPs, ``plan.plan_cost``),
    so no core idles at the end of each chapter's sweep as it does when every chapter runs its own
    pool. A speed setting only: each run computes on its config's threads, so the chapters then find
    the same bits in the cache. Returns the number of configs."""
    import time

    from ..experiments import run_many, unique_configs
    from .registry import get_chapter
    from .runner import resolve_parameters

    configs = []
    for name in names:
        chapter = get_chapter(name, root)
        if resolve_parameters(chapter, profile, None, root).get("results_dir") is not None:
            continue
        configs += chapter_plan(name, profile, root=root)
    configs = unique_configs(configs)
    if not configs:
        return 0
    configs.sort(key=lambda c: -plan_cost([c])["flops"])
    echo(f"[0/{len(names)}] training every planned run first: {len(configs)} runs in {workers} processes, "
         "costliest first (cached runs are skipped)")
    start = time.perf_counter()
    run_many(configs, workers=workers, progress=progress)
    echo(f"[0/{len(names)}] planned runs: done in {time.perf_counter() - start:.1f} s")
    return len(configs)
