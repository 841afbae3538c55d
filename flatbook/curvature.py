"""The Hessian of a model's mean training loss over a whole dataset, as an operator.

For parameters w (all trainable ones, or a chosen subset) and data split into batches B_b of
sizes n_b, N = sum_b n_b, with ``loss_fn`` returning the MEAN loss over a batch:

    L(w) = sum_b (n_b / N) * loss_fn(model(x_b; w), y_b)        H = d^2 L / dw dw^T (+ gamma I)

so H equals the Hessian of the mean loss on the concatenated data, whatever the batch size,
except through BatchNorm: with ``bn_mode="train"`` (the paper's choice) every BatchNorm layer
normalises with its batch's own statistics, which makes each batch's loss depend on the whole
batch; with ``bn_mode="eval"`` it uses the running statistics, as the deployed model does.
Dropout is always off. ``weight_decay=gamma`` adds gamma * I, the Hessian of gamma/2 ||w||^2
(default 0: the paper measured the loss without the L2 term).

Two ways to compute products (``method``), both exact:

* ``"double-backward"`` (the default): the gradient with ``create_graph``, then the gradient of
  <g, v>; a block of k columns goes through batched ``autograd.grad`` (or a loop, see
  ``block_strategy``) reusing one first-order graph per batch;
* ``"forward-over-reverse"``: ``torch.func.jvp`` of ``torch.func.grad``, vmapped over the k
  columns.

Either way ``matmat(V)`` for P x k makes ONE pass over the data for all k columns; on the CPU
the first is faster (``benchmarks/curvature.py``). Each batch's product is computed in the
model's dtype on the model's device and accumulated over batches in float64.

The model is never run: products use a private copy of its module structure (the "shadow")
whose parameters AND buffers alias the model's storage (no copy: the shadow reads the current
weights and running statistics, and is re-pointed if the model replaces a tensor). The shadow
never writes to them: in ``bn_mode="train"`` its BatchNorm layers drop their running statistics
and use the batch's own, and in ``"eval"`` they only read the running ones. So the model's
parameters, buffers (running statistics, ``num_batches_tracked``) and train/eval flags are
exactly as before, after any number of products.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from .batching import TensorBatches
from .checks import finite_number, positive_int
from .device import ieee_float32
from .distributed import collective_device, ranks

__all__ = ["HessianOperator", "dense_hessian", "BN_MODES"]

BN_MODES = ("train", "eval")
METHODS = ("double-backward", "forward-over-reverse")
BLOCK_STRATEGIES = ("auto", "vmap", "loop")
Batch = tuple[torch.Tensor, torch.Tensor]


def _is_tensor_pair(data: Any) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


def _select_parameters(model: nn.Module, params: Any) -> list[str]:
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
        if isinstance(params, nn.Module):
            params = list(params.parameters())
        if isinstance(params, (str, nn.Parameter, torch.Tensor)):
            params = [params]
        by_id = {id(p): n for n, p in named.items()}
        names = []
        for item in params:
            if isinstance(item, str):
                if item not in named:
                    raise ValueError(f"params: {item!r} is not a parameter name of the model; names are {list(named)}")
                names.append(item)
            elif isinstance(item, torch.Tensor) and id(item) in by_id:
                names.append(by_id[id(item)])
            else:
                raise ValueError("params: expected parameter names or the model's own parameter tensors, "
                                 f"got {type(item).__name__}")
        names = list(dict.fromkeys(names))
    if not names:
        raise ValueError("the model has no trainable parameters to differentiate (params selects none)")
    return names


_NORMS_WITH_STATISTICS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def _shadow_module(model: nn.Module, bn_mode: str, variable: set[str]) -> nn.Module:
    """A copy of the module structure whose parameters and buffers ALIAS the model's (same
    storage, no copy: the shadow always sees the current weights and running statistics; only
    the ``variable`` parameters require grad); dropout off; backward hooks removed; BatchNorm
    and InstanceNorm on batch statistics without updating anything (``train``) or on the running
    statistics (``eval``, read-only)."""
    memo: dict[int, Any] = {id(p): nn.Parameter(p.detach(), requires_grad=n in variable)
                            for n, p in model.named_parameters()}
    memo.update({id(b): b.detach() for b in model.buffers()})
    for m in model.modules():  # tensors a module cached from a forward pass cannot be deep-copied
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach()
    shadow = copy.deepcopy(model, memo)
    shadow.eval()
    for m in shadow.modules():
        # the user's backward hooks belong to training, not to Hessian products (and a hook
        # that edits gradients would change the "Hessian"); forward hooks are part of the function
        m._backward_hooks.clear()
        m._backward_pre_hooks.clear()
        m._is_full_backward_hook = None
        if bn_mode != "train":
            continue
        if isinstance(m, _NORMS_WITH_STATISTICS):
            # no running statistics -> the batch's (instance's) own statistics, nothing updated
            m.running_mean = None
            m.running_var = None
            m.num_batches_tracked = None
            m.track_running_stats = False
        elif any(n.startswith("running") for n, _ in m.named_buffers(recurse=False)):
            raise ValueError(
                f"bn_mode='train': module {type(m).__name__} keeps running statistics but is not a torch "
                "BatchNorm/InstanceNorm, so flatbook cannot switch it to batch statistics; use bn_mode='eval' "
                "or a torch.nn BatchNorm layer")
    return shadow


class HessianOperator:
    """The Hessian of the mean loss of ``model`` over ``data``; see the module docstring.

    Parameters
    ----------
    model: the network; its parameters' current values are used, nothing of it is changed.
    loss_fn: ``loss_fn(outputs, targets)`` returning the MEAN loss over the batch
        (e.g. ``torch.nn.CrossEntropyLoss()``).
    data: an (x, y) pair of tensors with ``batch_size``, or a re-iterable of (x, y) batches
        that yields the same batches in the same order on every pass.
    batch_size: batch size for an (x, y) pair (the paper: 128); must be None otherwise.
    bn_mode: ``"train"`` (batch statistics, the paper) or ``"eval"`` (running statistics).
    weight_decay: gamma >= 0; adds gamma * I.
    params: None for every trainable parameter, or names / parameter tensors to restrict to
        (the Hessian block of those parameters, the others held fixed).
    method: ``"double-backward"`` (default) or ``"forward-over-reverse"``; same numbers.
    block_strategy: how ``matmat`` handles k > 1 columns with double backward: ``"vmap"``
        (batched backward passes), ``"loop"`` (one backward per column, reusing the batch's
        first-order graph) or ``"auto"`` (loop for models with convolutions, else vmap).
    process_group: None (one process), or a ``torch.distributed`` process group whose ranks
        all construct this operator with the same model weights and data: the fixed batches are
        shared out round-robin (batch b on rank b mod world size), each rank sums its batches'
        weighted products in float64, and one all-reduce (SUM, float64) gives every rank the
        whole product. The batches are the single-process ones, so the operator is the same
        (a train-mode BatchNorm batch keeps its own statistics) up to the order of the float64
        sum; Lanczos and SLQ with the same seed then run identically on every rank and only
        the products cross the network.

    The operator reads the weights at each product: update the model in place (optimiser
    steps, ``load_state_dict``) or even replace a parameter tensor, and the next product uses
    the new values. The data are read once at construction (batch count and sizes) and then
    once per product.

    Example, against a closed form: for a linear model w (no bias) and the mean squared error
    L(w) = mean_n (x_n . w - y_n)^2 the Hessian is 2 X^T X / N, whatever the batches.

    >>> import torch
    >>> from flatbook import HessianOperator
    >>> gen = torch.Generator().manual_seed(0)
    >>> X = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    >>> y = torch.randn(50, 1, generator=gen, dtype=torch.float64)
    >>> model = torch.nn.Linear(3, 1, bias=False).double()
    >>> op = HessianOperator(model, torch.nn.MSELoss(), (X, y), batch_size=20)  # batches of 20, 20, 10
    >>> v = torch.randn(3, generator=gen, dtype=torch.float64)
    >>> torch.allclose(op.matvec(v), 2 * X.T @ X @ v / 50, rtol=1e-12, atol=0)
    True
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        data: Any,
        *,
        batch_size: int | None = None,
        bn_mode: str = "train",
        weight_decay: float = 0.0,
        params: Iterable[str | torch.Tensor] | None = None,
        method: str = "double-backward",
        block_strategy: str = "auto",
        process_group: Any = None,
    ):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if block_strategy not in BLOCK_STRATEGIES:
            raise ValueError(f"block_strategy must be one of {BLOCK_STRATEGIES}, got {block_strategy!r}")
        if block_strategy == "auto":
            # measured (benchmarks/curvature.py, 2-core CPU): vmapped backward passes amortise well
            # for dense layers (4 columns ~ 0.33x four products) but not through convolutions
            # (~1.0x), where a loop over columns reusing the first-order graph does (~0.75x)
            has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
            block_strategy = "loop" if has_conv else "vmap"
        self.method = method
        self.block_strategy = block_strategy
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(outputs, targets)")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        finite_number("weight_decay", weight_decay, minimum=0)
        self.model = model
        self.loss_fn = loss_fn
        self.bn_mode = bn_mode
        self.weight_decay = float(weight_decay)
        self.param_names = _select_parameters(model, params)
        named = dict(model.named_parameters())
        first = named[self.param_names[0]]
        self.device, self.dtype = first.device, first.dtype
        self.shapes = [named[n].shape for n in self.param_names]
        self.numels = [named[n].numel() for n in self.param_names]
        self.num_params = int(sum(self.numels))

        if _is_tensor_pair(data):
            positive_int("batch_size", batch_size)  # an (x, y) tensor pair is cut into batches
            if len(data[0]) == 0:
                raise ValueError("data is empty: the Hessian of a mean over no samples is undefined")
            self.data = TensorBatches(data[0], data[1], int(batch_size))  # fixed order, same on every pass
        else:
            if batch_size is not None:
                raise ValueError("batch_size is only for an (x, y) tensor pair; an iterable of batches has its own")
            if isinstance(data, torch.Tensor) or iter(data) is data:
                raise ValueError("data must be an (x, y) tensor pair or a RE-iterable of (x, y) batches "
                                 "(a list, a DataLoader), not a one-shot iterator or a single tensor")
            sampler = getattr(getattr(data, "batch_sampler", None), "sampler", getattr(data, "sampler", None))
            if isinstance(data, torch.utils.data.DataLoader) and not isinstance(
                    sampler, torch.utils.data.SequentialSampler):
                raise ValueError(f"data: a DataLoader with a {type(sampler).__name__} yields different batches on "
                                 "every pass; the Hessian needs fixed batches: use shuffle=False")
            self.data = data
        self.batch_sizes = self._batch_signature()
        self.num_samples = int(sum(self.batch_sizes))
        if self.num_samples == 0:
            raise ValueError("data is empty: the Hessian of a mean over no samples is undefined")
        if bn_mode == "train" and min(self.batch_sizes) == 1 and any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ValueError(f"bn_mode='train' with a batch of size 1 (batch sizes {sorted(set(self.batch_sizes))}): "
                             "BatchNorm's batch statistics are undefined; choose a batch size that leaves no "
                             "batch of one sample, or bn_mode='eval'")
        group = ranks(process_group)
        self.process_group, self.rank, self.world_size = group.group, group.rank, group.world_size
        if self.process_group is not None:
            self._check_ranks_agree()
        self._shadow = _shadow_module(model, bn_mode, set(self.param_names))
        self._check_loss()
        self._hvp_block = self._make_block_hvp()
        self.settings: dict[str, Any] = {
            "operator": "hessian", "bn_mode": bn_mode, "weight_decay": self.weight_decay,
            "num_samples": self.num_samples, "num_batches": len(self.batch_sizes),
            "batch_size": int(max(self.batch_sizes)), "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device), "num_params": self.num_params,
            "params": "all" if params is None else list(self.param_names), "method": method,
            "block_strategy": self.block_strategy, "world_size": self.world_size,
            "tf32": False,  # products run in IEEE float32 (device.ieee_float32), TF32 off on GPUs
        }

    # ------------------------------------------------------------------------------------
    def _check_loss(self) -> None:
        """One forward pass on the first batch: loss_fn must return a scalar."""
        x, y = next(iter(self._batches()))
        with torch.no_grad():
            loss = self.loss_fn(self._shadow(x), y)
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return the MEAN loss over the batch as a scalar tensor, got {shape} "
                             "(use reduction='mean')")

    def _batch_signature(self) -> list[int]:
        sizes = []
        for batch in self.data:
            x, y = self._unpack(batch)
            sizes.append(int(len(y)))
        return sizes

    @staticmethod
    def _unpack(batch: Any) -> Batch:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise ValueError(f"each batch must be an (x, y) pair, got {type(batch).__name__}")
        return batch[0], batch[1]

    def _check_ranks_agree(self) -> None:
        """Every rank of the group must hold the same operator shape and batches (one all-reduce of
        (P, batches, samples, a checksum of the batch sizes) by MIN and MAX, before any product)."""
        import torch.distributed as dist

        sizes = torch.tensor(self.batch_sizes, dtype=torch.float64)
        checksum = float((sizes * torch.arange(1, len(sizes) + 1, dtype=torch.float64)).sum())
        mine = torch.tensor([self.num_params, len(self.batch_sizes), self.num_samples, checksum], dtype=torch.float64,
                            device=self._collective_device())
        low, high = mine.clone(), mine.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN, group=self.process_group)
        dist.all_reduce(high, op=dist.ReduceOp.MAX, group=self.process_group)
        if not torch.equal(low, high):
            raise ValueError(f"the ranks of the process group disagree on the operator (rank {self.rank}: "
                             f"{self.num_params} parameters, {len(self.batch_sizes)} batches, {self.num_samples} "
                             "samples): every rank must build it from the same model and the same data")

    def _collective_device(self) -> torch.device:
        """Where collectives run: the model's CUDA device for NCCL, else the CPU."""
        return collective_device(self.process_group, self.device)

    def _batches(self, mine_only: bool = False):
        """One pass over the data, checking that it yields the batches it yielded before; with
        ``mine_only``, only this rank's share (batch b when b mod world size == rank)."""
        count = 0
        for batch in self.data:
            x, y = self._unpack(batch)
            if count >= len(self.batch_sizes) or len(y) != self.batch_sizes[count]:
                raise ValueError(
                    "data changed between passes (batch count or sizes differ): the Hessian needs the same "
                    "batches in the same order on every pass (no shuffling, no drop_last randomness)")
            count += 1
            if mine_only and (count - 1) % self.world_size != self.rank:
                continue
            if x.device != self.device:
                x = x.to(self.device, non_blocking=True)
            if y.device != self.device:
                y = y.to(self.device, non_blocking=True)
            yield x, y
        if count != len(self.batch_sizes):
            raise ValueError(f"data changed between passes: {count} batches now, {len(self.batch_sizes)} before")

    def _current_params(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The model's parameters now (detached views: shared storage, never written); the
        shadow's aliases of parameters and buffers are re-pointed if a tensor was replaced."""
        named = dict(self.model.named_parameters())
        shadow = dict(self._shadow.named_parameters())
        for n, p in named.items():
            if shadow[n].data_ptr() != p.data_ptr() or shadow[n].shape != p.shape or shadow[n].dtype != p.dtype:
                shadow[n].data = p.detach()
        shadow_modules = dict(self._shadow.named_modules())
        for full, b in self.model.named_buffers():
            owner, _, leaf = full.rpartition(".")
            mod = shadow_modules[owner]
            current = mod._buffers.get(leaf)
            if current is not None and (current.data_ptr() != b.data_ptr() or current.shape != b.shape):
                mod._buffers[leaf] = b.detach()
        variable = {n: named[n].detach() for n in self.param_names}
        fixed = {n: p.detach() for n, p in named.items() if n not in variable}
        return variable, fixed

    def _make_block_hvp(self):
        """Per-batch H_b @ V: (variable, fixed, x, y, tangents {name: (k, *shape)}) -> (k, P)
        in the parameters' dtype (flattened in ``param_names`` order)."""
        shadow, loss_fn, names = self._shadow, self.loss_fn, self.param_names

        def flatten(parts, k):
            return torch.cat([h.reshape(k, -1) for h in parts], dim=1)

        if self.method == "forward-over-reverse":

            def batch_loss(variable, fixed, x, y):
                return loss_fn(functional_call(shadow, {**variable, **fixed}, (x,)), y)

            def hvp_one(variable, fixed, x, y, tangent):
                return jvp(lambda v: grad(batch_loss)(v, fixed, x, y), (variable,), (tangent,))[1]

            def hvp_block(variable, fixed, x, y, tangents):
                k = next(iter(tangents.values())).shape[0]
                if k == 1:  # no vmap overhead for a single column
                    out = hvp_one(variable, fixed, x, y, {n: t[0] for n, t in tangents.items()})
                    return flatten([out[n] for n in names], 1)
                out = vmap(hvp_one, in_dims=(None, None, None, None, 0))(variable, fixed, x, y, tangents)
                return flatten([out[n] for n in names], k)

            return hvp_block

        shadow_params = dict(shadow.named_parameters())
        leaves = [shadow_params[n] for n in names]
        use_vmap = self.block_strategy == "vmap"
        prepared = self._prepared = [None, None]  # [the current matmat's tangents dict, its grad_outputs]

        def hvp_block_double_backward(variable, fixed, x, y, tangents):
            # the shadow's own parameters alias the model's: no functional_call needed
            if prepared[0] is not tangents:  # built once per matmat (the dict is held, so never confused)
                k = next(iter(tangents.values())).shape[0]
                prepared[:] = [tangents, (k, [tangents[n] for n in names],
                                          [[tangents[n][j] for n in names] for j in range(k)])]
            k, batched, columns = prepared[1]
            with torch.enable_grad():
                grads = torch.autograd.grad(loss_fn(shadow(x), y), leaves, create_graph=True)
                if k == 1:
                    return flatten(torch.autograd.grad(grads, leaves, grad_outputs=columns[0]), 1)
                if use_vmap:
                    return flatten(torch.autograd.grad(grads, leaves, grad_outputs=batched, is_grads_batched=True), k)
                # one backward of the first-order graph per column, the graph kept between them
                return torch.cat([flatten(torch.autograd.grad(grads, leaves, grad_outputs=columns[j],
                                                              retain_graph=j < k - 1), 1) for j in range(k)])

        return hvp_block_double_backward

    def _unflatten(self, V: torch.Tensor, variable: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """(P, k) -> {name: (k, *shape)}, each in its parameter's dtype and on its device."""
        out, start = {}, 0
        for name, shape, numel in zip(self.param_names, self.shapes, self.numels):
            p = variable[name]
            out[name] = V[start:start + numel].T.reshape(V.shape[1], *shape).to(device=p.device, dtype=p.dtype)
            start += numel
        return out

    # ------------------------------------------------------------------------------------
    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """H @ V for a (P, k) block, in one pass over the data; returns (P, k) float64 on the device."""
        V = torch.as_tensor(V)
        if V.ndim != 2 or V.shape[0] != self.num_params or V.shape[1] < 1:
            raise ValueError(f"matmat expects a ({self.num_params}, k) matrix with k >= 1, got {tuple(V.shape)}")
        if not torch.isfinite(V).all():
            raise ValueError("matmat: the input block has non-finite entries")
        k = V.shape[1]
        variable, fixed = self._current_params()
        self.device = next(iter(variable.values())).device
        tangents = self._unflatten(V, variable)
        acc = torch.zeros(k, self.num_params, dtype=torch.float64, device=self.device)
        with warnings.catch_warnings(), ieee_float32():  # no TF32 on GPUs: products in true float32
            # torch's own forward-AD decompositions use torch.jit.script
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
            for x, y in self._batches(mine_only=True):
                flat = self._hvp_block(variable, fixed, x, y, tangents)
                acc.add_(flat, alpha=len(y) / self.num_samples)  # float64 accumulation over batches
        if hasattr(self, "_prepared"):
            self._prepared[:] = [None, None]  # do not hold the tangents between products
        if self.process_group is not None:  # the other ranks' batches: one float64 all-reduce
            import torch.distributed as dist

            device = self._collective_device()
            shared = acc.to(device)
            dist.all_reduce(shared, op=dist.ReduceOp.SUM, group=self.process_group)
            acc = shared.to(self.device)
        total = acc.T.contiguous()
        if self.weight_decay:
            total.add_(V.to(device=self.device, dtype=torch.float64), alpha=self.weight_decay)
        if not torch.isfinite(total).all():
            raise ValueError("the Hessian product is not finite (NaN or inf): check the model's weights and the loss")
        return total

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H @ v for a flat vector of length P; returns float64 on the device."""
        v = torch.as_tensor(v)
        if v.ndim != 1 or v.shape[0] != self.num_params:
            raise ValueError(f"matvec expects a vector of length {self.num_params}, got shape {tuple(v.shape)}")
        return self.matmat(v.reshape(-1, 1))[:, 0]

    def __repr__(self) -> str:
        return (f"HessianOperator(P={self.num_params}, N={self.num_samples} in {len(self.batch_sizes)} batches, "
                f"bn_mode={self.bn_mode!r}, weight_decay={self.weight_decay}, dtype={self.dtype}, device={self.device})")


def dense_hessian(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    data: Any,
    *,
    batch_size: int | None = None,
    bn_mode: str = "train",
    weight_decay: float = 0.0,
    params: Iterable[str | torch.Tensor] | None = None,
    method: str = "double-backward",
    block_strategy: str = "auto",
    block: int = 256,
    max_params: int = 20_000,
) -> torch.Tensor:
    """The exact P x P Hessian (float64, on the CPU): ``HessianOperator.matmat`` on the identity,
    ``block`` columns per data pass. Same arguments and meaning as HessianOperator."""
    block = positive_int("block", block)  # before the operator's first pass over the data
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, bn_mode=bn_mode,
                         weight_decay=weight_decay, params=params, method=method, block_strategy=block_strategy)
    if op.num_params > max_params:
        raise ValueError(f"dense_hessian: the model has {op.num_params} parameters, more than max_params={max_params} "
                         "(a dense P x P matrix); raise max_params deliberately or use slq / top_eigenvalues")
    P = op.num_params
    H = torch.empty(P, P, dtype=torch.float64)
    for start in range(0, P, block):
        stop = min(start + block, P)
        E = torch.zeros(P, stop - start, dtype=torch.float64)
        E[torch.arange(start, stop), torch.arange(stop - start)] = 1.0
        H[:, start:stop] = op.matmat(E).cpu()
    return H
