"""Batches from tensors held on the training device: no DataLoader, no per-sample PIL work.

* ``TensorBatches(x, y, batch_size, shuffle=..., seed=..., augment=...)``: an iterable of
  (x, y) batches. With ``shuffle=False`` the batches are in data order, the same on every pass
  (evaluation, Hessians). With ``shuffle=True`` pass number e (0, 1, ...) uses the permutation
  drawn from a private generator seeded with (seed, e): the same seed gives the same epochs,
  and the global RNG is never touched. ``set_epoch(e)`` jumps to epoch e (resuming).
* ``augment="crop-flip"``: the CIFAR augmentation of the paper's code, per sample and on the
  tensors: zero-pad by 4, crop a random 32x32 (any size: the input size) window, flip
  horizontally with probability 1/2, drawn from the same private generator.
* ``shard=(rank, world_size)``: this rank's share of every batch of the single-process run
  (``distributed.shard_slice`` of the batch: B / W contiguous samples of it), with the same
  permutation and the same augmentation draws as one process: the W ranks' shares of pass e
  together are exactly one process's pass e.
* ``pad_to(x, size, channels)``: zero-pad images centrally (28x28 -> 32x32 for Fashion-MNIST
  through CIFAR architectures) and repeat a single channel ``channels`` times.
* ``balanced_subset(y, per_class, seed=...)``: indices of ``per_class`` samples of each class, in
  data order (a seeded choice within each class).
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from .checks import nonnegative_int, positive_int
from .checks import seed as check_seed

__all__ = ["AUGMENTATIONS", "TensorBatches", "pad_to", "balanced_subset", "random_crop_flip"]

AUGMENTATIONS = (None, "crop-flip")


def pad_to(x: torch.Tensor, size: int = 32, channels: int | None = None) -> torch.Tensor:
    """Zero-pad (N, C, H, W) images to ``size`` x ``size`` (centred; the odd pixel right/bottom)
    and, for single-channel images, repeat the channel ``channels`` times."""
    if x.ndim != 4:
        raise ValueError(f"pad_to expects (N, C, H, W) images, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if size < max(h, w):
        raise ValueError(f"size {size} is smaller than the images ({h}x{w})")
    top, left = (size - h) // 2, (size - w) // 2
    x = F.pad(x, (left, size - w - left, top, size - h - top))
    if channels is not None and channels != x.shape[1]:
        if x.shape[1] != 1:
            raise ValueError(f"only single-channel images can be repeated to {channels} channels, got {x.shape[1]}")
        x = x.repeat(1, channels, 1, 1)
    return x


def balanced_subset(y: torch.Tensor, per_class: int, *, seed: int = 0) -> torch.Tensor:
    """Indices (sorted, so data order is kept) of ``per_class`` samples of every class."""
    positive_int("per_class", per_class)
    gen = torch.Generator(device="cpu").manual_seed(check_seed(seed))
    y_cpu = y.detach().cpu()
    chosen = []
    for c in torch.unique(y_cpu).tolist():
        idx = torch.nonzero(y_cpu == c).flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than per_class={per_class}")
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.sort(torch.cat(chosen)).values


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Per sample: zero-pad by ``padding``, crop a random window of the input's size, flip
    horizontally with probability 1/2. Offsets and flips come from ``gen`` (a CPU generator)."""
    offsets, flips = _crop_flip_draws(len(x), gen, padding)
    return _apply_crop_flip(x, offsets, flips, padding)


def _crop_flip_draws(n: int, gen: torch.Generator, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The random part of ``random_crop_flip`` for n samples: (n, 2) crop offsets and n flips."""
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    return offsets, flips


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor of random draws on ``device``. On a GPU through pinned memory with
    ``non_blocking=True``: a copy from ordinary memory waits for every kernel queued before it (a
    host synchronisation per batch); from pinned memory the host goes on at once. The values are
    the same either way."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _apply_crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int) -> torch.Tensor:
    n, c, h, w = x.shape
    offsets, flips = _to_device(offsets, x.device), _to_device(flips, x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    b = torch.arange(n, device=x.device)[:, None, None, None]
    ch = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[b, ch, rows[:, None, :, None], cols[:, None, None, :]]


class TensorBatches:
    """(x, y) batches of tensors on one device; see the module docstring."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 augment: str | None = None, drop_last: bool = False, shard: tuple[int, int] | None = None):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if len(x) == 0:
            raise ValueError("no samples to batch")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        if augment is not None and x.ndim != 4:
            raise ValueError(f"augment={augment!r} needs (N, C, H, W) images, got shape {tuple(x.shape)}")
        self.x, self.y = x, y
        self.batch_size = positive_int("batch_size", batch_size)
        self.shuffle, self.seed, self.augment, self.drop_last = bool(shuffle), check_seed(seed), augment, bool(drop_last)
        self.epoch = 0
        self.shard = None
        if shard is not None:
            if not (isinstance(shard, tuple) and len(shard) == 2):
                raise ValueError(f"shard must be a (rank, world_size) pair, got {shard!r}")
            rank, world = nonnegative_int("shard rank", shard[0]), positive_int("shard world_size", shard[1])
            if rank >= world:
                raise ValueError(f"shard rank {rank} is not below the world size {world}")
            self.shard = (rank, world)

    def set_epoch(self, epoch: int) -> None:
        """The next pass is epoch ``epoch`` (its shuffle and augmentation draws)."""
        nonnegative_int("epoch", epoch)
        self.epoch = epoch

    def global_batch_sizes(self) -> list[int]:
        """The sizes of one pass's batches in the single-process run (the sum over ranks of the
        shares, when sharded)."""
        n = len(self.x)
        stop = n - n % self.batch_size if self.drop_last else n
        return [min(self.batch_size, n - start) for start in range(0, stop, self.batch_size)]

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        x, y = self.x, self.y
        stop = n - n % self.batch_size if self.drop_last else n
        if self.shard is not None:
            yield from self._shard_batches(n, stop, gen)
            return
        if self.shuffle:  # one gather per epoch, then contiguous slices (cheaper than a gather per batch)
            order = _to_device(torch.randperm(n, generator=gen), self.x.device)
            x, y = x[order], y[order]
        for start in range(0, stop, self.batch_size):
            xb, yb = x[start:start + self.batch_size], y[start:start + self.batch_size]
            if self.augment == "crop-flip":
                xb = random_crop_flip(xb, gen)
            yield xb, yb

    def _shard_batches(self, n: int, stop: int, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of each batch: the same permutation and augmentation draws as one
        process (drawn for the whole batch, applied to the share), gathering only the share."""
        from .distributed import shard_slice

        rank, world = self.shard
        order = torch.randperm(n, generator=gen) if self.shuffle else None
        for start in range(0, stop, self.batch_size):
            size = min(self.batch_size, n - start)
            mine = shard_slice(size, rank, world)
            rows = slice(start + mine.start, start + mine.stop)
            idx = rows if order is None else _to_device(order[rows], self.x.device)
            xb, yb = self.x[idx], self.y[idx]
            if self.augment == "crop-flip":
                offsets, flips = _crop_flip_draws(size, gen, 4)
                xb = _apply_crop_flip(xb, offsets[mine], flips[mine], 4)
            yield xb, yb
