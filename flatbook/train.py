"""Training as the paper's code did it: optimisers, schedules, BatchNorm recompute, iterate averaging.

``fit(model, train, val, ...)`` minimises the MEAN cross-entropy over mini-batches of the
training tensors (seeded shuffles, optional crop-and-flip augmentation, see
``flatbook.batching``), one learning rate per epoch from the paper's schedule:

* ``"sgd"``: momentum SGD with L2 weight decay on ALL parameters (biases and BatchNorm affine
  too): g <- grad + wd * w; b <- mu * b + g; w <- w - lr * b (PyTorch's SGD, dampening 0).
* ``"adam"``: Adam with the L2 term in the gradient (coupled): g <- grad + wd * w.
* ``"adamw"``: Adam with decoupled decay: w <- w (1 - lr * wd), then the Adam step on grad.
* ``"gadam"``: AdamW plus iterate averaging (``averaging_start`` required), the paper's Gadam.

Iterate averaging (any optimiser; SWA when used with SGD): after every epoch e (0-based) with
e + 1 >= ``averaging_start`` the parameters are added to a running mean
w_avg <- w_avg + (w - w_avg) / (n + 1). The learning rate then follows
``schedules.averaging_lr`` (the paper's form over ``averaging_start`` epochs, ending at
``lr_averaging``) instead of ``schedules.paper_lr`` over all epochs. Evaluations after averaging
has begun use the averaged weights, with their own BatchNorm statistics, and ``fit`` leaves the
averaged weights in the model.

BatchNorm: after every epoch the running statistics are recomputed over one pass of the training
batches (as the authors' code did, with the training augmentation), as an equal-weight average
over batches (momentum None), before evaluation. Dropout is on during training only.

History, one row per epoch: ``train_loss``/``train_acc`` (the running mean over the epoch's
mini-batches, in train mode, as the authors' logs), ``val_loss``/``val_acc`` (a full pass in eval
mode, when ``val`` is given), ``weight_norm`` (||w||_2 over all parameters of the evaluated
model), ``lr``, ``seconds`` (the epoch's wall time), ``averaged`` (how many iterates the
evaluated weights average; 0 before averaging starts).

Checkpoints: with ``checkpoint_dir`` and ``checkpoint_every=k`` the full state (weights,
optimiser, averaged weights, RNG, history) is written atomically after every k-th epoch and at
the end; a later call with the same arguments resumes after the last checkpointed epoch and
ends with the same weights as an uninterrupted run (batches are seeded per epoch; dropout draws
come from a private, checkpointed RNG). Arguments that change the run (optimiser, lr, ...) are
stored with the checkpoint, and a mismatch is an error, not a silent resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .batching import AUGMENTATIONS, TensorBatches
from .checks import finite_number, positive_int
from .checks import seed as check_seed
from .device import default_device, seed_cuda_generator
from .distributed import (Ranks, agree, check_batch_split, collective_device, global_batchnorm, on_rank_zero,
                          rank_device, ranks, shard_slice, sharded_dropouts)
from .schedules import averaging_lr, paper_lr

__all__ = ["OPTIMIZERS", "SCHEDULES", "History", "NonFiniteLoss", "fit", "evaluate", "recompute_bn",
           "weight_norm", "make_optimizer", "learning_rate", "has_batchnorm", "default_eval_batch_size"]

OPTIMIZERS = ("sgd", "adam", "adamw", "gadam")
SCHEDULES = ("paper", "constant")
CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "weight_norm", "lr", "seconds",
                   "averaged")


class NonFiniteLoss(FloatingPointError):
    """Training produced a NaN or infinite mini-batch loss."""


@dataclass
class History:
    """Per-epoch training record (see the module docstring for the columns)."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def column(self, name: str) -> list[Any]:
        """The values of one history column (one per epoch row); an unknown name is a KeyError listing
        the columns."""
        if name not in HISTORY_COLUMNS:
            raise KeyError(f"unknown history column {name!r}; columns are {HISTORY_COLUMNS}")
        return [row[name] for row in self.rows]

    def to_frame(self):
        """The history as a pandas DataFrame indexed by epoch (1-based)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(HISTORY_COLUMNS)).set_index("epoch")

    def to_list(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (copies), one per epoch."""
        return [dict(row) for row in self.rows]


