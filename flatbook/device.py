"""Which device flatbook computes on: CUDA when PyTorch sees a GPU, else the CPU."""

from __future__ import annotations

import os

__all__ = ["default_device", "describe_device", "flush_denormals", "compute_threads", "as_a_run", "ieee_float32",
           "seed_cuda_generator"]


def default_device() -> str:
    """``"cuda"`` when a GPU is visible to PyTorch, else ``"cpu"``; ``$FLATBOOK_DEVICE`` overrides."""
    forced = os.environ.get("FLATBOOK_DEVICE")
    if forced:
        if forced not in ("cpu", "cuda") and not forced.startswith("cuda:"):
            raise ValueError(f"FLATBOOK_DEVICE must be 'cpu', 'cuda' or 'cuda:N', got {forced!r}")
        return forced
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def describe_device() -> str:
    """A one-line description for run reports, e.g. ``cpu (2 threads, torch 2.14.1)``."""
    import torch

    device = default_device()
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        return f"{device}: {name} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'}, torch {torch.__version__})"


class flush_denormals:
    """Context manager: CPU denormal floats are flushed to zero inside (``torch.set_flush_denormal``),
    and PyTorch's default (off) is restored on exit. A network that weight decay has collapsed holds
    denormal weights, whose arithmetic is slow on x86 CPUs: measured here, 40 epochs of a collapsed
    WRN-10-1 took 80 s without and 47 s with flushing. Values below ~1e-38 (float32) become 0."""

    def __enter__(self):
        import torch

        torch.set_flush_denormal(True)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_flush_denormal(False)
        return False


class compute_threads:
    """Context manager: PyTorch computes on exactly ``threads`` CPU threads inside
    (``torch.set_num_threads``), and the caller's setting is restored on exit. CPU kernels (matrix
    products, convolutions, reductions) split their sums by thread count, so the thread count is
    part of what determines a result's bits: ``experiments.run`` computes every run on its config's
    ``threads``, whatever the sweep's worker count."""

    def __init__(self, threads: int) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        self._before = None

    def __enter__(self):
        import torch

        self._before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self._before)
        return False


class as_a_run:
    """Context manager: compute as ``experiments.run`` does, on exactly ``threads`` CPU threads with
    denormals flushed (``compute_threads`` inside ``flush_denormals``); both are restored on exit."""

    def __init__(self, threads: int) -> None:
        self._contexts = (flush_denormals(), compute_threads(threads))

    def __enter__(self):
        for c in self._contexts:
            c.__enter__()
        return self

    def __exit__(self, *exc):
        for c in reversed(self._contexts):
            c.__exit__(*exc)
        return False


class ieee_float32:
    """Context manager: float32 matrix products and convolutions in true IEEE float32 inside (no
    TF32 on NVIDIA GPUs, whose cuDNN convolutions default to TF32's 10-bit mantissa), and the
    caller's settings restored on exit. Hessian products run inside it, so the two product methods
    (double backward, forward over reverse) agree to float32 rounding on a GPU as on the CPU, not
    to TF32's ~1e-3. PyTorch >= 2.9 has ``fp32_precision`` ("ieee" / "tf32" / "none") per backend;
    older versions the ``allow_tf32`` flags. On the CPU the settings change nothing."""

    def __init__(self) -> None:
        self._saved: list[tuple[object, str, object]] = []

    @staticmethod
    def _switches() -> list[tuple[object, str, object]]:
        """(object, attribute, value meaning IEEE float32) for every TF32 switch this PyTorch has."""
        import torch

        matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
        conv = getattr(cudnn, "conv", None)
        if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
            return [(matmul, "fp32_precision", "ieee"), (conv, "fp32_precision", "ieee")]
        return [(matmul, "allow_tf32", False), (cudnn, "allow_tf32", False)]

    def __enter__(self):
        self._saved = []
        for owner, name, ieee in self._switches():
            self._saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, ieee)
        return self

    def __exit__(self, *exc):
        for owner, name, before in reversed(self._saved):
            setattr(owner, name, before)
        self._saved = []
        return False


def seed_cuda_generator(device, seed: int) -> None:
    """Seed the CUDA generator of ``device`` itself ("cuda:N"; "cuda" means the current GPU), not
    the current device's as ``torch.cuda.manual_seed`` does: a run trained on cuda:1 while the
    current device is cuda:0 draws from cuda:1's generator."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"seed_cuda_generator needs a CUDA device, got {device}")
    if torch.cuda.is_available():
        torch.cuda.init()  # the per-GPU generators exist only once CUDA is initialised (lazily, by torch)
    index = torch.cuda.current_device() if device.index is None else device.index
    generators = torch.cuda.default_generators
    if not 0 <= index < len(generators):
        raise ValueError(f"no CUDA generator for {device}: this machine has {len(generators)} GPU(s)")
    generators[index].manual_seed(int(seed))
