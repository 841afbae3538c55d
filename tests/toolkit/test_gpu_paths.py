"""The CUDA paths that a CPU can check (issue 22): each test failed before its fix.

No GPU runs here. Where a fault shows only on a GPU, the test builds the condition the GPU would
create (a checkpoint mapped to a device that is not the CPU, two CUDA generators, an NCCL group
whose current device is another GPU) and checks what flatbook does with it.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flatbook.device as device_module
import flatbook.distributed as distributed
import flatbook.experiments as experiments
import flatbook.train as train
from flatbook.curvature import HessianOperator


def data(n=48, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


def dropout_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))


# --- 1. resume: the checkpoint is loaded to the CPU whatever the training device ----------------------------


def test_resume_loads_the_checkpoint_to_the_cpu_whatever_the_device(tmp_path, monkeypatch):
    """On a GPU, ``torch.load(map_location=device)`` put the saved CPU RNG state on the GPU and
    ``Generator.set_state`` raised "RNG state must be a torch.ByteTensor". Here every map_location
    other than the CPU's name is sent to the meta device (a device that is not the CPU, as a GPU
    is), so loading to the training device fails as it did on a GPU; loading to the CPU resumes
    to the uninterrupted run's weights."""
    x, y = data()
    kw = dict(epochs=3, batch_size=16, lr=0.1, seed=4, device="cpu", progress=False)
    full = dropout_net()
    h_full = train.fit(full, (x, y), **kw)

    calls = []
    real_epoch = train._train_epoch

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "_train_epoch", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        train.fit(dropout_net(), (x, y), checkpoint_dir=tmp_path, **kw)
    monkeypatch.setattr(train, "_train_epoch", real_epoch)

    real_load = torch.load
    seen = []

    def load_like_a_gpu(path, *args, map_location=None, **kwargs):
        seen.append(map_location)
        if map_location != "cpu":  # the training device: not the CPU on a GPU machine
            map_location = "meta"
        return real_load(path, *args, map_location=map_location, **kwargs)

    monkeypatch.setattr(torch, "load", load_like_a_gpu)
    resumed = dropout_net()
    h = train.fit(resumed, (x, y), checkpoint_dir=tmp_path, **kw)
    assert seen == ["cpu"]
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["train_loss"] for r in h] == [r["train_loss"] for r in h_full]


# --- 2. DistributedDataParallel's buffer keyword, chosen by what the installed PyTorch accepts ---------------


class NewDDP:
    def __init__(self, module, device_ids=None, process_group=None, forward_sync_buffers=True, broadcast_buffers=True):
        pass


class OldDDP:  # torch 2.11's signature: no forward_sync_buffers
    def __init__(self, module, device_ids=None, process_group=None, broadcast_buffers=True):
        pass


def test_buffer_sync_keyword_follows_the_signature():
    assert train._no_buffer_sync(NewDDP) == {"forward_sync_buffers": False}
    assert train._no_buffer_sync(OldDDP) == {"broadcast_buffers": False}
    from torch.nn.parallel import DistributedDataParallel

    (name,) = train._no_buffer_sync(DistributedDataParallel)
    assert name in inspect.signature(DistributedDataParallel.__init__).parameters


# --- 3. the CUDA generator of the training device -----------------------------------------------------------


class FakeGenerator:
    def __init__(self):
        self.seeds = []

    def manual_seed(self, seed):
        self.seeds.append(seed)
        return self


def test_seed_cuda_generator_seeds_the_named_gpu_not_the_current_one(monkeypatch):
    gens = (FakeGenerator(), FakeGenerator())
    monkeypatch.setattr(torch.cuda, "default_generators", gens)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    device_module.seed_cuda_generator("cuda:1", 7)
    assert gens[1].seeds == [7] and gens[0].seeds == []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    device_module.seed_cuda_generator("cuda", 9)  # "cuda": the current GPU
    assert gens[1].seeds == [7, 9] and gens[0].seeds == []
    with pytest.raises(ValueError, match="cuda:2"):
        device_module.seed_cuda_generator("cuda:2", 0)
    with pytest.raises(ValueError, match="CUDA device"):
        device_module.seed_cuda_generator("cpu", 0)


# --- 4. an NCCL rank computes on cuda:LOCAL_RANK, and a sweep worker on its GPU --------------------------


