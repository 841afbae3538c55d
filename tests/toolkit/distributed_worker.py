"""Run by tests/toolkit/test_distributed.py under torchrun (2 CPU processes, gloo). Usage:
torchrun --standalone --nproc-per-node=2 tests/toolkit/distributed_worker.py MODE OUT [ARG], MODE one of

* "hvp": distributed Hessian products in both BatchNorm modes and an SLQ spectrum;
* "mismatch": rank 1 holds one sample fewer: both ranks must refuse the operator;
* "train": ``train.fit`` of the small BatchNorm CNN with dropout, crop-flip and iterate averaging,
  in float64 and float32 (``distributed_case.training_case``);
* "config": ``experiments.run`` of the JSON config ARG, rank 1 with another weight decay: both
  ranks must refuse it.

Each rank writes what it got to OUT/rank<r>.pt."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_case import TRAINING, build_case, training_case  # noqa: E402

import flatbook  # noqa: E402
from flatbook import experiments, train  # noqa: E402
from flatbook.distributed import DistributedError, init_from_env  # noqa: E402


def main(mode: str, out: Path, arg: str | None) -> None:
    init_from_env(backend="gloo")  # CPU ranks even on a machine with GPUs
    rank = dist.get_rank()
    torch.set_num_threads(1)
    result = {}
    if mode in ("hvp", "mismatch"):
        model, (x, y), V = build_case()
        if mode == "mismatch" and rank == 1:
            x, y = x[:-1], y[:-1]
        try:
            for bn_mode in ("train", "eval"):
                op = flatbook.HessianOperator(model, torch.nn.functional.cross_entropy, (x, y), batch_size=8,
                                              bn_mode=bn_mode, process_group=dist.group.WORLD)
                result[f"hv_{bn_mode}"] = op.matmat(V)
                result[f"slq_{bn_mode}"] = flatbook.slq(op, steps=12, probes=2, seed=3).nodes
                result["world_size"] = op.settings["world_size"]
        except ValueError as exc:
            result["error"] = str(exc)
    elif mode == "train":
        for dtype in (torch.float64, torch.float32):
            model, data, val = training_case(dtype)
            history = train.fit(model, data, val, **TRAINING, process_group=dist.group.WORLD)
            result[str(dtype)] = {"state": model.state_dict(), "history": history.to_list(),
                                  "bn_types": sorted({type(m).__name__ for m in model.modules()})}
    elif mode == "config":
        config = json.loads(arg)
        if rank == 1:
            config["weight_decay"] = 0.125
        try:
            experiments.run(config, results_dir=out / "results", progress=False)
        except DistributedError as exc:
            result["error"] = str(exc)
    torch.save(result, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
