"""One prepared run of every CUDA path flatbook has, with a short report of figures (never part of
the tests). Written for the GPU machine as it is: its own ``python3`` (3.12, torch 2.11), no venv,
no network, only the source tree copied; about 7 minutes on one H200.

    python3 benchmarks/gpu_check.py --out DIR [--bundle gpu_bundle] [--device cuda] [--quick]

``--bundle``: the folder ``make gpu-bundle`` fills here (wheels of the packages the image lacks,
Fashion-MNIST's four gzipped files): the wheels are installed with ``pip install --no-index
--target BUNDLE/site`` and put on the path, and the data unpacked under ``BUNDLE/data``
(``$FLATBOOK_DATA``). Without it, the sections that need them say "not run: <what is missing>".

Every section runs in its own process group with its own time limit (a hung kernel or a crashed
CUDA context cannot take the others with it; a stopped section's children, torchrun ranks or a
notebook kernel, are stopped with it), a section's lines reach ``DIR/report.md`` as it measures
them, and the report is rewritten after each section, so a killed run still leaves everything it
measured; a failure keeps the last 20 lines of its output.
The sections, correctness checks first:

1. machine: Python, torch, CUDA, the GPUs, which optional packages import and whether the data is
   there;
2. checkpoint and resume on the GPU (the RNG states included): largest weight difference from an
   uninterrupted run;
3. Hessian-vector products: the two product methods against each other (TF32 is off inside
   products, so they agree to float32 rounding); then per network of the ``gpu`` profile
   (All-CNN-C, PreResNet-164, WRN-16-4, VGG-16-BN; CIFAR-100 shapes) seconds per product,
   product / gradient time (the gradient also in IEEE float32) and peak GPU memory
   (``max_memory_allocated``);
4. data parallel at world size 1: torch's fused SyncBatchNorm kernels (the NCCL route's BatchNorm)
   against plain batch statistics (output, input gradient, running statistics); training steps of
   WRN-16-4 under DistributedDataParallel with no BatchNorm synchronisation, flatbook's
   GlobalBatchNorm and torch's SyncBatchNorm (which at world size 1 runs as a plain BatchNorm);
5. SLQ on WRN-16-4: seconds and lambda_1;
6. training throughput: images/s and achieved TFLOP/s (convolutions and matrix products counted,
   a training step = 3 forward passes) of ``train``'s step loop for the four networks at batch 128,
   float32, and bf16 autocast + channels-last;
7. distributed products and training with ``torchrun`` on 1 to N GPUs (NCCL);
8. two chapters executed at the ``ci`` profile (needs papermill, nbformat, ipykernel, Fashion-MNIST).

``--device cpu --quick`` runs every section small on the CPU (the dry run that ``make
check-torch-oldest`` does in a venv like the GPU machine's).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (section, seconds allowed on a GPU), correctness first: 445 s in all, and the driver's deadline
# (--deadline, 450 s) shortens or skips what would run past it, so the whole check ends within 8 minutes
SECTIONS = [("machine", 15), ("resume", 35), ("hvp", 75), ("data_parallel", 50), ("slq", 30),
            ("throughput", 110), ("distributed", 45), ("chapters", 85)]
TITLES = {"machine": "The machine", "throughput": "Training throughput", "data_parallel": "Data parallel, world size 1",
          "hvp": "Hessian-vector products", "slq": "SLQ", "resume": "Checkpoint and resume",
          "chapters": "Chapters at the ci profile", "distributed": "Distributed products and training (torchrun)"}
# the gpu profile's networks (book/profiles/gpu.yaml; tests/toolkit/test_gpu_paths.py checks they agree), CIFAR-100
NETWORKS = {"All-CNN-C": ("allcnnc", {}), "PreResNet-164": ("preresnet164", {}),
            "WRN-16-4": ("wrn28x10", {"depth": 16, "width": 4}), "VGG-16-BN": ("vgg16bn", {})}
QUICK_NETWORKS = {"All-CNN-C (width 0.25)": ("allcnnc", {"width": 0.25}),
                  "WRN-10-1": ("wrn28x10", {"depth": 10, "width": 1})}
CHAPTER_PACKAGES = ("nbformat", "papermill", "ipykernel", "tabulate")
FAILURE_LINES = 20


class NotRun(Exception):
    """A section that cannot run here: the message says what is missing."""


_RESULT: Path | None = None  # the section process's result file
_BODY: dict = {"lines": [], "not_run": None}


def emit(line: str) -> None:
    """One line of the section's report, written to its result file at once (atomically), so a
    section stopped at its time limit still reports what it had measured."""
    _BODY["lines"].append(line)
    print(line, flush=True)
    if _RESULT is not None:
        tmp = _RESULT.with_suffix(".tmp")
        tmp.write_text(json.dumps(_BODY))
        os.replace(tmp, _RESULT)


# --- helpers shared by the sections -------------------------------------------------------------------------


def networks(args) -> dict:
    return QUICK_NETWORKS if args.quick else NETWORKS


def build(name: str, options: dict, device: str):
    import torch

    from flatbook import models

    torch.manual_seed(0)
    return models.build(name, num_classes=100, **options).to(device)


def images(n: int, size: int = 32, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 100, (n,), generator=g)


def sync(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def forward_flops(model, size: int = 32) -> int:
    """Convolution and matrix-product FLOPs of one forward pass on one image (a multiply-add = 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    x = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was)
    return int(counter.get_total_flops())


