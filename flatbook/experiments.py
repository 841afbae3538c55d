"""One experiment of the paper, end to end and cached: config -> data -> model -> training ->
evaluation -> Hessian spectrum -> ``Result`` on disk.

``run(config)``:

1. loads the dataset's "train", "val" and "test" splits (``flatbook.data``; the last
   ``val_size`` training images are the validation set, as the authors' code), optionally keeps a
   class-balanced subset of ``train_per_class`` training images per class, zero-pads to
   ``pad_to`` x ``pad_to`` (and repeats the channel for 3-channel models), normalises with the
   model's statistics (``normalization="auto"``: (x - 0.5)/0.5 for logreg/mlp, the CIFAR
   ResNet statistics for preresnet164/wrn28x10, the ImageNet ones for vgg16bn/allcnnc) and
   flattens for logreg/mlp; ``image_size`` shrinks the images first by area averaging (small
   variants for tests and teaching: 7x7 Fashion-MNIST makes logistic regression 500 parameters);
2. seeds the global RNG with ``seed``, builds the model (``models.build`` with ``model_options``;
   a convolutional model's ``image_size`` defaults to ``pad_to``, else ``image_size``, so its
   pooling fits the images) and trains it with ``train.fit`` (validation after every
   ``val_every``-th epoch and the last);
3. evaluates train (without augmentation), val and test loss and accuracy in eval mode and ||w||;
4. with ``spectrum=True``, runs ``spectrum.slq`` on the Hessian of the MEAN cross-entropy over the
   training split (or ``hessian_samples`` of its images drawn at random with ``spectrum_seed``,
   kept in split order: ``hessian_indices``) without augmentation, in fixed
   batches of ``hessian_batch_size``, BatchNorm in ``bn_mode``, without the weight-decay term:
   ``lanczos_steps`` steps, ``probes`` Gaussian probes, seed ``spectrum_seed``. The paper's
   choice: 100 steps, 1 probe, "train" mode, batches of 128, the whole training split.

The result (metrics, per-epoch history, spectrum, timings, device) is stored as
``<results_dir>/<key>/result.json`` with the weights beside it (``weights.pt``, their SHA-256 in
the JSON). ``key`` hashes the resolved config ("auto" fields replaced by their values) with
``RESULT_FORMAT`` (the version of this layout): the same config is a cache hit, with no
training. Entries are written into a temporary directory and renamed into place, so an
interrupted run leaves no entry; an unreadable or inconsistent entry is reported (warning),
removed and recomputed. Training checkpoints go to ``<key>.partial/`` so an interrupted run
resumes (``checkpoint_every`` epochs). Device (CUDA when present) is not part of the key. A config
that differs from a cached one only in its spectrum settings (``SPECTRUM_FIELDS``: Lanczos steps,
probes, BatchNorm mode, Hessian samples and batch size, probe seed) is not trained again: the
cached weights are measured with the new settings and stored as a new entry.

``results_dir``: the argument, else ``$FLATBOOK_RESULTS``, else ``~/.cache/flatbook/results``.

``sweep(base, weight_decays, workers=...)`` runs ``base`` once per weight decay; with
``workers > 1`` uncached runs go to that many worker processes. Every run computes on its
config's ``threads`` CPU threads (default 1, part of the cache key), so ``workers`` is a speed
setting and never changes a result: on this 2-core CPU three single-thread workers train the
paper's three logistic regressions 1.38x faster than one two-thread process
(``benchmarks/train.py``), because a small model's step is mostly single-threaded overhead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["Config", "Result", "run", "sweep", "run_many", "describe_route", "default_nproc", "results_dir",
           "RESULT_FORMAT", "ConfigError", "prepare_data",
           "paper_config", "cached_results", "hessian_indices", "build_model", "num_classes", "MNIST_LIKE_MODELS",
           "worker_devices", "unique_configs", "training_part", "map_in_processes"]

RESULT_FORMAT = 3  # 2: per-image validation correctness (val_correct), Ritz residuals in the spectrum;
# 3: the CPU threads a run computes with are part of its config (``threads``): CPU kernels split their
# reductions by thread count, so the same config on 1 and 2 threads gave different bits. Entries of
# format 2 are not read (they are recomputed once); nothing else about an entry changed.
MNIST_LIKE_MODELS = ("logreg", "mlp")
AUTO_NORMALIZATION = {"logreg": "mnist", "mlp": "mnist", "preresnet164": "cifar-resnet", "wrn28x10": "cifar-resnet",
                      "vgg16bn": "imagenet", "allcnnc": "imagenet"}


class ConfigError(ValueError):
    """An experiment config with a bad field (the message names it)."""


@dataclass(frozen=True)
class Config:
    """Everything that determines an experiment's result (see the module docstring)."""

    model: str
    dataset: str
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    lr: float = 0.01
    epochs: int = 1
    batch_size: int = 128
    momentum: float = 0.9
    schedule: str = "paper"
    lr_ratio: float = 0.01
    averaging_start: int | None = None
    lr_averaging: float | None = None
    augment: str | None = "auto"
    normalization: str = "auto"
    pad_to: int | None = None
    image_size: int | None = None
    train_per_class: int | None = None
    val_size: int = 5000
    val_every: int = 1
    model_options: dict = field(default_factory=dict)
    seed: int = 0
    bf16: bool = False
    channels_last: bool = False
    threads: int = 1
    spectrum: bool = True
    lanczos_steps: int = 100
    probes: int = 1
    bn_mode: str = "train"
    hessian_batch_size: int = 128
    hessian_samples: int | None = None
    spectrum_seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """The Config with the fields of ``d`` (a Config is returned as it is); unknown fields are a
        ConfigError naming them."""
        if isinstance(d, Config):
            return d
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a dict or a Config, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; fields are: {', '.join(names)}")
        for required in ("model", "dataset"):
            if required not in d:
                raise ConfigError(f"config field {required!r} is required")
        return cls(**d)

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied (``dataclasses.replace``); nothing is validated until ``resolved``."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, as given (not resolved)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def resolved(self) -> "Config":
        """The config with "auto" fields replaced and every field validated (ConfigError names
        the first bad field)."""
        _validate(self)
        changes: dict[str, Any] = {}
        if self.augment == "auto":
            changes["augment"] = "crop-flip" if self.dataset.startswith("cifar") else None
        if self.normalization == "auto":
            changes["normalization"] = AUTO_NORMALIZATION[self.model]
        changes["model_options"] = dict(sorted(self.model_options.items()))
        for name in ("weight_decay", "lr", "momentum", "lr_ratio"):
            changes[name] = float(getattr(self, name))
        if self.lr_averaging is not None:
            changes["lr_averaging"] = float(self.lr_averaging)
        return dataclasses.replace(self, **changes)

    def key(self) -> str:
        """The cache key: a hash of the resolved config and RESULT_FORMAT; ``channels_last`` enters only
        when true (a field added after format 3, so the keys of runs without it did not change)."""
        config = self.resolved().to_dict()
        if not config["channels_last"]:  # a field added after format 3: runs without it keep their keys
            del config["channels_last"]
        blob = json.dumps({"format": RESULT_FORMAT, "config": config}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"config field {name!r} = {value!r} is invalid: {allowed}")


