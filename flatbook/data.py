"""The paper's datasets and splits, loaded through torchvision's own dataset classes.

``load(name, split, root=None)`` returns ``(x, y)``: ``x`` float32 in [0, 1] of shape
(N, C, H, W) (not yet normalised: CIFAR's statistics depend on the model, see ``normalize``),
``y`` int64 labels. Splits follow the authors' code: the LAST ``val_size`` (5,000) training
images are the validation set, in file order, no shuffling (MNIST-like 55k/5k, CIFAR 45k/5k);
"test" is the official test set.

Where the files are looked for, in order: the ``root`` argument, else ``$FLATBOOK_DATA``, else
a per-user cache folder (``$XDG_CACHE_HOME/flatbook/data``, i.e. ``~/.cache/flatbook/data``);
Fashion-MNIST is also taken from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``, gzipped IDX files, unpacked once into the cache).
Nothing is downloaded unless allowed (``download=True`` or ``FLATBOOK_DOWNLOAD=1``); a missing
dataset raises ``DatasetNotFound`` naming the dataset, the folders searched and how to provide
the files. Files are checked before torchvision reads them (IDX magic numbers and sizes, CIFAR
pickle structure), so a truncated or corrupt file raises ``DatasetCorrupt`` naming the file.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "NAMES", "SPLITS", "VAL_SIZE", "DEBIAN_FASHION_MNIST", "unpack_gzipped_fashion_mnist", "DatasetNotFound", "DatasetCorrupt",
    "data_roots", "load", "normalize", "NORMALIZATION", "NATIVE_SHAPES", "TRAIN_FILE_SIZES",
]

NAMES = ("mnist", "fashion-mnist", "cifar10", "cifar100")
SPLITS = ("train", "val", "test")
VAL_SIZE = 5_000
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# (channels, height = width) of each dataset's images, and the size of its training FILE (the
# "train" split is that minus the last val_size images)
NATIVE_SHAPES = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32), "cifar100": (3, 32)}
TRAIN_FILE_SIZES = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}

# (mean, std) per channel; MNIST-like data: (x - 0.5) / 0.5 as the authors' code
NORMALIZATION = {
    "mnist": ((0.5,), (0.5,)),
    "cifar-resnet": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # PreResNet, WideResNet
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # VGG, All-CNN-C
}

_IDX_FILES = {  # torchvision's raw file names (uncompressed)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DatasetNotFound(FileNotFoundError):
    """The dataset's files are in none of the searched folders, and downloading is not allowed."""


class DatasetCorrupt(ValueError):
    """A dataset file exists but is truncated or not in the expected format."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flatbook" / "data"


def data_roots(root: str | Path | None = None) -> list[Path]:
    """The folders searched, in order: ``root``, else ``$FLATBOOK_DATA``, else the user cache."""
    if root is not None:
        return [Path(root)]
    env = os.environ.get("FLATBOOK_DATA")
    return [Path(env)] if env else [_cache_dir()]


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return bool(download)
    return os.environ.get("FLATBOOK_DOWNLOAD", "0").strip().lower() in ("1", "true", "yes")


def _torchvision_class(name: str):
    import torchvision.datasets as tvd

    if name in ("cifar10", "cifar100"):
        base = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100

        class _Checked(base):  # type: ignore[misc, valid-type]
            # torchvision compares md5 sums of the official files; flatbook checks structure
            # instead (below), so that small files in the same format load too
            def _check_integrity(self) -> bool:
                folder = Path(self.root) / self.base_folder
                return all((folder / f).is_file() for f, _ in self.train_list + self.test_list)

            def _load_meta(self) -> None:
                with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
                    self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        _Checked.__name__ = base.__name__
        return _Checked
    return tvd.MNIST if name == "mnist" else tvd.FashionMNIST


# --- validation of files before torchvision reads them ---------------------------------------


def _check_idx(path: Path, images: bool) -> int:
    """Validate an IDX file's header against its size; return the item count."""
    expected_magic = 2051 if images else 2049
    try:
        with open(path, "rb") as f:
            header = f.read(16 if images else 8)
    except OSError as exc:
        raise DatasetCorrupt(f"cannot read {path}: {exc}") from exc
    need = 16 if images else 8
    if len(header) < need:
        raise DatasetCorrupt(f"{path} is truncated: {len(header)} bytes, shorter than its {need}-byte IDX header")
    magic, count = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    if magic != expected_magic:
        raise DatasetCorrupt(f"{path} is not an IDX {'image' if images else 'label'} file "
                             f"(magic number {magic}, expected {expected_magic})")
    item = int.from_bytes(header[8:12], "big") * int.from_bytes(header[12:16], "big") if images else 1
    size = need + count * item
    actual = path.stat().st_size
    if actual != size:
        raise DatasetCorrupt(f"{path} is {'truncated' if actual < size else 'too long'}: its header promises "
                             f"{count} items ({size} bytes), the file has {actual} bytes")
    return count