def peak_memory(device: str) -> str:
    import torch

    if not str(device).startswith("cuda"):
        return "n/a on the CPU"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def reset_peak(device: str) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


@contextlib.contextmanager
def one_network(label: str, failures: list[str], device: str):
    """One network's measurement: an exception is reported (``emit``) and recorded in ``failures``
    instead of ending the section (one network's failure must not hide the others), and the GPU's
    cached memory is released after it either way."""
    import gc

    try:
        yield
    except Exception as exc:  # noqa: BLE001 - reported, and the section fails at its end
        failures.append(label)
        emit(f"{label}: FAILED ({type(exc).__name__}: {exc})")
    finally:
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def step_loop_seconds(model, opt, x, y, *, bf16: bool, steps: int, device: str, forward=None) -> float:
    """Seconds for ``steps`` training steps of batch 128 (``train``'s step loop: TensorBatches,
    forward, cross-entropy, backward, optimiser step), after two warm-up steps."""
    from flatbook import train
    from flatbook.batching import TensorBatches

    forward = forward or model
    batches = TensorBatches(x[:256], y[:256], 128, shuffle=True, seed=0)
    train._train_epoch(forward, opt, batches, bf16, 0, 0.05, False)  # warm-up: kernels, allocator, autotuning
    batches = TensorBatches(x[:128 * steps], y[:128 * steps], 128, shuffle=True, seed=1)
    sync(device)
    t0 = time.perf_counter()
    train._train_epoch(forward, opt, batches, bf16, 1, 0.05, False)
    sync(device)
    return time.perf_counter() - t0


# --- the sections ---------------------------------------------------------------------------------------------


