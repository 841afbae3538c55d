"""One prepared run of every CUDA path flatbook has, with a short report of figures (never part of
the tests). Meant for a machine with one or more NVIDIA GPUs; about 5 minutes on one modern GPU.

    .venv/bin/python benchmarks/gpu_check.py [--out gpu_report.md] [--quick] [--device cuda]

Sections (each timed; a failure is reported and the next section still runs):

1. the machine: torch, CUDA, the GPUs;
2. training speed, images per second of ``train.fit`` (WRN-10-1 at 32x32, batch 128, SGD with
   momentum), float32 and bf16 autocast;
3. checkpoint and resume: a run interrupted after its first epoch and resumed from its
   checkpoint (the CUDA RNG state included) against an uninterrupted one: the largest weight
   difference (0 with deterministic kernels; cuDNN's nondeterministic ones may leave rounding);
4. Hessian-vector products, both methods: time of one full-data product over one full-data
   gradient, and the largest difference between the two methods;
5. SLQ: 20 Lanczos steps, 2 probes, seconds;
6. two chapters executed at the ``ci`` profile (wd_mlp, wd_wrn), seconds each;
7. distributed Hessian products and training on all visible GPUs (``torchrun``, NCCL, one rank per
   GPU): seconds per product and training images per second (``train.fit`` with
   DistributedDataParallel, global-batch BatchNorm, global batch 128) from 1 to N GPUs (strong
   scaling), and the largest differences from one GPU.
``--device cpu --quick`` runs every section small on the CPU (a dry run of this script; section 7
then uses gloo with 2 ranks).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import flatbook  # noqa: E402
from flatbook import models, train  # noqa: E402


def wrn(device: str, image_size: int = 32):
    torch.manual_seed(0)
    return models.build("wrn28x10", depth=10, width=1, num_classes=10, image_size=image_size).to(device)


def images(n: int, size: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def section_machine(args) -> list[str]:
    lines = [f"torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs"]
    if torch.cuda.is_available():
        lines.append(f"CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): "
                     + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
    else:
        lines.append("no CUDA device")
    return lines


def section_training(args) -> list[str]:
    n = 1024 if args.quick else 8192
    x, y = images(n, 32)
    lines = []
    for bf16 in (False, True):
        if bf16 and args.device == "cpu":
            lines.append("bf16: skipped on the CPU")
            continue
        model = wrn(args.device)
        fit = dict(optimizer="sgd", lr=0.1, epochs=1, batch_size=128, momentum=0.9, weight_decay=5e-4,
                   seed=0, device=args.device, bf16=bf16, progress=False)
        train.fit(model, (x[:256], y[:256]), None, **fit)  # warm-up: kernels, allocator
        sync(args.device)
        t0 = time.perf_counter()
        train.fit(model, (x, y), None, **fit)
        sync(args.device)
        seconds = time.perf_counter() - t0
        lines.append(f"{'bf16 autocast' if bf16 else 'float32'}: {n / seconds:,.0f} training images/s "
                     f"(WRN-10-1, 32x32, batch 128, one epoch of {n:,})")
    return lines


def section_resume(args) -> list[str]:
    n = 512 if args.quick else 2048
    x, y = images(n, 32)
    kw = dict(optimizer="sgd", lr=0.05, epochs=2, batch_size=128, momentum=0.9, augment="crop-flip", seed=3,
              device=args.device, progress=False)
    full = wrn(args.device)
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
            train.fit(wrn(args.device), (x, y), None, checkpoint_dir=tmp, **kw)
        except KeyboardInterrupt:
            pass
        finally:
            train._train_epoch = real
        resumed = wrn(args.device)
        train.fit(resumed, (x, y), None, checkpoint_dir=tmp, **kw)
    diff = max(float((a - b).abs().max()) for a, b in zip(full.state_dict().values(), resumed.state_dict().values())
               if a.is_floating_point())
    return [f"interrupted after epoch 1 and resumed (CUDA RNG state in the checkpoint): largest weight difference "
            f"from an uninterrupted run {diff:.2e}"]


def section_hvp(args) -> list[str]:
    n = 512 if args.quick else 4096
    x, y = images(n, 32)
    x, y = x.to(args.device), y.to(args.device)
    model = wrn(args.device).eval()
    P = sum(p.numel() for p in model.parameters())
    v = torch.randn(P, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def gradient() -> None:
        model.zero_grad()
        model.train()
        for i in range(0, n, 128):
            F.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
        model.eval()

    gradient()
    sync(args.device)
    t0 = time.perf_counter()
    gradient()
    sync(args.device)
    g_seconds = time.perf_counter() - t0
    out, lines = {}, []
    for method in ("double-backward", "forward-over-reverse"):
        op = flatbook.HessianOperator(model, F.cross_entropy, (x, y), batch_size=128, method=method)
        op.matmat(v)
        sync(args.device)
        t0 = time.perf_counter()
        out[method] = op.matmat(v)
        sync(args.device)
        seconds = time.perf_counter() - t0
        lines.append(f"{method}: one product over {n:,} images {seconds:.3f} s = {seconds / g_seconds:.2f} "
                     f"full-data gradients (P = {P:,}, train-mode BatchNorm)")
    a, b = out.values()
    lines.append(f"largest difference between the two methods, relative: {float((a - b).abs().max() / a.abs().max()):.1e}")
    return lines


def section_slq(args) -> list[str]:
    n = 512 if args.quick else 4096
    x, y = images(n, 32)
    model = wrn(args.device)
    op = flatbook.HessianOperator(model, F.cross_entropy, (x.to(args.device), y.to(args.device)), batch_size=128)
    t0 = time.perf_counter()
    sp = flatbook.slq(op, steps=20, probes=2, seed=0)
    sync(args.device)
    return [f"SLQ, 20 steps, 2 probes, {n:,} images: {time.perf_counter() - t0:.1f} s, lambda_1 = {sp.lambda_max:.4g}"]


def section_chapters(args) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for chapter in ("wd_mlp", "wd_wrn"):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "flatbook", "run", chapter, "--profile", "ci", "--output",
                                   str(Path(tmp) / f"{chapter}.ipynb")], cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "FLATBOOK_RESULTS": str(Path(tmp) / "results")})
            status = "ok" if done.returncode == 0 else f"FAILED: {done.stderr.strip().splitlines()[-1:]}"
            lines.append(f"{chapter} at the ci profile: {time.perf_counter() - t0:.1f} s, {status}")
    return lines


def rank_hvp(args) -> None:
    """One rank of section 7 (under torchrun)."""
    import torch.distributed as dist

    from flatbook.distributed import init_from_env

    cuda = args.device.startswith("cuda")
    device = init_from_env(backend="nccl" if cuda else "gloo")
    n = 512 if args.quick else 8192
    x, y = images(n, 32)
    model = wrn(device).eval()
    P = sum(p.numel() for p in model.parameters())
    v = torch.randn(P, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    op = flatbook.HessianOperator(model, F.cross_entropy, (x.to(device), y.to(device)), batch_size=128,
                                  process_group=dist.group.WORLD)
    op.matmat(v[:, :1])
    sync(device)
    dist.barrier()
    t0 = time.perf_counter()
    out = op.matmat(v)
    sync(device)
    seconds = time.perf_counter() - t0
    # data-parallel training of the same network: the last of two epochs is timed
    model = wrn(device)
    history = train.fit(model, (x, y), lr=0.05, epochs=2, batch_size=128, augment="crop-flip",
                        progress=False, device=device, process_group=dist.group.WORLD)
    weights = torch.cat([p.detach().flatten().cpu() for p in model.parameters()])
    if dist.get_rank() == 0:
        torch.save({"seconds": seconds, "product": out.cpu(), "world": dist.get_world_size(),
                    "train_images_per_s": n / history[-1]["seconds"], "weights": weights}, args.rank_out)
    dist.destroy_process_group()


def section_distributed(args) -> list[str]:
    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    counts = [k for k in (1, 2, 4, 8, 16) if k <= gpus] if gpus else [1, 2]
    lines, base, reference, base_train, reference_weights = [], None, None, None, None
    with tempfile.TemporaryDirectory() as tmp:
        for k in counts:
            out = Path(tmp) / f"k{k}.pt"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={k}", __file__,
                   "--rank-hvp", "--rank-out", str(out), "--device", args.device] + (["--quick"] if args.quick else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                lines.append(f"{k} rank(s): FAILED {done.stderr.strip().splitlines()[-1:]}")
                continue
            r = torch.load(out, weights_only=False)
            base = base or r["seconds"]
            reference = r["product"] if reference is None else reference
            diff = float((r["product"] - reference).abs().max() / reference.abs().max())
            lines.append(f"{k} rank(s) ({'GPUs, NCCL' if gpus else 'CPU, gloo'}): {r['seconds']:.3f} s per product of 4 "
                         f"columns, speed-up {base / r['seconds']:.2f}, largest difference from 1 rank {diff:.1e}")
            base_train = base_train or r["train_images_per_s"]
            reference_weights = r["weights"] if reference_weights is None else reference_weights
            drift = float((r["weights"] - reference_weights).abs().max())
            lines.append(f"{k} rank(s) training: {r['train_images_per_s']:.0f} images/s, speed-up "
                         f"{r['train_images_per_s'] / base_train:.2f}, largest weight difference from 1 rank after "
                         f"2 epochs {drift:.1e}")
    return lines


SECTIONS = [("The machine", section_machine), ("Training speed", section_training),
            ("Checkpoint and resume", section_resume), ("Hessian-vector products", section_hvp),
            ("SLQ", section_slq), ("Chapters at the ci profile", section_chapters),
            ("Distributed Hessian products and training", section_distributed)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="gpu_report.md")
    parser.add_argument("--quick", action="store_true", help="small sizes (a dry run)")
    parser.add_argument("--rank-hvp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rank-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_hvp:
        return rank_hvp(args)
    report = [f"# flatbook GPU check ({time.strftime('%Y-%m-%d %H:%M')}, device {args.device}"
              f"{', quick' if args.quick else ''})", ""]
    start = time.perf_counter()
    for title, section in SECTIONS:
        t0 = time.perf_counter()
        try:
            lines = section(args)
        except Exception:  # report and go on: one broken path must not hide the others
            lines = ["FAILED:"] + ["    " + s for s in traceback.format_exc().strip().splitlines()[-6:]]
        report += [f"## {title} ({time.perf_counter() - t0:.0f} s)", ""] + [f"- {s}" for s in lines] + [""]
        print("\n".join(report[-(len(lines) + 3):]), flush=True)
    report.append(f"Total {time.perf_counter() - start:.0f} s.")
    Path(args.out).write_text("\n".join(report) + "\n")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
