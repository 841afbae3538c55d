"""Speed of training, measured side by side in one run (never part of the tests).

    .venv/bin/python benchmarks/train.py [--device cpu|cuda] [--repeats 3] [--quick]

1. Logistic regression and the MLP (784-10-100-10) on 55,000 MNIST-shaped samples (Fashion-MNIST
   when it is installed, else random data of the same shape), batch 128, SGD momentum 0.9 with
   weight decay: one epoch of ``flatbook.train.fit`` versus one epoch of a plain
   ``torch.utils.data.DataLoader`` loop over a ``TensorDataset`` (shuffle=True) with the same
   model and optimiser, taking turns, best of ``repeats``. Target: ours >= 5x faster.
2. The paper's logistic-regression setting (1000 epochs, weight decays 0, 1e-4, 5e-4) on
   Fashion-MNIST, estimated from a short sweep measured two ways: ``experiments.sweep`` in one
   process (workers=1) and with one worker process per weight decay (workers=3, each with
   1 thread), ``--sweep-epochs`` epochs each including process start and data loading, scaled
   to 1000 epochs. Also a "stacked" step (the three weight decays' models as one batched matmul,
   the vmap idea) against three separate steps, to show whether stacking pays on this machine.
3. The laptop-profile convolutional models on 32x32 inputs: training images per second
   (forward + backward + SGD step, batch 128), BatchNorm-recompute images per second (forward,
   train mode), and Hessian-vector-product images per second (train-mode BatchNorm, as the
   paper), to size the laptop profile.
4. Evaluation passes at batch 1000 against batch 128.
5. The memory layout: one epoch of ``flatbook.train.fit`` on the laptop profile's four CNNs (the
   chapters' image sizes, 1,024 images, 1 thread as a run computes) in the default layout and with
   ``channels_last=True``, taking turns, best of ``repeats``, and one Hessian-vector product in each
   layout (the spectra are measured in the default layout: the HVP is slower channels-last here).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flatbook import data as fdata  # noqa: E402
from flatbook import experiments, models, train  # noqa: E402
from flatbook.curvature import HessianOperator  # noqa: E402

LAPTOP_CNNS = [
    # what the laptop profile runs: 16x16 images for the weight-decay chapters, VGG at 32x32
    ("allcnnc", {"width": 0.25, "image_size": 16}),
    ("preresnet164", {"depth": 20, "image_size": 16}),
    ("wrn28x10", {"depth": 10, "width": 2, "image_size": 16}),
    # the same and larger variants at 32x32
    ("allcnnc", {"width": 0.25}),
    ("preresnet164", {"depth": 20}),
    ("wrn28x10", {"depth": 10, "width": 2}),
    ("wrn28x10", {"depth": 16, "width": 4}),
    ("vgg16bn", {"width": 0.125}),
    ("vgg16bn", {"width": 0.25}),
]


def mnist_shaped(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        x, y = fdata.load("fashion-mnist", "train", download=False)
        source = "Fashion-MNIST train split (55,000)"
    except (FileNotFoundError, ValueError):
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(55_000, 1, 28, 28, generator=g), torch.randint(0, 10, (55_000,), generator=g)
        source = "random data of MNIST shape (55,000)"
    return ((x - 0.5) / 0.5).flatten(1).to(device), y.to(device), source


def dataloader_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, wd: float) -> None:
    """The plain loop: DataLoader over a TensorDataset, per-sample indexing and collation."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=wd)
    model.train()
    for xb, yb in DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True):
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()


