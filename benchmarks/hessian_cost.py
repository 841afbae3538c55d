"""Seconds per Hessian-vector product of each subsampled chapter's network at a profile, over the
chapter's own Hessian sample and over the whole training split, on 1 and 2 CPU threads: what the
calibration appendix (``book/calibration.ipynb``) costs before it runs.

    .venv/bin/python benchmarks/hessian_cost.py [--profile laptop]

The models are freshly initialised (seed 0); a trained model costs the same per product. Prints
one line per (chapter, images, threads). Run it alone: two PyTorch processes slow each other."""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="laptop")
    parser.add_argument("--chapters", default="wd_allcnnc,wd_preresnet,wd_wrn,adaptive")
    args = parser.parse_args()

    import torch

    from flatbook import HessianOperator, experiments
    from flatbook.book.plan import seed_plans

    plans = seed_plans(args.chapters.split(","), args.profile, 0)
    for name, configs in plans.items():
        c = configs[0].resolved()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = experiments.build_model(c)
        x, y = experiments.prepare_data(c, "train")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for n in sorted({min(c.hessian_samples or len(y), len(y)), len(y)}):
                op = HessianOperator(model, torch.nn.functional.cross_entropy, (x[:n], y[:n]), batch_size=128,
                                     bn_mode="train")
                v = torch.randn(op.num_params, dtype=torch.float64)
                op.matvec(v)  # warm-up
                t0 = time.perf_counter()
                op.matvec(v)
                print(f"{name}: {c.model} P={op.num_params:,} images={n} threads={threads}: "
                      f"{time.perf_counter() - t0:.2f} s per product", flush=True)


if __name__ == "__main__":
    main()