def _is_int(v: Any) -> bool:
    """A Config field's integer: a plain int only (not a numpy integer, unlike ``flatbook.checks``),
    because a Config is stored and hashed as JSON, which numpy integers are not; the bad field is
    then a ConfigError naming it."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate(c: Config) -> None:
    from .batching import AUGMENTATIONS
    from .curvature import BN_MODES
    from .data import NAMES as DATASETS, NORMALIZATION
    from .models import NAMES as MODELS
    from .train import OPTIMIZERS, SCHEDULES

    if c.model not in MODELS:
        _fail("model", c.model, f"models are {', '.join(MODELS)}")
    if c.dataset not in DATASETS:
        _fail("dataset", c.dataset, f"datasets are {', '.join(DATASETS)}")
    if c.optimizer not in OPTIMIZERS:
        _fail("optimizer", c.optimizer, f"optimizers are {', '.join(OPTIMIZERS)}")
    if c.schedule not in SCHEDULES:
        _fail("schedule", c.schedule, f"schedules are {', '.join(SCHEDULES)}")
    for name in ("weight_decay", "momentum"):
        v = getattr(c, name)
        if not _is_number(v) or v < 0:
            _fail(name, v, "a finite number >= 0")
    if c.momentum >= 1:
        _fail("momentum", c.momentum, "a number in [0, 1)")
    for name in ("lr", "lr_ratio"):
        v = getattr(c, name)
        if not _is_number(v) or v <= 0:
            _fail(name, v, "a finite number > 0")
    for name in ("epochs", "batch_size", "val_size", "val_every", "lanczos_steps", "probes", "hessian_batch_size"):
        v = getattr(c, name)
        if not _is_int(v) or v < 1:
            _fail(name, v, "an integer >= 1")
    for name in ("seed", "spectrum_seed"):
        v = getattr(c, name)
        if not _is_int(v) or v < 0:
            _fail(name, v, "an integer >= 0")
    for name in ("train_per_class", "hessian_samples", "averaging_start"):
        v = getattr(c, name)
        if v is not None and (not _is_int(v) or v < 1):
            _fail(name, v, "null or an integer >= 1")
    if c.averaging_start is not None and c.averaging_start > c.epochs:
        _fail("averaging_start", c.averaging_start, f"at most epochs ({c.epochs})")
    if c.optimizer == "gadam" and c.averaging_start is None:
        _fail("averaging_start", None, "optimizer 'gadam' needs the epoch iterate averaging starts")
    if c.lr_averaging is not None:
        if not _is_number(c.lr_averaging) or c.lr_averaging <= 0:
            _fail("lr_averaging", c.lr_averaging, "null or a finite number > 0")
        if c.averaging_start is None:
            _fail("lr_averaging", c.lr_averaging, "only with averaging_start")
    if c.augment != "auto" and c.augment not in AUGMENTATIONS:
        _fail("augment", c.augment, f"'auto' or one of {AUGMENTATIONS}")
    if c.normalization != "auto" and c.normalization not in NORMALIZATION:
        _fail("normalization", c.normalization, f"'auto' or one of {sorted(NORMALIZATION)}")
    if c.image_size is not None and (not _is_int(c.image_size) or not 2 <= c.image_size <= 64):
        _fail("image_size", c.image_size, "null (native size) or an integer from 2 to 64")
    if c.pad_to is not None and (not _is_int(c.pad_to) or c.pad_to < 1):
        _fail("pad_to", c.pad_to, "null or an image size in pixels")
    if c.pad_to is not None and c.image_size is not None and c.pad_to < c.image_size:
        _fail("pad_to", c.pad_to, f"at least image_size ({c.image_size})")
    if c.bn_mode not in BN_MODES:
        _fail("bn_mode", c.bn_mode, f"one of {BN_MODES}")
    if not _is_int(c.threads) or not 1 <= c.threads <= 256:
        _fail("threads", c.threads, "the CPU threads the run computes with, an integer from 1 to 256")
    for name in ("bf16", "channels_last", "spectrum"):
        if not isinstance(getattr(c, name), bool):
            _fail(name, getattr(c, name), "true or false")
    if not isinstance(c.model_options, dict):
        _fail("model_options", c.model_options, "a dict of model options (see flatbook.models.build)")
    mnist_like_data = c.dataset in ("mnist", "fashion-mnist")
    if c.model in MNIST_LIKE_MODELS and c.pad_to is not None:
        _fail("pad_to", c.pad_to, f"{c.model} takes flattened 28x28 images; padding is for convolutional models")
    if c.model not in MNIST_LIKE_MODELS and mnist_like_data and c.pad_to is None:
        _fail("pad_to", None, f"{c.model} is a CIFAR architecture: give pad_to 32 to run it on {c.dataset}")
    if c.model in MNIST_LIKE_MODELS and not mnist_like_data:
        _fail("dataset", c.dataset, f"{c.model} takes 28x28 greyscale images (mnist, fashion-mnist)")
    if c.augment == "crop-flip" and c.model in MNIST_LIKE_MODELS:
        _fail("augment", c.augment, "crop-flip is for image models, not flattened inputs")
    # the model options are checked by building on the meta device (no memory, no time)
    import torch

    try:
        with torch.device("meta"):
            build_model(c)
    except (ValueError, TypeError) as exc:
        _fail("model_options", c.model_options, str(exc))


def num_classes(dataset: str) -> int:
    """Classes of a dataset: 100 for CIFAR-100, 10 for the others."""
    return 100 if dataset == "cifar100" else 10


def paper_config(model: str, weight_decay: float = 0.0, **changes: Any) -> Config:
    """The paper's setting for ``model`` (PAPER.md: dataset, lr, epochs; batch 128, momentum
    0.9, the paper's schedule, 100 Lanczos steps, 1 probe, BatchNorm train mode), with changes."""
    base = {
        "logreg": dict(dataset="mnist", lr=0.01, epochs=1000),
        "mlp": dict(dataset="mnist", lr=0.01, epochs=50),
        "allcnnc": dict(dataset="cifar100", lr=0.1, epochs=300),
        "preresnet164": dict(dataset="cifar100", lr=0.1, epochs=300),
        "wrn28x10": dict(dataset="cifar100", lr=0.1, epochs=300),
        "vgg16bn": dict(dataset="cifar100", lr=0.1, epochs=300),
    }
    if model not in base:
        raise ConfigError(f"config field 'model' = {model!r} is invalid: models are {', '.join(base)}")
    return Config(model=model, weight_decay=weight_decay, **{**base[model], **changes})


