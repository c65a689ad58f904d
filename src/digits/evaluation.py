"""Evaluation: loss, accuracy and per-class metrics of a model on a split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn
from torch.nn import functional as F

from .checkpoint import assemble, ensemble_members, load_model, save_ensemble
from .data import Dataset, Split, load_dataset
from .engine import predict_logits, resolve_device
from .errors import DigitsError
from .files import output_folder
from .plots import plot_confusion, plot_mistakes


@dataclass
class Evaluation:
    """A model's reading of a labelled split: mean cross-entropy ``loss``, ``accuracy``, the
    ``probabilities`` (N, 10) and true ``labels`` (N,); the rest is derived from them."""

    loss: float
    accuracy: float
    probabilities: np.ndarray = field(repr=False)  # (N, 10)
    labels: np.ndarray = field(repr=False)  # (N,)

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    def per_class(self) -> dict[str, list[float]]:
        precision, recall, f1, support = precision_recall_fscore_support(
            self.labels, self.predictions, labels=range(10), zero_division=0)
        return {"precision": precision.tolist(), "recall": recall.tolist(),
                "f1": f1.tolist(), "support": support.tolist()}

    def confusion(self) -> np.ndarray:
        return confusion_matrix(self.labels, self.predictions, labels=range(10))

    def confident_mistakes(self) -> np.ndarray:
        """Indices of the misclassified images, the most confident first.

        Ranked by doubt, the probability left to the other classes: the top probability of a
        sure model rounds to exactly 1 in float32 for many mistakes at once, and they would tie.
        """
        wrong = np.flatnonzero(self.predictions != self.labels)
        doubt = np.sort(self.probabilities[wrong], axis=1)[:, :-1].sum(1, dtype=np.float64)
        return wrong[np.argsort(doubt, kind="stable")]

    def calibration(self, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        return calibration(self.probabilities, self.labels, bins)

    def as_dict(self) -> dict:
        return {"loss": self.loss, "accuracy": self.accuracy, "count": int(len(self.labels)),
                "per_class": self.per_class(), "confusion": self.confusion().tolist()}


def calibration(probabilities: np.ndarray, labels: np.ndarray,
                bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per confidence bin: mean confidence, accuracy and count; and the expected calibration
    error, the count-weighted mean gap between confidence and accuracy."""
    confidence = probabilities.max(1)
    correct = (probabilities.argmax(1) == labels).astype(float)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    confidence_sum = np.bincount(index, confidence, bins)
    correct_sum = np.bincount(index, correct, bins)
    ece = float(np.abs(confidence_sum - correct_sum).sum() / max(len(labels), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return confidence_sum / counts, correct_sum / counts, counts, ece


def evaluate(model: nn.Module, split: Split | Dataset) -> Evaluation:
    """Loss, accuracy and probabilities of ``model`` (a PyTorch module, or a classifier from
    digits.load holding one) on ``split`` (of a whole Dataset, its test split), computed where
    the model is."""
    model = _network(model)
    if isinstance(split, Dataset):
        split = split.test
    if not isinstance(split, Split):
        raise DigitsError(f"cannot evaluate on a {type(split).__name__}: give a Split, such as data.test")
    logits = predict_logits(model, split.images)
    loss = F.cross_entropy(logits, split.labels).item() if len(split) else float("nan")
    probabilities = logits.softmax(1).numpy()
    labels = split.labels.numpy()
    accuracy = float((probabilities.argmax(1) == labels).mean()) if len(split) else float("nan")
    return Evaluation(loss, accuracy, probabilities, labels)


def _network(model: object) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, (str, Path)):
        raise DigitsError(f"evaluate takes a model, not a path: evaluate_checkpoint({str(model)!r}) reads a checkpoint")
    if hasattr(model, "network"):  # a classifier from digits.load
        if model.network is None:
            raise DigitsError("an ONNX classifier holds no PyTorch network to evaluate: use its score(images, labels)")
        return model.network
    raise DigitsError(f"cannot evaluate a {type(model).__name__}: give a PyTorch module, such as "
                      "digits.load_model(PATH)[0]")


def evaluate_checkpoint(checkpoint: str | Path, dataset: str | None = None,
                        data_dir: str | Path | None = None, out: str | Path | None = None,
                        device: str = "auto") -> dict:
    """Evaluate a checkpoint on its dataset's test split; writes confusion.png and mistakes.png.

    The pictures go to ``out``, by default the folder that holds the checkpoint.
    """
    out = output_folder(out) if out else Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    model, payload = load_model(checkpoint)
    return {"checkpoint": str(checkpoint), **_evaluate_and_draw(model, payload, dataset, data_dir, out, device)}


def combine(models: Sequence[str | Path], out: str | Path, dataset: str | None = None,
            data_dir: str | Path | None = None, device: str = "auto") -> dict:
    """`digits ensemble`: combine trained models into an ensemble (see make_ensemble), evaluate
    it as evaluate_checkpoint does, and only then write OUT/ensemble.json, with its test accuracy,
    so that a failed evaluation leaves no ensemble behind."""
    files, name = ensemble_members(models, out)
    model, payload = assemble(files, {"model": name})
    result = _evaluate_and_draw(model, payload, dataset, data_dir, Path(out), device)
    # An accuracy on another dataset's test set is not the one the ensemble's own data gives.
    facts = {"accuracy": result["accuracy"]} if result["dataset"] == payload["dataset"] else {}
    manifest = save_ensemble(out, files, name, **facts)
    return {"checkpoint": str(manifest), **result}


def _evaluate_and_draw(model: nn.Module, payload: dict, dataset: str | None, data_dir: str | Path | None,
                       out: Path, device: str) -> dict:
    device = resolve_device(device)  # a bad --device fails before the dataset loads
    data = load_dataset(dataset or payload.get("dataset") or "mnist", data_dir)
    if tuple(data.classes) != tuple(payload["classes"]):
        raise DigitsError(f"{payload['model']} reads {payload.get('dataset')}'s classes, not {data.name}'s: "
                          f"evaluate it on its own dataset (--dataset {payload.get('dataset')})")
    result = evaluate(model.to(device), data.test_split("evaluate on"))
    plot_confusion(result.confusion(), data.classes, out / "confusion.png")
    plot_mistakes(data.test.images.numpy(), result.labels, result.probabilities, result.confident_mistakes(),
                  data.classes, out / "mistakes.png")
    return {"model": payload["model"], "dataset": data.name, "classes": list(data.classes), **result.as_dict(),
            "files": {"confusion": str(out / "confusion.png"), "mistakes": str(out / "mistakes.png")}}
