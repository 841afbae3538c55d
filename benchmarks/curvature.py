"""Speed of the curvature engine, measured side by side in one run (never part of the tests).

    .venv/bin/python benchmarks/curvature.py [--device cpu|cuda] [--repeats 3] [--quick]

For an MLP (784-10-100-10, the paper's 9,960 parameters) and a small CNN with BatchNorm
(train-mode batch statistics, as the paper), on synthetic data of the real shapes, batches of
128, it prints the best-of-``repeats`` wall time of:

* a full-data gradient (plain loop: forward, mean loss weighted by batch size, backward);
* our full-data Hessian-vector product (``HessianOperator.matvec``), for each method;
* a plain double-backward HVP loop, as the older tools do it (autograd.grad twice per batch);
* SLQ with 4 probes together versus 4 single-probe SLQ runs (same steps);
* peak memory of each (CPU: peak RSS growth of one call in a fresh process, via /proc;
  CUDA: max_memory_allocated),

the timed functions taking turns in every round so that a slow spell of the machine hits all
alike,

and the ratios against the targets: HVP <= 2.5x gradient; 4 probes together <= 0.6x four
separate runs; never slower than double backward.
"""

from __future__ import annotations

import argparse
import gc
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flatbook.curvature import METHODS, HessianOperator  # noqa: E402
from flatbook.spectrum import slq  # noqa: E402


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 100), nn.ReLU(), nn.Linear(100, 10))


def small_bn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, 10),
    )


def _peak_reset(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) on Linux
        except OSError:
            pass


def _peak_mib(device: torch.device, baseline: float) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024 - baseline
    return float("nan")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def full_gradient(model, loss_fn, x, y, batch_size):
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    n = len(y)
    for s in range(0, n, batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        grads = torch.autograd.grad(loss_fn(model(xb), yb), params)
        for t, g in zip(total, grads):
            t.add_(g, alpha=len(yb) / n)
    return total


def plain_double_backward_hvp(model, loss_fn, x, y, batch_size, vs):
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    n = len(y)
    for s in range(0, n, batch_size):
        xb, yb = x[s:s + batch_size], y[s:s + batch_size]
        grads = torch.autograd.grad(loss_fn(model(xb), yb), params, create_graph=True)
        hv = torch.autograd.grad(grads, params, grad_outputs=vs)
        for t, h in zip(total, hv):
            t.add_(h, alpha=len(yb) / n)
    return total


def workload(model_name: str, quick: bool, device: torch.device):
    """The model, data and every timed function of one benchmark row group (seeded: the same
    in every process, so a memory measurement in a child process sees the same work)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if model_name == "mlp":
        n, steps, model, shape = (2_000 if quick else 10_000), (3 if quick else 10), mlp(), (1, 28, 28)
    else:
        n, steps, model, shape = (512 if quick else 2_000), (2 if quick else 4), small_bn_cnn(), (3, 32, 32)
    x, y = torch.randn(n, *shape, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)
    loss_fn = nn.CrossEntropyLoss()
    model = model.to(device)
    model.train()  # gradient and plain HVP use batch statistics, like bn_mode="train"
    vs = [torch.randn(p.shape, generator=g).to(device) for p in model.parameters()]
    ops = {m: HessianOperator(model, loss_fn, (x, y), batch_size=128, bn_mode="train", method=m) for m in METHODS}
    v = torch.randn(ops[METHODS[0]].num_params, generator=g).to(device)
    products = {"full-data gradient": lambda: full_gradient(model, loss_fn, x, y, 128),
                "plain double-backward HVP": lambda: plain_double_backward_hvp(model, loss_fn, x, y, 128, vs)}
    for m, op in ops.items():
        products[f"flatbook HVP ({m})"] = (lambda op=op: op.matvec(v))
    slqs = {}
    for m, op in ops.items():
        slqs[f"  SLQ {steps} steps, 4 probes together ({m})"] = (
            lambda op=op: slq(op, steps=steps, probes=4, seed=0, check=False))
        slqs[f"  SLQ {steps} steps, 4 separate runs ({m})"] = (
            lambda op=op: [slq(op, steps=steps, probes=1, seed=s, check=False) for s in range(4)])
    return {"params": ops[METHODS[0]].num_params, "samples": n, "products": products, "slqs": slqs}


def peak_memory(model_name: str, key: str, quick: bool, device: torch.device, fn) -> float:
    """Peak memory of one call, MiB. CUDA: max_memory_allocated in this process. CPU: the peak
    RSS growth of the call in a fresh Python process (``--memory-of``), so no function reuses
    memory that another left behind."""
    if device.type == "cuda":
        _peak_reset(device)
        fn()
        torch.cuda.synchronize(device)
        return _peak_mib(device, 0.0)
    cmd = [sys.executable, __file__, "--memory-of", model_name, key, "--device", "cpu"] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def interleaved(fns: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Best time of each function over ``repeats`` rounds, the functions taking turns in every
    round (so a slow spell of the machine hits them all alike), after one warm-up each."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def bench_model(model_name: str, title: str, device: torch.device, repeats: int, quick: bool) -> None:
    w = workload(model_name, quick, device)
    everything = {**w["products"], **w["slqs"]}
    peaks = {k: peak_memory(model_name, k, quick, device, fn) for k, fn in everything.items()}
    times = interleaved(w["products"], repeats, device)
    times.update(interleaved(w["slqs"], max(1, repeats // 2), device))
    t_grad, t_dbl = times["full-data gradient"], times["plain double-backward HVP"]
    print(f"\n== {title}: {w['params']:,} parameters, {w['samples']:,} samples, batch 128, device {device}")
    print(f"{'what':<58} {'seconds':>9} {'peak MiB':>9} {'x gradient':>11}")
    for k in everything:
        ratio = f"{times[k] / t_grad:>11.2f}" if k in w["products"] else f"{'':>11}"
        print(f"{k:<58} {times[k]:>9.3f} {peaks[k]:>9.1f} {ratio}")
    for m in METHODS:
        t = times[f"flatbook HVP ({m})"]
        together = [v for k, v in times.items() if "together" in k and f"({m})" in k][0]
        separate = [v for k, v in times.items() if "separate" in k and f"({m})" in k][0]
        print(f"  {m}: HVP/gradient = {t / t_grad:.2f} (target <= 2.5), "
              f"4-probe SLQ / 4 runs = {together / separate:.2f} (target <= 0.6), "
              f"HVP / plain double backward = {t / t_dbl:.2f} (target <= 1)")


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller data (a smoke run)")
    ap.add_argument("--memory-of", nargs=2, metavar=("MODEL", "WHAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.memory_of:  # child process: one call of one function, print its peak RSS growth
        model_name, key = args.memory_of
        w = workload(model_name, args.quick, device)
        fn = {**w["products"], **w["slqs"]}[key]
        baseline = _rss_mib()
        _peak_reset(device)
        fn()
        print(_peak_mib(device, baseline))
        return
    print(f"flatbook curvature benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    bench_model("mlp", "MLP 784-10-100-10", device, args.repeats, args.quick)
    bench_model("cnn", "small CNN with BatchNorm", device, args.repeats, args.quick)


if __name__ == "__main__":
    main()