def section_machine(args) -> None:
    import torch

    emit(f"Python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            emit(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}")
        emit(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        emit("no CUDA device")
    status = []
    for m in CHAPTER_PACKAGES + ("pandas", "matplotlib", "seaborn", "sympy", "yaml"):
        try:
            importlib.import_module(m)
            status.append(f"{m} ok")
        except Exception as exc:  # noqa: BLE001 - report what fails to import, whatever the reason
            status.append(f"{m} NO ({type(exc).__name__}: {str(exc)[:80]})")
    emit("packages: " + ", ".join(status))
    emit(f"Fashion-MNIST: {fashion_mnist_status()}")


def fashion_mnist_status() -> str:
    from flatbook import data

    for root in data.data_roots():
        if data._mnist_like_ready(root, "fashion-mnist"):
            return f"found in {root}"
    if all((data.DEBIAN_FASHION_MNIST / f"{f}.gz").is_file() for pair in data._IDX_FILES.values() for f in pair):
        return f"found in {data.DEBIAN_FASHION_MNIST}"
    return "missing"


def section_throughput(args) -> None:
    from flatbook import train

    steps = 3 if args.quick else 20
    x, y = images(128 * steps)
    x, y = x.to(args.device), y.to(args.device)
    modes = [("float32", False, False)]
    if args.device.startswith("cuda"):
        modes.append(("bf16 + channels-last", True, True))
    else:
        modes.append(("channels-last (bf16 needs CUDA)", False, True))
    failures = []
    for label, (name, options) in networks(args).items():
        flops = forward_flops(build(name, options, args.device))
        for mode, bf16, channels_last in modes:
            with one_network(f"{label}, {mode}", failures, args.device):
                model = build(name, options, args.device)
                opt = train.make_optimizer("sgd", model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
                with train._memory_format(model, channels_last):
                    seconds = step_loop_seconds(model, opt, x, y, bf16=bf16, steps=steps, device=args.device)
                rate = 128 * steps / seconds
                emit(f"{label}, {mode}: {rate:,.0f} images/s, {3 * flops * rate / 1e12:.2f} TFLOP/s "
                     f"({flops / 1e9:.3f} GFLOP a forward pass)")
                model = opt = None
    if failures:
        raise RuntimeError(f"throughput failed for {failures}")


def _world_of_one(device: str):
    """A process group of this one process (NCCL on a GPU, gloo on the CPU) on a free local port."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=0, world_size=1)
    return dist.group.WORLD


def swap_batchnorm(model, make) -> None:
    """Every BatchNorm layer of ``model`` replaced by ``make(layer)`` (sharing its tensors)."""
    import torch

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(parent, child_name, make(child))


def syncbn_kernels_check(group, device: str) -> None:
    """torch's SyncBatchNorm autograd function (the fused CUDA kernels the NCCL route uses; the
    module itself skips them at world size 1) against plain training-mode batch statistics on the
    same input: output, input gradient and running statistics, float32 in the default and the
    channels-last layout, and a bf16 input."""
    import torch
    import torch.nn.functional as F
    from torch.nn.modules._functions import SyncBatchNorm as SyncFunction

    g = torch.Generator().manual_seed(5)
    base = torch.randn(64, 16, 8, 8, generator=g).to(device)
    upstream = torch.randn(64, 16, 8, 8, generator=g).to(device)
    weight = (1 + 0.1 * torch.randn(16, generator=g)).to(device)
    bias = (0.1 * torch.randn(16, generator=g)).to(device)
    for label, dtype, layout in (("float32", torch.float32, torch.contiguous_format),
                                 ("float32 channels-last", torch.float32, torch.channels_last),
                                 ("bf16 input", torch.bfloat16, torch.contiguous_format)):
        try:
            outs = []
            for fused in (True, False):
                x = base.to(dtype).contiguous(memory_format=layout).requires_grad_(True)
                w, b = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
                rm, rv = torch.zeros(16, device=device), torch.ones(16, device=device)
                if fused:
                    out = SyncFunction.apply(x, w, b, rm, rv, 1e-5, 0.1, group, 1)
                else:
                    out = F.batch_norm(x.float(), rm, rv, w, b, True, 0.1, 1e-5).to(dtype)
                out.float().mul(upstream).sum().backward()
                outs.append((out.float(), x.grad.float(), rm, rv))
            diffs = [float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(*outs)]
            emit(f"torch's SyncBatchNorm kernels ({label}) against plain batch statistics, largest relative "
                 f"difference: output {diffs[0]:.1e}, input gradient {diffs[1]:.1e}, running mean {diffs[2]:.1e}, "
                 f"running variance {diffs[3]:.1e}")
        except Exception as exc:  # noqa: BLE001 - report and go on to the other variants
            emit(f"torch's SyncBatchNorm kernels ({label}): FAILED ({type(exc).__name__}: {exc})")


def section_data_parallel(args) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from flatbook import distributed, train

    steps = 3 if args.quick else 20
    name, options = ("wrn28x10", {"depth": 10, "width": 1}) if args.quick else ("wrn28x10", {"depth": 16, "width": 4})
    x, y = images(128 * steps)
    x, y = x.to(args.device), y.to(args.device)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(0)  # NCCL's rank 0 computes on cuda:0
    group = _world_of_one(args.device)
    ids = [0] if cuda else None
    try:
        if cuda:
            syncbn_kernels_check(group, args.device)
        else:
            emit("torch's SyncBatchNorm kernels: not run: they need CUDA")
        for variant, layer in (("no BatchNorm sync", None), ("GlobalBatchNorm (flatbook, gloo's route)",
                                                              distributed.GlobalBatchNorm),
                               ("SyncBatchNorm (torch, flatbook's NCCL route; at world size 1 a plain BatchNorm)",
                                distributed.synced_batchnorm)):
            if layer is distributed.synced_batchnorm and not cuda:
                emit(f"{variant}: not run: torch's SyncBatchNorm needs CUDA")
                continue
            model = build(name, options, args.device)
            if layer is not None:
                swap_batchnorm(model, lambda bn: layer(bn, group))
            opt = train.make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
            ddp = DistributedDataParallel(model, device_ids=ids, process_group=group,
                                          **train._no_buffer_sync(DistributedDataParallel))
            seconds = step_loop_seconds(model, opt, x, y, bf16=False, steps=steps, device=args.device, forward=ddp)
            emit(f"{variant}: {128 * steps / seconds:,.0f} images/s ({steps} steps of 128, "
                         f"{'WRN-10-1' if args.quick else 'WRN-16-4'})")
    finally:
        dist.destroy_process_group()


def section_hvp(args) -> None:
    import torch
    import torch.nn.functional as F

    from flatbook import HessianOperator

    from flatbook.device import ieee_float32

    n = 256 if args.quick else 2048
    x, y = images(n)
    x, y = x.to(args.device), y.to(args.device)
    name, options = ("wrn28x10", {"depth": 10, "width": 1})
    model = build(name, options, args.device)
    P = sum(p.numel() for p in model.parameters())
    v = torch.randn(P, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = {}
    for method in ("double-backward", "forward-over-reverse"):
        out[method] = HessianOperator(model, F.cross_entropy, (x[:512], y[:512]), batch_size=128,
                                      method=method).matmat(v)
    a, b = out.values()
    emit(f"WRN-10-1, the two product methods (TF32 off): largest difference relative to the largest entry "
         f"{float((a - b).abs().max() / a.abs().max()):.1e} (float32 rounding: about 1e-6)")
    failures = []
    for label, (name, options) in networks(args).items():
        with one_network(label, failures, args.device):
            model = build(name, options, args.device)
            P = sum(p.numel() for p in model.parameters())
            v = torch.randn(P, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

            def gradient() -> None:
                model.zero_grad()
                with ieee_float32():  # the precision the products run in
                    for i in range(0, n, 128):
                        F.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()

            model.train()
            gradient()
            sync(args.device)
            t0 = time.perf_counter()
            gradient()
            sync(args.device)
            g_seconds = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            op = HessianOperator(model, F.cross_entropy, (x, y), batch_size=128)
            op.matmat(v)  # warm-up
            reset_peak(args.device)
            sync(args.device)
            t0 = time.perf_counter()
            op.matmat(v)
            sync(args.device)
            seconds = time.perf_counter() - t0
            emit(f"{label} (P = {P:,}): one product over {n:,} images {seconds:.3f} s = {seconds / g_seconds:.2f} "
                 f"gradients (both in IEEE float32); peak memory {peak_memory(args.device)}")
            model = op = None
    if failures:
        raise RuntimeError(f"Hessian products failed for {failures}")


def section_slq(args) -> None:
    import torch.nn.functional as F

    from flatbook import HessianOperator, slq

    n = 256 if args.quick else 2048
    steps = 8 if args.quick else 20
    name, options = ("wrn28x10", {"depth": 10, "width": 1}) if args.quick else ("wrn28x10", {"depth": 16, "width": 4})
    x, y = images(n)
    model = build(name, options, args.device)
    op = HessianOperator(model, F.cross_entropy, (x.to(args.device), y.to(args.device)), batch_size=128)
    reset_peak(args.device)
    t0 = time.perf_counter()
    sp = slq(op, steps=steps, probes=1, seed=0)
    sync(args.device)
    emit(f"{'WRN-10-1' if args.quick else 'WRN-16-4'}, {steps} steps, 1 probe, {n:,} images: "
         f"{time.perf_counter() - t0:.1f} s, lambda_1 = {sp.lambda_max:.4g}; peak memory {peak_memory(args.device)}")


def section_resume(args) -> None:
    from flatbook import train

    n = 256 if args.quick else 2048
    x, y = images(n)
    kw = dict(optimizer="sgd", lr=0.05, epochs=2, batch_size=128, momentum=0.9, augment="crop-flip", seed=3,
              device=args.device, progress=False)
    name, options = ("wrn28x10", {"depth": 10, "width": 1})
    full = build(name, options, args.device)
    train.fit(full, (x, y), None, **kw)
    real = train._train_epoch
    calls = []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    with tempfile.TemporaryDirectory() as tmp:
        train._train_epoch = interrupt_second
        try:
            train.fit(build(name, options, args.device), (x, y), None, checkpoint_dir=tmp, **kw)
        except KeyboardInterrupt:
            pass
        finally:
            train._train_epoch = real
        resumed = build(name, options, args.device)
        train.fit(resumed, (x, y), None, checkpoint_dir=tmp, **kw)
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in
               zip(full.state_dict().values(), resumed.state_dict().values()) if a.is_floating_point())
    emit(f"WRN-10-1 interrupted after epoch 1 and resumed on {args.device} (CPU and CUDA RNG states from the "
         f"checkpoint): largest weight difference from an uninterrupted run {diff:.2e} (0 with deterministic "
         f"kernels; cuDNN's nondeterministic ones may leave rounding)")


def section_chapters(args) -> None:
    missing = [m for m in CHAPTER_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise NotRun(f"missing Python packages {', '.join(missing)} (make gpu-bundle here, then --bundle there)")
    if fashion_mnist_status() == "missing":
        raise NotRun("no Fashion-MNIST files (make gpu-bundle here, then --bundle there)")
    chapters = ("wd_mlp",) if args.quick else ("wd_mlp", "wd_wrn")
    with tempfile.TemporaryDirectory() as tmp:
        for chapter in chapters:
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "flatbook", "run", chapter, "--profile", "ci", "--output",
                                   str(Path(tmp) / f"{chapter}.ipynb")], cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "FLATBOOK_RESULTS": str(Path(tmp) / "results")})
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip().splitlines()[-FAILURE_LINES:]
                raise RuntimeError(f"{chapter} failed:\n" + "\n".join(tail))
            emit(f"{chapter} at the ci profile: {time.perf_counter() - t0:.1f} s, ok")


def rank_main(args) -> None:
    """One rank of the distributed section (under torchrun)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from flatbook import HessianOperator, train
    from flatbook.distributed import init_from_env

    device = init_from_env(backend="nccl" if args.device.startswith("cuda") else "gloo")
    n = 256 if args.quick else 4096
    x, y = images(n)
    name, options = ("wrn28x10", {"depth": 10, "width": 1})
    model = build(name, options, device)
    P = sum(p.numel() for p in model.parameters())
    v = torch.randn(P, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    op = HessianOperator(model, F.cross_entropy, (x.to(device), y.to(device)), batch_size=128,
                         process_group=dist.group.WORLD)
    op.matmat(v[:, :1])
    sync(device)
    dist.barrier()
    t0 = time.perf_counter()
    out = op.matmat(v)
    sync(device)
    seconds = time.perf_counter() - t0
    model = build(name, options, device)
    history = train.fit(model, (x, y), lr=0.05, epochs=2, batch_size=128, augment="crop-flip", progress=False,
                        device=device, process_group=dist.group.WORLD)
    weights = torch.cat([p.detach().flatten().cpu() for p in model.parameters()])
    if dist.get_rank() == 0:
        torch.save({"seconds": seconds, "product": out.cpu(), "world": dist.get_world_size(),
                    "train_images_per_s": n / history[-1]["seconds"], "weights": weights}, args.rank_out)
    dist.destroy_process_group()


def section_distributed(args) -> None:
    import torch

    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    counts = [k for k in (1, 2, 4, 8) if k <= gpus] if gpus else [1, 2]
    base, reference, base_train, reference_weights = None, None, None, None
    with tempfile.TemporaryDirectory() as tmp:
        for k in counts:
            out = Path(tmp) / f"k{k}.pt"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={k}", __file__,
                   "--rank", "--rank-out", str(out), "--device", args.device] + (["--quick"] if args.quick else [])
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if done.returncode != 0:
                tail = (done.stdout + done.stderr).strip().splitlines()[-FAILURE_LINES:]
                raise RuntimeError(f"{k} rank(s) failed:\n" + "\n".join(tail))
            r = torch.load(out, weights_only=False)
            base = base or r["seconds"]
            reference = r["product"] if reference is None else reference
            diff = float((r["product"] - reference).abs().max() / reference.abs().max())
            emit(f"{k} rank(s) ({'GPUs, NCCL' if gpus else 'CPU, gloo'}): {r['seconds']:.3f} s a product of 4 "
                         f"columns (WRN-10-1), speed-up {base / r['seconds']:.2f}, largest difference from 1 rank {diff:.1e}")
            base_train = base_train or r["train_images_per_s"]
            reference_weights = r["weights"] if reference_weights is None else reference_weights
            drift = float((r["weights"] - reference_weights).abs().max())
            emit(f"{k} rank(s) training: {r['train_images_per_s']:,.0f} images/s, speed-up "
                         f"{r['train_images_per_s'] / base_train:.2f}, largest weight difference from 1 rank after "
                         f"2 epochs {drift:.1e}")


# --- the driver -------------------------------------------------------------------------------------------------


def installed(distribution: str) -> bool:
    """Whether this Python already has ``distribution`` (a wheel's name): the image's own packages
    (python-dateutil, PyYAML, tqdm, ...) are kept, not shadowed by the bundle's copies."""
    from importlib import metadata

    try:
        metadata.distribution(distribution.replace("_", "-"))
        return True
    except metadata.PackageNotFoundError:
        return False


def prepare_bundle(bundle: Path) -> dict[str, str]:
    """Install the bundle's wheels into ``bundle/site`` (once) and unpack its Fashion-MNIST into
    ``bundle/data``; return the environment variables that make both visible to the sections."""
    env = {}
    wheels = [w for w in sorted((bundle / "wheels").glob("*.whl")) if not installed(w.name.split("-")[0])]
    site = bundle / "site"
    if wheels and not (site / ".installed").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                               "--target", str(site)] + [str(w) for w in wheels], capture_output=True, text=True)
        if done.returncode != 0:
            print("pip install of the bundle's wheels failed:\n" + "\n".join(
                (done.stdout + done.stderr).strip().splitlines()[-FAILURE_LINES:]), flush=True)
        else:
            (site / ".installed").write_text("\n".join(w.name for w in wheels) + "\n")
    if site.exists():
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(site)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    from flatbook import data

    if data.unpack_gzipped_fashion_mnist(bundle / "fashion-mnist", bundle / "data"):
        env["FLATBOOK_DATA"] = str((bundle / "data").resolve())
    return env