# --- small pieces ---------------------------------------------------------------------------


def has_batchnorm(model: nn.Module) -> bool:
    """True when any module of ``model`` is a BatchNorm layer (1-D, 2-D or 3-D)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def weight_norm(model: nn.Module) -> float:
    """||w||_2 over all parameters of ``model`` (computed in float64)."""
    with torch.no_grad():
        return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()))


def learning_rate(epoch: int, *, epochs: int, lr: float, schedule: str = "paper", lr_ratio: float = 0.01,
                  averaging_start: int | None = None, lr_averaging: float | None = None) -> float:
    """The learning rate of 0-based ``epoch``: constant, the paper's schedule, or (with
    ``averaging_start``) the iterate-averaging variant ending at ``lr_averaging``."""
    if schedule == "constant":
        return float(lr)
    if averaging_start is not None:
        return averaging_lr(epoch, averaging_start, lr, lr_averaging if lr_averaging is not None else lr * lr_ratio)
    return paper_lr(epoch, epochs, lr, lr_ratio)


def make_optimizer(name: str, params: Iterable[torch.Tensor], *, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                   eps: float = 1e-8) -> torch.optim.Optimizer:
    """The optimiser ``name`` (see the module docstring) over ``params``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; optimizers are: {', '.join(OPTIMIZERS)}")
    params = list(params)
    # fused kernels where PyTorch has them for the parameters' device (CPU and CUDA): same update,
    # one kernel per step (benchmarks/train.py)
    fast = {"fused": True} if params and all(p.device.type in ("cpu", "cuda") for p in params) else {"foreach": True}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **fast)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **fast)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **fast)


@torch.no_grad()
def recompute_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Reset every BatchNorm layer's running statistics and recompute them as the equal-weight
    average over one pass of ``batches`` (train-mode forward, no gradients). No-op without BN.
    The model's train/eval flag and the layers' momenta are restored.

    Batch i (0-based) enters the average with momentum 1 / (i + 1): the cumulative average that
    momentum None gives, the same floating-point numbers, without torch reading each layer's
    batch count back to the host on every batch (a GPU synchronisation per layer and batch)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
    model.train()
    device = next(model.parameters()).device
    try:
        for i, (xb, yb) in enumerate(batches):
            for bn in bns:
                bn.momentum = 1.0 / (i + 1)
            model(xb.to(device, non_blocking=True))
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.train(was_training)


def default_eval_batch_size(device: torch.device | str) -> int:
    """The batch size for evaluation passes: 1000 on CUDA, 128 elsewhere. Measured on a 2-core
    CPU: large convolution batches are slower there (PreResNet-11 on 1,000 32x32 images: 2.6 s
    at batch 1000, 1.2 s at 128; a WRN-10-1 1.2 s and 0.44 s; benchmarks/train.py section 4)."""
    return 1000 if torch.device(device).type == "cuda" else 128


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int | None = None,
             bf16: bool = False, per_example: bool = False, process_group: Any = None):
    """(mean cross-entropy, accuracy) of ``model`` in eval mode over all of (x, y), in data order,
    in batches of ``batch_size`` (None: ``default_eval_batch_size`` of the model's device).
    With ``per_example`` a third element: a bool CPU tensor, whether each example was classified
    correctly (paired comparisons of two models on the same images). The model's train/eval
    flag is restored. With a ``process_group`` every rank (holding the same model and data)
    evaluates its contiguous share of the examples and the sums are all-reduced (float64 loss,
    int64 counts; the per-example record gathered), so every rank returns the whole answer."""
    group = ranks(process_group)
    if group.distributed:
        return _evaluate_shared(model, x, y, group, batch_size=batch_size, bf16=bf16, per_example=per_example)
    total_loss, correct, hits = _evaluation_sums(model, x, y, batch_size, bf16, per_example)
    n = len(x)
    if per_example:
        return float(total_loss) / n, float(correct) / n, hits
    return float(total_loss) / n, float(correct) / n