def test_nccl_rank_whose_current_device_is_another_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "backend_of", lambda group: "nccl")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    with pytest.raises(distributed.DistributedError, match=r"cuda:1 but LOCAL_RANK=0"):
        distributed.rank_device(None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert distributed.rank_device(None) == "cuda:0"
    monkeypatch.setattr(distributed, "backend_of", lambda group: "gloo")
    assert distributed.rank_device(None) == "cpu"


class OneItemQueue:
    def __init__(self, item):
        self.item = item

    def get(self):
        return self.item


def test_sweep_worker_makes_its_gpu_the_current_device(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(torch.device(d)))
    monkeypatch.setattr(experiments, "_WORKER_DEVICE", None)
    experiments._claim_device(OneItemQueue("cuda:1"))
    assert experiments._WORKER_DEVICE == "cuda:1" and chosen == [torch.device("cuda:1")]
    experiments._claim_device(OneItemQueue(None))  # a CPU worker touches no GPU
    experiments._claim_device(OneItemQueue("cpu"))
    assert chosen == [torch.device("cuda:1")]


# --- 5. the ranks' data check compares bytes, not a float sum ----------------------------------------------


def test_data_checksum_is_a_digest_of_the_bytes():
    x, y = data()
    permuted = x.flip(0)
    assert torch.sum(x, dtype=torch.float64) == torch.sum(permuted, dtype=torch.float64)  # a sum cannot tell
    assert train._data_checksum(x, y) != train._data_checksum(permuted, y.flip(0))
    assert train._data_checksum(x, y) == train._data_checksum(x.clone(), y.clone())
    nudged = x.clone()
    nudged[5, 3] = torch.nextafter(nudged[5, 3], torch.tensor(10.0))
    assert train._data_checksum(x, y) != train._data_checksum(nudged, y)
    assert train._data_checksum(x, y) != train._data_checksum(x.double(), y)  # the dtype counts
    assert train._data_checksum(x.t(), y) == train._data_checksum(x.t().contiguous(), y)  # the layout does not


# --- 6. Hessian products in IEEE float32: TF32 off inside, the caller's settings back after -------------------


def tf32_switches():
    return [(owner, name) for owner, name, _ in device_module.ieee_float32._switches()]


class Recording(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3)
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(getattr(owner, name) for owner, name in tf32_switches()))
        return self.lin(x)


def test_hessian_products_run_with_tf32_off_and_restore_the_settings():
    switches = tf32_switches()
    before = [getattr(owner, name) for owner, name in switches]
    fast = [("tf32" if isinstance(v, str) else True) for v in before]
    ieee = tuple(v for _, _, v in device_module.ieee_float32._switches())
    try:
        for (owner, name), value in zip(switches, fast):
            setattr(owner, name, value)
        model = Recording()
        op = HessianOperator(model, F.cross_entropy, data(), batch_size=16)
        assert op.settings["tf32"] is False
        shadow = op._shadow  # the copy of the model whose forward the products call
        assert shadow.seen and shadow.seen[0] != ieee  # the loss check ran outside: the caller's settings
        shadow.seen.clear()
        op.matvec(torch.ones(op.num_params))
        assert shadow.seen and all(s == ieee for s in shadow.seen)
        assert [getattr(owner, name) for owner, name in switches] == fast
    finally:
        for (owner, name), value in zip(switches, before):
            setattr(owner, name, value)


# --- benchmarks/gpu_check.py: the networks it times are the gpu profile's; its driver and time guard -------


def gpu_check_module(root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", root / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_times_the_gpu_profiles_networks(root):
    pytest.importorskip("nbformat")  # the book's chapter registry (not in make check-torch-oldest's venv)
    from flatbook.book.plan import chapter_plan

    networks = gpu_check_module(root).NETWORKS
    planned = set()
    for chapter in ("wd_allcnnc", "wd_preresnet", "wd_wrn", "adaptive"):
        (config, *_) = chapter_plan(chapter, "gpu", root=root)
        planned.add((config.model, tuple(sorted((config.model_options or {}).items()))))
    assert planned == {(name, tuple(sorted(options.items()))) for name, options in networks.values()}


def run_gpu_check(root, out, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(out), *args], capture_output=True, text=True, timeout=300)


def test_gpu_check_reports_each_section_and_stops_one_at_its_limit(root, tmp_path):
    done = run_gpu_check(root, tmp_path, "--only", "machine")
    assert done.returncode == 0, done.stdout + done.stderr
    report = (tmp_path / "report.md").read_text()
    assert "## The machine" in report and "torch " in report and "no section failed" in report
    # the SLQ section stopped after 1 s (it imports torch for longer than that); the machine's lines stay
    stopped = run_gpu_check(root, tmp_path / "stopped", "--only", "machine,slq", "--limits", "slq=1")
    assert stopped.returncode == 1
    report = (tmp_path / "stopped" / "report.md").read_text()
    assert "torch " in report.split("## SLQ")[0]
    assert "STOPPED at its time limit of 1 s" in report.split("## SLQ")[1] and "failed: slq" in report
    late = run_gpu_check(root, tmp_path / "late", "--only", "machine", "--deadline", "5")
    assert late.returncode == 0 and "not run: the deadline (5 s)" in (tmp_path / "late" / "report.md").read_text()
    bad = run_gpu_check(root, tmp_path / "bad", "--only", "nonsense")
    assert bad.returncode == 2 and "unknown sections ['nonsense']" in bad.stderr
    bad = run_gpu_check(root, tmp_path / "bad", "--limits", "slq=-1")
    assert bad.returncode == 2 and "--limits" in bad.stderr


# --- 7. no host synchronisation in the step loop ---------------------------------------------------------------


