"""Several processes as one: the pieces of ``torch.distributed`` data parallelism flatbook uses.

A run on W ranks (processes, one per GPU, launched by ``torchrun``) is the single-process run
with its work shared out; the maths does not change:

* **Training** (``train.fit(process_group=...)``): every global mini-batch of B samples (the
  single-process batch, from the single-process permutation) is cut into W contiguous shares
  (``shard_slice``: B/W each; a last partial batch as evenly as possible); each rank computes the
  cross-entropy SUM over its share scaled by W/B, DistributedDataParallel averages the gradients
  over the ranks, so every rank steps with the gradient of the global batch's MEAN loss.
* **BatchNorm** (``global_batchnorm``): in train mode a layer normalises with the mean and
  (biased) variance of the GLOBAL batch, mean = sum_r S_r / n, var = sum_r Q_r / n with
  S_r = sum of the rank's activations and Q_r = sum of its squared deviations from the global
  mean (two all-reduces, differentiable: autograd carries the gradient through them), and
  updates its running statistics with the unbiased global variance, exactly as one BatchNorm
  on the whole batch. (PyTorch's SyncBatchNorm does the same on CUDA only; this one also runs
  on CPU ranks with gloo, where the tests check it.)
* **Dropout** (``global_batchnorm`` swaps these too): a layer draws the mask of the WHOLE global
  batch, as one process would (every rank's generator is seeded alike and consumed alike), and
  applies the rows of its share: the same masks as one process, bit for bit.
* **Hessian products** (``curvature.HessianOperator(process_group=...)``): the fixed batches are
  shared out round-robin and each product is all-reduced in float64.

``init_from_env`` joins the group a launcher such as ``torchrun`` describes in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL when the
ranks have GPUs (rank r uses ``cuda:LOCAL_RANK``), gloo otherwise. Its timeout
(``$FLATBOOK_RENDEZVOUS_TIMEOUT``, default 600 s) bounds the rendezvous AND every later
collective: a rank that waits longer than that for the others fails. ``agree`` checks that every
rank holds the same value (a config, a checkpoint) before any work, naming the ranks that differ.
``torchrun_command`` builds the launch command (one node, or several through ``extra`` options).
"""

from __future__ import annotations

import datetime
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import positive_int

__all__ = ["RENDEZVOUS_VARIABLES", "DistributedError", "Ranks", "ranks", "current_group", "init_from_env",
           "local_rank", "backend_of", "rank_device", "sharded_dropouts", "synced_batchnorm", "agree", "broadcast_object",
           "on_rank_zero", "collective_device", "shard_slice", "GlobalBatchNorm", "global_batchnorm",
           "ShardedDropout", "torchrun_command", "check_batch_split"]

RENDEZVOUS_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A distributed run that cannot start or go on (missing rendezvous, disagreeing ranks)."""


@dataclass(frozen=True)
class Ranks:
    """A process group as flatbook uses it: ``group`` (None: one process), this process's
    ``rank`` and the ``world_size``."""

    group: Any
    rank: int
    world_size: int

    @property
    def distributed(self) -> bool:
        """True when there is a process group (more than one rank shares the work)."""
        return self.group is not None

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes files (checkpoints, the results cache) and shows progress."""
        return self.rank == 0


def ranks(group: Any) -> Ranks:
    """``Ranks`` of a ``torch.distributed`` process group; None is one process (rank 0 of 1)."""
    if group is None:
        return Ranks(None, 0, 1)
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("process_group needs torch.distributed initialised in this process "
                         "(torch.distributed.init_process_group, e.g. under torchrun)")
    if not isinstance(group, dist.ProcessGroup):
        raise ValueError(f"process_group must be a torch.distributed ProcessGroup (e.g. "
                         f"torch.distributed.group.WORLD), got {type(group).__name__}")
    return Ranks(group, dist.get_rank(group), dist.get_world_size(group))


