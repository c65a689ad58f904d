"""Figures saved as PNG files: training curves, confusion matrix, mistakes."""

from __future__ import annotations

import functools
import io
import textwrap
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .files import atomic_write

# Figures are made as Figure objects, not through pyplot: pyplot would need a backend chosen for
# the whole process, and choosing one here would take a notebook's inline plots away from its user.

Builder = TypeVar("Builder", bound=Callable[..., Any])


def plain_text(build: Builder) -> Builder:
    """Text drawn as written: file and run names such as `cost_$5_$6.png` are not TeX formulas."""
    @functools.wraps(build)
    def built(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context({"text.parse_math": False}):
            return build(*args, **kwargs)
    return built  # type: ignore[return-value]


def subplots(*grid: int, figsize: tuple[float, float], **options: Any) -> tuple[Figure, Any]:
    """A figure and its axes, as ``pyplot.subplots`` makes them."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid, **options)


def png(figure: Figure) -> bytes:
    """A figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def save(figure: Figure, path: str | Path) -> None:
    atomic_write(path, png(figure))


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, label_smoothing: float = 0.0) -> None:
    """Accuracy and loss per epoch, training against validation (the tutorial's step 4)."""
    save(curves_figure(history, label_smoothing=label_smoothing), path)


def smoothed_loss_floor(label_smoothing: float, classes: int = 10) -> float:
    """The least cross-entropy a model can reach against smoothed targets: their entropy, since
    a target gives the true class 1 − s + s/K and every other s/K."""
    other = label_smoothing / classes
    return float(-(1 - label_smoothing + other) * np.log(1 - label_smoothing + other)
                 - (classes - 1) * other * np.log(other))


@plain_text
def curves_figure(history: Sequence[dict[str, Any]], best_epoch: int | None = None,
                  label_smoothing: float = 0.0) -> Figure:
    """Accuracy and loss per epoch, training against validation; ``best_epoch`` gets a marker.
    With label smoothing the training loss cannot fall to the validation loss: its floor is drawn."""
    epochs = [h["epoch"] for h in history]
    figure, axes = subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        ax.plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="training")
        ax.plot(epochs, [h[f"val_{metric}"] for h in history], "s-", label="validation")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", linestyle="--", linewidth=1,
                       label=f"highest val accuracy (epoch {best_epoch})")
        if metric == "loss" and label_smoothing:
            ax.axhline(smoothed_loss_floor(label_smoothing), color="tab:blue", linestyle=":", linewidth=1,
                       label=f"least training loss with label smoothing {label_smoothing:g}")
        ax.set(title=title, xlabel="epoch", ylabel=metric)
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
        ax.grid(alpha=0.3)
        ax.legend()
    return figure


def plot_confusion(confusion: np.ndarray, classes: Sequence[str], path: str | Path) -> None:
    save(confusion_figure(confusion, classes), path)


@plain_text
def confusion_figure(confusion: np.ndarray, classes: Sequence[str]) -> Figure:
    figure, ax = subplots(figsize=(6.5, 5.5))
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
    return figure


@plain_text
def plot_mistakes(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, mistakes: np.ndarray,
                  classes: Sequence[str], path: str | Path, limit: int = 36) -> None:
    """A grid of the first ``limit`` of the misclassified digits ``mistakes`` (indices)."""
    predictions = probabilities.argmax(1)
    wrong = mistakes[:limit]
    columns = 6
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = subplots(rows, columns, figsize=(columns * 1.6, rows * 1.8), squeeze=False)
    figure.set_layout_engine("constrained")  # the title sits on the grid, not an inch above it
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], cmap="gray")
        ax.set_title(f"true {classes[labels[i]]}\npred {classes[predictions[i]]} "
                     f"{short_percent(probabilities[i, predictions[i]])}", fontsize=8)
    if not len(wrong):
        axes.flat[0].set_title("no mistakes")
    figure.suptitle(f"{len(wrong)} most confident mistakes", fontsize=10)
    save(figure, path)


def short_percent(p: float) -> str:
    """A probability to one decimal, which never rounds a wrong answer's up to a certain 100%."""
    return f"{p:.1%}" if p < 0.9995 else ">99.9%"


