"""``python -m flatbook train``: compute experiments (``experiments.run``) from JSON configs, in one
process or as one rank of a ``torchrun`` job.

    python -m flatbook train CONFIG [--results-dir DIR] [--data-root DIR] [--device D]
                             [--checkpoint-every K] [--recompute] [--nproc N]

CONFIG is a JSON file or JSON text: one config (a dict of ``experiments.Config`` fields) or a list
of them (a sweep, run one after another). Three ways to run it:

* plain ``python -m flatbook train CONFIG``: one process (the GPU when there is one);
* ``torchrun --nproc-per-node=N -m flatbook train CONFIG`` (or ``--nproc N``, which launches that
  torchrun job itself on this node): every config trained data-parallel on the N ranks
  (``flatbook.distributed``), rank 0 writing the cache; several nodes through torchrun's rendezvous
  options (``--nnodes``, ``--rdzv-backend=c10d``, ``--rdzv-endpoint=HOST:PORT``, ``--rdzv-id``);
* a chapter then renders from the filled cache (same ``$FLATBOOK_RESULTS``).

Every config is validated before any training (exit 2 with the bad field named). Under torchrun
every rank must be given the same configs (checked), and a rendezvous variable missing from the
environment is an error naming it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "read_configs"]

EXIT_FAILED = 1
EXIT_USAGE = 2


def read_configs(text_or_path: str) -> list[dict[str, Any]]:
    """The configs in a JSON file (or in JSON text): one dict, or a non-empty list of dicts."""
    text = text_or_path
    if not text_or_path.lstrip().startswith(("{", "[")):  # not JSON text: a file name
        try:
            text = Path(text_or_path).read_text()
        except OSError as exc:
            raise ValueError(f"CONFIG {text_or_path!r} is neither JSON text nor a readable file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"CONFIG {text_or_path!r} is neither a readable file nor JSON text ({exc})") from exc
    configs = [data] if isinstance(data, dict) else data
    if not isinstance(configs, list) or not configs or not all(isinstance(c, dict) for c in configs):
        raise ValueError(f"CONFIG must hold one config (a JSON object) or a non-empty list of them, got {data!r:.200}")
    return configs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flatbook train",
                                description="Compute experiments from JSON configs (one process, or under torchrun).")
    p.add_argument("config", help="a JSON file or JSON text: one config or a list of configs")
    p.add_argument("--results-dir", default=None, help="the results cache (default $FLATBOOK_RESULTS)")
    p.add_argument("--data-root", default=None, help="where the datasets are (default $FLATBOOK_DATA)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the rank's GPU, else the CPU)")
    p.add_argument("--checkpoint-every", type=int, default=10, help="epochs between training checkpoints")
    p.add_argument("--recompute", action="store_true", help="compute even when the cache has the result")
    p.add_argument("--nproc", type=int, default=None,
                   help="launch one torchrun job of N ranks on this node for the uncached configs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _under_launcher() -> bool:
    from .distributed import RENDEZVOUS_VARIABLES

    return any(os.environ.get(v) for v in RENDEZVOUS_VARIABLES)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flatbook train CONFIG``: train (and measure) every config of a JSON file into the results
    cache, in this process or as this rank of a torchrun job; the exit status is 0 on success."""
    args = _parser().parse_args(argv)
    from .distributed import DistributedError
    from .experiments import Config, ConfigError, run

    try:
        configs = [Config.from_dict(c).resolved() for c in read_configs(args.config)]
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    distributed = _under_launcher()
    usage = None
    if distributed and args.nproc is not None:
        usage = "--nproc launches torchrun itself; under torchrun give the ranks with --nproc-per-node instead"
    elif distributed and args.device not in (None, "cpu", "cuda"):
        usage = (f"--device {args.device} would put every rank on one device; under torchrun each rank takes its "
                 "own GPU (cuda:LOCAL_RANK): give --device cuda, cpu or nothing")
    elif args.checkpoint_every < 1:
        usage = f"--checkpoint-every must be an integer >= 1, got {args.checkpoint_every}"
    elif args.nproc is not None and args.nproc < 1:
        usage = f"--nproc must be an integer >= 1, got {args.nproc}"
    if usage:
        print(f"error: {usage}", file=sys.stderr)
        return EXIT_USAGE
    try:
        device = args.device
        if distributed:
            import torch.distributed as dist

            from .distributed import agree, init_from_env

            rank_device = init_from_env(backend="gloo" if device == "cpu" else None)
            device = rank_device if device in (None, "cuda") else device
            agree(dist.group.WORLD, "the list of configs (cache keys)", [c.key() for c in configs])
        rank = int(os.environ.get("RANK", "0")) if distributed else 0

        def report(i: int, r: Any) -> None:
            if rank == 0:
                acc = r.metrics.get("train_acc", float("nan"))
                lam = r.spectrum.lambda_max if r.spectrum is not None else float("nan")
                print(f"[{i + 1}/{len(configs)}] {r.key} {'cached' if r.cached else 'computed'}: train acc "
                      f"{acc:.4f}, lambda_max {lam:.4g}, {r.device} -> {r.path}", flush=True)

        progress = not args.no_progress
        if not distributed and (args.nproc or 0) > 1 and not args.recompute:
            from .experiments import run_many  # the uncached configs in one torchrun job

            for i, r in enumerate(run_many(configs, results_dir=args.results_dir, data_root=args.data_root,
                                           device=device, progress=progress, nproc=args.nproc,
                                           checkpoint_every=args.checkpoint_every)):
                report(i, r)
        else:
            for i, c in enumerate(configs):
                report(i, run(c, results_dir=args.results_dir, data_root=args.data_root, device=device,
                              recompute=args.recompute, checkpoint_every=args.checkpoint_every, progress=progress,
                              nproc=args.nproc))
    except (ConfigError, DistributedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, DistributedError) else EXIT_USAGE
    finally:
        if distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
