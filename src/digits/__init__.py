"""digits: train, evaluate, explain and serve handwritten-digit classifiers on MNIST.

The public API; the command line and the service are thin layers over it.
"""

from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .data import DATASETS, Dataset, Split, load_dataset, read_idx, write_idx
from .errors import DigitsError
from .evaluation import Evaluation, evaluate, evaluate_checkpoint
from .models import Recipe, count_parameters, create_model, list_models, register_model
from .training import Run, TrainConfig, train

__all__ = [
    "DATASETS", "Dataset", "DigitsError", "Evaluation", "Recipe", "Run", "Split", "TrainConfig",
    "count_parameters", "create_model", "evaluate", "evaluate_checkpoint", "list_models",
    "load_checkpoint", "load_dataset", "load_model", "read_idx", "register_model",
    "save_checkpoint", "train", "write_idx",
]