def write_report(out: Path, header: list[str], parts: list[list[str]], footer: list[str]) -> None:
    text = "\n".join(header + [line for part in parts for line in part] + footer) + "\n"
    tmp = out / ".report.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "report.md")


def run_section(name: str, limit: float, args, env: dict[str, str], out: Path) -> tuple[list[str], bool]:
    """The section in its own process, killed after ``limit`` seconds; (Markdown lines, failed)."""
    result = out / f"{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--section", name, "--result", str(result), "--device", args.device]
    cmd += ["--quick"] if args.quick else []
    t0 = time.perf_counter()
    log = out / f"{name}.log"
    with open(log, "w") as fh:
        # its own session: on a timeout the whole process group goes (torchrun's ranks, a chapter's kernel)
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=ROOT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            status = None if rc == 0 else f"FAILED (exit {rc})"
        except subprocess.TimeoutExpired:
            import signal

            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            status = f"STOPPED at its time limit of {limit:.0f} s"
    seconds = time.perf_counter() - t0
    body = json.loads(result.read_text()) if result.exists() else {"lines": [], "not_run": None}
    lines = [f"## {TITLES[name]} ({seconds:.0f} s)", ""]
    if body.get("not_run"):
        lines += [f"- not run: {body['not_run']}", ""]
        return lines, False
    lines += [f"- {s}" for s in body["lines"]]
    if status is not None:
        tail = log.read_text(errors="replace").strip().splitlines()[-FAILURE_LINES:]
        lines += [f"- **{status}**; the last {len(tail)} lines of its output:", "", "```"] + tail + ["```"]
    return lines + [""], status is not None


