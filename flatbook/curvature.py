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

Products are computed by forward-over-reverse differentiation (``torch.func.jvp`` of
``torch.func.grad``), vmapped over the k columns of a block, so ``matmat(V)`` for P x k makes
ONE pass over the data for all k columns. Each batch's product is computed in the model's
dtype on the model's device and accumulated over batches in float64.

The model is never run: products use a private copy of its module structure whose parameters
share the model's storage (no copy; they read the current weights) and whose buffers are
copies, so the model's parameters, buffers (running statistics, ``num_batches_tracked``) and
train/eval flags are exactly as before, after any number of products.

Two ways to compute products (``method``): ``"double-backward"`` (the default: gradient with
``create_graph``, then the gradient of <g, v>; a block of k columns through batched
``autograd.grad``, reusing one first-order graph per batch), and ``"forward-over-reverse"``
(``torch.func.jvp`` of ``torch.func.grad``, vmapped over columns). Both are exact; on the CPU
the first is faster (``benchmarks/curvature.py``).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

__all__ = ["HessianOperator", "dense_hessian", "BN_MODES"]

BN_MODES = ("train", "eval")
METHODS = ("double-backward", "forward-over-reverse")
BLOCK_STRATEGIES = ("auto", "vmap", "loop")
Batch = tuple[torch.Tensor, torch.Tensor]


def _is_tensor_pair(data: Any) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data))