def _evaluation_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None, bf16: bool,
                     per_example: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Over (x, y) in eval mode: the float64 cross-entropy SUM, the int64 count of correct
    predictions (both on the model's device) and, with ``per_example``, the bool CPU record."""
    device = next(model.parameters()).device
    batch_size = default_eval_batch_size(device) if batch_size is None else positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    hits: list[torch.Tensor] = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device, non_blocking=True)
            yb = y[start:start + batch_size].to(device, non_blocking=True)
            with _autocast(device, bf16):
                logits = model(xb)
            total_loss += F.cross_entropy(_at_least_float32(logits), yb, reduction="sum").double()
            hit = logits.argmax(1) == yb
            correct += hit.sum()
            if per_example:
                hits.append(hit.cpu())
    finally:
        model.train(was_training)
    record = (torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)) if per_example else None
    return total_loss, correct, record


def _evaluate_shared(model: nn.Module, x: torch.Tensor, y: torch.Tensor, group: Ranks, *, batch_size: int | None,
                     bf16: bool, per_example: bool):
    import torch.distributed as dist

    device = next(model.parameters()).device
    where = collective_device(group.group, device)
    mine = shard_slice(len(x), group.rank, group.world_size)
    n_mine = mine.stop - mine.start
    loss_sum, correct, hits = _evaluation_sums(model, x[mine], y[mine], batch_size, bf16, per_example=True)
    totals = torch.stack([loss_sum, correct.double()]).to(where)
    dist.all_reduce(totals, group=group.group)
    n = len(x)
    loss, acc = float(totals[0]) / n, float(totals[1]) / n
    if not per_example:
        return loss, acc
    longest = shard_slice(len(x), 0, group.world_size)
    padded = torch.zeros(longest.stop - longest.start, dtype=torch.uint8, device=where)
    padded[:n_mine] = hits.to(where, torch.uint8)
    parts = [torch.empty_like(padded) for _ in range(group.world_size)]
    dist.all_gather(parts, padded, group=group.group)
    record = torch.cat([p[:s.stop - s.start].cpu() for p, s in
                        zip(parts, (shard_slice(n, r, group.world_size) for r in range(group.world_size)))])
    return loss, acc, record.bool()