def _check_cifar(folder: Path, files: list[str], name: str) -> None:
    meta = _torchvision_class(name).meta
    try:
        with open(folder / meta["filename"], "rb") as fh:
            pickle.load(fh, encoding="latin1")[meta["key"]]
    except Exception as exc:  # noqa: BLE001
        raise DatasetCorrupt(f"{folder / meta['filename']} is not a readable CIFAR metadata file "
                             f"({type(exc).__name__}: {exc})") from None
    label_key = "labels" if name == "cifar10" else "fine_labels"
    for f in files:
        path = folder / f
        try:
            with open(path, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")  # as torchvision reads them
            data, labels = entry["data"], entry[label_key]
        except Exception as exc:  # noqa: BLE001 - any failure here means the file is not usable
            raise DatasetCorrupt(f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc})") from None
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or len(labels) != data.shape[0]:
            raise DatasetCorrupt(f"{path}: expected uint8 data of shape (N, 3072) and N labels, got data "
                                 f"{data.shape} {data.dtype} and {len(labels)} labels")


# --- locating the files ----------------------------------------------------------------------


def _mnist_like_ready(root: Path, name: str) -> bool:
    cls = "MNIST" if name == "mnist" else "FashionMNIST"
    raw = root / cls / "raw"
    return all((raw / f).is_file() for pair in _IDX_FILES.values() for f in pair)


def _unpack_debian_fashion_mnist(root: Path) -> bool:
    """Unpack Debian's gzipped Fashion-MNIST into ``root/FashionMNIST/raw`` (atomically, once)."""
    return unpack_gzipped_fashion_mnist(DEBIAN_FASHION_MNIST, root)


def unpack_gzipped_fashion_mnist(source: str | Path, root: str | Path) -> bool:
    """Unpack the four gzipped Fashion-MNIST IDX files in ``source`` (``train-images-idx3-ubyte.gz``
    and the others, as Debian's package and the original site ship them) into
    ``root/FashionMNIST/raw``, where ``load(root=root)`` or ``$FLATBOOK_DATA=root`` finds them; each
    file atomically and only once. False (nothing written) when ``source`` lacks any of the four."""
    source, root = Path(source), Path(root)
    if not all((source / f"{f}.gz").is_file() for pair in _IDX_FILES.values() for f in pair):
        return False
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for pair in _IDX_FILES.values():
        for f in pair:
            target = raw / f
            if target.is_file():
                continue
            tmp = raw / f".{f}.{os.getpid()}.tmp"
            try:
                with gzip.open(source / f"{f}.gz", "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, target)
            except (OSError, EOFError) as exc:
                raise DatasetCorrupt(f"cannot unpack {source / (f + '.gz')}: {exc}") from exc
            finally:
                if tmp.exists():
                    tmp.unlink()
    return True


def _cifar_ready(root: Path, name: str) -> bool:
    cls = _torchvision_class(name)
    folder = root / cls.base_folder
    return all((folder / f).is_file() for f in [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]])