class _TensorBatches:
    """Fixed-order batches of an (x, y) tensor pair: the same batches on every pass."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int):
        if len(x) != len(y):
            raise ValueError(f"data: x has {len(x)} samples but y has {len(y)}")
        self.x, self.y, self.batch_size = x, y, batch_size

    def __iter__(self):
        for start in range(0, len(self.x), self.batch_size):
            yield self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]


def _select_parameters(model: nn.Module, params: Any) -> list[str]:
    named = dict(model.named_parameters())
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad]
    else:
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


def _shadow_module(model: nn.Module, bn_mode: str, variable: set[str]) -> nn.Module:
    """A copy of the module structure whose parameters ALIAS the model's (same storage, no
    copy: the shadow always sees the current weights; only the ``variable`` ones require
    grad), with buffers copied; dropout off; BatchNorm on batch statistics without updating
    anything (``train``) or on the copied running statistics (``eval``)."""
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=n in variable) for n, p in model.named_parameters()}
    shadow = copy.deepcopy(model, memo)
    shadow.eval()
    if bn_mode == "train":
        for m in shadow.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                # no running statistics -> F.batch_norm normalises with the batch's statistics
                m.running_mean = None
                m.running_var = None
                m.num_batches_tracked = None
                m.track_running_stats = False
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

    The operator reads the weights at each product: update the model in place (optimiser
    steps, ``load_state_dict``) or even replace a parameter tensor, and the next product uses
    the new values. The data are read once at construction (batch count and sizes) and then
    once per product.
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
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if block_strategy not in BLOCK_STRATEGIES:
            raise ValueError(f"block_strategy must be one of {BLOCK_STRATEGIES}, got {block_strategy!r}")
        if block_strategy == "auto":
            # measured (benchmarks/curvature.py, 2-core CPU): vmapped backward passes amortise well
            # for dense layers (4 columns ~ 0.33x four products) but not through convolutions
            # (~1.0x), where a loop over columns reusing the first-order graph does (~0.78x)
            has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
            block_strategy = "loop" if has_conv else "vmap"
        self.method = method
        self.block_strategy = block_strategy
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(outputs, targets)")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
                or not math.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
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
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be an integer >= 1 for an (x, y) tensor pair, got {batch_size!r}")
            self.data = _TensorBatches(data[0], data[1], batch_size)
        else:
            if batch_size is not None:
                raise ValueError("batch_size is only for an (x, y) tensor pair; an iterable of batches has its own")
            if isinstance(data, torch.Tensor) or iter(data) is data:
                raise ValueError("data must be an (x, y) tensor pair or a RE-iterable of (x, y) batches "
                                 "(a list, a DataLoader), not a one-shot iterator or a single tensor")
            self.data = data
        self.batch_sizes = self._batch_signature()
        self.num_samples = int(sum(self.batch_sizes))
        if self.num_samples == 0:
            raise ValueError("data is empty: the Hessian of a mean over no samples is undefined")
        self._shadow = _shadow_module(model, bn_mode, set(self.param_names))
        self._hvp_block = self._make_block_hvp()
        self.settings: dict[str, Any] = {
            "operator": "hessian", "bn_mode": bn_mode, "weight_decay": self.weight_decay,
            "num_samples": self.num_samples, "num_batches": len(self.batch_sizes),
            "batch_size": int(max(self.batch_sizes)), "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device), "num_params": self.num_params,
            "params": "all" if params is None else list(self.param_names), "method": method,
            "block_strategy": self.block_strategy,
        }

    # ------------------------------------------------------------------------------------
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

    def _batches(self):
        """One pass over the data, checking that it yields the batches it yielded before."""
        count = 0
        for batch in self.data:
            x, y = self._unpack(batch)
            if count >= len(self.batch_sizes) or len(y) != self.batch_sizes[count]:
                raise ValueError(
                    "data changed between passes (batch count or sizes differ): the Hessian needs the same "
                    "batches in the same order on every pass (no shuffling, no drop_last randomness)")
            count += 1
            if x.device != self.device:
                x = x.to(self.device, non_blocking=True)
            if y.device != self.device:
                y = y.to(self.device, non_blocking=True)
            yield x, y
        if count != len(self.batch_sizes):
            raise ValueError(f"data changed between passes: {count} batches now, {len(self.batch_sizes)} before")

    def _current_params(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The model's parameters now (detached views: shared storage, never written); the
        shadow's aliases are re-pointed if a parameter tensor was replaced since last time."""
        named = dict(self.model.named_parameters())
        shadow = dict(self._shadow.named_parameters())
        for n, p in named.items():
            if shadow[n].data_ptr() != p.data_ptr() or shadow[n].shape != p.shape:
                shadow[n].data = p.detach()
        variable = {n: named[n].detach() for n in self.param_names}
        fixed = {n: p.detach() for n, p in named.items() if n not in variable}
        return variable, fixed

    def _make_block_hvp(self):
        """Per-batch H_b @ V for a block of tangents {name: (k, *shape)} -> {name: (k, *shape)}."""
        shadow, loss_fn = self._shadow, self.loss_fn

        def batch_loss(variable, fixed, x, y):
            return loss_fn(functional_call(shadow, {**variable, **fixed}, (x,)), y)

        if self.method == "forward-over-reverse":

            def hvp_one(variable, fixed, x, y, tangent):
                return jvp(lambda v: grad(batch_loss)(v, fixed, x, y), (variable,), (tangent,))[1]

            def hvp_block(variable, fixed, x, y, tangents):
                k = next(iter(tangents.values())).shape[0]
                if k == 1:  # no vmap overhead for a single column
                    out = hvp_one(variable, fixed, x, y, {n: t[0] for n, t in tangents.items()})
                    return {n: t.unsqueeze(0) for n, t in out.items()}
                return vmap(hvp_one, in_dims=(None, None, None, None, 0))(variable, fixed, x, y, tangents)

            return hvp_block

        shadow_params = dict(shadow.named_parameters())
        leaves = [shadow_params[n] for n in self.param_names]

        use_vmap = self.block_strategy == "vmap"

        def hvp_block_double_backward(variable, fixed, x, y, tangents):
            # the shadow's own parameters alias the model's: no functional_call needed
            names = self.param_names
            with torch.enable_grad():
                loss = loss_fn(shadow(x), y)
                grads = torch.autograd.grad(loss, leaves, create_graph=True)
                k = next(iter(tangents.values())).shape[0]
                if k > 1 and use_vmap:
                    hv = torch.autograd.grad(grads, leaves, grad_outputs=[tangents[n] for n in names],
                                             is_grads_batched=True)
                    return dict(zip(names, hv))
                if k == 1:
                    hv = torch.autograd.grad(grads, leaves, grad_outputs=[tangents[n][0] for n in names])
                    return {n: h.unsqueeze(0) for n, h in zip(names, hv)}
                # one backward of the first-order graph per column, the graph kept between them
                columns = [torch.autograd.grad(grads, leaves, grad_outputs=[tangents[n][j] for n in names],
                                               retain_graph=j < k - 1) for j in range(k)]
            return {n: torch.stack([col[i] for col in columns]) for i, n in enumerate(names)}

        return hvp_block_double_backward

    def _unflatten(self, V: torch.Tensor) -> dict[str, torch.Tensor]:
        """(P, k) float -> {name: (k, *shape)} in the model's dtype and device."""
        V = V.to(device=self.device, dtype=self.dtype)
        out, start = {}, 0
        for name, shape, numel in zip(self.param_names, self.shapes, self.numels):
            out[name] = V[start:start + numel].T.reshape(V.shape[1], *shape)
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
        tangents = self._unflatten(V)
        variable, fixed = self._current_params()
        sums = {n: torch.zeros(k, *shape, dtype=torch.float64, device=self.device)
                for n, shape in zip(self.param_names, self.shapes)}
        with warnings.catch_warnings():  # torch's own forward-AD decompositions use torch.jit.script
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
            for x, y in self._batches():
                hv = self._hvp_block(variable, fixed, x, y, tangents)
                weight = len(y) / self.num_samples
                for n in self.param_names:
                    sums[n].add_(hv[n], alpha=weight)  # float64 accumulation of model-dtype products
        total = torch.cat([sums[n].reshape(k, -1) for n in self.param_names], dim=1).T.contiguous()
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
    op = HessianOperator(model, loss_fn, data, batch_size=batch_size, bn_mode=bn_mode,
                         weight_decay=weight_decay, params=params, method=method, block_strategy=block_strategy)
    if op.num_params > max_params:
        raise ValueError(f"dense_hessian: the model has {op.num_params} parameters, more than max_params={max_params} "
                         "(a dense P x P matrix); raise max_params deliberately or use slq / top_eigenvalues")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    P = op.num_params
    H = torch.empty(P, P, dtype=torch.float64)
    for start in range(0, P, block):
        stop = min(start + block, P)
        E = torch.zeros(P, stop - start, dtype=torch.float64)
        E[torch.arange(start, stop), torch.arange(stop - start)] = 1.0
        H[:, start:stop] = op.matmat(E).cpu()
    return H
