"""Measure a trained, cached model again with other settings, without retraining.

An ``experiments.Result`` stores its trained weights. ``spectrum(result, bn_mode="eval", ...)``
rebuilds the model and the exact training data the experiment used (``experiments.prepare_data``)
and runs SLQ on

* ``operator="hessian"``: the Hessian of the mean training cross-entropy (as ``experiments.run``),
* ``operator="layer-normalized"``: D H D with D = diag(||w_t||) per parameter tensor
  (``scale_measures.LayerNormalizedOperator``),

over ``hessian_samples`` training images (``experiments.hessian_indices``) in batches of ``hessian_batch_size``, with
BatchNorm in ``bn_mode``; every setting defaults to the result's own. ``relative_flatness(result)``
computes Petzka et al.'s measure of the last linear layer the same way. ``many(results, measure,
workers=...)`` takes one measure of many results, the uncomputed ones in worker processes (a speed
setting only: each measure computes on its run's threads, so the bits do not depend on it).

Each measurement is stored beside the weights, in ``<entry>/measures/<hash of kind and
settings>.json`` (written atomically), so a second call with the same settings reads it. An
unreadable file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["spectrum", "relative_flatness", "many", "OPERATORS", "MEASURES"]

OPERATORS = ("hessian", "layer-normalized")
DENSE_UP_TO, FLATNESS_PROBES, FLATNESS_SEED = 4096, 100, 0  # relative_flatness's defaults (also read by _stored)
MEASURE_FORMAT = 1


def _settings(result: Any, bn_mode: str | None, lanczos_steps: int | None, probes: int | None,
              hessian_samples: int | None, hessian_batch_size: int | None, spectrum_seed: int | None) -> dict:
    from .checks import positive_int
    from .checks import seed as check_seed
    from .curvature import BN_MODES

    c = result.config
    s = {"bn_mode": c.bn_mode if bn_mode is None else bn_mode,
         "lanczos_steps": c.lanczos_steps if lanczos_steps is None else positive_int("lanczos_steps", lanczos_steps),
         "probes": c.probes if probes is None else positive_int("probes", probes),
         "hessian_samples": c.hessian_samples if hessian_samples is None else positive_int("hessian_samples",
                                                                                           hessian_samples),
         "hessian_batch_size": c.hessian_batch_size if hessian_batch_size is None
         else positive_int("hessian_batch_size", hessian_batch_size),
         "spectrum_seed": c.spectrum_seed if spectrum_seed is None else spectrum_seed}
    if s["bn_mode"] not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {s['bn_mode']!r}")
    s["spectrum_seed"] = check_seed(s["spectrum_seed"], "spectrum_seed")
    return s


def _cache_file(result: Any, kind: str, settings: dict) -> Path:
    if getattr(result, "path", None) is None:
        raise ValueError("the result has no cache entry (weights) to measure")
    blob = json.dumps({"format": MEASURE_FORMAT, "kind": kind, "settings": settings}, sort_keys=True)
    return Path(result.path) / "measures" / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.json"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, allow_nan=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _as_the_run_computed(result: Any):
    """Compute as ``experiments.run`` did for ``result`` (``device.as_a_run`` on its config's threads),
    so a measure stored beside the weights depends only on the entry (whose key holds the thread
    count) and on the measure's settings."""
    from .device import as_a_run

    return as_a_run(int(getattr(result.config, "threads", 1)))


def _model_and_data(result: Any, settings: dict, data_root: Any, device: str | None):
    import torch

    from .device import default_device
    from .experiments import prepare_data

    device = device or default_device()
    model = result.load_model(device)
    x, y = prepare_data(result.config, "train", data_root)
    from .experiments import hessian_indices

    seed = settings.get("spectrum_seed")
    idx = hessian_indices(len(y), settings["hessian_samples"],
                          spectrum_seed=result.config.spectrum_seed if seed is None else seed)
    return model, (x[idx].to(device), y[idx].to(device)), torch.nn.functional.cross_entropy


def spectrum(result: Any, *, operator: str = "hessian", bn_mode: str | None = None, lanczos_steps: int | None = None,
             probes: int | None = None, hessian_samples: int | None = None, hessian_batch_size: int | None = None,
             spectrum_seed: int | None = None, data_root: Any = None, device: str | None = None,
             progress: bool = True, recompute: bool = False):
    """The SLQ Spectrum of ``operator`` for the trained model of ``result`` (module docstring)."""
    from .curvature import HessianOperator
    from .scale_measures import LayerNormalizedOperator
    from .spectrum import Spectrum, slq

    if operator not in OPERATORS:
        raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
    settings = _settings(result, bn_mode, lanczos_steps, probes, hessian_samples, hessian_batch_size, spectrum_seed)
    path = _cache_file(result, f"spectrum:{operator}", settings)
    if path.exists() and not recompute:
        stored = _read(path)
        if stored is not None and "spectrum" in stored:
            return Spectrum.from_dict(stored["spectrum"])
    with _as_the_run_computed(result):
        model, data, loss = _model_and_data(result, settings, data_root, device)
        op = HessianOperator(model, loss, data, batch_size=settings["hessian_batch_size"], bn_mode=settings["bn_mode"])
        if operator == "layer-normalized":
            op = LayerNormalizedOperator(op, model)
        s = slq(op, steps=settings["lanczos_steps"], probes=settings["probes"], seed=settings["spectrum_seed"],
                progress=progress)
    _write(path, {"kind": f"spectrum:{operator}", "settings": settings, "spectrum": s.to_dict()})
    return s


def _flatness_settings(result: Any, layer: str | None, bn_mode: str | None, hessian_samples: int | None,
                       hessian_batch_size: int | None, dense_up_to: int, probes: int, seed: int) -> dict:
    settings = _settings(result, bn_mode, None, None, hessian_samples, hessian_batch_size, None)
    settings = {k: settings[k] for k in ("bn_mode", "hessian_samples", "hessian_batch_size")}
    settings.update({"layer": layer, "dense_up_to": dense_up_to, "probes": probes, "seed": seed})
    return settings


def relative_flatness(result: Any, *, layer: str | None = None, bn_mode: str | None = None,
                      hessian_samples: int | None = None, hessian_batch_size: int | None = None,
                      dense_up_to: int = DENSE_UP_TO, probes: int = FLATNESS_PROBES, seed: int = FLATNESS_SEED,
                      data_root: Any = None,
                      device: str | None = None, recompute: bool = False) -> float:
    """Petzka et al.'s relative flatness (``scale_measures.relative_flatness``: exact up to
    ``dense_up_to`` weights, else Hutchinson with ``probes``) of ``layer`` (default: the last
    linear layer) for the trained model of ``result``, over the same data as its spectrum."""
    from . import scale_measures

    settings = _flatness_settings(result, layer, bn_mode, hessian_samples, hessian_batch_size, dense_up_to, probes,
                                  seed)
    path = _cache_file(result, "relative_flatness", settings)
    if path.exists() and not recompute:
        stored = _read(path)
        if stored is not None and isinstance(stored.get("value"), float):
            return stored["value"]
    with _as_the_run_computed(result):
        model, data, loss = _model_and_data(result, settings, data_root, device)
        value = scale_measures.relative_flatness(model, loss, data, layer=layer,
                                                 batch_size=settings["hessian_batch_size"], bn_mode=settings["bn_mode"],
                                                 dense_up_to=dense_up_to, probes=probes, seed=seed)
    _write(path, {"kind": "relative_flatness", "settings": settings, "value": value})
    return value


MEASURES = ("spectrum", "relative_flatness")


def _take(measure: str, result: Any, settings: dict) -> Any:
    """One ``measure`` of ``result`` (computed and stored, or read back), without a progress bar."""
    if measure == "spectrum":
        return spectrum(result, progress=False, **settings)
    return relative_flatness(result, **settings)


def many(results: list[Any], measure: str = "spectrum", *, workers: int = 1, progress: bool = True,
         **settings: Any) -> list[Any]:
    """``measure`` ("spectrum" or "relative_flatness") of every result of ``results`` with the same
    keyword ``settings``, in order. With ``workers`` > 1 the measures not yet stored beside the weights
    are computed in that many spawned processes first, then every value is read back; a measure
    computes on its own run's threads (``experiments.Config.threads``) whatever the workers, so the
    values are the same bits with any number of them (keep workers x threads at most the cores)."""
    from .checks import positive_int

    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
    workers = positive_int("workers", workers)
    results = list(results)
    if workers > 1 and len(results) > 1:
        from .experiments import map_in_processes

        todo = [r for r in results if not _stored(r, measure, settings)]
        if len(todo) > 1:
            map_in_processes(_take, [(measure, r, settings) for r in todo], workers=min(workers, len(todo)),
                             desc=f"{measure}: {len(todo)} models in {workers} processes", unit="model",
                             progress=progress)
    from tqdm.auto import tqdm

    todo = sum(not _stored(r, measure, settings) for r in results)
    out = []
    for r in tqdm(results, desc=f"{measure}: {len(results)} models", unit="model", disable=not (progress and todo)):
        out.append(_take(measure, r, settings))
    return out


def _stored(result: Any, measure: str, settings: dict) -> bool:
    """Whether ``measure`` of ``result`` with ``settings`` is already stored beside its weights."""
    if measure == "spectrum":
        s = _settings(result, settings.get("bn_mode"), settings.get("lanczos_steps"), settings.get("probes"),
                      settings.get("hessian_samples"), settings.get("hessian_batch_size"),
                      settings.get("spectrum_seed"))
        return _cache_file(result, f"spectrum:{settings.get('operator', 'hessian')}", s).exists()
    s = _flatness_settings(result, settings.get("layer"), settings.get("bn_mode"), settings.get("hessian_samples"),
                           settings.get("hessian_batch_size"), settings.get("dense_up_to", DENSE_UP_TO),
                           settings.get("probes", FLATNESS_PROBES), settings.get("seed", FLATNESS_SEED))
    return _cache_file(result, "relative_flatness", s).exists()