# --- results --------------------------------------------------------------------------------


@dataclass
class Result:
    """A finished experiment: its config, metrics, per-epoch history and spectrum."""

    config: Config
    key: str
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    spectrum: Any  # flatbook.Spectrum or None
    seconds: dict[str, float]
    device: str
    version: str
    path: Path | None = None
    cached: bool = False
    val_correct: Any = None  # numpy bool array: whether each validation image was classified correctly

    def val_correct_array(self):
        """Whether each validation image (in split order) was classified correctly, as a numpy bool
        array; for paired comparisons of two models on the same images."""
        if self.val_correct is None:
            raise ValueError(f"result {self.key} has no per-image validation record")
        return self.val_correct

    def summary(self) -> dict[str, Any]:
        """One flat row for tables: the sweep variables, metrics and spectrum estimates."""
        c = self.config
        row: dict[str, Any] = {"model": c.model, "dataset": c.dataset, "optimizer": c.optimizer,
                               "weight_decay": c.weight_decay, **self.metrics}
        if self.spectrum is not None:
            row.update(self.spectrum.summary())
        return row

    def load_model(self, device: str | None = None):
        """The trained model (weights from the cache entry), in eval mode."""
        import torch

        if self.path is None:
            raise ValueError("this result has no cache entry to load weights from")
        model = build_model(self.config)
        state = torch.load(self.path / "weights.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.to(device or "cpu").eval()

    def to_json(self) -> dict[str, Any]:
        """The cache entry's JSON: format, key, config, metrics, history, spectrum, seconds, device,
        version and the per-image validation correctness (bit-packed)."""
        return {"format": RESULT_FORMAT, "key": self.key, "config": self.config.to_dict(), "metrics": self.metrics,
                "history": self.history, "spectrum": None if self.spectrum is None else self.spectrum.to_dict(),
                "seconds": self.seconds, "device": self.device, "version": self.version,
                "val_correct": None if self.val_correct is None else _pack_bits(self.val_correct)}


def _pack_bits(mask) -> dict[str, Any]:
    """A bool vector as {"n": length, "bits": base64 of numpy.packbits} (JSON-friendly, 1 bit each)."""
    import base64

    import numpy as np

    m = np.asarray(mask, dtype=bool).ravel()
    return {"n": int(m.size), "bits": base64.b64encode(np.packbits(m).tobytes()).decode("ascii")}


def _unpack_bits(d: dict[str, Any]):
    import base64

    import numpy as np

    n = int(d["n"])
    bits = np.unpackbits(np.frombuffer(base64.b64decode(d["bits"]), dtype=np.uint8))
    if bits.size < n or bits.size - n >= 8:
        raise ValueError(f"val_correct holds {bits.size} bits for {n} images")
    return bits[:n].astype(bool)


def results_dir(path: str | Path | None = None) -> Path:
    """Where results are cached: ``path``, else $FLATBOOK_RESULTS, else ~/.cache/flatbook/results."""
    if path is not None:
        return Path(path)
    env = os.environ.get("FLATBOOK_RESULTS")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flatbook" / "results"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _CorruptEntry(Exception):
    pass


def _load_entry(entry: Path, config: Config, key: str) -> Result:
    from .spectrum import Spectrum

    try:
        d = json.loads((entry / "result.json").read_text())
    except (OSError, ValueError) as exc:
        raise _CorruptEntry(f"result.json unreadable ({exc})") from exc
    if not isinstance(d, dict) or d.get("format") != RESULT_FORMAT or d.get("key") != key:
        raise _CorruptEntry("result.json is of another format or key")
    weights = entry / "weights.pt"
    if not weights.exists() or _sha256(weights) != d.get("weights_sha256"):
        raise _CorruptEntry("weights.pt is missing or does not match the checksum in result.json")
    try:
        spectrum = None if d["spectrum"] is None else Spectrum.from_dict(d["spectrum"])
        val_correct = None if d.get("val_correct") is None else _unpack_bits(d["val_correct"])
        return Result(config=config, key=key, metrics=dict(d["metrics"]), history=list(d["history"]),
                      spectrum=spectrum, seconds=dict(d["seconds"]), device=str(d["device"]),
                      version=str(d["version"]), path=entry, cached=True, val_correct=val_correct)
    except (KeyError, TypeError, ValueError) as exc:
        raise _CorruptEntry(f"result.json has a bad or missing field ({exc})") from exc


def _stored_entries(root: Path):
    """(entry, stored Config) for every finished entry of this RESULT_FORMAT under ``root``, sorted;
    (entry, exception) for one whose result.json cannot be read. Entries being written or resumed
    (``.tmp``, ``.partial``) are skipped."""
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith(".partial") or not (entry / "result.json").is_file():
            continue
        try:
            d = json.loads((entry / "result.json").read_text())
            if d.get("format") != RESULT_FORMAT:
                continue
            yield entry, Config.from_dict(d["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            yield entry, exc


def cached_results(results_dir: str | Path | None = None) -> list[Result]:
    """Every finished result in the cache (``results_dir`` as in ``run``), sorted by key. Entries
    being written or resumed (``.tmp``, ``.partial``), of another RESULT_FORMAT, or unreadable are
    skipped (unreadable ones with a warning)."""
    out: list[Result] = []
    for entry, config in _stored_entries(globals()["results_dir"](results_dir)):
        try:
            if isinstance(config, Exception):
                raise config
            out.append(_load_entry(entry, config, entry.name))
        except (OSError, ValueError, KeyError, TypeError, _CorruptEntry) as exc:
            warnings.warn(f"flatbook: skipping unreadable cache entry {entry} ({exc})", stacklevel=2)
    return out


def _write_entry(root: Path, key: str, result: Result, state: dict) -> Path:
    import torch

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.", suffix=".tmp"))
    try:
        torch.save(state, tmp / "weights.pt")
        payload = result.to_json()
        payload["weights_sha256"] = _sha256(tmp / "weights.pt")
        (tmp / "result.json").write_text(json.dumps(payload, indent=1, allow_nan=True))
        final = root / key
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- data and model -------------------------------------------------------------------------


_DATA_CACHE: dict[tuple, Any] = {}


def prepare_data(config: Config | dict, split: str, root: str | Path | None = None):
    """The (x, y) tensors of ``split`` exactly as the experiment sees them (subset, padding,
    normalisation, flattening; see the module docstring), on the CPU."""
    import torch

    from . import batching, data

    c = Config.from_dict(config).resolved()
    roots = tuple(str(p) for p in data.data_roots(root))  # follows $FLATBOOK_DATA
    raw_key = (c.dataset, split, roots, c.val_size)
    if raw_key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # keep one dataset's splits at most
        for s in ("train", "val", "test"):
            _DATA_CACHE[(c.dataset, s, roots, c.val_size)] = data.load(c.dataset, s, root, val_size=c.val_size)
    x, y = _DATA_CACHE[raw_key]
    if split == "train" and c.train_per_class is not None:
        idx = batching.balanced_subset(y, c.train_per_class, seed=c.seed)
        x, y = x[idx], y[idx]
    if c.image_size is not None and c.image_size != x.shape[-1]:
        # area averaging (exact mean of pixel blocks when the size divides the original)
        x = torch.nn.functional.interpolate(x, size=(c.image_size, c.image_size), mode="area")
    if c.pad_to is not None:
        x = batching.pad_to(x, c.pad_to, channels=3)
    # "mnist" statistics are (x - 0.5) / 0.5 for any number of channels; the others are per RGB channel
    x = (x - 0.5) / 0.5 if c.normalization == "mnist" else data.normalize(x, c.normalization)
    if c.model in MNIST_LIKE_MODELS:
        x = x.flatten(1)
    return x.contiguous(), y


def build_model(c: Config):
    """The untrained model of ``c`` (``models.build`` with the config's classes, input channels and
    the input size its resized and padded images have), on the CPU, initialised from the global torch RNG (``run`` seeds it
    first)."""
    from .models import build

    if c.model in MNIST_LIKE_MODELS:
        options = dict(c.model_options)
        if c.image_size is not None:
            options.setdefault("in_features", c.image_size**2)
        return build(c.model, num_classes=num_classes(c.dataset), **options)
    options = dict(c.model_options)
    if c.pad_to is not None or c.image_size is not None:
        # the architecture's input size follows the (resized, padded) images
        options.setdefault("image_size", c.pad_to if c.pad_to is not None else c.image_size)
    return build(c.model, num_classes=num_classes(c.dataset), in_channels=3, **options)


# --- running --------------------------------------------------------------------------------


def run(config: Config | dict, *, results_dir: str | Path | None = None, data_root: str | Path | None = None,
        device: str | None = None, recompute: bool = False, progress: bool = True,
        checkpoint_every: int = 10, nproc: int | None = None) -> Result:
    """The Result of ``config``: from the cache, or computed and cached (module docstring). Training,
    evaluation and the spectrum run with CPU denormals flushed to zero (``device.flush_denormals``) on
    exactly ``config.threads`` CPU threads (``device.compute_threads``), whatever the caller's setting or
    the number of sweep workers: the same config gives the same bits on one machine.

    Distributed (``flatbook.distributed``), two ways, the same result:

    * inside a process group of several ranks (e.g. under ``torchrun`` after
      ``distributed.init_from_env``; ``python -m flatbook train`` does both), every rank calls
      ``run`` with the same config (checked: a rank with another config is an error naming the
      fields), training is data-parallel (``train.fit(process_group=...)``), evaluation and the
      Hessian products are shared out, and rank 0 alone reads and writes the cache and the
      checkpoints; every rank returns the Result;
    * ``nproc`` > 1 (default ``$FLATBOOK_NPROC``, else 1) in a single process: an uncached config
      is computed by a ``torchrun`` job of ``nproc`` ranks on this node (``python -m flatbook train``;
      ``$FLATBOOK_TORCHRUN_ARGS`` adds torchrun options) and then read from the cache. A failed job
      raises ``DistributedError`` with torchrun's report of the failed rank; its checkpoints stay,
      so running again resumes. Stopping the caller (an interrupted notebook) stops the job.
    """
    from .device import as_a_run

    threads = Config.from_dict(config).threads
    if not _is_int(threads) or threads < 1:
        _fail("threads", threads, "the CPU threads the run computes with, an integer from 1 to 256")
    with as_a_run(threads):
        return _run(config, results_dir=results_dir, data_root=data_root, device=device, recompute=recompute,
                    progress=progress, checkpoint_every=checkpoint_every, nproc=nproc)


def default_nproc() -> int:
    """``$FLATBOOK_NPROC`` (ranks for a torchrun job per uncached run), else 1."""
    from .checks import positive_int

    text = os.environ.get("FLATBOOK_NPROC", "").strip()
    if not text:
        return 1
    try:
        return positive_int("FLATBOOK_NPROC", int(text))
    except ValueError as exc:
        raise ValueError(f"FLATBOOK_NPROC must be a positive integer (ranks per run), got {text!r}") from exc


def _run(config: Config | dict, *, results_dir: str | Path | None, data_root: str | Path | None,
         device: str | None, recompute: bool, progress: bool, checkpoint_every: int, nproc: int | None) -> Result:
    import torch

    from . import train as training
    from .device import default_device, describe_device
    from .distributed import backend_of, current_group, on_rank_zero, rank_device, ranks

    c = Config.from_dict(config).resolved()
    key = c.key()
    root = globals()["results_dir"](results_dir)
    team = ranks(current_group())
    if team.distributed:
        _check_same_config(team, c)
        if c.bf16 and backend_of(team.group) != "nccl":
            _fail("bf16", True, "bf16 autocast needs CUDA ranks (NCCL); these ranks use gloo")
        _check_split(c, team.world_size)
    entry = root / key
    cached = on_rank_zero(team, lambda: _cached_entry(entry, c, key, recompute))
    if cached is not None:
        return cached
    nproc = default_nproc() if nproc is None else nproc
    from .checks import positive_int

    nproc = positive_int("nproc", nproc)
    if nproc > 1 and not team.distributed:
        _check_split(c, nproc)
        _run_with_torchrun([c], root, data_root=data_root, device=device, recompute=recompute, nproc=nproc,
                           checkpoint_every=checkpoint_every, progress=progress)
        result = _load_entry(entry, c, key)
        result.cached = False  # computed by this call (in the torchrun job), not found in the cache
        return result

    if team.distributed and device is None:
        device = rank_device(team.group)
    device = device or default_device()
    if c.bf16 and not str(device).startswith("cuda"):
        _fail("bf16", True, f"bf16 autocast needs CUDA; the device is {device}")
    x_train, y_train = _prepared_on_every_rank(team, c, data_root)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        model = build_model(c)
    n_hessian = len(y_train) if c.hessian_samples is None else min(c.hessian_samples, len(y_train))
    h_idx = hessian_indices(len(y_train), c.hessian_samples, spectrum_seed=c.spectrum_seed)
    if c.spectrum and c.bn_mode == "train" and training.has_batchnorm(model) and n_hessian % c.hessian_batch_size == 1:
        _fail("hessian_samples", c.hessian_samples,
              f"{n_hessian} Hessian samples in batches of {c.hessian_batch_size} leave a last batch of 1, which "
              "BatchNorm cannot normalise in train mode; change hessian_samples or hessian_batch_size")
    if team.distributed:
        from .distributed import check_batch_split

        try:
            check_batch_split(c.batch_size, team.world_size, len(y_train))
        except ValueError as exc:
            _fail("batch_size", c.batch_size, str(exc))
    def find_donor():
        found = None if recompute else _trained_with_same_settings(root, c)
        weights = None if found is None or not team.distributed else torch.load(
            found.path / "weights.pt", map_location="cpu", weights_only=True)
        return found, weights

    donor, donor_state = on_rank_zero(team, find_donor)
    if donor is not None:
        # the same training, other spectrum settings: reuse the trained weights and measure again
        state = donor_state if team.distributed else torch.load(donor.path / "weights.pt", map_location="cpu",
                                                                weights_only=True)
        model.load_state_dict(state)
        model.to(device).eval()
        spectrum, spectrum_seconds = _measure(c, model, x_train[h_idx], y_train[h_idx], device,
                                              donor.metrics["num_params"], progress and team.is_writer, team.group)
        result = Result(config=c, key=key, metrics=dict(donor.metrics), history=list(donor.history),
                        spectrum=spectrum, seconds={"train": donor.seconds["train"], "spectrum": spectrum_seconds},
                        device=donor.device, version=__version__, val_correct=donor.val_correct)
        return _store(team, root, key, result, state)
    x_val, y_val = prepare_data(c, "val", data_root)  # only training and evaluation need these
    x_test, y_test = prepare_data(c, "test", data_root)
    t0 = time.perf_counter()
    partial = root / f"{key}.partial"
    history = training.fit(
        model, (x_train, y_train), (x_val, y_val), optimizer=c.optimizer, lr=c.lr, epochs=c.epochs,
        batch_size=c.batch_size, momentum=c.momentum, weight_decay=c.weight_decay, schedule=c.schedule,
        lr_ratio=c.lr_ratio, averaging_start=c.averaging_start, lr_averaging=c.lr_averaging, augment=c.augment,
        seed=c.seed, device=device, bf16=c.bf16, channels_last=c.channels_last, val_every=c.val_every, checkpoint_dir=partial,
        checkpoint_every=checkpoint_every,
        progress=progress and team.is_writer, process_group=team.group)
    train_seconds = time.perf_counter() - t0
    metrics: dict[str, float] = {}
    for name, (x, y) in (("train", (x_train, y_train)), ("test", (x_test, y_test))):
        loss, acc = training.evaluate(model, x.to(device), y.to(device), bf16=c.bf16, process_group=team.group)
        metrics[f"{name}_loss"], metrics[f"{name}_acc"] = loss, acc
    metrics["val_loss"], metrics["val_acc"], val_correct = training.evaluate(
        model, x_val.to(device), y_val.to(device), bf16=c.bf16, per_example=True, process_group=team.group)
    metrics["gap"] = metrics["train_acc"] - metrics["val_acc"]
    metrics["weight_norm"] = training.weight_norm(model)
    metrics["num_params"] = sum(p.numel() for p in model.parameters())
    metrics["train_samples"] = len(y_train)

    spectrum, spectrum_seconds = _measure(c, model, x_train[h_idx], y_train[h_idx], device,
                                          metrics["num_params"], progress and team.is_writer, team.group)

    described = describe_device() if device == default_device() else str(device)
    if team.distributed:
        described = f"{team.world_size} ranks ({backend_of(team.group)}), rank 0 on {described}"
    result = Result(config=c, key=key, metrics=metrics, history=history.to_list(), spectrum=spectrum,
                    seconds={"train": train_seconds, "spectrum": spectrum_seconds}, device=described,
                    version=__version__, val_correct=val_correct.numpy())
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return _store(team, root, key, result, state, partial=partial)


def _check_split(c: Config, world_size: int) -> None:
    """ConfigError (naming batch_size) unless ``world_size`` ranks can share ``c``'s global batch."""
    from .distributed import check_batch_split

    try:
        check_batch_split(c.batch_size, world_size)
    except ValueError as exc:
        _fail("batch_size", c.batch_size, str(exc))


def _prepared_on_every_rank(team, c: Config, data_root: str | Path | None):
    """The training split on every rank; distributed, each node's local rank 0 loads it first (the
    only one that may download it), then the others read the files it left."""
    if not team.distributed:
        return prepare_data(c, "train", data_root)
    import torch.distributed as dist

    from .distributed import local_rank

    first = local_rank() == 0
    out = prepare_data(c, "train", data_root) if first else None
    dist.barrier(group=team.group)
    return out if first else prepare_data(c, "train", data_root)


def _cached_entry(entry: Path, c: Config, key: str, recompute: bool) -> Result | None:
    """The cached Result at ``entry``, or None (absent, ``recompute``, or corrupt: warned and removed)."""
    if not entry.exists() or recompute:
        return None
    try:
        return _load_entry(entry, c, key)
    except _CorruptEntry as exc:
        warnings.warn(f"flatbook: cache entry {entry} is corrupt ({exc}); recomputing it", stacklevel=3)
        shutil.rmtree(entry, ignore_errors=True)
        return None


def _check_same_config(team, c: Config) -> None:
    """Every rank must run the same (resolved) config: DistributedError naming the differing fields."""
    import torch.distributed as dist

    from .distributed import DistributedError

    configs: list[Any] = [None] * team.world_size
    dist.all_gather_object(configs, c.to_dict(), group=team.group)
    differing = []
    for r, other in enumerate(configs[1:], start=1):
        fields = [f"{k}={other[k]!r} (rank 0: {configs[0][k]!r})" for k in configs[0] if other[k] != configs[0][k]]
        if fields:
            differing.append(f"rank {r}: " + ", ".join(fields))
    if differing:
        raise DistributedError("the ranks were given different experiment configs (" + "; ".join(differing)
                               + "); every rank must run the same config")


def _store(team, root: Path, key: str, result: Result, state: dict, partial: Path | None = None) -> Result:
    """Rank 0 writes the cache entry (and removes the run's checkpoints); every rank gets rank 0's
    Result with its path (a failed write raises on every rank)."""

    def write() -> Result:
        result.path = _write_entry(root, key, result, state)
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        return result

    from .distributed import on_rank_zero

    return on_rank_zero(team, write)


def _run_with_torchrun(configs: list[Config], root: Path, *, data_root: str | Path | None, device: str | None,
                       recompute: bool, nproc: int, checkpoint_every: int, progress: bool) -> None:
    """Compute ``configs`` (one after another) in ONE torchrun job of ``nproc`` ranks on this node
    (``python -m flatbook train``), which writes their cache entries. The job's output is passed
    through as it comes (progress bars included, unless ``progress`` is false); stopping this
    process (KeyboardInterrupt) stops the job. A failure raises DistributedError with the job's
    error lines and torchrun's summary (which rank failed, how); checkpoints stay for a rerun."""
    import shlex
    import subprocess
    import sys

    from .distributed import DistributedError, torchrun_command

    root.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=root, prefix=".torchrun.", suffix=".json")
    config_file = Path(name)
    with os.fdopen(fd, "w") as f:
        json.dump([c.to_dict() for c in configs], f)
    args = ["flatbook", "train", str(config_file), "--results-dir", str(root),
            "--checkpoint-every", str(checkpoint_every)]
    if data_root is not None:
        args += ["--data-root", str(data_root)]
    if device is not None and not str(device).startswith("cuda"):
        args += ["--device", str(device)]
    if recompute:
        args += ["--recompute"]
    if not progress:
        args += ["--no-progress"]
    extra = shlex.split(os.environ.get("FLATBOOK_TORCHRUN_ARGS", ""))
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("FLATBOOK_NPROC", None)
    proc = subprocess.Popen(torchrun_command(nproc, args, extra=extra), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    tail = b""
    try:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):
            sys.stderr.write(chunk.decode(errors="replace"))  # carriage returns kept: bars redraw in place
            sys.stderr.flush()
            tail = (tail + chunk)[-(1 << 16):]
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: stop the job rather than leave it training
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        config_file.unlink(missing_ok=True)
    if code != 0:
        keys = ", ".join(c.key() for c in configs)
        raise DistributedError(f"the torchrun job of {nproc} ranks for config(s) {keys} failed (exit code {code}): "
                               f"{_torchrun_failure(tail.decode(errors='replace'))}. Checkpoints of unfinished runs "
                               f"stay in {root}/<key>.partial: run again to resume")


def _torchrun_failure(text: str) -> str:
    """The job's own error lines (``error: ...``) and torchrun's summary of the failed ranks (their
    rank, exit code and cause), or the last lines."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    errors = list(dict.fromkeys(ln for ln in lines if ln.startswith("error:")))
    summary = [ln for ln in lines if ln.split(":")[0].strip() in ("rank", "exitcode", "traceback")]
    picked = errors[-2:] + summary[-6:]
    return "; ".join(picked) if picked else " | ".join(lines[-5:]) or "no output"


def unique_configs(configs: list[Config]) -> list[Config]:
    """``configs`` without repeats (equal cache keys), in their first order."""
    seen: dict[str, Config] = {}
    for c in configs:
        seen.setdefault(c.key(), c)
    return list(seen.values())


def hessian_indices(n_train: int, hessian_samples: int | None, *, spectrum_seed: int):
    """The training images the Hessian is measured over: all ``n_train`` (``hessian_samples`` None
    or >= n_train), else ``hessian_samples`` of them drawn without replacement by a generator seeded
    with ``spectrum_seed``, in increasing order. A different probe seed thus also draws different
    Hessian images, so the spread over seeds includes the choice of images."""
    import torch

    if hessian_samples is None or hessian_samples >= n_train:
        return torch.arange(n_train)
    gen = torch.Generator().manual_seed(int(spectrum_seed))
    return torch.randperm(n_train, generator=gen)[:hessian_samples].sort().values


SPECTRUM_FIELDS = ("spectrum", "lanczos_steps", "probes", "bn_mode", "hessian_batch_size", "hessian_samples",
                   "spectrum_seed")


def training_part(c: Config) -> dict[str, Any]:
    """The resolved config without its spectrum settings (``SPECTRUM_FIELDS``): two configs with the
    same training part train the same weights."""
    return {k: v for k, v in c.resolved().to_dict().items() if k not in SPECTRUM_FIELDS}


def _trained_with_same_settings(root: Path, c: Config) -> Result | None:
    """A cached Result trained exactly as ``c`` (all fields but ``SPECTRUM_FIELDS`` equal), or None."""
    wanted = training_part(c)
    for entry, other in _stored_entries(root):
        if isinstance(other, Exception):
            continue
        try:
            if training_part(other) == wanted:
                return _load_entry(entry, other.resolved(), entry.name)
        except (ValueError, KeyError, TypeError, _CorruptEntry):
            continue
    return None


def _measure(c: Config, model, x, y, device, num_params: int, progress: bool, process_group: Any = None):
    """(Spectrum or None, seconds): SLQ as ``c`` says over (x, y) (see the module docstring); with a
    ``process_group`` the Hessian products are shared out over its ranks."""
    import torch

    from .curvature import HessianOperator
    from .spectrum import slq

    if not c.spectrum:
        return None, 0.0
    t1 = time.perf_counter()
    op = HessianOperator(model, torch.nn.functional.cross_entropy, (x.to(device), y.to(device)),
                         batch_size=c.hessian_batch_size, bn_mode=c.bn_mode, process_group=process_group)
    big = num_params * c.lanczos_steps * c.probes > 2**28  # keep a large Lanczos basis on the CPU in float32
    spectrum = slq(op, steps=c.lanczos_steps, probes=c.probes, seed=c.spectrum_seed, progress=progress,
                   basis_device="cpu" if big else None, basis_dtype=torch.float32 if big else torch.float64)
    return spectrum, time.perf_counter() - t1


_WORKER_DEVICE: str | None = None  # the device a run_many worker process was given (one GPU each)


def worker_devices(workers: int, device: str | None = None, gpus: int | None = None) -> list[str | None]:
    """The device of each of ``workers`` worker processes of ``run_many``: with several CUDA devices
    in use (``device`` None or "cuda" on a machine with GPUs), one GPU per worker, round-robin
    (``cuda:0``, ``cuda:1``, ...: workers = number of GPUs puts one run on each, 2 x GPUs two small
    runs on each, which keeps a GPU busy while the other run's step waits on kernel launches);
    otherwise (the CPU, or one pinned device such as "cuda:1") ``device`` for every worker.
    ``gpus``: the number of GPUs to plan for (default: the ones this machine has)."""
    from .checks import nonnegative_int, positive_int

    import torch

    workers = positive_int("workers", workers)
    if gpus is not None:
        gpus = nonnegative_int("gpus", gpus)
    wants_cuda = device == "cuda" or (device is None and (torch.cuda.is_available() if gpus is None else gpus > 0))
    count = (torch.cuda.device_count() if gpus is None else gpus) if wants_cuda else 0
    if count == 0:
        return [device] * workers
    return [f"cuda:{i % count}" for i in range(workers)]


def describe_route(runs: int, *, workers: int = 1, nproc: int = 1, device: str | None = None,
                   gpus: int | None = None) -> str:
    """How ``run_many(configs, workers=..., nproc=..., device=...)`` computes ``runs`` uncached
    configs (the route ``python -m flatbook plan`` prints): one torchrun job of ``nproc`` data-parallel
    ranks taking the runs one after another; or ``workers`` processes, each on its own device
    (``worker_devices``: GPUs round-robin, several runs a GPU when workers exceed GPUs); or this
    process, one run after another. ``gpus``: plan for that many GPUs (default: this machine's)."""
    from .checks import nonnegative_int, positive_int

    runs, workers, nproc = nonnegative_int("runs", runs), positive_int("workers", workers), positive_int("nproc", nproc)
    if runs == 0:
        return "nothing to train (every run is cached or shared)"
    if nproc > 1:
        return (f"one torchrun job of {nproc} data-parallel ranks (one GPU each with NCCL, else gloo on the CPU), "
                f"the {runs} run(s) one after another")
    if workers == 1 or runs == 1:
        where = worker_devices(1, device, gpus)[0] or ("cuda" if (gpus or 0) > 0 else "the default device")
        return f"this process, {runs} run(s) one after another on {where}"
    placed = worker_devices(min(workers, runs), device, gpus)
    on_gpus = sorted({d for d in placed if d and str(d).startswith("cuda:")})
    if on_gpus:
        per_gpu = -(-len(placed) // len(on_gpus))
        return (f"{runs} runs in {len(placed)} worker processes on {len(on_gpus)} GPU(s) ({', '.join(placed)}): "
                f"up to {per_gpu} run(s) at a time per GPU")
    return (f"{runs} runs in {len(placed)} worker processes on {placed[0] or 'the default device'}, each on its "
            "configs' threads")


def _claim_device(devices) -> None:
    """Worker-process initialiser: take the next device of the shared queue for this process and,
    for a GPU, make it the process's current CUDA device (``torch.cuda.set_device``), so that
    everything that allocates on "the current device" (cuDNN workspaces, the CUDA RNG, NCCL)
    uses this worker's GPU and not cuda:0."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()
    if _WORKER_DEVICE is not None and str(_WORKER_DEVICE).startswith("cuda:"):
        import torch

        torch.cuda.set_device(torch.device(_WORKER_DEVICE))


def _worker(config: dict, results_dir: str, data_root: str | None, device: str | None) -> str:
    device = _WORKER_DEVICE if _WORKER_DEVICE is not None else device
    r = run(Config.from_dict(config), results_dir=results_dir, data_root=data_root, device=device, progress=False)
    return r.key


def map_in_processes(fn, calls: list[tuple], *, workers: int, desc: str, unit: str, progress: bool = True,
                     context: Any = None, initializer: Any = None, initargs: tuple = ()) -> None:
    """``fn(*call)`` for every tuple of ``calls`` in ``workers`` processes (``context``: a multiprocessing
    context, default "spawn": never fork a process that has run torch ops), with one progress bar over
    the calls; the first exception a call raises is raised here. Results are not returned: the
    callers' workers store what they compute (the results cache, measures beside the weights)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(calls), desc=desc, unit=unit)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context or mp.get_context("spawn"),
                             initializer=initializer, initargs=initargs) as pool:
        futures = [pool.submit(fn, *call) for call in calls]
        try:
            for f in as_completed(futures):
                f.result()
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()


def sweep(base: Config | dict, weight_decays: list[float], *, workers: int = 1,
          results_dir: str | Path | None = None, data_root: str | Path | None = None, device: str | None = None,
          progress: bool = True) -> list[Result]:
    """One Result per weight decay (in the given order): ``base`` with ``weight_decay`` replaced;
    ``run_many`` of those configs (see it for ``workers``)."""
    base = Config.from_dict(base)
    if not isinstance(weight_decays, (list, tuple)) or not weight_decays:
        raise ConfigError(f"weight_decays must be a non-empty list of numbers >= 0, got {weight_decays!r}")
    configs = []
    for i, wd in enumerate(weight_decays):
        if not _is_number(wd) or wd < 0:
            raise ConfigError(f"weight_decays[{i}] = {wd!r} is invalid: a finite number >= 0")
        configs.append(base.replace(weight_decay=float(wd)))
    return run_many(configs, workers=workers, results_dir=results_dir, data_root=data_root, device=device,
                    progress=progress)


def run_many(configs: list[Config | dict], *, workers: int = 1, results_dir: str | Path | None = None,
             data_root: str | Path | None = None, device: str | None = None, progress: bool = True,
             nproc: int | None = None, checkpoint_every: int = 10) -> list[Result]:
    """One Result per config (in the given order). Every config is validated before any training.
    Cached results are loaded; with ``workers > 1`` the others run in that many spawned worker
    processes (a speed setting only: each run computes on its config's ``threads``, so a result is
    the same bits with any number of workers; keep workers x threads at most the CPU cores): on the
    CPU for small models, whose steps are dominated by single-threaded overhead; on a machine with N
    GPUs, workers=N gives
    each worker its own GPU (``worker_devices``), one run per GPU at a time. Under a distributed
    job (torchrun, or ``nproc`` > 1, default ``$FLATBOOK_NPROC``) each run takes every rank, so
    ``workers`` is set to 1 (with a warning); with ``nproc`` > 1 the uncached configs are computed
    in ONE torchrun job of ``nproc`` ranks (``run``), one after another."""
    from .checks import positive_int

    from .distributed import current_group

    workers = positive_int("workers", workers)
    if not isinstance(configs, (list, tuple)) or not configs:
        raise ConfigError(f"configs must be a non-empty list of configs, got {configs!r}")
    nproc = positive_int("nproc", default_nproc() if nproc is None else nproc)
    if workers > 1 and (current_group() is not None or nproc > 1):
        warnings.warn(f"workers={workers} is not used: every uncached run already takes all the ranks of a "
                      "distributed job (torchrun, or $FLATBOOK_NPROC), so the runs go one after another", stacklevel=2)
        workers = 1
    configs = [Config.from_dict(c).resolved() for c in configs]
    root = globals()["results_dir"](results_dir)
    todo = [c for c in unique_configs(configs) if not (root / c.key() / "result.json").exists()]
    if nproc > 1 and current_group() is None and todo:  # one torchrun job for all the uncached runs
        for c in todo:
            _check_split(c, nproc)
        _run_with_torchrun(todo, root, data_root=data_root, device=device, recompute=False, nproc=nproc,
                           checkpoint_every=checkpoint_every, progress=progress)
    elif workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # never fork a process that has run torch ops
        n_processes = min(workers, len(todo))
        devices = ctx.Queue()
        for d in worker_devices(n_processes, device):
            devices.put(d)
        map_in_processes(_worker, [(c.to_dict(), str(root), None if data_root is None else str(data_root), device)
                                   for c in todo], workers=n_processes, context=ctx,
                         desc=f"{configs[0].model}: {len(todo)} runs in {workers} processes", unit="run",
                         progress=progress, initializer=_claim_device, initargs=(devices,))
    out = [run(c, results_dir=root, data_root=data_root, device=device, progress=progress, nproc=1)
           for c in configs]
    trained_here = {c.key() for c in todo}
    for r in out:
        if r.key in trained_here:
            r.cached = False  # computed by this call (in a worker), not found in the cache
    return out