def _locate(name: str, roots: list[Path], download: bool) -> Path:
    ready = _cifar_ready if name.startswith("cifar") else _mnist_like_ready
    for r in roots:
        if ready(r, name):
            return r
    if name == "fashion-mnist":
        for r in roots:
            try:
                if _unpack_debian_fashion_mnist(r):
                    return r
            except OSError:
                continue
    if download:
        cls = _torchvision_class(name)
        cls(str(roots[0]), train=True, download=True)
        return roots[0]
    searched = [str(r) for r in roots] + ([str(DEBIAN_FASHION_MNIST)] if name == "fashion-mnist" else [])
    layout = ("MNIST/raw/" if name == "mnist" else "FashionMNIST/raw/") + "{train,t10k}-{images-idx3,labels-idx1}-ubyte" \
        if not name.startswith("cifar") else _torchvision_class(name).base_folder + "/ (the python pickles)"
    hint = " (or `apt-get install dataset-fashion-mnist`)" if name == "fashion-mnist" else ""
    raise DatasetNotFound(
        f"dataset {name!r} not found; searched: {', '.join(searched)}. Provide the files as "
        f"<root>/{layout} with root given by load(..., root=...) or $FLATBOOK_DATA{hint}, or allow torchvision "
        "to download them with FLATBOOK_DOWNLOAD=1 (or download=True)"
    )


# --- public API ------------------------------------------------------------------------------


def load(name: str, split: str, root: str | Path | None = None, *, download: bool | None = None,
         val_size: int = VAL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``split`` of dataset ``name`` as (x float32 in [0, 1], (N, C, H, W); y int64)."""
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; datasets are: {', '.join(NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are: {', '.join(SPLITS)}")
    from .checks import positive_int

    positive_int("val_size", val_size)
    roots = data_roots(root)
    where = _locate(name, roots, _download_allowed(download))
    cls = _torchvision_class(name)
    train = split in ("train", "val")
    if name.startswith("cifar"):
        folder = where / cls.base_folder
        _check_cifar(folder, [f for f, _ in (cls.train_list if train else cls.test_list)], name)
        ds = cls(str(where), train=train, download=False)
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        y = torch.as_tensor(ds.targets, dtype=torch.int64)
    else:
        raw = where / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
        images, labels = _IDX_FILES["train" if train else "test"]
        n_img, n_lab = _check_idx(raw / images, images=True), _check_idx(raw / labels, images=False)
        if n_img != n_lab:
            raise DatasetCorrupt(f"{raw / images} has {n_img} images but {raw / labels} has {n_lab} labels")
        ds = cls(str(where), train=train, download=False)
        x = ds.data.unsqueeze(1)
        y = ds.targets.to(torch.int64)
    x = x.to(torch.float32).div_(255.0)
    if train:
        if len(y) <= val_size:
            raise ValueError(f"{name}: the training set has {len(y)} images, not more than val_size={val_size}")
        cut = len(y) - val_size
        x, y = (x[:cut], y[:cut]) if split == "train" else (x[cut:], y[cut:])
    return x.contiguous(), y.contiguous()


def normalize(x: torch.Tensor, statistics: str) -> torch.Tensor:
    """(x - mean) / std per channel with the paper's ``statistics``: "mnist" ((x - 0.5) / 0.5),
    "cifar-resnet" (PreResNet, WideResNet) or "imagenet" (VGG, All-CNN-C)."""
    if statistics not in NORMALIZATION:
        raise ValueError(f"unknown statistics {statistics!r}; choose from {sorted(NORMALIZATION)}")
    mean, std = NORMALIZATION[statistics]
    if x.ndim != 4 or x.shape[1] != len(mean):
        raise ValueError(f"{statistics!r} statistics are for {len(mean)}-channel (N, C, H, W) images, got {tuple(x.shape)}")
    shape = (1, len(mean), 1, 1)
    return (x - torch.tensor(mean, dtype=x.dtype, device=x.device).view(shape)) / \
        torch.tensor(std, dtype=x.dtype, device=x.device).view(shape)
