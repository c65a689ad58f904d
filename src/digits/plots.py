"""Figures saved as PNG files: training curves, confusion matrix, mistakes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or wanted, on a server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .files import atomic_write  # noqa: E402


def save(figure, path: str | Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write(path, buffer.getvalue())


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Accuracy and loss per epoch, training against validation (the tutorial's step 4)."""
    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        ax.plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="training")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], "s-", label="validation")
        ax.set(title=title, xlabel="epoch", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    save(figure, path)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | Path) -> None:
    figure, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=ax)
    ticks = range(len(classes))
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="Confusion matrix")
    ax.set_xticklabels(classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right")
    ax.set_yticklabels(classes)
    threshold = confusion.max() / 2
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > threshold else "black")
    save(figure, path)


def plot_mistakes(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                  classes: Sequence[str], path: str | Path, limit: int = 36) -> None:
    """A grid of misclassified digits, the most confident mistakes first."""
    predictions = probabilities.argmax(1)
    wrong = np.flatnonzero(predictions != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predictions[wrong]])][:limit]
    columns = 6
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], cmap="gray")
        ax.set_title(f"true {classes[labels[i]]}\npred {classes[predictions[i]]} "
                     f"{probabilities[i, predictions[i]]:.0%}", fontsize=8)
    if not len(wrong):
        axes.flat[0].set_title("no mistakes")
    figure.suptitle(f"{len(wrong)} most confident mistakes", fontsize=10)
    save(figure, path)
