"""Several seeds per setting: run them, group them, and put per-seed values side by side.

A seed ``s`` sets the training seed (initialisation, shuffling, augmentation, the class-balanced
subset) AND the probe seed of the spectrum (``spectrum_seed = s``: the Gaussian start vectors and,
when the Hessian is measured over a subset, which images). Within one seed every weight decay
shares its probe vectors and Hessian images (a paired design); across seeds they are independent,
so the seed-to-seed spread of a measure holds training noise, probe noise and the choice of
Hessian images together.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["seeded", "seed_sweep", "paired_values", "paired_correct"]


def seeded(config: Any, *, seed: int):
    """``config`` (an experiments.Config) with training seed and probe seed both ``seed``."""
    from .checks import seed as check_seed

    seed = check_seed(seed)
    return config.replace(seed=seed, spectrum_seed=seed)


def seed_sweep(base: Any, weight_decays: Sequence[float], seeds: Sequence[int], *, workers: int = 1,
               results_dir: Any = None, progress: bool = True) -> list[Any]:
    """``experiments.sweep`` of ``base`` over ``weight_decays`` for every seed in ``seeds`` (see the
    module docstring): the Results, seed-major (all weight decays of the first seed, then the
    next). Every config is validated before any training; cached runs are reused; uncached ones
    are shared out among ``workers`` processes all together (``experiments.run_many``)."""
    from .checks import seed_list
    from .experiments import run_many

    seeds = seed_list(seeds)
    configs = [seeded(base, seed=s).replace(weight_decay=float(wd)) for s in seeds for wd in weight_decays]
    return run_many(configs, workers=workers, results_dir=results_dir, progress=progress)


def _groups(results: Sequence[Any], setting: Callable[[Any], Any]) -> dict[Any, dict[int, Any]]:
    groups: dict[Any, dict[int, Any]] = {}
    for r in results:
        g = groups.setdefault(setting(r), {})
        if r.config.seed in g:
            raise ValueError(f"two results for setting {setting(r)!r} and seed {r.config.seed}")
        g[r.config.seed] = r
    return groups


def _shared_seeds(results: Sequence[Any], setting: Callable[[Any], Any], a: Any,
                  b: Any) -> tuple[dict[Any, dict[int, Any]], list[int]]:
    groups = _groups(results, setting)
    for s in (a, b):
        if s not in groups:
            raise ValueError(f"no results for setting {s!r}; settings are {sorted(groups, key=str)}")
    common = sorted(set(groups[a]) & set(groups[b]))
    if not common:
        raise ValueError(f"settings {a!r} and {b!r} share no seed")
    return groups, common


def paired_values(results: Sequence[Any], setting: Callable[[Any], Any], a: Any, b: Any,
                  value: Callable[[Any], float]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(seeds, values of setting ``a``, values of setting ``b``) over the seeds both settings have,
    in increasing seed order; ``setting(result)`` names a result's setting (e.g. its weight decay)."""
    groups, common = _shared_seeds(results, setting, a, b)
    return (common, np.array([value(groups[a][s]) for s in common], dtype=np.float64),
            np.array([value(groups[b][s]) for s in common], dtype=np.float64))


def paired_correct(results: Sequence[Any], setting: Callable[[Any], Any], a: Any,
                   b: Any) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(seeds, correct_a, correct_b): per seed (rows) and validation image (columns), whether the
    models of settings ``a`` and ``b`` classified it correctly (the same images in every row)."""
    groups, common = _shared_seeds(results, setting, a, b)
    rows_a = [groups[a][s].val_correct_array() for s in common]
    rows_b = [groups[b][s].val_correct_array() for s in common]
    sizes = {len(r) for r in rows_a + rows_b}
    if len(sizes) != 1:
        raise ValueError(f"the results were validated on different numbers of images: {sorted(sizes)}")
    return common, np.vstack(rows_a), np.vstack(rows_b)
