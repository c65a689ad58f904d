"""digits: train, evaluate, explain and serve handwritten-digit classifiers on MNIST.

The public API; the command line and the service are thin layers over it.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import DigitsError
from .prepare import prepare  # named as its module, so imported now: importing the module later would hide it

# The rest is imported from its module on first use: a deployment predicting from an ONNX
# file need not have PyTorch installed, and `digits --help` need not wait for scikit-learn,
# which the Classifier's base classes come from (the start-up figures in benchmarks/README.md).
_LAZY = {
    "checkpoint": ("load_checkpoint", "load_model", "make_ensemble", "save_checkpoint"),
    "data": ("DATASETS", "Dataset", "Split", "load_dataset", "read_idx", "write_idx"),
    "evaluation": ("Evaluation", "evaluate", "evaluate_checkpoint"),
    "explain": ("explain_picture", "integrated_gradients"),
    "export": ("export_onnx",),
    "inference": ("Classifier", "load"),
    "models": ("Recipe", "count_parameters", "create_model", "list_models", "register_model"),
    "report": ("compare_runs", "write_report"),
    "training": ("Run", "TrainConfig", "train", "train_ensemble"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["DigitsError", "__version__", "prepare", *_MODULE_OF]