def floor_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, wd: float) -> None:
    """The compute floor: the same steps on contiguous slices of pre-shuffled tensors, with no
    bookkeeping (no loss or accuracy tracking, no checks): what any loop must pay."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=wd, fused=True)
    model.train()
    order = torch.randperm(len(x), device=x.device)
    xs, ys = x[order], y[order]
    for i in range(0, len(xs), 128):
        loss = F.cross_entropy(model(xs[i:i + 128]), ys[i:i + 128])
        opt.zero_grad()
        loss.backward()
        opt.step()


def ours_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, wd: float, device: torch.device) -> None:
    train.fit(model, (x, y), None, optimizer="sgd", lr=0.01, epochs=1, weight_decay=wd, schedule="constant",
              device=device, progress=False)


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def loop_comparison(device: torch.device, repeats: int) -> None:
    x, y, source = mnist_shaped(device)
    print(f"\n1. one training epoch on {source}, batch 128, SGD momentum 0.9, weight decay 5e-4 (best of {repeats})")
    print(f"{'model':8} {'ours s':>8} {'DataLoader s':>13} {'speed-up':>9} {'floor s':>8} {'ours/floor':>11}")
    for name in ("logreg", "mlp"):
        best = {"ours": float("inf"), "dataloader": float("inf"), "floor": float("inf")}
        for _ in range(repeats):
            for kind in best:  # taking turns: a slow spell of the machine hits all alike
                torch.manual_seed(0)
                model = models.build(name).to(device)
                fn = {"ours": lambda: ours_epoch(model, x, y, 5e-4, device),
                      "dataloader": lambda: dataloader_epoch(model, x, y, 5e-4),
                      "floor": lambda: floor_epoch(model, x, y, 5e-4)}[kind]
                best[kind] = min(best[kind], timed(fn, device))
        print(f"{name:8} {best['ours']:8.3f} {best['dataloader']:13.3f} {best['dataloader'] / best['ours']:8.1f}x "
              f"{best['floor']:8.3f} {best['ours'] / best['floor']:10.2f}x")


def stacked_step_comparison(repeats: int) -> None:
    """Three logistic regressions as one batched matmul (what vmap over stacked parameters does)
    against three separate models, one epoch of steps each, CPU."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(55_000, 784, generator=g), torch.randint(0, 10, (55_000,), generator=g)
    wds = torch.tensor([0.0, 1e-4, 5e-4])

    def separate() -> None:
        for wd in wds.tolist():
            m = torch.nn.Linear(784, 10)
            opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=wd, fused=True)
            for i in range(0, 55_000, 128):
                loss = F.cross_entropy(m(x[i:i + 128]), y[i:i + 128])
                opt.zero_grad()
                loss.backward()
                opt.step()

    def stacked() -> None:
        W = torch.zeros(3, 784, 10, requires_grad=True)
        b = torch.zeros(3, 1, 10, requires_grad=True)
        opt = torch.optim.SGD([W, b], lr=0.01, momentum=0.9, fused=True)
        for i in range(0, 55_000, 128):
            xb, yb = x[i:i + 128], y[i:i + 128]
            z = torch.baddbmm(b, xb.expand(3, -1, -1), W)
            loss = F.cross_entropy(z.flatten(0, 1), yb.repeat(3), reduction="none").view(3, -1).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                W.grad.add_(W * wds.view(3, 1, 1))
                b.grad.add_(b * wds.view(3, 1, 1))
            opt.step()

    best = {"separate": float("inf"), "stacked": float("inf")}
    for _ in range(repeats):
        for kind, fn in (("separate", separate), ("stacked", stacked)):
            best[kind] = min(best[kind], timed(fn, torch.device("cpu")))
    print(f"   stacked step (3 weight decays, one batched matmul): {best['stacked']:.3f} s/epoch vs 3 separate "
          f"models {best['separate']:.3f} s/epoch: {best['separate'] / best['stacked']:.2f}x")


def paper_logreg_estimate(sweep_epochs: int) -> None:
    """Sweeps of E and 3E epochs give time = startup + per_epoch x epochs (process start, imports
    and data loading are the startup); the paper's setting is startup + per_epoch x 1000."""
    print(f"\n2. the paper's logistic-regression setting (1000 epochs x weight decays 0, 1e-4, 5e-4), "
          f"extrapolated from sweeps of {sweep_epochs} and {3 * sweep_epochs} epochs on Fashion-MNIST (spectrum off)")
    try:
        fdata.load("fashion-mnist", "train", download=False)
    except (FileNotFoundError, ValueError) as exc:
        print(f"   skipped: {exc}")
        return
    minutes = {}
    for workers in (1, 3):
        times = []
        for epochs in (sweep_epochs, 3 * sweep_epochs):
            base = experiments.Config(model="logreg", dataset="fashion-mnist", lr=0.01, epochs=epochs, spectrum=False)
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                experiments.sweep(base, [0.0, 1e-4, 5e-4], workers=workers, results_dir=tmp, progress=False)
                times.append(time.perf_counter() - t)
        per_epoch = (times[1] - times[0]) / (2 * sweep_epochs)  # for all three weight decays together
        startup = times[0] - per_epoch * sweep_epochs
        minutes[workers] = (startup + per_epoch * 1000) / 60
        print(f"   workers={workers}: {times[0]:.1f} s and {times[1]:.1f} s -> startup {startup:.1f} s, "
              f"{per_epoch:.3f} s per epoch of all three -> {minutes[workers]:.1f} min for the paper's 3 x 1000 epochs")
    print(f"   workers=3 / workers=1 speed-up at 1000 epochs: {minutes[1] / minutes[3]:.2f}x")


def cnn_throughput(device: torch.device, repeats: int, n: int) -> None:
    print(f"\n3. laptop-profile CNNs on {n} images (32x32x3 unless image_size says), 10 classes, batch 128 "
          f"(images per second, best of {repeats})")
    print(f"{'model':52} {'params':>10} {'train':>8} {'BN pass':>8} {'HVP':>8}")
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    for name, opts in LAPTOP_CNNS:
        size = opts.get("image_size", 32)
        x = torch.randn(n, 3, size, size, generator=g).to(device)
        torch.manual_seed(0)
        model = models.build(name, num_classes=10, **opts).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def train_pass() -> None:
            model.train()
            for i in range(0, n, 128):
                loss = F.cross_entropy(model(x[i:i + 128]), y[i:i + 128])
                opt.zero_grad()
                loss.backward()
                opt.step()

        def bn_pass() -> None:
            train.recompute_bn(model, [(x[i:i + 128], y[i:i + 128]) for i in range(0, n, 128)])

        op = HessianOperator(model, F.cross_entropy, (x, y), batch_size=128, bn_mode="train")
        v = torch.randn(op.num_params, generator=g, dtype=torch.float64)
        best = {"train": float("inf"), "bn": float("inf"), "hvp": float("inf")}
        for _ in range(repeats):
            for kind, fn in (("train", train_pass), ("bn", bn_pass), ("hvp", lambda: op.matvec(v))):
                best[kind] = min(best[kind], timed(fn, device))
        label = f"{name} {opts}"
        params = sum(p.numel() for p in model.parameters())
        bn_rate = f"{n / best['bn']:8.0f}" if train.has_batchnorm(model) else f"{'no BN':>8}"
        print(f"{label:52} {params:10,d} {n / best['train']:8.0f} {bn_rate} {n / best['hvp']:8.0f}")


