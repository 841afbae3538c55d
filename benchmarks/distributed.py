"""Distributed Hessian-vector products and training steps, measured side by side in one run (never
part of the tests).

    .venv/bin/python benchmarks/distributed.py [--images 1024] [--columns 4] [--repeats 3]

The laptop profile's WRN-10-1 (BatchNorm in train mode, as the paper) on random 3x16x16 images,
batches of 128: one ``HessianOperator.matmat`` of a (P, k) block

* in one process with 2 threads (this machine's 2 cores), and
* in 2 gloo ranks under ``torchrun`` with 1 thread each (``process_group=``): each rank takes every
  other batch, then one float64 all-reduce of the (P, k) block;

best of ``repeats`` each, and the bytes each product sends: the all-reduced block is P k 8 bytes;
a ring all-reduce sends 2 (n - 1) / n of it from every rank. Then training (``train.fit``, SGD,
crop-and-flip, global batch 128) of the same network for ``--epochs`` epochs over the images, in
one process with 2 threads and on 2 gloo ranks (DistributedDataParallel, global-batch BatchNorm):
the seconds per step of the last epoch (the first warms up), and the gradient bytes all-reduced
per step (P x 4). The ranks' product is checked
against the single process's. On a 2-core CPU the two ranks compete for the same cores the one
process already used, so no speed-up is expected here: this measures the overhead; with GPUs the
same code runs one rank per GPU (NCCL).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import flatbook  # noqa: E402
from flatbook import models  # noqa: E402


def case(images: int, columns: int):
    torch.manual_seed(0)
    model = models.build("wrn28x10", depth=10, width=1, num_classes=10, image_size=16)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(images, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    P = sum(p.numel() for p in model.parameters())
    V = torch.randn(P, columns, generator=g, dtype=torch.float64)
    return model, (x, y), V


def timed_products(op, V, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = op.matmat(V)
        best = min(best, time.perf_counter() - t0)
    return best, out


def seconds_per_step(model, data, epochs: int, process_group=None) -> tuple[float, torch.Tensor]:
    """Seconds per training step of the last epoch, and the trained weights (flat)."""
    from flatbook import train

    history = train.fit(model, data, lr=0.05, epochs=epochs, batch_size=128, augment="crop-flip", weight_decay=5e-4,
                        progress=False, device="cpu", process_group=process_group)
    steps = -(-len(data[1]) // 128)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    return history[-1]["seconds"] / steps, flat


def rank_main(args) -> None:
    import torch.distributed as dist

    from flatbook.distributed import init_from_env

    init_from_env(backend="gloo")
    torch.set_num_threads(1)
    model, data, V = case(args.images, args.columns)
    op = flatbook.HessianOperator(model, torch.nn.functional.cross_entropy, data, batch_size=128,
                                  process_group=dist.group.WORLD)
    op.matmat(V[:, :1])  # warm-up
    dist.barrier()
    seconds, out = timed_products(op, V, args.repeats)
    step, weights = seconds_per_step(model, data, args.epochs, process_group=dist.group.WORLD)
    if dist.get_rank() == 0:
        torch.save({"seconds": seconds, "product": out, "world": dist.get_world_size(), "step": step,
                    "weights": weights}, args.out)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (the last is timed)")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank:
        return rank_main(args)

    torch.set_num_threads(2)
    model, data, V = case(args.images, args.columns)
    op = flatbook.HessianOperator(model, torch.nn.functional.cross_entropy, data, batch_size=128)
    op.matmat(V[:, :1])  # warm-up
    one, reference = timed_products(op, V, args.repeats)
    one_step, one_weights = seconds_per_step(model, data, args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.pt"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__,
               "--rank", "--out", str(out), "--images", str(args.images), "--columns", str(args.columns),
               "--repeats", str(args.repeats), "--epochs", str(args.epochs)]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        two = torch.load(out, weights_only=False)
    P, k = V.shape
    block = P * k * 8
    error = float((two["product"] - reference).abs().max() / reference.abs().max())
    print(f"WRN-10-1 (P = {P:,}), {args.images} images in batches of 128, train-mode BatchNorm, a block of k = {k} "
          f"columns, best of {args.repeats}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    print(f"  one process, 2 threads:        {one:.3f} s per product")
    print(f"  2 gloo ranks, 1 thread each:   {two['seconds']:.3f} s per product "
          f"(ratio 2 ranks / 1 process = {two['seconds'] / one:.2f})")
    print(f"  all-reduced block: {block / 2**20:.2f} MiB per product (P k float64); a ring all-reduce sends "
          f"{block * 2 * (2 - 1) / 2 / 2**20:.2f} MiB from each of 2 ranks")
    print(f"  largest difference from the single process, relative to the largest entry: {error:.1e} (a float32 "
          "model: the per-batch products round differently with 1 and 2 threads; float64 models agree to 1e-12, "
          "tests/toolkit/test_distributed.py)")
    drift = float((two["weights"] - one_weights).abs().max())
    print(f"  training, global batch 128, crop-and-flip, {args.epochs} epochs (the last timed):")
    print(f"    one process, 2 threads:      {one_step * 1e3:.1f} ms per step")
    print(f"    2 gloo ranks, 1 thread each: {two['step'] * 1e3:.1f} ms per step "
          f"(ratio 2 ranks / 1 process = {two['step'] / one_step:.2f}); gradients all-reduced: "
          f"{P * 4 / 2**20:.2f} MiB per step, plus two small all-reduces per BatchNorm layer forward and backward")
    print(f"    largest weight difference after training, 2 ranks vs 1 process: {drift:.1e} (float32)")


if __name__ == "__main__":
    main()