def _at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """bf16/half logits (autocast) go up to float32 for the loss; float32 and float64 stay as they are."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _autocast(device: torch.device | str, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def _check_pair(name: str, pair: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair)):
        raise ValueError(f"{name} must be an (x, y) pair of tensors, got {type(pair).__name__}")
    x, y = pair
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{name}: x has {len(x)} samples and y has {len(y)}; they must be equal and non-zero")
    if y.dtype != torch.int64:
        raise ValueError(f"{name}: labels must be int64 class indices, got {y.dtype}")
    return x, y


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fingerprint(settings: dict[str, Any], model: nn.Module, n_train: int) -> str:
    shapes = [(n, list(p.shape)) for n, p in model.named_parameters()]
    blob = json.dumps({"settings": settings, "shapes": shapes, "n_train": n_train}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# --- the loop -------------------------------------------------------------------------------


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    optimizer: str = "sgd",
    lr: float = 0.01,
    epochs: int = 1,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "paper",
    lr_ratio: float = 0.01,
    averaging_start: int | None = None,
    lr_averaging: float | None = None,
    augment: str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    bf16: bool = False,
    channels_last: bool = False,
    eval_batch_size: int | None = None,
    val_every: int = 1,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    progress: bool | str = True,
    process_group: Any = None,
) -> History:
    """Train ``model`` in place (see the module docstring) and return its per-epoch History.

    ``train``/``val``: (x, y) tensors (any device; moved to ``device``, default CUDA when
    present). ``progress``: True (one bar over epochs with loss and accuracy), "batches" (also a
    bar per epoch over its batches) or False. ``val_every``: validate (and recompute the BatchNorm
    statistics the validation uses) after every ``val_every``-th epoch and after the last; the
    other history rows have NaN validation loss and accuracy. The training trajectory does not
    depend on it: the BatchNorm recompute runs with its own copy of the random state.

    ``process_group``: None (one process), or a ``torch.distributed`` group whose ranks all call
    ``fit`` with the same arguments, model and data (checked first): data-parallel training of the
    same run (``flatbook.distributed``). Each step's global batch of ``batch_size`` is the
    single-process batch cut into world-size shares (the world size must divide ``batch_size``);
    DistributedDataParallel averages the gradients, BatchNorm layers use the global batch's
    statistics (in training, the epoch's recompute and the averaged weights' recompute), and
    validation is shared out; dropout applies one process's masks (every rank draws the global
    batch's mask from an identically seeded generator and keeps its rows). The weights and
    history equal one process's up to the order of floating-point sums. Rank 0 alone reads and
    writes the checkpoint (broadcast to the others when resuming) and shows progress; the
    checkpoint is the single-process one, so a run may resume on another number of ranks. ``device`` defaults to the rank's GPU
    (``cuda:LOCAL_RANK``, which ``distributed.init_from_env`` makes the current device; a rank whose
    current device is another GPU is refused) with NCCL, else the CPU.
    """
    # --- validate everything before any work
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    x_train, y_train = _check_pair("train", train)
    if val is not None:
        x_val, y_val = _check_pair("val", val)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; optimizers are: {', '.join(OPTIMIZERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; schedules are: {', '.join(SCHEDULES)}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    lr = finite_number("lr", lr, minimum=0, strict=True)
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    if eval_batch_size is not None:
        eval_batch_size = positive_int("eval_batch_size", eval_batch_size)
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    val_every = positive_int("val_every", val_every)
    momentum = finite_number("momentum", momentum, minimum=0, below=1.0)
    weight_decay = finite_number("weight_decay", weight_decay, minimum=0)
    lr_ratio = finite_number("lr_ratio", lr_ratio, minimum=0, strict=True)
    if optimizer == "gadam" and averaging_start is None:
        raise ValueError("optimizer 'gadam' is AdamW with iterate averaging: give averaging_start "
                         "(the first 1-based epoch whose weights are averaged, e.g. 161 of 300)")
    if averaging_start is not None:
        averaging_start = positive_int("averaging_start", averaging_start)
        if averaging_start > epochs:
            raise ValueError(f"averaging_start={averaging_start} is after the last epoch (epochs={epochs})")
    if lr_averaging is not None:
        lr_averaging = finite_number("lr_averaging", lr_averaging, minimum=0, strict=True)
        if averaging_start is None:
            raise ValueError("lr_averaging is the learning rate of the averaging phase: give averaging_start too")
    if progress not in (True, False, "batches"):
        raise ValueError(f"progress must be True, False or 'batches', got {progress!r}")
    group = ranks(process_group)
    if group.distributed:
        check_batch_split(batch_size, group.world_size, len(x_train))
        if device is None:
            device = rank_device(group.group)
    device = torch.device(device if device is not None else default_device())
    if device.type == "cuda" and device.index is None:  # "cuda": the current GPU, named, so every
        device = torch.device("cuda", torch.cuda.current_device())  # RNG call below means that one
    if bf16 and device.type != "cuda":
        raise ValueError(f"bf16 autocast is for CUDA; the device is {device}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters")
    if not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be true or false, got {channels_last!r}")

    settings = dict(optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, momentum=momentum,
                    weight_decay=weight_decay, schedule=schedule, lr_ratio=lr_ratio,
                    averaging_start=averaging_start, lr_averaging=lr_averaging, augment=augment, seed=check_seed(seed),
                    bf16=bool(bf16), val_every=val_every)
    if channels_last:  # only when set, so the checkpoints of runs without it keep their fingerprint
        settings["channels_last"] = True
    fingerprint = _fingerprint(settings, model, len(x_train))
    if group.distributed:
        agree(group.group, "the training run (settings, model shapes, SHA-256 of the training and validation data)",
              (fingerprint, _data_checksum(x_train, y_train), None if val is None else _data_checksum(x_val, y_val)))

    model.to(device)
    x_train, y_train = x_train.to(device), y_train.to(device)
    if val is not None:
        x_val, y_val = x_val.to(device), y_val.to(device)
    shard = (group.rank, group.world_size) if group.distributed else None
    batches = TensorBatches(x_train, y_train, batch_size, shuffle=True, seed=seed, augment=augment, shard=shard)
    bn_batches = TensorBatches(x_train, y_train, batch_size, shuffle=True, seed=seed + 7919, augment=augment,
                               shard=shard)
    bn = has_batchnorm(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer("adamw" if optimizer == "gadam" else optimizer, params, lr=lr, momentum=momentum,
                         weight_decay=weight_decay)
    averaged: list[torch.Tensor] | None = None
    n_averaged = 0
    history = History()
    start_epoch = 0
    gen = torch.Generator(device="cpu").manual_seed(int(seed))  # dropout and other global-RNG draws
    cuda_rng: list[torch.Tensor] | None = None

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    state = _read_checkpoint(ckpt_path, fingerprint, group)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if state["averaged"] is not None:
            averaged = [t.to(device) for t in state["averaged"]]
        n_averaged = state["n_averaged"]
        history = History([dict(r) for r in state["history"]])
        start_epoch = state["epoch"]
        gen.set_state(state["rng"])
        cuda_rng = state.get("cuda_rng")

    def evaluated_state(keep: bool) -> tuple[float, float, float]:
        """val loss, val acc, weight norm of the weights to report (averaged when averaging);
        with ``keep`` the averaged weights and their BatchNorm statistics stay in the model
        (the last epoch: the model returned is exactly the one the last history row describes)."""
        if averaged is not None:
            backup = None if keep else {k: v.detach().clone() for k, v in model.state_dict().items()}
            _copy_into(params, averaged)
            if bn:
                with _isolated_rng(device):
                    recompute_bn(model, bn_batches)
            out = _val_metrics() + (weight_norm(model),)
            if backup is not None:
                model.load_state_dict(backup)
            return out
        return _val_metrics() + (weight_norm(model),)

    def _val_metrics() -> tuple[float, float]:
        if val is None:
            return math.nan, math.nan
        return evaluate(model, x_val, y_val, batch_size=eval_batch_size, bf16=bf16, process_group=group.group)

    bar = None
    if progress and group.is_writer:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc=f"{optimizer} lr={lr:g} wd={weight_decay:g}", unit="epoch")
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                global_batchnorm(model, group.group), _memory_format(model, channels_last):
            forward = _data_parallel(model, group, device)
            torch.set_rng_state(gen.get_state())
            if device.type == "cuda":
                if cuda_rng is not None:
                    torch.cuda.set_rng_state(cuda_rng[0].cpu(), device)
                else:
                    seed_cuda_generator(device, seed)  # the training GPU's generator, not the current one's
            for epoch in range(start_epoch, epochs):
                t0 = time.perf_counter()
                rate = learning_rate(epoch, epochs=epochs, lr=lr, schedule=schedule, lr_ratio=lr_ratio,
                                     averaging_start=averaging_start, lr_averaging=lr_averaging)
                for param_group in opt.param_groups:
                    param_group["lr"] = rate
                batches.set_epoch(epoch)
                train_loss, train_acc = _train_epoch(forward, opt, batches, bf16, epoch, rate,
                                                     progress == "batches" and group.is_writer, group)
                last = epoch + 1 == epochs
                validate = (epoch + 1) % val_every == 0 or last
                if bn and validate:
                    bn_batches.set_epoch(epoch)
                    with _isolated_rng(device):  # dropout draws here must not move the training's RNG
                        recompute_bn(model, bn_batches)
                if averaging_start is not None and epoch + 1 >= averaging_start:
                    with torch.no_grad():
                        if averaged is None:
                            averaged = [p.detach().clone() for p in params]
                        else:
                            for a, p in zip(averaged, params):
                                a.add_(p.detach() - a, alpha=1.0 / (n_averaged + 1))
                    n_averaged += 1
                if bn and averaged is not None:
                    bn_batches.set_epoch(epoch)
                if validate:
                    val_loss, val_acc, wnorm = evaluated_state(keep=last)
                else:
                    val_loss, val_acc = math.nan, math.nan
                    with torch.no_grad():
                        wnorm = weight_norm(model) if averaged is None else math.sqrt(
                            sum(float(a.double().pow(2).sum()) for a in averaged)
                            + sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()
                                  if not p.requires_grad))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                row = dict(epoch=epoch + 1, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                           val_acc=val_acc, weight_norm=wnorm, lr=rate, seconds=time.perf_counter() - t0,
                           averaged=n_averaged)
                history.rows.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{train_acc:.4f}",
                                    **({"val_acc": f"{val_acc:.4f}"} if val is not None else {}))
                    bar.update(1)
                if ckpt_path is not None and ((epoch + 1) % checkpoint_every == 0 or last):
                    cuda_state = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else None
                    state = {
                        "fingerprint": fingerprint, "settings": settings, "epoch": epoch + 1,
                        "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "averaged": averaged, "n_averaged": n_averaged, "history": history.to_list(),
                        "rng": torch.get_rng_state(), "cuda_rng": cuda_state,
                    }
                    if group.is_writer:
                        _atomic_torch_save(state, ckpt_path)
    finally:
        if bar is not None:
            bar.close()
    return history


def _data_checksum(x: torch.Tensor, y: torch.Tensor) -> tuple:
    """(shape, dtype and SHA-256 of the bytes of x; the same of y): evidence that two ranks hold the
    same data, exact and the same on every CPU (a float sum's rounding depends on the kernel that
    added it, and a permutation of the data keeps the sum)."""
    return _tensor_digest(x) + _tensor_digest(y)


def _tensor_digest(t: torch.Tensor) -> tuple:
    """(shape, dtype, SHA-256 hex of the tensor's bytes in row-major order)."""
    raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return (tuple(t.shape), str(t.dtype), hashlib.sha256(raw.data).hexdigest())  # the buffer, not a copy of it


def _read_checkpoint(path: Path | None, fingerprint: str, group: Ranks) -> dict | None:
    """The checkpoint at ``path`` if there is one (None otherwise), checked against this run's
    fingerprint. Distributed: rank 0 reads it and broadcasts it (or its error) to every rank."""

    def read() -> dict | None:
        if path is None or not path.exists():
            return None
        try:
            # to the CPU whatever the device: the RNG states must be CPU ByteTensors (Generator.set_state
            # refuses any other), load_state_dict copies the weights and the optimiser's state onto
            # the parameters' device, and the averaged weights are moved below
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
            raise RuntimeError(f"checkpoint {path} is unreadable ({exc}); delete it to start afresh") from exc
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"checkpoint {path} belongs to a different run (other settings, model or data): its "
                             f"settings are {state.get('settings')}; delete it or use another checkpoint_dir")
        return state

    return on_rank_zero(group, read)