def current_group() -> Any:
    """The default (world) group when this process belongs to an initialised group of more than
    one rank (e.g. under torchrun after ``init_from_env``), else None (one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.group.WORLD
    return None


def init_from_env(*, backend: str | None = None, timeout_s: float | None = None) -> str:
    """Join the process group that ``torchrun`` (or another launcher) describes in the environment
    and return this rank's device (``cuda:LOCAL_RANK`` with NCCL, else ``cpu`` with gloo).

    Missing variables are an error naming them, before any connection is tried; ranks that do not
    all arrive within ``timeout_s`` (default ``$FLATBOOK_RENDEZVOUS_TIMEOUT``, else 600 s) are an
    error naming the address, the rank and the world size. Idempotent: an initialised group is
    kept."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _rank_device(backend_of(None))
    missing = [v for v in RENDEZVOUS_VARIABLES if not os.environ.get(v)]
    if missing:
        raise DistributedError(
            f"no rendezvous: the environment variable(s) {', '.join(missing)} are not set, so this process "
            "cannot join a distributed run. Launch it with torchrun, e.g. "
            "`torchrun --standalone --nproc-per-node=2 -m flatbook train CONFIG` (one node), "
            "or run without torchrun for one process")
    if timeout_s is None:
        text = os.environ.get("FLATBOOK_RENDEZVOUS_TIMEOUT", "600")
        try:
            timeout_s = float(text)
        except ValueError:
            raise DistributedError(f"FLATBOOK_RENDEZVOUS_TIMEOUT must be a number of seconds, got {text!r}") from None
    if not timeout_s > 0:
        raise DistributedError(f"the rendezvous timeout must be > 0 seconds, got {timeout_s!r}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend must be 'nccl' or 'gloo', got {backend!r}")
    try:
        rank, world, local = (int(os.environ[v]) for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise DistributedError("RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                               + ", ".join(f"{v}={os.environ[v]!r}" for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))) from None
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    device = _rank_device(backend)
    if device.startswith("cuda"):
        if local >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s): start "
                                   "at most one rank per GPU (--nproc-per-node)")
        torch.cuda.set_device(torch.device(device))
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as exc:  # noqa: BLE001 - the store's timeouts have several exception types
        raise DistributedError(
            f"rendezvous failed: rank {rank} of {world} could not meet the other ranks at "
            f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_s:g} s ({exc}). Start every "
            "rank (every node's torchrun) with the same --nnodes, --nproc-per-node and rendezvous endpoint") from exc
    return device


def local_rank() -> int:
    """This process's rank on its node (``$LOCAL_RANK``; 0 outside a launcher)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _rank_device(backend: str) -> str:
    return f"cuda:{local_rank()}" if backend == "nccl" else "cpu"


def backend_of(group: Any) -> str:
    """The backend of an initialised process group (None: the default group): "nccl" or "gloo"."""
    import torch.distributed as dist

    return str(dist.get_backend(group))


def rank_device(group: Any) -> str:
    """This rank's default device in ``group``: ``cuda:LOCAL_RANK`` with NCCL, else the CPU. With
    NCCL the current CUDA device must be that GPU (``init_from_env`` sets it): NCCL's collectives run
    on the current device, so a rank whose current device is another rank's GPU would share that GPU
    and hang or fail inside NCCL; this is refused here with a DistributedError naming both."""
    if backend_of(group) != "nccl":
        return "cpu"
    local, current = local_rank(), torch.cuda.current_device()
    if current != local:
        raise DistributedError(f"this rank's current CUDA device is cuda:{current} but LOCAL_RANK={local}: with NCCL "
                               f"each rank computes on cuda:LOCAL_RANK. Join the group with "
                               f"flatbook.distributed.init_from_env() (it sets the device), or call "
                               f"torch.cuda.set_device({local}) before init_process_group")
    return f"cuda:{local}"


def collective_device(group: Any, device: torch.device | str) -> torch.device:
    """Where a collective's tensors must live: ``device`` (a GPU) for NCCL, else the CPU."""
    return torch.device(device) if backend_of(group) == "nccl" else torch.device("cpu")


def agree(group: Any, what: str, value: Any) -> None:
    """Raise DistributedError on EVERY rank unless all ranks of ``group`` hold an equal ``value``
    (any picklable object; compared with ==); the message names ``what`` and each rank's value."""
    import torch.distributed as dist

    if group is None:
        return
    values: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(values, value, group=group)
    if any(v != values[0] for v in values[1:]):
        shown = "; ".join(f"rank {r}: {_short(v)}" for r, v in enumerate(values))
        raise DistributedError(f"the ranks disagree on {what} ({shown}); every rank must be started with the "
                               "same arguments")


