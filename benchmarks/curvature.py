"""Speed of the curvature engine, measured side by side in one run (never part of the tests).

    .venv/bin/python benchmarks/curvature.py [--device cpu|cuda] [--repeats 3] [--quick]

For an MLP (784-10-100-10, the paper's 9,960 parameters) and a small CNN with BatchNorm
(train-mode batch statistics, as the paper), on synthetic data of the real shapes, batches of
128, it prints the best-of-``repeats`` wall time of:

* a full-data gradient (plain loop: forward, mean loss weighted by batch size, backward);
* our full-data Hessian-vector product (``HessianOperator.matvec``), for each method;
* a plain double-backward HVP loop, as the older tools do it (autograd.grad twice per batch);
* SLQ with 4 probes together versus 4 single-probe SLQ runs (same steps);
* peak memory of each (CPU: peak RSS growth via /proc; CUDA: max_memory_allocated),

the timed functions taking turns in every round so that a slow spell of the machine hits all
alike,

and the ratios against the targets: HVP <= 2.5x gradient; 4 probes together <= 0.6x four
separate runs; never slower than double backward.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
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


def interleaved(fns: dict, device: torch.device, repeats: int) -> dict[str, tuple[float, float]]:
    """Best time of each function over ``repeats`` rounds, the functions taking turns in every
    round (so a slow spell of the machine hits them all alike), and each one's peak memory."""
    peaks = {}
    for name, fn in fns.items():  # warm-up and peak memory, one at a time
        baseline = _rss_mib()
        _peak_reset(device)
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peaks[name] = _peak_mib(device, baseline)
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (best[name], peaks[name]) for name in fns}


def bench_model(name, model, x, y, device, repeats, slq_steps):
    loss_fn = nn.CrossEntropyLoss()
    model = model.to(device)
    model.train()  # gradient and plain HVP use batch statistics, like bn_mode="train"
    x, y = x.to(device), y.to(device)
    vs = [torch.randn_like(p) for p in model.parameters()]
    ops = {m: HessianOperator(model, loss_fn, (x, y), batch_size=128, bn_mode="train", method=m) for m in METHODS}
    v = torch.randn(ops[METHODS[0]].num_params, device=device)
    fns = {"full-data gradient": lambda: full_gradient(model, loss_fn, x, y, 128),
           "plain double-backward HVP": lambda: plain_double_backward_hvp(model, loss_fn, x, y, 128, vs)}
    for m, op in ops.items():
        fns[f"flatbook HVP ({m})"] = (lambda op=op: op.matvec(v))
    times = interleaved(fns, device, repeats)
    t_grad, t_dbl = times["full-data gradient"][0], times["plain double-backward HVP"][0]
    rows = [(k, t, mem, t / t_grad) for k, (t, mem) in times.items()]
    summary = {}
    for m, op in ops.items():
        slq_times = interleaved({
            "together": lambda op=op: slq(op, steps=slq_steps, probes=4, seed=0),
            "separate": lambda op=op: [slq(op, steps=slq_steps, probes=1, seed=s) for s in range(4)],
        }, device, 1)
        (t4, m4), (t1, _) = slq_times["together"], slq_times["separate"]
        rows.append((f"  SLQ {slq_steps} steps, 4 probes together ({m})", t4, m4, float("nan")))
        rows.append((f"  SLQ {slq_steps} steps, 4 separate runs ({m})", t1, float("nan"), float("nan")))
        summary[m] = (times[f"flatbook HVP ({m})"][0], t4 / t1)
    P = ops[METHODS[0]].num_params
    print(f"\n== {name}: {P:,} parameters, {len(y):,} samples, batch 128, device {device}")
    print(f"{'what':<58} {'seconds':>9} {'peak MiB':>9} {'x gradient':>11}")
    for what, t, mem, r in rows:
        ratio = f"{r:>11.2f}" if r == r else f"{'':>11}"
        print(f"{what:<58} {t:>9.3f} {mem:>9.1f} {ratio}")
    for m, (t, probe_ratio) in summary.items():
        print(f"  {m}: HVP/gradient = {t / t_grad:.2f} (target <= 2.5), "
              f"4-probe SLQ / 4 runs = {probe_ratio:.2f} (target <= 0.6), "
              f"HVP / plain double backward = {t / t_dbl:.2f} (target <= 1)")
    return summary


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller data (a smoke run)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    n_mlp, n_cnn, steps_mlp, steps_cnn = (2_000, 512, 3, 2) if args.quick else (10_000, 2_000, 10, 4)
    print(f"flatbook curvature benchmark: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    g = torch.Generator().manual_seed(0)
    bench_model("MLP 784-10-100-10", mlp(), torch.randn(n_mlp, 1, 28, 28, generator=g),
                torch.randint(0, 10, (n_mlp,), generator=g), device, args.repeats, steps_mlp)
    bench_model("small CNN with BatchNorm", small_bn_cnn(), torch.randn(n_cnn, 3, 32, 32, generator=g),
                torch.randint(0, 10, (n_cnn,), generator=g), device, args.repeats, steps_cnn)


if __name__ == "__main__":
    main()