def child(args) -> None:
    """Run one section; its lines reach ``args.result`` as it emits them (``emit``)."""
    global _RESULT
    import torch

    if args.device == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    _RESULT = Path(args.result)
    try:
        globals()[f"section_{args.section}"](args)
    except NotRun as exc:
        _BODY["not_run"] = str(exc)
        tmp = _RESULT.with_suffix(".tmp")
        tmp.write_text(json.dumps(_BODY))
        os.replace(tmp, _RESULT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check", help="folder for report.md and each section's log")
    parser.add_argument("--device", default=None, help="cuda (default when a GPU is visible) or cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (a dry run)")
    parser.add_argument("--bundle", default=None, help="the folder `make gpu-bundle` filled (wheels, data)")
    parser.add_argument("--only", default=None, help="comma-separated sections to run (default: all)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply every section's time limit and the deadline (default 1; the CPU dry run: 4)")
    parser.add_argument("--deadline", type=float, default=450.0,
                        help="seconds for all sections (default 450): a section gets at most what is left, and "
                             "one with under 10 s left is not run")
    parser.add_argument("--limits", default=None,
                        help="per-section time limits in seconds, e.g. slq=60,chapters=120 (before --time-scale)")
    parser.add_argument("--section", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rank-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.rank:
        rank_main(args)
        return 0
    if args.section:
        child(args)
        return 0
    names = [n for n, _ in SECTIONS]
    only = names if args.only is None else [s.strip() for s in args.only.split(",")]
    unknown = sorted(set(only) - set(names))
    if unknown:
        parser.error(f"unknown sections {unknown}; the sections are {names}")
    if not args.time_scale > 0:
        parser.error(f"--time-scale must be > 0, got {args.time_scale}")
    if not args.deadline > 0:
        parser.error(f"--deadline must be > 0 seconds, got {args.deadline}")
    limits = dict(SECTIONS)
    for item in (args.limits.split(",") if args.limits else []):
        key, _, value = item.partition("=")
        try:
            limits[key.strip()] = float(value) if key.strip() in limits and float(value) > 0 else None
        except ValueError:
            limits[key.strip()] = None
        if limits.get(key.strip()) is None:
            parser.error(f"--limits: {item!r} is not SECTION=SECONDS with a section of {names} and seconds > 0")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = prepare_bundle(Path(args.bundle).resolve()) if args.bundle else {}
    header = [f"# flatbook GPU check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, device {args.device}"
              f"{', quick' if args.quick else ''})", ""]
    parts: list[list[str]] = []
    start = time.perf_counter()
    failed = []
    deadline = args.deadline * args.time_scale
    for name, _ in SECTIONS:
        if name not in only:
            continue
        left = deadline - (time.perf_counter() - start)
        if left < 10:
            lines, bad = [f"## {TITLES[name]}", "", f"- not run: the deadline ({deadline:.0f} s) was reached", ""], False
            parts.append(lines)
            continue
        try:
            lines, bad = run_section(name, min(limits[name] * args.time_scale, left), args, env, out)
        except Exception:  # noqa: BLE001 - the driver reports and goes on
            lines, bad = [f"## {TITLES[name]}", "", "```"] + traceback.format_exc().strip().splitlines()[
                -FAILURE_LINES:] + ["```", ""], True
        failed += [name] if bad else []
        parts.append(lines)
        write_report(out, header, parts, [f"(running: {time.perf_counter() - start:.0f} s so far)"])
        print("\n".join(lines), flush=True)
    footer = [f"Total {time.perf_counter() - start:.0f} s; "
              + (f"failed: {', '.join(failed)}." if failed else "no section failed.")]
    write_report(out, header, parts, footer)
    print(footer[0], f"Report: {out / 'report.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
