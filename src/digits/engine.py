"""Where and how tensors are computed: device choice, in one place."""

from __future__ import annotations

import torch

from .errors import DigitsError


def resolve_device(name: str = "auto") -> torch.device:
    """auto picks a CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise DigitsError(f"--device {name}: choose auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise DigitsError("--device cuda: no CUDA GPU is available here; use --device cpu")
    return torch.device(name)