def _data_parallel(model: nn.Module, group: Ranks, device: torch.device) -> nn.Module:
    """What a training step calls: ``model`` itself, or (distributed) a DistributedDataParallel
    wrapper that averages the gradients over the ranks (buffers are not broadcast: the global
    BatchNorm keeps them equal on every rank)."""
    if not group.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   process_group=group.group, **_no_buffer_sync(DistributedDataParallel))


def _no_buffer_sync(ddp_class: type) -> dict[str, bool]:
    """DistributedDataParallel's keyword that turns off its buffer broadcast before each forward:
    ``forward_sync_buffers`` where the installed PyTorch has it (it replaces
    ``broadcast_buffers``), else ``broadcast_buffers``, which every supported version accepts."""
    import inspect

    parameters = inspect.signature(ddp_class.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in parameters else {"broadcast_buffers": False}


@contextlib.contextmanager
def _memory_format(model: nn.Module, channels_last: bool):
    """With ``channels_last``, the model's 4-D weights and every 4-D input of its forward in the
    channels-last layout while the block runs (the same parameter objects: the optimiser keeps them),
    then the model back in the default layout. The layout chooses other convolution kernels, so the
    bits differ from the default layout's (a config field, in the cache key); the values of the
    weights do not depend on the layout they are stored in."""
    if not channels_last:
        yield
        return

    def to_channels_last(_module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
        return None

    model.to(memory_format=torch.channels_last)
    handle = model.register_forward_pre_hook(to_channels_last)
    try:
        yield
    finally:
        handle.remove()
        model.to(memory_format=torch.contiguous_format)


def _isolated_rng(device: torch.device):
    """The global RNG state (and CUDA's on a CUDA device) restored on exit: draws inside do not
    change what the training draws next."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


@torch.no_grad()
def _copy_into(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    for d, s in zip(dst, src):
        d.copy_(s)


def _train_epoch(model: nn.Module, opt: torch.optim.Optimizer, batches: TensorBatches, bf16: bool, epoch: int,
                 rate: float, batch_bar: bool, group: Ranks | None = None) -> tuple[float, float]:
    """One pass over ``batches``: returns the running-mean loss and accuracy over the epoch.
    Raises NonFiniteLoss naming the first non-finite mini-batch (checked once per epoch, so a
    GPU is not synchronised every step). Distributed (``group``): ``model`` is the DDP wrapper,
    each rank's loss is its share's cross-entropy SUM times W / B (B the global batch), so the
    averaged gradient is that of the global batch's mean; the per-batch sums and hits are
    all-reduced once, at the end of the epoch."""
    if group is not None and group.distributed:
        return _train_epoch_shared(model, opt, batches, bf16, epoch, rate, batch_bar, group)
    model.train()
    device = next(model.parameters()).device
    losses: list[torch.Tensor] = []
    hits: list[torch.Tensor] = []
    sizes: list[int] = []
    iterator: Iterable = batches
    if batch_bar:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, total=len(batches), desc=f"epoch {epoch + 1}", leave=False, unit="batch")
    for xb, yb in iterator:
        with _autocast(device, bf16):
            logits = model(xb)
        loss = F.cross_entropy(_at_least_float32(logits), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        hits.append((logits.detach().argmax(1) == yb).sum())
        sizes.append(len(yb))
    losses = torch.stack(losses)
    seen = sum(sizes)
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        step = int((~finite).nonzero()[0])
        raise NonFiniteLoss(f"non-finite training loss {float(losses[step])} at epoch {epoch + 1}, step {step + 1} "
                            f"of {len(batches)} (learning rate {rate:g}); lower the learning rate or check the data")
    weights = torch.tensor(sizes, dtype=torch.float64, device=device)
    return float((losses.double() * weights).sum()) / seen, float(torch.stack(hits).sum()) / seen


def _train_epoch_shared(model: nn.Module, opt: torch.optim.Optimizer, batches: TensorBatches, bf16: bool, epoch: int,
                        rate: float, batch_bar: bool, group: Ranks) -> tuple[float, float]:
    import torch.distributed as dist

    model.train()
    device = next(model.parameters()).device
    global_sizes = batches.global_batch_sizes()
    sums: list[torch.Tensor] = []
    hits: list[torch.Tensor] = []
    iterator: Iterable = batches
    if batch_bar:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, total=len(batches), desc=f"epoch {epoch + 1}", leave=False, unit="batch")
    dropouts = sharded_dropouts(model)
    for step, (xb, yb) in enumerate(iterator):
        for layer in dropouts:  # the global batch the host knows: no all-reduce of the shares' sizes
            layer.global_batch = global_sizes[step]
        with _autocast(device, bf16):
            logits = model(xb)
        loss_sum = F.cross_entropy(_at_least_float32(logits), yb, reduction="sum")
        opt.zero_grad(set_to_none=True)
        (loss_sum * (group.world_size / global_sizes[step])).backward()
        opt.step()
        sums.append(loss_sum.detach().double())
        hits.append((logits.detach().argmax(1) == yb).sum().double())
    for layer in dropouts:
        layer.global_batch = None
    where = collective_device(group.group, device)
    totals = torch.stack([torch.stack(sums), torch.stack(hits)]).to(where)
    dist.all_reduce(totals, group=group.group)
    sizes = torch.tensor(global_sizes, dtype=torch.float64, device=where)
    losses = totals[0] / sizes
    finite = torch.isfinite(losses)
    if not bool(finite.all()):
        step = int((~finite).nonzero()[0])
        raise NonFiniteLoss(f"non-finite training loss {float(losses[step])} at epoch {epoch + 1}, step {step + 1} "
                            f"of {len(global_sizes)} (learning rate {rate:g}); lower the learning rate or check the data")
    seen = float(sizes.sum())
    return float(totals[0].sum()) / seen, float(totals[1].sum()) / seen