@plain_text
def reliability_figure(confidence: np.ndarray, accuracy: np.ndarray, counts: np.ndarray, ece: float) -> Figure:
    """Accuracy against confidence, binned: a calibrated model's bars reach the diagonal."""
    bins = len(counts)
    left = np.arange(bins) / bins
    filled = counts > 0
    figure, (top, bottom) = subplots(2, 1, figsize=(5.5, 6), sharex=True,
                                         gridspec_kw={"height_ratios": (3, 1)})
    top.bar(left[filled], accuracy[filled], width=1 / bins, align="edge", edgecolor="black",
            label="accuracy in the bin")
    top.bar(left[filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled], width=1 / bins,
            align="edge", color="tab:red", alpha=0.3, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    top.set(title=f"Reliability diagram — expected calibration error {ece:.4f}", ylabel="accuracy",
            xlim=(0, 1), ylim=(0, 1))
    top.legend(loc="upper left")
    bottom.bar(left[filled], counts[filled], width=1 / bins, align="edge", color="gray")
    bottom.set(yscale="log", xlabel="confidence (the top probability)", ylabel="images")
    return figure


@plain_text
def picture_grid(pictures: np.ndarray, title: str, columns: int = 16, cmap: str = "gray",
                 symmetric: bool = False) -> Figure:
    """Small pictures (N, H, W) tiled into one image: each stretched over its own range, or all
    on one scale centred on zero (``symmetric``, for weights)."""
    pictures = np.asarray(pictures, dtype=float)
    if symmetric:
        scaled, limits = pictures / (np.abs(pictures).max() or 1.0), (-1, 1)
    else:
        low = pictures.min(axis=(1, 2), keepdims=True)
        span = pictures.max(axis=(1, 2), keepdims=True) - low
        scaled, limits = (pictures - low) / np.where(span > 0, span, 1.0), (0, 1)
    count, height, width = pictures.shape
    rows, gap = -(-count // columns), max(1, height // 8)
    tiles = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap), np.nan)  # NaN shows as blank
    for k, picture in enumerate(scaled):
        row, column = divmod(k, columns)
        tiles[row * (height + gap):row * (height + gap) + height,
              column * (width + gap):column * (width + gap) + width] = picture
    figure, ax = subplots(figsize=(columns * 0.7, rows * 0.7 * height / width + 0.5))
    ax.imshow(tiles, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
    ax.set_title(title, fontsize=12)
    ax.axis("off")
    return figure


@plain_text
def explanation_figure(images: Sequence[np.ndarray], saliencies: Sequence[np.ndarray],
                       probabilities: np.ndarray, classes: Sequence[str], titles: Sequence[str]) -> Figure:
    """Per digit, one row: the 28×28 input, its saliency over it, and the class probabilities.

    Red pixels pushed the score of the predicted class up, blue ones down; the stronger, the
    more opaque.
    """
    figure, axes = subplots(len(images), 3, figsize=(9, 2.7 * len(images)), squeeze=False,
                                gridspec_kw={"width_ratios": (1, 1, 1.5)})
    for row, image, saliency, p, title in zip(axes, images, saliencies, probabilities, titles):
        row[0].imshow(image, cmap="gray", vmin=0, vmax=255)
        # Wrapped, a long file name stays above its own panels, clear of the probabilities.
        row[0].set_title(f"{textwrap.fill(title, 44)}\nthe model's input (28×28)", fontsize=9, loc="left")
        # A few pixels dominate; scaling by a high percentile instead of the maximum shows the rest.
        strength = np.clip(saliency / (np.percentile(np.abs(saliency), 99) or 1.0), -1, 1)
        overlay = np.zeros((*strength.shape, 4))
        overlay[..., 0], overlay[..., 2], overlay[..., 3] = strength > 0, strength < 0, np.abs(strength)
        row[1].imshow(image, cmap="gray", vmin=0, vmax=255 * 4)  # dimmed, so the colours stand out
        row[1].imshow(overlay)
        row[1].set_title("saliency: red for, blue against", fontsize=9)
        for ax in row[:2]:
            ax.set_xticks([])
            ax.set_yticks([])
        predicted = int(np.argmax(p))
        bars = row[2].barh(range(len(classes)), p, color=["tab:blue"] * len(classes))
        bars[predicted].set_color("tab:orange")
        row[2].bar_label(bars, [f"{v:.1%}" if v >= 0.001 else "" for v in p], padding=2, fontsize=8)
        row[2].set(xlim=(0, 1.18), yticks=range(len(classes)), yticklabels=classes)
        row[2].invert_yaxis()
        row[2].set_title("probabilities", fontsize=9)
        row[2].tick_params(labelsize=8)
    figure.tight_layout()
    return figure


@plain_text
def comparison_figure(histories: dict[str, Sequence[dict[str, Any]]]) -> Figure:
    """Runs overlaid: validation (solid) and training (dashed) accuracy and loss per epoch."""
    figure, axes = subplots(1, 2, figsize=(11, 4.2))
    for (name, history), color in zip(histories.items(), matplotlib.colormaps["tab10"].colors * 10):
        epochs = [h["epoch"] for h in history]
        for ax, metric in zip(axes, ("accuracy", "loss")):
            # Markers large enough to see a one-epoch run, which draws no line.
            ax.plot(epochs, [h[f"val_{metric}"] for h in history], "-o", color=color, markersize=6, label=name)
            ax.plot(epochs, [h[f"train_{metric}"] for h in history], "--^", color=color, markersize=5, alpha=0.6)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set(title=f"{metric.capitalize()} (● solid: validation, ▲ dashed: training)", xlabel="epoch",
               ylabel=metric)
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return figure
