"""Export a checkpoint to ONNX, the second inference backend (ONNX Runtime, no PyTorch).

The graph takes raw pixels, float32 (batch, 1, 28, 28), 0–255, white on black, and returns
logits (batch, 10); the batch size is free. The model's input scaling is inside the graph,
and what `digits.load` reports about the model travels in the file's metadata (key "digits").
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .errors import DigitsError
from .files import atomic_write, model_file
from .inference import OnnxBackend, TorchBackend, softmax
from .mnist import FIELD

OPSET = 18


def export_onnx(checkpoint: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write the ONNX file (default: beside the checkpoint, as .onnx) and check it against PyTorch.

    Returns the file, the opset and the largest difference in probability between the two
    backends on a fixed batch of random pictures.
    """
    checkpoint = model_file(checkpoint)
    out = Path(out) if out else checkpoint.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise DigitsError(f"--onnx {out}: the file name must end in .onnx")
    try:
        import onnxscript  # noqa: F401  (the exporter builds the graph with it)
    except ImportError:
        raise DigitsError("exporting to ONNX needs the onnx extra — pip install 'digits[onnx]'") from None
    reference = TorchBackend(checkpoint, "cpu", "fp32")
    with _quiet():
        program = torch.onnx.export(reference.model, (torch.zeros(2, 1, FIELD, FIELD),), dynamo=True,
                                    opset_version=OPSET, input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    proto = program.model_proto
    proto.metadata_props.add(key="digits", value=json.dumps(reference.info))
    atomic_write(out, proto.SerializeToString())

    batch = np.random.default_rng(0).integers(0, 256, (64, FIELD, FIELD), dtype=np.uint8)
    difference = np.abs(softmax(reference.logits(batch)) - softmax(OnnxBackend(out).logits(batch)))
    return {"onnx": str(out), "opset": OPSET, "max_difference": float(difference.max())}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter logs and warns about things that do not concern the user (torchvision ops)."""
    disabled = logging.root.manager.disable  # the caller's own setting, given back after
    logging.disable(max(disabled, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