def eval_batch_comparison(device: torch.device, repeats: int, n: int) -> None:
    print(f"\n4. evaluation passes over {n} 32x32x3 images, batch 1000 against batch 128 (best of {repeats}, taking turns)")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    for name, opts in (("preresnet164", {"depth": 11}), ("wrn28x10", {"depth": 10, "width": 1}),
                       ("vgg16bn", {"width": 0.125})):
        torch.manual_seed(0)
        model = models.build(name, num_classes=10, **opts).to(device)
        best = {1000: float("inf"), 128: float("inf")}
        train.evaluate(model, x[:256], y[:256], batch_size=128)  # warm-up
        for _ in range(repeats):
            for b in best:
                best[b] = min(best[b], timed(lambda: train.evaluate(model, x, y, batch_size=b), device))
        print(f"   {name} {opts}: {best[1000]:.2f} s at 1000, {best[128]:.2f} s at 128 -> "
              f"batch 1000 / batch 128 = {best[1000] / best[128]:.2f}x")


LAYOUT_CNNS = [  # the laptop profile's networks at the chapters' image sizes (channels, size)
    ("allcnnc", {"width": 0.25, "image_size": 16}, 1),
    ("preresnet164", {"depth": 11, "image_size": 16}, 1),
    ("wrn28x10", {"depth": 10, "width": 1, "image_size": 16}, 1),
    ("vgg16bn", {"width": 0.125, "image_size": 32}, 1),
]


def layout_comparison(device: torch.device, repeats: int, n: int) -> None:
    print(f"\n5. training layout: one epoch of fit on {n} images, default layout against channels_last "
          f"(1 thread, best of {repeats}, taking turns)")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(2)
        for name, opts, channels in LAYOUT_CNNS:
            size = opts["image_size"]
            x = torch.randn(n, channels, size, size, generator=g).to(device)
            y = torch.randint(0, 10, (n,), generator=g).to(device)
            best = {False: float("inf"), True: float("inf")}
            hvp = {}
            for _ in range(repeats):
                for layout in best:
                    torch.manual_seed(0)
                    model = models.build(name, num_classes=10, in_channels=channels, **opts).to(device)
                    best[layout] = min(best[layout], timed(lambda: train.fit(
                        model, (x, y), epochs=1, lr=0.01, batch_size=128, channels_last=layout, progress=False,
                        device=device), device))
            for layout in best:
                torch.manual_seed(0)
                model = models.build(name, num_classes=10, in_channels=channels, **opts).to(device)
                xs = x[:256].contiguous(memory_format=torch.channels_last) if layout else x[:256]
                if layout:
                    model = model.to(memory_format=torch.channels_last)
                op = HessianOperator(model, F.cross_entropy, (xs, y[:256]), batch_size=128, bn_mode="train")
                v = torch.randn(op.num_params, generator=g, dtype=torch.float64)
                op.matvec(v)
                hvp[layout] = timed(lambda: op.matvec(v), device)
            print(f"   {name} {opts}: fit {best[False]:.2f} s default, {best[True]:.2f} s channels_last -> "
                  f"{best[False] / best[True]:.2f}x faster training; HVP over 256 images {hvp[False]:.2f} s default, "
                  f"{hvp[True]:.2f} s channels_last")
    finally:
        torch.set_num_threads(before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweep-epochs", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="one repeat, 2-epoch sweeps, 256 images (smoke run)")
    ap.add_argument("--sections", default="1,2,3,4,5", help="which numbered sections to run, e.g. 3,5")
    args = ap.parse_args()
    sections = {int(x) for x in args.sections.split(",") if x.strip()}
    if not sections <= {1, 2, 3, 4, 5}:
        ap.error(f"--sections: numbers from 1 to 5, got {args.sections!r}")
    if args.quick:
        args.repeats, args.sweep_epochs = 1, 2
    device = torch.device(args.device)
    print(f"flatbook training benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}")
    if 1 in sections:
        loop_comparison(device, args.repeats)
    if device.type == "cpu" and 2 in sections:
        stacked_step_comparison(args.repeats)
        paper_logreg_estimate(args.sweep_epochs)
    if 3 in sections:
        cnn_throughput(device, args.repeats, 256 if args.quick else 512)
    if 4 in sections:
        eval_batch_comparison(device, args.repeats, 256 if args.quick else 1000)
    if 5 in sections:
        layout_comparison(device, args.repeats, 256 if args.quick else 1024)


if __name__ == "__main__":
    main()
