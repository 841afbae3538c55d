"""Distributed Hessian products (HessianOperator(process_group=...)) against one process: two CPU
ranks under torchrun with gloo share out the fixed batches and all-reduce each product in float64.
The products equal the single-process ones to 1e-12 in both BatchNorm modes, every rank gets the
same numbers, SLQ gives the same Ritz values, and ranks that hold different data refuse to build
the operator (both of them, before any product)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flatbook
from distributed_case import build_case

WORKER = Path(__file__).with_name("distributed_worker.py")
pytestmark = pytest.mark.slow


def _torchrun(mode: str, out: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(WORKER), mode, str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    return _torchrun("hvp", tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_distributed_products_equal_one_process(two_ranks, bn_mode):
    model, data, V = build_case()
    op = flatbook.HessianOperator(model, torch.nn.functional.cross_entropy, data, batch_size=8, bn_mode=bn_mode)
    reference = op.matmat(V)
    for rank in two_ranks:
        assert rank["world_size"] == 2
        assert torch.allclose(rank[f"hv_{bn_mode}"], reference, rtol=0, atol=1e-12 * float(reference.abs().max()))
    assert torch.equal(two_ranks[0][f"hv_{bn_mode}"], two_ranks[1][f"hv_{bn_mode}"])  # the same bits on every rank
    # SLQ runs the same on every rank, on products equal to one process's: the same Ritz values
    nodes = flatbook.slq(op, steps=12, probes=2, seed=3).nodes
    for rank in two_ranks:
        assert torch.allclose(torch.as_tensor(rank[f"slq_{bn_mode}"]), torch.as_tensor(nodes), rtol=1e-9, atol=1e-12,
                              equal_nan=True)


def test_ranks_with_different_data_refuse_the_operator(tmp_path):
    ranks = _torchrun("mismatch", tmp_path)
    for rank in ranks:
        assert "the ranks of the process group disagree" in rank["error"]


def test_a_process_group_needs_torch_distributed():
    model, data, _ = build_case()
    with pytest.raises(ValueError, match="torch.distributed initialised"):
        flatbook.HessianOperator(model, torch.nn.functional.cross_entropy, data, batch_size=8,
                                 process_group=object())
