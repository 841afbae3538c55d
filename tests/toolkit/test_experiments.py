"""Experiments (flatbook.experiments): config validation and keys, cached runs, corrupt and
interrupted cache entries, data preparation, sweeps; on small Fashion-MNIST files in the real
IDX format (no network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import make_mnist_like, write_idx_images, write_idx_labels

import flatbook.experiments as experiments
import flatbook.train as train
from flatbook.experiments import (
    RESULT_FORMAT,
    Config,
    ConfigError,
    prepare_data,
    run,
    sweep,
)
from flatbook.train import evaluate, weight_norm

N_TRAIN, N_TEST, VAL = 120, 30, 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_fashion(root: Path, seed=0) -> dict:
    """Fashion-MNIST in torchvision's raw layout: 120 training images (labels i % 10, so the
    first 100, the train split, hold 10 of each class) and 30 test images."""
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx_images(raw / f"{split}-images-idx3-ubyte", imgs)
        write_idx_labels(raw / f"{split}-labels-idx1-ubyte", labels)
        out[split] = (imgs, labels)
    return out


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    return root, make_fashion(root)


BASE = dict(model="logreg", dataset="fashion-mnist", epochs=2, lr=0.05, batch_size=32, val_size=VAL,
            lanczos_steps=6, hessian_samples=40, hessian_batch_size=20)


def go(config, results, fashion, **kw):
    return run(config, results_dir=results, data_root=fashion[0], device="cpu", progress=False, **kw)


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# --- Config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    (dict(model="resnet50"), "model"),
    (dict(dataset="imagenet"), "dataset"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(epochs=0), "epochs"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(learning_rate=0.1), "learning_rate"),
    (dict(model_options={"depth": 20}), "model_options"),
    (dict(model="mlp", model_options={"hidden": [0]}), "model_options"),
    (dict(model="allcnnc"), "pad_to"),
    (dict(model="logreg", pad_to=32), "pad_to"),
    (dict(optimizer="gadam"), "averaging_start"),
    (dict(averaging_start=3), "averaging_start"),  # after the last of 2 epochs
    (dict(val_size=0), "val_size"),
    (dict(lr=float("nan")), "lr"),
    (dict(normalization="zscore"), "normalization"),
    (dict(bn_mode="frozen"), "bn_mode"),
    (dict(augment="crop-flip"), "augment"),
    (dict(model_options=None), "model_options"),
    # a pad_to of the wrong type with image_size set: ConfigError, not a TypeError from comparing them
    (dict(model="allcnnc", image_size=14, pad_to="16"), "pad_to"),
    (dict(model="allcnnc", image_size=14, pad_to=16.0), "pad_to"),
    (dict(model="allcnnc", image_size=14, pad_to=12), "pad_to"),
])
def test_bad_config_fields_are_named_and_nothing_is_written(tmp_path, fashion, monkeypatch, change, field):
    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(train, "fit", no_training)
    results = tmp_path / "results"
    with pytest.raises(ConfigError, match=f"'?{field}'?") as info:
        go({**BASE, **change}, results, fashion)
    assert field in str(info.value)
    assert not results.exists()
    with pytest.raises(ConfigError, match=field):
        Config.from_dict({**BASE, **change}).key()


def test_bf16_on_the_cpu_is_a_config_error(tmp_path, fashion):
    with pytest.raises(ConfigError, match="'bf16'"):
        go({**BASE, "bf16": True}, tmp_path / "results", fashion)
    assert not (tmp_path / "results").exists()


def test_results_dir_from_the_environment(tmp_path, fashion, monkeypatch):
    monkeypatch.setenv("FLATBOOK_RESULTS", str(tmp_path / "env"))
    assert experiments.results_dir() == tmp_path / "env"
    assert experiments.results_dir(tmp_path / "arg") == tmp_path / "arg"
    r = run({**BASE, "epochs": 1, "spectrum": False}, data_root=fashion[0], device="cpu", progress=False)
    assert r.path == tmp_path / "env" / r.key and r.spectrum is None
    assert listing(r.path) == ["result.json", "weights.pt"]
    assert run({**BASE, "epochs": 1, "spectrum": False}, data_root=fashion[0], device="cpu", progress=False).cached


def test_required_fields_and_types():
    with pytest.raises(ConfigError, match="'dataset' is required"):
        Config.from_dict({"model": "logreg"})
    with pytest.raises(ConfigError, match="dict or a Config"):
        Config.from_dict(["logreg"])
    c = Config.from_dict(BASE)
    assert Config.from_dict(c) is c and Config.from_dict(c.to_dict()) == c


def test_key_resolves_auto_fields_and_is_stable():
    auto = Config(model="mlp", dataset="mnist", weight_decay=1e-4)
    explicit = Config(model="mlp", dataset="mnist", weight_decay=1e-4, normalization="mnist", augment=None)
    assert auto.key() == explicit.key() == auto.key()
    assert auto.resolved().normalization == "mnist" and auto.resolved().augment is None
    assert Config(model="mlp", dataset="mnist", weight_decay=5e-4).key() != auto.key()
    # numbers: 0 and 0.0 are one config; option order does not matter
    assert Config(model="logreg", dataset="mnist", weight_decay=0).key() == \
        Config(model="logreg", dataset="mnist", weight_decay=0.0).key()
    a = Config(model="mlp", dataset="mnist", model_options={"hidden": [10, 100], "in_features": 784})
    b = Config(model="mlp", dataset="mnist", model_options={"in_features": 784, "hidden": [10, 100]})
    assert a.key() == b.key() != auto.key()
    # the documented definition: a hash of the resolved config (channels_last only when set) and RESULT_FORMAT
    resolved = auto.resolved().to_dict()
    del resolved["channels_last"]
    blob = json.dumps({"format": RESULT_FORMAT, "config": resolved}, sort_keys=True)
    assert auto.key() == hashlib.sha256(blob.encode()).hexdigest()[:20]
    vgg = Config(model="vgg16bn", dataset="cifar10")
    assert vgg.resolved().augment == "crop-flip" and vgg.resolved().normalization == "imagenet"
    assert vgg.key() == vgg.replace(augment="crop-flip", normalization="imagenet").key()


# --- run ------------------------------------------------------------------------------------


def test_run_stores_a_complete_entry_and_second_call_is_a_cache_hit(tmp_path, fashion, monkeypatch):
    results = tmp_path / "results"
    r = go(BASE, results, fashion)
    c = Config.from_dict(BASE)
    assert not r.cached and r.key == c.key() and r.path == results / c.key()
    assert r.config == c.resolved()
    assert set(r.metrics) == {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "gap",
                              "weight_norm", "num_params", "train_samples"}
    assert r.metrics["num_params"] == 7850 and r.metrics["train_samples"] == N_TRAIN - VAL
    assert r.metrics["gap"] == r.metrics["train_acc"] - r.metrics["val_acc"]
    assert len(r.history) == 2 and [row["epoch"] for row in r.history] == [1, 2]
    assert r.spectrum is not None and r.spectrum.nodes.shape == (1, 6) and r.spectrum.num_params == 7850
    assert r.spectrum.settings["num_samples"] == 40 and r.spectrum.settings["weight_decay"] == 0.0
    # the entry: result.json and weights.pt only, nothing else in results_dir (no temp, no .partial)
    assert listing(results) == [r.key] and listing(r.path) == ["result.json", "weights.pt"]
    stored = json.loads((r.path / "result.json").read_text())
    assert stored["key"] == r.key and stored["format"] == RESULT_FORMAT
    assert stored["weights_sha256"] == hashlib.sha256((r.path / "weights.pt").read_bytes()).hexdigest()
    # the metrics are those of the stored weights on the prepared splits
    model = r.load_model()
    assert not model.training and weight_norm(model) == r.metrics["weight_norm"]
    for split in ("train", "val", "test"):
        x, y = prepare_data(BASE, split, fashion[0])
        assert evaluate(model, x, y) == (r.metrics[f"{split}_loss"], r.metrics[f"{split}_acc"])
    assert r.metrics["val_acc"] == r.history[-1]["val_acc"]
    # the per-image validation record (paired comparisons) is that of the stored weights, and survives the cache
    xv, yv = prepare_data(BASE, "val", fashion[0])
    _, _, hits = evaluate(model, xv, yv, per_example=True)
    assert r.val_correct_array().dtype == bool and np.array_equal(r.val_correct_array(), hits.numpy())
    assert r.val_correct_array().mean() == r.metrics["val_acc"]
    assert r.spectrum.top_residuals.shape == (1,) and np.isfinite(r.spectrum.lambda_max_residual)

    def no_training(*a, **k):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(train, "fit", no_training)
    again = go(dict(BASE), results, fashion)
    assert again.cached and again.metrics == r.metrics and again.history == r.history
    assert np.array_equal(again.spectrum.nodes, r.spectrum.nodes)
    assert np.array_equal(again.spectrum.weights, r.spectrum.weights)
    assert again.spectrum.lambda_max == r.spectrum.lambda_max
    assert np.array_equal(again.val_correct_array(), r.val_correct_array())
    assert np.array_equal(again.spectrum.top_residuals, r.spectrum.top_residuals)
    for (k, v), (k2, v2) in zip(again.load_model().state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # another weight decay is another entry (and would need training)
    with pytest.raises(AssertionError, match="must not train"):
        go({**BASE, "weight_decay": 1e-4}, results, fashion)


def test_other_spectrum_settings_reuse_the_trained_weights(tmp_path, fashion, monkeypatch):
    from flatbook.curvature import HessianOperator
    from flatbook.spectrum import slq

    results = tmp_path / "results"
    r = go(BASE, results, fashion)

    def no_training(*a, **k):
        raise AssertionError("only the spectrum settings changed: no training")

    monkeypatch.setattr(train, "fit", no_training)
    more = go({**BASE, "lanczos_steps": 9, "probes": 2, "spectrum_seed": 3}, results, fashion)
    assert not more.cached and more.key != r.key and sorted(listing(results)) == sorted([r.key, more.key])
    assert more.metrics == r.metrics and more.history == r.history and more.seconds["train"] == r.seconds["train"]
    assert more.spectrum.nodes.shape == (2, 9)
    for (k, v), (k2, v2) in zip(more.load_model().state_dict().items(), r.load_model().state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    # the spectrum is that of the trained weights with the new settings
    x, y = prepare_data(BASE, "train", fashion[0])
    idx = experiments.hessian_indices(len(y), 40, spectrum_seed=3)  # 40 of the 100 training images, drawn with probe seed 3
    op = HessianOperator(r.load_model(), torch.nn.functional.cross_entropy, (x[idx], y[idx]), batch_size=20)
    expected = slq(op, steps=9, probes=2, seed=3)
    np.testing.assert_allclose(more.spectrum.nodes, expected.nodes, rtol=1e-10, atol=1e-12)
    # spectrum off: the same training, no spectrum
    off = go({**BASE, "spectrum": False}, results, fashion)
    assert off.spectrum is None and off.metrics == r.metrics
    # a training field is not a spectrum setting
    with pytest.raises(AssertionError, match="no training"):
        go({**BASE, "epochs": 3}, results, fashion)


def test_run_is_deterministic_across_results_dirs(tmp_path, fashion):
    a = go(BASE, tmp_path / "a", fashion)
    b = go(BASE, tmp_path / "b", fashion)
    assert a.metrics == b.metrics and a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    assert np.array_equal(a.spectrum.nodes, b.spectrum.nodes)
    c = go({**BASE, "seed": 1}, tmp_path / "a", fashion)
    assert c.metrics["train_loss"] != a.metrics["train_loss"]


@pytest.mark.parametrize("damage", ["truncate-weights", "garbage-json", "missing-weights", "other-key"])
def test_corrupt_entry_warns_and_is_recomputed(tmp_path, fashion, damage):
    results = tmp_path / "results"
    config = {**BASE, "epochs": 1}
    first = go(config, results, fashion)
    weights, result_json = first.path / "weights.pt", first.path / "result.json"
    if damage == "truncate-weights":
        weights.write_bytes(weights.read_bytes()[:50])
    elif damage == "garbage-json":
        result_json.write_text("{not json")
    elif damage == "missing-weights":
        weights.unlink()
    else:
        d = json.loads(result_json.read_text())
        d["key"] = "0" * 20
        result_json.write_text(json.dumps(d))
    with pytest.warns(UserWarning) as record:
        second = go(config, results, fashion)
    messages = [str(w.message).replace(str(first.path), "<entry>") for w in record]
    assert any("corrupt" in m and "<entry>" in m for m in messages), messages
    assert not second.cached and second.metrics == first.metrics
    assert listing(results) == [first.key] and listing(second.path) == ["result.json", "weights.pt"]
    third = go(config, results, fashion)
    assert third.cached and third.metrics == first.metrics
    third.load_model()


def test_interrupted_write_leaves_no_entry_and_the_rerun_resumes(tmp_path, fashion, monkeypatch):
    results = tmp_path / "results"
    key = Config.from_dict(BASE).key()
    real_dumps = json.dumps

    def failing_dumps(obj, *args, **kwargs):
        if isinstance(obj, dict) and "weights_sha256" in obj:  # the entry's payload, after weights.pt
            raise KeyboardInterrupt
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(experiments.json, "dumps", failing_dumps)
    with pytest.raises(KeyboardInterrupt):
        go(BASE, results, fashion)
    monkeypatch.setattr(experiments.json, "dumps", real_dumps)
    # no entry, no temporary directory; only the training checkpoint to resume from
    assert listing(results) == [f"{key}.partial"]
    assert listing(results / f"{key}.partial") == ["checkpoint.pt"]

    def no_training(*a, **k):
        raise AssertionError("training started")

    real_epoch = train._train_epoch
    monkeypatch.setattr(train, "_train_epoch", no_training)  # all epochs are in the checkpoint
    resumed = go(BASE, results, fashion)
    monkeypatch.setattr(train, "_train_epoch", real_epoch)
    assert not resumed.cached and listing(results) == [key]
    fresh = go(BASE, tmp_path / "fresh", fashion)
    assert resumed.metrics == fresh.metrics and resumed.history[0]["train_loss"] == fresh.history[0]["train_loss"]
    assert np.array_equal(resumed.spectrum.nodes, fresh.spectrum.nodes)


def test_failing_weights_save_leaves_no_temp_directory(tmp_path, monkeypatch):
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    r = experiments.Result(config=Config.from_dict(BASE), key="k" * 20, metrics={}, history=[], spectrum=None,
                           seconds={}, device="cpu", version="0")
    with pytest.raises(OSError, match="disk full"):
        experiments._write_entry(tmp_path, r.key, r, {"w": torch.zeros(2)})
    assert listing(tmp_path) == []


# --- prepare_data ---------------------------------------------------------------------------


def test_mnist_like_inputs_are_flattened_and_scaled_exactly(fashion):
    root, files = fashion
    imgs, labels = files["train"]
    for model in ("logreg", "mlp"):
        x, y = prepare_data({**BASE, "model": model}, "train", root)
        raw = torch.from_numpy(imgs[:N_TRAIN - VAL]).to(torch.float32) / 255.0
        assert x.shape == (N_TRAIN - VAL, 784) and x.dtype == torch.float32
        assert torch.equal(x, ((raw - 0.5) / 0.5).reshape(-1, 784))
        assert float(x.min()) == -1.0 and float(x.max()) == 1.0  # pixels 0 and 255 are present
        assert torch.equal(y, torch.from_numpy(labels[:N_TRAIN - VAL]).long())
    xv, yv = prepare_data(BASE, "val", root)
    assert torch.equal(yv, torch.from_numpy(labels[N_TRAIN - VAL:]).long())
    assert torch.equal(xv, ((torch.from_numpy(imgs[N_TRAIN - VAL:]).float() / 255.0 - 0.5) / 0.5).reshape(-1, 784))
    xt, yt = prepare_data(BASE, "test", root)
    assert xt.shape == (N_TEST, 784) and torch.equal(yt, torch.from_numpy(files["t10k"][1]).long())


def test_train_per_class_is_a_balanced_subset(fashion):
    root = fashion[0]
    x_all, y_all = prepare_data(BASE, "train", root)
    x, y = prepare_data({**BASE, "train_per_class": 3}, "train", root)
    assert len(y) == 30 and torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 3))
    # the subset is made of training images, in data order
    rows = [int(torch.nonzero((x_all == xi).all(1)).flatten()[0]) for xi in x]
    assert rows == sorted(rows) and len(set(rows)) == 30 and all(r < N_TRAIN - VAL for r in rows)
    assert torch.equal(y_all[rows], y)
    # val and test are not subsampled
    assert len(prepare_data({**BASE, "train_per_class": 3}, "val", root)[1]) == VAL
    x2, _ = prepare_data({**BASE, "train_per_class": 3, "seed": 1}, "train", root)
    assert not torch.equal(x2, x)  # the choice depends on the seed


def test_pad_to_32_for_cifar_models(fashion):
    root, files = fashion
    cfg = {**BASE, "model": "allcnnc", "pad_to": 32}
    x, y = prepare_data(cfg, "val", root)
    assert x.shape == (VAL, 3, 32, 32) and torch.equal(y, torch.from_numpy(files["train"][1][N_TRAIN - VAL:]).long())
    raw = torch.from_numpy(files["train"][0][N_TRAIN - VAL:]).float() / 255.0
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # All-CNN-C: ImageNet statistics
    for ch in range(3):
        assert torch.allclose(x[:, ch, 2:30, 2:30], (raw - mean[ch]) / std[ch], atol=1e-6)
        assert torch.allclose(x[:, ch, :2], torch.full((VAL, 2, 32), -mean[ch] / std[ch]), atol=1e-6)
        assert torch.allclose(x[:, ch, :, 30:], torch.full((VAL, 32, 2), -mean[ch] / std[ch]), atol=1e-6)


def test_prepare_data_follows_flatbook_data(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    make_mnist_like(first, "FashionMNIST", n_train=60, seed=1)
    files = make_mnist_like(second, "FashionMNIST", n_train=60, seed=2)
    monkeypatch.setenv("FLATBOOK_DATA", str(first))
    prepare_data(BASE, "test")
    monkeypatch.setenv("FLATBOOK_DATA", str(second))
    _, y = prepare_data(BASE, "test")
    assert torch.equal(y, torch.from_numpy(files["t10k"][1]).long())


# --- sweep ----------------------------------------------------------------------------------


def test_sweep_keeps_the_order_and_validates_first(tmp_path, fashion, monkeypatch):
    results = tmp_path / "results"
    base = {**BASE, "epochs": 1}
    out = sweep(base, [5e-4, 0, 1e-4], results_dir=results, data_root=fashion[0], device="cpu", progress=False)
    assert [r.config.weight_decay for r in out] == [5e-4, 0.0, 1e-4]
    assert all(r.spectrum is not None and r.spectrum.nodes.shape == (1, 6) for r in out)
    assert all(r.spectrum.settings["weight_decay"] == 0.0 for r in out)  # the spectrum has no decay term
    assert len({r.key for r in out}) == 3 and listing(results) == sorted(r.key for r in out)
    single = go({**base, "weight_decay": 1e-4}, tmp_path / "single", fashion)
    assert out[2].metrics == single.metrics
    assert out[0].metrics["weight_norm"] < out[1].metrics["weight_norm"]  # decay shrinks the weights

    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(train, "fit", no_training)
    again = sweep(base, [0, 5e-4], results_dir=results, data_root=fashion[0], device="cpu", progress=False)
    assert [r.cached for r in again] == [True, True] and again[1].metrics == out[0].metrics
    for bad in ([0, -1e-4], [0, float("nan")], [0, "1e-4"]):
        with pytest.raises(ConfigError, match=r"weight_decays\[1\]"):
            sweep(base, bad, results_dir=tmp_path / "bad", data_root=fashion[0], device="cpu", progress=False)
    with pytest.raises(ConfigError, match="non-empty"):
        sweep(base, [], results_dir=tmp_path / "bad", progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        sweep({**base, "epochs": 0}, [0], results_dir=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_sweep_with_two_workers_equals_one(tmp_path, fashion):
    base = {**BASE, "epochs": 1, "lanczos_steps": 4}
    kw = dict(data_root=fashion[0], device="cpu", progress=False)
    parallel = sweep(base, [0, 1e-3], workers=2, results_dir=tmp_path / "par", **kw)
    serial = sweep(base, [0, 1e-3], workers=1, results_dir=tmp_path / "ser", **kw)
    assert [r.config.weight_decay for r in parallel] == [0.0, 1e-3]
    assert not any(r.cached for r in parallel)  # computed by this call (in the workers), not found in the cache
    assert all(r.cached for r in sweep(base, [0, 1e-3], workers=2, results_dir=tmp_path / "par", **kw))
    for p, s in zip(parallel, serial):
        assert p.key == s.key and p.metrics.keys() == s.metrics.keys()
        for k in s.metrics:
            assert p.metrics[k] == pytest.approx(s.metrics[k], rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(p.spectrum.nodes, s.spectrum.nodes, rtol=1e-5, atol=1e-6)
    assert listing(tmp_path / "par") == sorted(r.key for r in parallel)


def test_hessian_indices_are_all_images_or_a_seeded_sorted_subset():
    assert torch.equal(experiments.hessian_indices(50, None, spectrum_seed=0), torch.arange(50))
    assert torch.equal(experiments.hessian_indices(50, 80, spectrum_seed=0), torch.arange(50))
    a, b = experiments.hessian_indices(1000, 100, spectrum_seed=1), experiments.hessian_indices(1000, 100, spectrum_seed=1)
    assert torch.equal(a, b) and len(a) == 100 and len(set(a.tolist())) == 100
    assert torch.equal(a, a.sort().values) and int(a.max()) < 1000
    assert not torch.equal(a, experiments.hessian_indices(1000, 100, spectrum_seed=2))  # another probe seed, other images


def test_worker_devices_put_one_worker_on_each_gpu(monkeypatch):
    """run_many's worker processes: on the CPU all share the given device; with N GPUs each worker
    gets its own (round-robin past N); a pinned device is kept."""
    import queue

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert experiments.worker_devices(2) == [None, None]
    assert experiments.worker_devices(3, "cpu") == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert experiments.worker_devices(4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert experiments.worker_devices(6, "cuda") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert experiments.worker_devices(2, "cuda:3") == ["cuda:3", "cuda:3"]  # pinned by the caller
    assert experiments.worker_devices(2, "cpu") == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="workers"):
        experiments.worker_devices(0)
    # each worker process takes the next device of the shared queue at start-up
    devices = queue.Queue()
    for d in ("cuda:0", "cuda:1"):
        devices.put(d)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(str(d)))  # no GPU here
    experiments._claim_device(devices)
    try:
        assert experiments._WORKER_DEVICE == "cuda:0" and chosen == ["cuda:0"]
    finally:
        experiments._WORKER_DEVICE = None


def test_workers_never_change_a_result_a_run_computes_on_its_own_threads(tmp_path, fashion):
    """A small BatchNorm CNN trained in the main process (workers=1) and in spawned workers
    (workers=2) gives the same bits: every run computes on its config's ``threads`` (here 1 and 2,
    while this test's process runs on 1), whatever the pool. On this CPU, 1 and 2 threads give
    different weights (measured: 1.2e-7 after 2 epochs of a WRN-10-1), which is why ``threads`` is in
    the cache key."""
    cnn = dict(model="wrn28x10", dataset="fashion-mnist", model_options={"depth": 10, "width": 1}, image_size=8,
               pad_to=8, epochs=2, lr=0.05, batch_size=20, val_size=VAL, lanczos_steps=4, hessian_samples=40,
               hessian_batch_size=20, weight_decay=1e-3)
    configs = [{**cnn, "threads": 1}, {**cnn, "threads": 2}]
    kw = dict(data_root=fashion[0], device="cpu", progress=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller computes on 2 threads, each pool worker would get 1 of the 2 cores
    try:
        serial = experiments.run_many(configs, workers=1, results_dir=tmp_path / "ser", **kw)
        assert torch.get_num_threads() == 2  # restored after each run
    finally:
        torch.set_num_threads(before)
    parallel = experiments.run_many(configs, workers=2, results_dir=tmp_path / "par", **kw)
    assert serial[0].key != serial[1].key  # the thread count is part of the key
    for s, p in zip(serial, parallel):
        untimed = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (s, p)]
        assert s.key == p.key and s.metrics == p.metrics and untimed[0] == untimed[1]
        w_s, w_p = (torch.load(r.path / "weights.pt", weights_only=True) for r in (s, p))
        assert all(torch.equal(w_s[k], w_p[k]) for k in w_s)
        assert np.array_equal(s.spectrum.nodes, p.spectrum.nodes)
        assert f"({s.config.threads} thread" in s.device
    with pytest.raises(ConfigError, match="threads"):
        experiments.run_many([{**cnn, "threads": 0}], results_dir=tmp_path / "bad", **kw)


def test_channels_last_is_a_config_field_its_runs_reproduce_and_resume(tmp_path, fashion):
    """``channels_last`` trains in another memory layout: another cache key (other kernels, other
    bits), the same bits when run again (resuming: ``test_train``), weights stored in the default
    layout, and within float32 rounding-growth of the default layout's weights. A config without it
    keeps the key it had before the field existed."""
    import hashlib
    import json

    cnn = dict(model="wrn28x10", dataset="fashion-mnist", model_options={"depth": 10, "width": 1}, image_size=8,
               pad_to=8, epochs=2, lr=0.05, batch_size=20, val_size=VAL, lanczos_steps=4, hessian_samples=40,
               hessian_batch_size=20, weight_decay=1e-3)
    kw = dict(data_root=fashion[0], device="cpu", progress=False)
    plain = Config(**cnn)
    legacy = plain.resolved().to_dict()
    del legacy["channels_last"]
    blob = json.dumps({"format": experiments.RESULT_FORMAT, "config": legacy}, sort_keys=True)
    assert plain.key() == hashlib.sha256(blob.encode()).hexdigest()[:20]
    fast = plain.replace(channels_last=True)
    assert fast.key() != plain.key()
    a = experiments.run(fast, results_dir=tmp_path / "a", **kw)
    b = experiments.run(fast, results_dir=tmp_path / "b", **kw)
    base = experiments.run(plain, results_dir=tmp_path / "a", **kw)
    w_a, w_b, w_0 = (torch.load(r.path / "weights.pt", weights_only=True) for r in (a, b, base))
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    assert all(v.is_contiguous() for v in w_a.values())
    assert max(float((w_a[k].float() - w_0[k].float()).abs().max()) for k in w_a) < 1e-2
    assert np.array_equal(a.spectrum.nodes, b.spectrum.nodes)
    with pytest.raises(ConfigError, match="channels_last"):
        experiments.run({**cnn, "channels_last": "yes"}, results_dir=tmp_path / "bad", **kw)


def test_remeasure_many_gives_the_same_bits_with_any_number_of_workers(tmp_path, fashion):
    """``remeasure.many`` computes each measure on its run's threads: 1 and 2 worker processes store
    the same eval-mode spectra and relative flatness."""
    from flatbook import remeasure

    cnn = dict(model="wrn28x10", dataset="fashion-mnist", model_options={"depth": 10, "width": 1}, image_size=8,
               pad_to=8, epochs=1, lr=0.05, batch_size=20, val_size=VAL, lanczos_steps=4, hessian_samples=40,
               hessian_batch_size=20)
    kw = dict(data_root=fashion[0], device="cpu", progress=False)
    results = experiments.run_many([{**cnn, "weight_decay": wd} for wd in (0.0, 1e-3)], results_dir=tmp_path / "r",
                                   **kw)
    serial = remeasure.many(results, "spectrum", bn_mode="eval", recompute=True, progress=False)
    for r in results:  # drop the stored measures so the pool computes them again
        for f in (r.path / "measures").glob("*.json"):
            f.unlink()
    parallel = remeasure.many(results, "spectrum", bn_mode="eval", workers=2, progress=False)
    for s, p in zip(serial, parallel):
        assert np.array_equal(s.nodes, p.nodes) and np.array_equal(s.top_residuals, p.top_residuals)
    flat = [remeasure.many(results, "relative_flatness", workers=w, progress=False) for w in (1, 2)]
    assert flat[0] == flat[1]
    with pytest.raises(ValueError, match="measure must be one of"):
        remeasure.many(results, "trace")