def _short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def broadcast_object(group: Any, value: Any, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (pickled; for small objects and one-off states)."""
    import torch.distributed as dist

    if group is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, src), group=group)
    return box[0]


def on_rank_zero(team: Ranks, compute: Any) -> Any:
    """``compute()`` run on rank 0 of ``team`` alone, its value on every rank; if it raised, every
    rank raises that exception (so no rank waits in a collective for one that failed). One
    process: just ``compute()``."""
    if not team.distributed:
        return compute()
    try:
        value = compute() if team.is_writer else None
    except Exception as exc:  # noqa: BLE001 - handed to every rank, then raised on each
        value = exc
    value = broadcast_object(team.group, value)
    if isinstance(value, BaseException):
        raise value
    return value


def check_batch_split(batch_size: int, world_size: int, n_samples: int | None = None) -> None:
    """A global batch of ``batch_size`` must split evenly over ``world_size`` ranks, and a last
    partial batch of ``n_samples`` must give every rank at least one sample (ValueError)."""
    positive_int("batch_size", batch_size)
    positive_int("world_size", world_size)
    if batch_size % world_size:
        raise ValueError(f"the global batch of {batch_size} does not split over {world_size} ranks: the world size "
                         f"must divide the batch size (e.g. {_divisors(batch_size)} ranks for {batch_size})")
    if n_samples is not None:
        rest = n_samples % batch_size
        if 0 < rest < world_size:
            raise ValueError(f"{n_samples} samples leave a last batch of {rest}, fewer than the {world_size} ranks "
                             "that share it; use another batch size, subset or world size")


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, min(n, 16) + 1) if n % d == 0)


def shard_slice(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``n`` items cut into ``world_size`` parts as evenly as
    possible (the first n mod W parts one longer, as ``torch.tensor_split``)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


class _SumOverRanks(torch.autograd.Function):
    """y = sum over ranks of x (every rank gets y); the gradient of x on each rank is the sum over
    ranks of the gradients of y, since every rank's loss depends on y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Any) -> torch.Tensor:
        import torch.distributed as dist

        ctx.group = group
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, group=group)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        import torch.distributed as dist

        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def _summed_over_ranks(x: torch.Tensor, group: Any) -> torch.Tensor:
    return _SumOverRanks.apply(x, group)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm layer that, in train mode, normalises with the statistics of the batch summed
    over all ranks of ``group`` (see the module docstring); in eval mode it is the ordinary layer.
    Built by ``global_batchnorm`` around an existing layer, sharing its parameters and buffers."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm, group: Any):
        nn.Module.__init__(self)
        self.num_features, self.eps, self.momentum = layer.num_features, layer.eps, layer.momentum
        self.affine, self.track_running_stats = layer.affine, layer.track_running_stats
        for name in ("weight", "bias"):
            setattr(self, name, getattr(layer, name))  # the same Parameter objects (or None)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(layer, name))  # the same tensors
        self.training = layer.training
        self.group = group

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch normalisation of ``x`` with the mean and biased variance of the GLOBAL batch (the sums
        over all ranks' shares, all-reduced) in training mode, updating the running statistics with
        the unbiased global variance; with the running statistics in eval mode."""
        self._check_input_dim(x)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        dtype = x.dtype
        if dtype not in (torch.float32, torch.float64):  # bf16/half under autocast: statistics in float32
            x = x.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        device = collective_device(self.group, x.device)
        # one all-reduce for the channel sums and the sample count (the count carries no gradient),
        # kept on the device: no host synchronisation
        local = x.sum(dims)
        count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=local.dtype, device=x.device)
        summed = _summed_over_ranks(torch.cat([local, count]).to(device), self.group).to(x.device)
        total, n = summed[:-1], summed[-1].detach()
        mean = total / n
        centred = x - mean.reshape(shape)
        var = _summed_over_ranks(centred.pow(2).sum(dims).to(device), self.group).to(x.device) / n
        if self.training:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (n / (n - 1)) * factor)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out.to(dtype)


def _global_batch_size(local: int, device: torch.device, group: Any) -> int:
    import torch.distributed as dist

    count = torch.tensor([float(local)], dtype=torch.float64, device=collective_device(group, device))
    dist.all_reduce(count, group=group)
    return int(count)


class ShardedDropout(nn.Dropout):
    """Dropout whose training-mode mask is drawn for the whole global batch (the sum of the ranks'
    shares, one all-reduce of the share sizes) exactly as one process's ``nn.Dropout`` would draw
    it, and applied to this rank's rows (``shard_slice``); in eval mode it is the identity."""

    def __init__(self, layer: nn.Dropout, group: Any):
        super().__init__(layer.p, inplace=False)
        self.training = layer.training
        self.group = group
        self.global_batch: int | None = None  # set by the training loop, which knows it; else all-reduced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (this rank's rows of the global batch) times this rank's rows of the mask one process
        would draw for the whole global batch (scaled by 1/(1-p)); ``x`` itself in eval mode."""
        if not self.training or self.p == 0:
            return x
        import torch.distributed as dist

        total = self.global_batch if self.global_batch is not None else _global_batch_size(len(x), x.device, self.group)
        mine = shard_slice(total, dist.get_rank(self.group), dist.get_world_size(self.group))
        if mine.stop - mine.start != len(x):
            raise ValueError(f"dropout on a share of {len(x)} rows, but rank {dist.get_rank(self.group)}'s share of a "
                             f"global batch of {total} is {mine.stop - mine.start}: shares must come from shard_slice")
        # F.dropout of ones is the scaled mask (1/(1-p) or 0) one process would multiply its batch by
        noise = F.dropout(torch.ones((total, *x.shape[1:]), dtype=x.dtype, device=x.device), self.p, True)
        return x * noise[mine]


def sharded_dropouts(model: nn.Module) -> list[ShardedDropout]:
    """The ``ShardedDropout`` layers of ``model`` (inside ``global_batchnorm``), in module order."""
    return [m for m in model.modules() if isinstance(m, ShardedDropout)]


def synced_batchnorm(layer: nn.modules.batchnorm._BatchNorm, group: Any) -> nn.SyncBatchNorm:
    """torch's ``SyncBatchNorm`` over ``group`` in place of ``layer``, sharing its parameters and
    buffers (the same tensors, so the state_dict and the optimiser see no change). For NCCL: its
    fused CUDA kernels gather the ranks' statistics in one collective per layer in the forward pass
    and one in the backward (torch still reads the ranks' counts back to the host once per layer
    and forward pass, to drop empty ranks); the same global-batch statistics and running-statistics
    update as ``GlobalBatchNorm`` (unbiased variance over the global count). At world size 1 torch
    runs it as a plain BatchNorm."""
    sync = nn.SyncBatchNorm(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats,
                            process_group=group, device="meta")
    for name in ("weight", "bias"):
        setattr(sync, name, getattr(layer, name))  # the same Parameter objects (or None)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(sync, name, getattr(layer, name))  # the same buffer tensors
    sync.train(layer.training)
    return sync


@contextmanager
def global_batchnorm(model: nn.Module, group: Any) -> Iterator[nn.Module]:
    """Inside, every BatchNorm layer of ``model`` normalises with the global batch's statistics over
    ``group``, sharing the layer's parameters and buffers (state_dict keys unchanged): torch's
    ``SyncBatchNorm`` on NCCL (``synced_batchnorm``: fused kernels, two collectives per layer and
    step instead of GlobalBatchNorm's separate all-reduces), flatbook's ``GlobalBatchNorm`` on gloo (the CPU, where
    SyncBatchNorm does not run); and
    every ``nn.Dropout`` is a ``ShardedDropout``. On exit the original layers are back, holding
    whatever the training did to those tensors. Other dropout layers (Dropout2d, AlphaDropout, ...)
    are refused (ValueError): their masks would differ from one process's. No-op for ``group`` None."""
    if group is None:
        yield model
        return
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, (GlobalBatchNorm,
                                                                                             nn.SyncBatchNorm)):
                if not child.track_running_stats:
                    raise ValueError(f"layer {name!r} is a BatchNorm without running statistics (track_running_stats="
                                     "False): distributed training needs the running statistics for evaluation")
                swapped.append((parent, name, child))
            elif type(child) is nn.Dropout:
                swapped.append((parent, name, child))
            elif isinstance(child, nn.modules.dropout._DropoutNd) and not isinstance(child, ShardedDropout):
                raise ValueError(f"layer {name!r} is a {type(child).__name__}: distributed training reproduces "
                                 "nn.Dropout and BatchNorm layers exactly, not this one")
    batchnorm = synced_batchnorm if backend_of(group) == "nccl" else GlobalBatchNorm
    for parent, name, child in swapped:
        wrapper = ShardedDropout if isinstance(child, nn.Dropout) else batchnorm
        setattr(parent, name, wrapper(child, group))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)


def torchrun_command(nproc: int, module_args: Sequence[str], *, extra: Sequence[str] | None = None) -> list[str]:
    """The command that runs ``python -m <module_args>`` on ``nproc`` ranks of this node through
    ``torchrun`` (``python -m torch.distributed.run``, this interpreter): ``--standalone`` (one node,
    a free local port) unless ``extra`` gives rendezvous options for several nodes (``--nnodes``,
    ``--rdzv-backend``, ``--rdzv-endpoint``, ``--rdzv-id``)."""
    nproc = positive_int("nproc", nproc)
    extra = list(extra or [])
    rendezvous = [] if any(a.startswith(("--nnodes", "--rdzv", "--master")) for a in extra) else ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc-per-node={nproc}", *extra, "-m",
            *module_args]
