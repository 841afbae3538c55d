"""Which device flatbook computes on: CUDA when PyTorch sees a GPU, else the CPU."""

from __future__ import annotations

import os

__all__ = ["default_device", "describe_device"]


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
    return f"cpu ({torch.get_num_threads()} threads, torch {torch.__version__})"
