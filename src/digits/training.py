"""Training: one loop, read top to bottom, with a checkpoint after every epoch.

Each epoch draws its shuffle and its random state from (seed, epoch) alone, so a run
resumed from the checkpoint of epoch k continues exactly as the uninterrupted run did.
"""

from __future__ import annotations

import csv
import json
import io
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import load_checkpoint, save_checkpoint
from .data import Dataset, load_dataset
from .engine import resolve_device
from .errors import DigitsError
from .evaluation import evaluate
from .files import atomic_write
from .models import Recipe, count_parameters, create_model, get_entry

RUNS_DIR = Path("runs")


@dataclass
class TrainConfig:
    """What a run is asked to do; None means "the model's recipe decides"."""

    model: str = "seed"
    dataset: str = "mnist"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    normalize: bool | None = None
    seed: int = 0
    out: str | Path | None = None
    data_dir: str | Path | None = None
    device: str = "auto"
    threads: int | None = None
    resume: bool = False
    subset: int | None = None  # train on the first N training images only


@dataclass
class Run:
    """A finished (or resumed-and-finished) training run."""

    folder: Path
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        return self.folder / "model.pt"

    @property
    def accuracy(self) -> float:
        return self.history[-1]["val_accuracy"]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), recipe.lr, betas=recipe.betas, eps=recipe.eps,
                                weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), recipe.lr, betas=recipe.betas, eps=recipe.eps,
                                 weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), recipe.lr, momentum=0.9, nesterov=True,
                               weight_decay=recipe.weight_decay)
    raise DigitsError(f"unknown optimizer {recipe.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    return None


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def default_run_dir(model: str) -> Path:
    return RUNS_DIR / f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_run_dir(model: str | None = None) -> Path | None:
    """The newest run folder holding a checkpoint (of one model, if named)."""
    runs = [p.parent for p in RUNS_DIR.glob(f"{model or '*'}-*/model.pt")]
    return max(runs, key=lambda p: p.stat().st_mtime, default=None)


def train(config: TrainConfig, data: Dataset | None = None, verbose: bool = True) -> Run:
    """Train a zoo model as configured; writes checkpoint, history and curves to the run folder."""
    from rich.console import Console

    console = Console(quiet=not verbose, highlight=False, soft_wrap=True)
    entry = get_entry(config.model)
    recipe = entry.recipe.with_overrides(epochs=config.epochs, batch_size=config.batch_size,
                                         lr=config.lr, normalize=config.normalize)
    folder = Path(config.out) if config.out else None
    resumed = None
    if config.resume:
        folder = folder or latest_run_dir(config.model)
        if folder is None:
            raise DigitsError(f"--resume: no run of {config.model!r} to resume under {RUNS_DIR}/; give --out DIR")
        resumed = load_checkpoint(folder / "model.pt")
        if resumed["model"] != config.model:
            raise DigitsError(f"--resume: {folder}/model.pt holds model {resumed['model']!r}, "
                              f"not {config.model!r}; pass --model {resumed['model']}")
        # A resumed run keeps its own schedule and seed; only the length may change.
        recipe = Recipe(**{**resumed["recipe"], "betas": tuple(resumed["recipe"]["betas"])})
        recipe = recipe.with_overrides(epochs=config.epochs)
        config = TrainConfig(**{**resumed["config"], "epochs": recipe.epochs, "resume": True,
                                "out": folder, "device": config.device, "threads": config.threads,
                                "data_dir": config.data_dir or resumed["config"]["data_dir"]})
    folder = folder or default_run_dir(config.model)
    if recipe.epochs < 1 or recipe.batch_size < 1 or not recipe.lr > 0:
        raise DigitsError("epochs, batch size and learning rate must be positive")

    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    data = data or load_dataset(config.dataset, config.data_dir)
    train_split = data.train.take(slice(0, config.subset)) if config.subset else data.train
    images, labels = train_split.images.to(device), train_split.labels.to(device)
    steps_per_epoch = math.ceil(len(labels) / recipe.batch_size)

    torch.manual_seed(config.seed)
    model = create_model(config.model, recipe.normalize).to(device)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    history: list[dict[str, Any]] = []
    if resumed:
        model.load_state_dict(resumed["state_dict"])
        optimizer.load_state_dict(resumed["optimizer"])
        if scheduler:
            scheduler.load_state_dict(resumed["scheduler"])
        history = list(resumed["history"])
        if len(history) >= recipe.epochs:
            console.print(f"{folder}: already finished ({len(history)}/{recipe.epochs} epochs)")
            return Run(folder, model.eval(), history)
        console.print(f"Resuming {folder} after epoch {len(history)}/{recipe.epochs}")
    else:
        console.print(f"Training {config.model} ({count_parameters(model):,} parameters) on "
                      f"{data.name}: {len(labels):,} images, {recipe.epochs} epochs, batch "
                      f"{recipe.batch_size}, lr {recipe.lr:g}, {device.type} → {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    started = resumed["started"] if resumed else datetime.now(timezone.utc).isoformat(timespec="seconds")

    for epoch in range(len(history), recipe.epochs):
        torch.manual_seed(epoch_seed(config.seed, epoch))
        order = torch.randperm(len(labels), device=device)
        model.train()
        seen, loss_sum, correct = 0, torch.zeros((), device=device), torch.zeros((), device=device)
        tick = time.perf_counter()
        with _progress(console, f"Epoch {epoch + 1}/{recipe.epochs}", steps_per_epoch) as (progress, task):
            for step in range(steps_per_epoch):
                index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                x, y = images[index].unsqueeze(1).float(), labels[index]
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler:
                    scheduler.step()
                seen += len(y)
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                if step % 50 == 49 or step == steps_per_epoch - 1:
                    elapsed = time.perf_counter() - tick
                    progress.update(task, completed=step + 1, rate=seen / elapsed,
                                    loss=loss_sum.item() / seen, acc=correct.item() / seen)
        seconds = time.perf_counter() - tick
        val = evaluate(model, data.test, device)
        history.append({"epoch": epoch + 1, "seconds": round(seconds, 3),
                        "train_loss": loss_sum.item() / seen, "train_accuracy": correct.item() / seen,
                        "val_loss": val.loss, "val_accuracy": val.accuracy})
        save_checkpoint(folder / "model.pt", {
            "model": config.model, "normalize": recipe.normalize,
            "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else None,
            "classes": list(data.classes), "dataset": data.name,
            "recipe": recipe.as_dict(), "config": _plain(config), "history": history,
            "parameters": count_parameters(model), "device": device.type,
            "started": started, "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "finished": epoch + 1 == recipe.epochs,
        })
        write_history(folder, history)
        h = history[-1]
        console.print(f"Epoch {epoch + 1}/{recipe.epochs} — {seconds:.1f} s — loss {h['train_loss']:.4f}"
                      f" — accuracy {h['train_accuracy']:.4f} — val_loss {h['val_loss']:.4f}"
                      f" — val_accuracy {h['val_accuracy']:.4f}")

    from .plots import plot_curves

    plot_curves(history, folder / "curves.png")
    console.print(f"Test accuracy {history[-1]['val_accuracy']:.2%} — checkpoint {folder / 'model.pt'}")
    return Run(folder, model.eval(), history)


def _plain(config: TrainConfig) -> dict[str, Any]:
    """The configuration as JSON-like values, so the checkpoint loads with weights_only."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def write_history(folder: Path, history: list[dict[str, Any]]) -> None:
    """history.json and history.csv: one row per epoch, rewritten after every epoch."""
    atomic_write(folder / "history.json", (json.dumps(history, indent=2) + "\n").encode())
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write(folder / "history.csv", table.getvalue().encode())


class _progress:
    """A rich progress bar for one epoch: batches, images/s, loss, accuracy, ETA."""

    def __init__(self, console, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:,.0f} img/s"), TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("acc {task.fields[acc]:.4f}"), TimeRemainingColumn(),
            console=console, transient=True, disable=console.quiet or not console.is_terminal)
        self.task = self.progress.add_task(description, total=total, rate=0.0, loss=0.0, acc=0.0)

    def __enter__(self):
        self.progress.start()
        return self.progress, self.task

    def __exit__(self, *exc):
        self.progress.stop()
