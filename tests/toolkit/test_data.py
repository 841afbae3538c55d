"""Datasets through torchvision's own classes, on small files the tests write in the real formats."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import flatbook.data as data
from flatbook.data import DatasetCorrupt, DatasetNotFound, load, normalize


def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, r, c = images.shape
    path.write_bytes((2051).to_bytes(4, "big") + n.to_bytes(4, "big") + r.to_bytes(4, "big") + c.to_bytes(4, "big")
                     + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes((2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.astype(np.uint8).tobytes())


def make_mnist_like(root: Path, folder: str, n_train=60, n_test=20, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx_images(raw / f"{split}-images-idx3-ubyte", imgs)
        write_idx_labels(raw / f"{split}-labels-idx1-ubyte", labels)
        out[split] = (imgs, labels)
    return out


def make_cifar(root: Path, name: str, per_batch=12, n_test=10, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, test, key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"
    else:
        folder, files, test, key = root / "cifar-100-python", ["train"], "test", "fine_labels"
    folder.mkdir(parents=True)
    classes = 10 if name == "cifar10" else 100
    out = {"train": [], "test": None}
    for f in files + [test]:
        n = n_test if f == test else per_batch
        d = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).tolist()
        with open(folder / f, "wb") as fh:
            pickle.dump({"data": d, key: labels}, fh, protocol=2)  # the official files are Python 2 pickles
        if f == test:
            out["test"] = (d, labels)
        else:
            out["train"].append((d, labels))
    meta = "batches.meta" if name == "cifar10" else "meta"
    with open(folder / meta, "wb") as fh:
        pickle.dump({"label_names" if name == "cifar10" else "fine_label_names": [str(i) for i in range(classes)]}, fh)
    return out


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_splits_are_the_authors(tmp_path, name, folder):
    files = make_mnist_like(tmp_path, folder)
    imgs, labels = files["train"]
    x, y = load(name, "train", tmp_path, val_size=15)
    xv, yv = load(name, "val", tmp_path, val_size=15)
    xt, yt = load(name, "test", tmp_path, val_size=15)
    assert x.shape == (45, 1, 28, 28) and xv.shape == (15, 1, 28, 28) and xt.shape == (20, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    # the LAST val_size training images, in file order, are the validation set
    assert torch.equal(xv, torch.from_numpy(imgs[45:]).float().unsqueeze(1) / 255)
    assert torch.equal(y, torch.from_numpy(labels[:45]).long()) and torch.equal(yv, torch.from_numpy(labels[45:]).long())
    assert torch.equal(yt, torch.from_numpy(files["t10k"][1]).long())
    assert float(x.min()) >= 0 and float(x.max()) <= 1


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_splits_and_layout(tmp_path, name):
    files = make_cifar(tmp_path, name)
    train = np.concatenate([d for d, _ in files["train"]])
    labels = sum((ls for _, ls in files["train"]), [])
    x, y = load(name, "train", tmp_path, val_size=4)
    xv, yv = load(name, "val", tmp_path, val_size=4)
    xt, yt = load(name, "test", tmp_path, val_size=4)
    n = len(labels)
    assert x.shape == (n - 4, 3, 32, 32) and xv.shape == (4, 3, 32, 32) and xt.shape == (10, 3, 32, 32)
    # CIFAR rows are 1024 red, 1024 green, 1024 blue values: channel-first after loading
    assert torch.equal(xv[0], torch.from_numpy(train[n - 4].reshape(3, 32, 32)).float() / 255)
    assert yv.tolist() == labels[-4:] and yt.tolist() == files["test"][1]


def test_real_fashion_mnist_if_installed(tmp_path, monkeypatch):
    if not all((data.DEBIAN_FASHION_MNIST / f).is_file() for f in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    x, y = load("fashion-mnist", "val", tmp_path)  # unpacked from Debian's files into tmp_path
    assert x.shape == (5000, 1, 28, 28) and sorted(set(y.tolist())) == list(range(10))
    xt, yt = load("fashion-mnist", "test", tmp_path)
    assert xt.shape == (10000, 1, 28, 28) and torch.equal(yt.bincount(), torch.full((10,), 1000))


def test_debian_files_are_unpacked_into_the_cache(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    src = make_mnist_like(tmp_path / "src", "FashionMNIST")
    debian.mkdir()
    for f in (tmp_path / "src" / "FashionMNIST" / "raw").iterdir():
        with open(f, "rb") as fin, gzip.open(debian / f"{f.name}.gz", "wb") as fout:
            fout.write(fin.read())
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    monkeypatch.setenv("FLATBOOK_DATA", str(tmp_path / "cache"))
    x, y = load("fashion-mnist", "test", val_size=5)
    assert torch.equal(y, torch.from_numpy(src["t10k"][1]).long())
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_missing_dataset_names_paths_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.delenv("FLATBOOK_DOWNLOAD", raising=False)
    with pytest.raises(DatasetNotFound) as info:
        load("fashion-mnist", "train", tmp_path / "empty")
    msg = str(info.value)
    assert "'fashion-mnist' not found" in msg and str(tmp_path / "empty") in msg and "no-debian" in msg
    assert "FLATBOOK_DATA" in msg and "FLATBOOK_DOWNLOAD=1" in msg and "apt-get install dataset-fashion-mnist" in msg
    monkeypatch.setenv("FLATBOOK_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetNotFound, match="env"):
        load("cifar10", "test")


def test_truncated_and_corrupt_files_are_reported_as_such(tmp_path):
    make_mnist_like(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DatasetCorrupt, match="train-images-idx3-ubyte is truncated: its header promises 60 items"):
        load("mnist", "train", tmp_path, val_size=5)
    labels = raw / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x08\x03" + labels.read_bytes()[4:])
    with pytest.raises(DatasetCorrupt, match="not an IDX label file"):
        load("mnist", "test", tmp_path)
    make_cifar(tmp_path, "cifar10")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:200])
    with pytest.raises(DatasetCorrupt, match="data_batch_3 is not a readable CIFAR batch"):
        load("cifar10", "train", tmp_path, val_size=4)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load("imagenet", "train", tmp_path)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load("mnist", "validation", tmp_path)
    make_mnist_like(tmp_path, "MNIST", n_train=10)
    with pytest.raises(ValueError, match="not more than val_size=5000"):
        load("mnist", "train", tmp_path)


def test_normalize_values():
    x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)
    assert normalize(x, "mnist").flatten().tolist() == [-1.0, 0.0, 1.0]
    img = torch.ones(1, 3, 2, 2)
    out = normalize(img, "cifar-resnet")
    assert out[0, :, 0, 0].tolist() == pytest.approx([(1 - 0.4914) / 0.2023, (1 - 0.4822) / 0.1994, (1 - 0.4465) / 0.2010])
    out = normalize(img, "imagenet")
    assert out[0, :, 1, 1].tolist() == pytest.approx([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    with pytest.raises(ValueError, match="3-channel"):
        normalize(torch.ones(1, 1, 2, 2), "imagenet")
    with pytest.raises(ValueError, match="unknown statistics"):
        normalize(img, "cifar")
