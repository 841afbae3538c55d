"""Distributed runs (flatbook.distributed) against one process, on two CPU ranks under torchrun
with gloo:

* Hessian products (HessianOperator(process_group=...)) equal the single-process ones to 1e-12 in
  both BatchNorm modes, every rank gets the same numbers, SLQ gives the same Ritz values, and ranks
  that hold different data refuse the operator;
* data-parallel training (train.fit(process_group=...)) of a BatchNorm CNN with dropout, crop-flip
  and iterate averaging gives one process's weights and history (float64 to 1e-10, float32 to
  1e-5);
* experiments through ``python -m flatbook train`` under torchrun: the same result as one process,
  one cache entry written by rank 0; a rank killed mid-training (in a job ``run(..., nproc=2)``
  started) leaves no entry and an error naming the rank, and a relaunch resumes to the
  uninterrupted run's weights;
* bad input: a world size that does not divide the batch, ranks with different configs, and a
  missing or incomplete rendezvous are refused before any training, with a message naming them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import flatbook
from distributed_case import TRAINING, build_case, training_case
from test_experiments import make_fashion

from flatbook import experiments, train
from flatbook.batching import TensorBatches
from flatbook.distributed import check_batch_split, shard_slice, torchrun_command
from flatbook.launch import read_configs

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")
pytestmark = pytest.mark.slow


def _torchrun(mode: str, out: Path, *args: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(WORKER), mode, str(out), *args], capture_output=True, text=True, timeout=300)
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


# --- data-parallel training ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks_trained(tmp_path_factory):
    return _torchrun("train", tmp_path_factory.mktemp("ddp_train"))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_two_ranks_train_to_one_process_weights_and_history(two_ranks_trained, dtype, tolerance):
    model, data, val = training_case(dtype)
    history = train.fit(model, data, val, **TRAINING).to_list()
    reference = model.state_dict()
    for rank in two_ranks_trained:
        got = rank[str(dtype)]
        assert got["bn_types"] == sorted({type(m).__name__ for m in model.modules()})  # the layers swapped back
        for name, value in reference.items():
            assert got["state"][name].dtype == value.dtype
            assert torch.allclose(got["state"][name].double(), value.double(), rtol=0, atol=tolerance), name
        assert len(got["history"]) == len(history) == TRAINING["epochs"]
        for mine, theirs in zip(got["history"], history):
            for column in ("train_loss", "train_acc", "val_loss", "val_acc", "weight_norm", "lr", "averaged"):
                assert mine[column] == pytest.approx(theirs[column], rel=0, abs=tolerance), column
    for name in reference:  # every rank ends with the same bits
        assert torch.equal(two_ranks_trained[0][str(dtype)]["state"][name], two_ranks_trained[1][str(dtype)]["state"][name])


def test_shards_of_a_batch_are_the_single_process_batch():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(37, 2, 5, 5, generator=g), torch.arange(37)
    whole = TensorBatches(x, y, 8, shuffle=True, seed=4, augment="crop-flip")
    shards = [TensorBatches(x, y, 8, shuffle=True, seed=4, augment="crop-flip", shard=(r, 3)) for r in range(3)]
    for epoch in (0, 5):
        whole.set_epoch(epoch)
        for s in shards:
            s.set_epoch(epoch)
        for (xb, yb), *parts in zip(whole, *shards):
            assert torch.equal(torch.cat([p[0] for p in parts]), xb)
            assert torch.equal(torch.cat([p[1] for p in parts]), yb)
    assert shards[0].global_batch_sizes() == [8, 8, 8, 8, 5]
    assert [len(b[1]) for b in shards[2]] == [2, 2, 2, 2, 1]  # 8 = 3 + 3 + 2, 5 = 2 + 2 + 1


def test_shard_slices_cover_the_batch_in_order():
    for n in (1, 5, 8, 13):
        for world in (1, 2, 3, 4):
            parts = [shard_slice(n, r, world) for r in range(world)]
            assert parts[0].start == 0 and parts[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_a_world_size_must_divide_the_batch_and_leave_every_rank_a_sample():
    check_batch_split(128, 8, 45000)
    with pytest.raises(ValueError, match="global batch of 128 does not split over 3 ranks"):
        check_batch_split(128, 3)
    with pytest.raises(ValueError, match="last batch of 1, fewer than the 2 ranks"):
        check_batch_split(8, 2, 17)
    with pytest.raises(ValueError, match="TensorBatches|shard rank 2 is not below"):
        TensorBatches(torch.zeros(4, 1), torch.zeros(4, dtype=torch.int64), 2, shard=(2, 2))


def test_torchrun_command_is_standalone_unless_given_a_rendezvous():
    one = torchrun_command(4, ["flatbook", "train", "c.json"])
    assert one[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m", "flatbook", "train",
                       "c.json"]
    two = torchrun_command(8, ["flatbook", "train", "c.json"],
                           extra=["--nnodes=2", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500"])
    assert "--standalone" not in two and "--nnodes=2" in two
    with pytest.raises(ValueError, match="nproc"):
        torchrun_command(0, ["flatbook"])


def test_read_configs_takes_one_config_or_a_list(tmp_path):
    assert read_configs('{"model": "mlp", "dataset": "mnist"}') == [{"model": "mlp", "dataset": "mnist"}]
    f = tmp_path / "sweep.json"
    f.write_text('[{"model": "mlp", "dataset": "mnist"}, {"model": "logreg", "dataset": "mnist"}]')
    assert len(read_configs(str(f))) == 2
    for bad in ("[]", "[3]", "{not json", str(tmp_path / "missing.json")):
        with pytest.raises(ValueError, match="CONFIG"):
            read_configs(bad)


# --- experiments under torchrun -------------------------------------------------------------------

# All-CNN-C (BatchNorm, dropout) at 8x8 padded to 9, 100 training images in batches of 20
CONFIG = dict(model="allcnnc", dataset="fashion-mnist", image_size=8, pad_to=9, model_options={"width": 0.25},
              epochs=24, lr=0.05, batch_size=20, val_size=20, weight_decay=1e-3, lanczos_steps=5,
              hessian_samples=40, hessian_batch_size=20)


def _train_cli(*args: str, nproc: int | None, env_extra: dict | None = None, timeout: float = 300):
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
                if nproc else [sys.executable])
    return subprocess.Popen([*launcher, "-m", "flatbook", "train", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc, timeout: float = 300) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _weights(entry: Path) -> dict:
    return torch.load(entry / "weights.pt", weights_only=True)


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    make_fashion(root)
    return root


def _computed(results: Path, config: dict, fashion_root: Path, nproc: int | None) -> Path:
    code, text = _finish(_train_cli(json.dumps(config), "--results-dir", str(results), "--data-root",
                                    str(fashion_root), "--device", "cpu", nproc=nproc))
    assert code == 0, text[-3000:]
    return results / experiments.Config.from_dict(config).key()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fashion_root):
    """CONFIG computed on 2 ranks without interruption."""
    return _computed(tmp_path_factory.mktemp("uninterrupted"), CONFIG, fashion_root, 2)


def test_an_experiment_on_two_ranks_is_the_single_process_experiment(tmp_path, fashion_root):
    # three epochs: float32 rounding differences (the order of the gradient sums) grow with every step
    short = {**CONFIG, "epochs": 3}
    entries = {name: _computed(tmp_path / name, short, fashion_root, nproc)
               for name, nproc in (("two_ranks", 2), ("one_process", None))}
    two, one = (json.loads((entries[k] / "result.json").read_text()) for k in ("two_ranks", "one_process"))
    assert two["device"].startswith("2 ranks (gloo)")
    for name, value in one["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert two["val_correct"] == one["val_correct"]
    a, b = _weights(entries["two_ranks"]), _weights(entries["one_process"])
    for name in b:
        assert torch.allclose(a[name].double(), b[name].double(), rtol=0, atol=1e-5), name
    assert np.allclose(two["spectrum"]["nodes"], one["spectrum"]["nodes"], rtol=1e-4, atol=1e-5)
    # rank 0 alone wrote: one entry, no checkpoints or temporary files left
    assert sorted(p.name for p in entries["two_ranks"].parent.iterdir()) == [entries["two_ranks"].name]


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torchrun started (their RANK environment variable)."""
    found = {}
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            stat = (child / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            environ = (child / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher_pid:
            for item in environ:
                if item.startswith(b"RANK="):
                    found[int(item[5:])] = int(child.name)
    return found


def _launcher_pid(timeout: float = 120) -> int:
    """The pid of the torchrun process this (pytest) process started."""
    import os
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in Path("/proc").iterdir():
            try:
                if (child.name.isdigit() and int((child / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
                        and b"torch.distributed.run" in (child / "cmdline").read_bytes()):
                    return int(child.name)
            except (OSError, IndexError, ValueError):
                continue
        time.sleep(0.05)
    raise AssertionError("no torchrun job was started")


def test_a_killed_rank_is_named_leaves_no_entry_and_the_relaunch_resumes(tmp_path, fashion_root, uninterrupted):
    import os
    import signal
    import threading
    import time

    from flatbook.distributed import DistributedError

    key = experiments.Config.from_dict(CONFIG).key()
    checkpoint = tmp_path / f"{key}.partial" / "checkpoint.pt"
    outcome: dict = {}

    def launch() -> None:  # the chapter route: run(..., nproc=2) starts a torchrun job and waits for it
        try:
            outcome["result"] = experiments.run(CONFIG, results_dir=tmp_path, data_root=fashion_root, device="cpu",
                                                nproc=2, checkpoint_every=1, progress=False)
        except Exception as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    caller = threading.Thread(target=launch)
    caller.start()
    launcher = _launcher_pid()
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and caller.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = _rank_pids(launcher)
    assert caller.is_alive() and set(pids) == {0, 1}, "the job ended before a rank could be killed"
    os.kill(pids[1], signal.SIGKILL)
    caller.join(timeout=300)
    error = outcome.get("error")
    assert isinstance(error, DistributedError), outcome
    message = str(error)
    assert "rank      : 1" in message and ("-9" in message or "SIGKILL" in message), message
    assert "run again to resume" in message
    assert not (tmp_path / key).exists()  # no cache entry from a killed job
    saved = torch.load(checkpoint, weights_only=False)
    epoch = saved["epoch"]
    assert 1 <= epoch < CONFIG["epochs"]
    # the relaunch, by torchrun itself: it resumes from the checkpoint
    code, text = _finish(_train_cli(json.dumps(CONFIG), "--results-dir", str(tmp_path), "--data-root",
                                    str(fashion_root), "--device", "cpu", "--checkpoint-every", "1", nproc=2))
    assert code == 0, text[-3000:]
    history = json.loads((tmp_path / key / "result.json").read_text())["history"]
    # resumed, not restarted: the checkpointed epochs keep the interrupted job's own timings
    assert [row["seconds"] for row in history[:epoch]] == [row["seconds"] for row in saved["history"]]
    assert len(history) == CONFIG["epochs"]
    resumed, reference = _weights(tmp_path / key), _weights(uninterrupted)
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert not (tmp_path / f"{key}.partial").exists()


def test_a_world_size_that_does_not_divide_the_batch_is_refused_before_training(tmp_path, fashion_root):
    code, text = _finish(_train_cli(json.dumps({**CONFIG, "batch_size": 15}), "--results-dir", str(tmp_path),
                                    "--data-root", str(fashion_root), "--device", "cpu", nproc=2))
    assert code != 0
    assert "global batch of 15 does not split over 2 ranks" in text, text[-3000:]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_ranks_with_different_configs_are_refused(tmp_path, fashion_root):
    import os

    config = json.dumps({**CONFIG, "epochs": 1})
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(WORKER), "config", str(tmp_path), config], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "FLATBOOK_DATA": str(fashion_root)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for r in range(2):
        error = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)["error"]
        assert "different experiment configs" in error and "weight_decay=0.125 (rank 0: 0.001)" in error
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("env,message", [
    ({"RANK": "0"}, "the environment variable(s) WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0",
      "FLATBOOK_RENDEZVOUS_TIMEOUT": "3"}, "rendezvous failed: rank 0 of 2 could not meet the other ranks"),
])
def test_a_missing_rendezvous_is_a_clear_error(tmp_path, fashion_root, env, message):
    code, text = _finish(_train_cli(json.dumps(CONFIG), "--results-dir", str(tmp_path), "--data-root",
                                    str(fashion_root), nproc=None, env_extra=env), timeout=120)
    assert code == 1
    assert message in text, text[-3000:]
    assert list(tmp_path.iterdir()) == []