class TwoBatchNorms(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                                  nn.BatchNorm2d(4))
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def test_batchnorm_recompute_is_the_cumulative_average_with_momenta_set_on_the_host():
    """Momentum None makes torch read each layer's batch count back to the host on every batch (a
    GPU synchronisation); the recompute sets momentum 1 / (i + 1) itself: the same numbers."""
    from flatbook.batching import TensorBatches

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    batches = TensorBatches(x, y, 16)
    model, reference = TwoBatchNorms(), TwoBatchNorms()
    momenta = []
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bns[0].register_forward_pre_hook(lambda module, args: momenta.append(module.momentum))
    train.recompute_bn(model, batches)
    assert momenta == [1.0, 0.5, 1.0 / 3.0]
    assert all(bn.momentum == 0.1 for bn in bns)  # restored
    ref_bns = [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in ref_bns:  # the old way: torch's cumulative average
        bn.reset_running_stats()
        bn.momentum = None
    reference.train()
    with torch.no_grad():
        for xb, _ in batches:
            reference(xb)
    for a, b in zip(bns, ref_bns):
        assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var)
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 3


@pytest.fixture
def world_of_one():
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_sharded_dropout_takes_the_global_batch_from_the_training_loop(world_of_one, monkeypatch):
    """In training, the loop tells every ShardedDropout the global batch size (it knows it): no
    all-reduce of the shares' sizes and no read-back per layer and step."""
    def no_all_reduce(*args):
        raise AssertionError("the global batch size was all-reduced inside the training step")

    x, y = data()
    monkeypatch.setattr(distributed, "_global_batch_size", no_all_reduce)
    model = dropout_net()
    history = train.fit(model, (x, y), epochs=2, batch_size=16, lr=0.1, seed=4, device="cpu", progress=False,
                        process_group=world_of_one)
    single = dropout_net()
    reference = train.fit(single, (x, y), epochs=2, batch_size=16, lr=0.1, seed=4, device="cpu", progress=False)
    assert [r["train_loss"] for r in history] == pytest.approx([r["train_loss"] for r in reference], rel=1e-6)
    for a, b in zip(model.parameters(), single.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_nccl_groups_get_torch_syncbatchnorm_sharing_the_layers_tensors(monkeypatch):
    monkeypatch.setattr(distributed, "backend_of", lambda group: "nccl")
    model = TwoBatchNorms()
    keys = list(model.state_dict())
    originals = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    group = object()  # never used for a collective here: only the layers are built
    with distributed.global_batchnorm(model, group):
        inside = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert all(type(m) is nn.SyncBatchNorm and m.process_group is group for m in inside)
        assert list(model.state_dict()) == keys
        for new, old in zip(inside, originals):
            assert new.weight is old.weight and new.bias is old.bias
            assert new.running_mean is old.running_mean and new.running_var is old.running_var
            assert new.num_batches_tracked is old.num_batches_tracked
            assert (new.eps, new.momentum) == (old.eps, old.momentum)
    assert [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == originals
    monkeypatch.setattr(distributed, "backend_of", lambda group: "gloo")
    with distributed.global_batchnorm(model, group):
        assert all(type(m) is distributed.GlobalBatchNorm for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm))


# --- 8. the Lanczos basis stays on the GPU when it fits ---------------------------------------------------------


def test_lanczos_basis_stays_on_the_gpu_when_it_takes_at_most_half_its_free_memory():
    from flatbook.spectrum import basis_home

    free = lambda device: 10 * 2**30  # noqa: E731 - a GPU with 10 GiB free
    assert basis_home(torch.device("cuda:1"), 4 * 2**30, free) == torch.device("cuda:1")
    assert basis_home(torch.device("cuda:1"), 5 * 2**30, free) == torch.device("cuda:1")
    assert basis_home(torch.device("cuda:1"), 6 * 2**30, free) == torch.device("cpu")
    assert basis_home(torch.device("cpu"), 10**15) == torch.device("cpu")  # the CPU is never second-guessed


# --- 9. the route a sweep takes, as plan prints it --------------------------------------------------------------


def test_route_places_runs_on_gpus_round_robin_and_says_so():
    assert experiments.worker_devices(4, None, gpus=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert experiments.worker_devices(2, "cpu", gpus=2) == ["cpu", "cpu"]
    text = experiments.describe_route(6, workers=4, gpus=2)
    assert "4 worker processes on 2 GPU(s) (cuda:0, cuda:1, cuda:0, cuda:1)" in text and "up to 2 run(s)" in text
    assert "torchrun job of 8" in experiments.describe_route(3, nproc=8)
    assert "this process, 5 run(s) one after another on cpu" == experiments.describe_route(5, device="cpu", gpus=0)
    assert "worker processes on cpu" in experiments.describe_route(5, workers=2, device="cpu")
    assert "nothing to train" in experiments.describe_route(0, workers=2)
    with pytest.raises(ValueError, match="gpus"):
        experiments.worker_devices(2, None, gpus=-1)
