"""Checkpoints: written atomically, loaded without executing code.

A checkpoint is a plain dict of tensors and JSON-like values saved with torch.save and
read back with ``torch.load(weights_only=True)``, so a file from a stranger cannot run
code. It holds what inference needs (model name, weights, classes, metrics) and what
resuming needs (optimizer and scheduler state, epochs done, history, configuration).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .errors import DigitsError
from .files import atomic_write
from .models import Classifier, create_model

FORMAT = "digits-checkpoint-1"
REQUIRED = ("format", "model", "normalize", "state_dict", "classes")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Save so that a kill at any moment leaves either the old or the new file whole."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint; any problem is one DigitsError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DigitsError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError,
            OSError, AttributeError, TypeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DigitsError(f"{path}: not a readable digits checkpoint ({reason[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or any(k not in payload for k in REQUIRED):
        raise DigitsError(f"{path}: not a digits checkpoint (missing fields)")
    return payload


def build_model(payload: dict[str, Any], source: str | Path = "checkpoint") -> Classifier:
    """The network a checkpoint describes, with its weights, in evaluation mode."""
    model = create_model(payload["model"], payload["normalize"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise DigitsError(f"{source}: weights do not fit model {payload['model']!r}"
                          " — the checkpoint is damaged or from another model") from None
    return model.eval()


def load_model(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    payload = load_checkpoint(path)
    return build_model(payload, path), payload
