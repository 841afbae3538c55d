"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): every rank builds the
same small BatchNorm CNN and data, computes distributed Hessian products and an SLQ spectrum, and
writes what it got to OUT/rank<r>.pt. Usage: torchrun --standalone --nproc-per-node=2
tests/distributed_worker.py MODE OUT, MODE one of "hvp" (products in both BatchNorm modes, SLQ)
or "mismatch" (rank 1 holds one sample fewer: both ranks must refuse the operator)."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed_case import build_case  # noqa: E402

import flatbook  # noqa: E402


def main(mode: str, out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    model, (x, y), V = build_case()
    if mode == "mismatch" and rank == 1:
        x, y = x[:-1], y[:-1]
    result = {}
    try:
        for bn_mode in ("train", "eval"):
            op = flatbook.HessianOperator(model, torch.nn.functional.cross_entropy, (x, y), batch_size=8,
                                          bn_mode=bn_mode, process_group=dist.group.WORLD)
            result[f"hv_{bn_mode}"] = op.matmat(V)
            result[f"slq_{bn_mode}"] = flatbook.slq(op, steps=12, probes=2, seed=3).nodes
            result["world_size"] = op.settings["world_size"]
    except ValueError as exc:
        result["error"] = str(exc)
    torch.save(result, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
