"""Training: one loop, read top to bottom, with a checkpoint after every epoch.

Each epoch draws its shuffle and its random state from (seed, epoch) alone, so a run
resumed from the checkpoint of epoch k continues exactly as the uninterrupted run did.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.profiler import record_function

from . import __version__, distributed
from .checkpoint import load_checkpoint, load_model, load_weights, newest_checkpoint, save_checkpoint, save_ensemble
from .data import Dataset, Split, load_dataset
from .engine import (as_batch, autocast, cpu_threads, maybe_compile, prepare_model,
                     resolve_device, resolve_precision, to_device)
from .errors import DigitsError
from .evaluation import evaluate
from .files import (ENSEMBLE_MANIFEST, REPORT_NAME, RUN_CHECKPOINT, RUNS_DIR, atomic_write, holds_model,
                    newest_runs_first, output_folder, read_manifest, read_only, write_json)
from .models import Ensemble, Recipe, count_parameters, create_model, get_entry
from .plots import confusion_figure, plot_curves

# What a run takes when it names none of these (TrainConfig.with_defaults).
DEFAULTS = {"model": "seed", "dataset": "mnist", "seed": 0}
_EXAMPLES = {"model": "fast", "dataset": "mnist", "device": "cpu", "precision": "bf16"}
# Names each training step in torch.profiler's traces, so time can be attributed to steps.
STEP_LABEL = "digits: training step"


@dataclass
class TrainConfig:
    """What a run is asked to do; None means "the model's recipe decides"."""

    model: str | None = None  # None for this, dataset and seed: DEFAULTS, or with --resume the run's own
    dataset: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    normalize: bool | None = None
    seed: int | None = None
    out: str | Path | None = None
    data_dir: str | Path | None = None
    device: str = "auto"
    threads: int | None = None
    resume: bool = False
    subset: int | None = None  # train on the first N training images only
    holdout: int | None = None  # validate on the last N training images instead of the test set
    precision: str = "auto"  # auto | bf16 | fp32
    compile: bool = False  # torch.compile the model (eager if compilation fails)
    target_accuracy: float | None = None  # stop once validation accuracy reaches this
    time_limit: float | None = None  # stop once training has taken this many seconds
    report: bool = True  # write report.html into the run folder at the end
    tensorboard: str | Path | None = None  # also log to TensorBoard, in this folder

    def __post_init__(self) -> None:
        """Plain Python numbers whatever was given: NumPy's, which a scikit-learn grid search
        passes, would not survive a checkpoint's safe loading, the JSON files or the schedule."""
        for key in ("epochs", "batch_size", "seed", "threads", "subset", "holdout"):
            setattr(self, key, _plain_number(key, getattr(self, key), whole=True))
        for key in ("lr", "target_accuracy", "time_limit"):
            setattr(self, key, _plain_number(key, getattr(self, key), whole=False))
        for key in ("model", "dataset", "device", "precision"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise DigitsError(f"{key}={getattr(self, key)!r}: give a name, such as {key}={_EXAMPLES[key]!r}")
        if self.normalize is not None:
            if not isinstance(self.normalize, (bool, np.bool_)):
                raise DigitsError(f"normalize={self.normalize!r}: give True or False")
            self.normalize = bool(self.normalize)
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise DigitsError(f"--seed {self.seed}: give a whole number from 0 to {MAX_SEED}")

    def with_defaults(self) -> TrainConfig:
        """The model, dataset and seed not given, as DEFAULTS has them."""
        return replace(self, **{key: value for key, value in DEFAULTS.items() if getattr(self, key) is None})


def _flag(setting: str) -> str:
    """The command-line flag of a TrainConfig setting: time_limit is --time-limit."""
    return f"--{setting.replace('_', '-')}"


def _plain_number(key: str, value: Any, whole: bool) -> int | float | None:
    if value is None:
        return None
    flag = _flag(key)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise DigitsError(f"{flag} {value!r}: give a number")
    if not whole or not math.isfinite(value):  # an infinite count is refused with the other bad values
        return float(value)
    if not float(value).is_integer():
        raise DigitsError(f"{flag} {value:g}: give a whole number")
    return int(value)


@dataclass
class Run:
    """A finished (or resumed-and-finished) training run: its folder, its trained model and its
    history, one row per epoch as in history.json."""

    folder: Path
    model: nn.Module = field(repr=False)  # printed whole, a network and its history bury the folder
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def checkpoint(self) -> Path:
        return self.folder / RUN_CHECKPOINT

    @property
    def accuracy(self) -> float:
        return self.history[-1]["val_accuracy"]

    def time_to(self, accuracy: float) -> float | None:
        """Training seconds until validation accuracy first reached ``accuracy`` (None: never)."""
        return next((h["elapsed"] for h in self.history if h["val_accuracy"] >= accuracy), None)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    options = {"fused": True}  # one kernel per step, which PyTorch has on the CPU and on GPUs
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), recipe.lr, betas=recipe.betas, eps=recipe.eps,
                                weight_decay=recipe.weight_decay, **options)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), recipe.lr, betas=recipe.betas, eps=recipe.eps,
                                 weight_decay=recipe.weight_decay, **options)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), recipe.lr, momentum=0.9, nesterov=True,
                               weight_decay=recipe.weight_decay, **options)
    raise DigitsError(f"unknown optimizer {recipe.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    return None


def split_for_training(data: Dataset, subset: int | None = None, holdout: int | None = None) -> tuple[Split, Split]:
    """(training, validation) splits: the test set validates unless ``holdout`` images of the
    training set are set aside for it, which is what tuning a recipe honestly needs."""
    train, validation = data.train, data.test
    if not len(train):
        raise DigitsError(f"{data.name} has no training images — train on a dataset that has some")
    if holdout is None and not len(validation):
        raise DigitsError(f"{data.name}: no test images to validate on — give the dataset's test split, or hold "
                          "training images out to validate on with --holdout N")
    if holdout is not None:
        if not 0 < holdout < len(train):
            raise DigitsError(f"--holdout {holdout}: give a number between 1 and {len(train) - 1}")
        train, validation = train.take(slice(0, len(train) - holdout)), train.take(slice(len(train) - holdout, None))
    return train.first(subset), validation


MAX_SEED = 2**32 - 1  # NumPy's limit; epoch_seed stays within torch's 64 bits


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The random state of an epoch: its order, shared by the ranks, and each rank's own draws
    (distortions, dropout) on top (below 2^64 for seeds to 2^32 - 1 and up to 256 ranks)."""
    return seed * 1_000_003 + epoch + (rank << 56)


def epoch_order(seed: int, epoch: int, count: int, world_batch: int, world: distributed.World,
                device: torch.device | None = None) -> torch.Tensor:
    """This rank's share of an epoch's order of the ``count`` images, the order the same on every
    rank; the random state is left at the rank's own draws for the epoch, so that no two ranks
    distort their images alike (rank 0 draws as a run of one process does)."""
    torch.manual_seed(epoch_seed(seed, epoch))
    order = world.shard(torch.randperm(count, device=device), world_batch)
    if world.rank:
        torch.manual_seed(epoch_seed(seed, epoch, world.rank))
    return order


def default_run_dir(model: str) -> Path:
    """runs/MODEL-DATE-TIME, numbered -2, -3, … after another run started in the same second."""
    stem = f"{model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    folder, number = RUNS_DIR / stem, 1
    while folder.exists():
        number += 1
        folder = RUNS_DIR / f"{stem}-{number}"
    return folder


def latest_run_dir(model: str | None = None) -> Path | None:
    """The newest run folder under RUNS_DIR holding a checkpoint (of one model, if named)."""
    checkpoint = newest_checkpoint(None if model is None else lambda payload: payload["model"] == model)
    return checkpoint.parent if checkpoint else None


def latest_ensemble_dir(name: str) -> Path | None:
    """The newest folder runs/NAME-… in which a member has a checkpoint."""
    return next((p.parent.parent for p in newest_runs_first(f"{name}-*/member-*/{RUN_CHECKPOINT}")), None)


def train(config: TrainConfig, data: Dataset | None = None, verbose: bool = True) -> Run:
    """Train a zoo model as configured; writes checkpoint, history and curves to the run folder."""
    if not isinstance(config, TrainConfig):
        raise DigitsError(f"train takes a TrainConfig, not a {type(config).__name__}: "
                          "train(TrainConfig(model='fast', ...))")
    if data is not None and not isinstance(data, Dataset):
        raise DigitsError(f"train's data is a whole Dataset, as load_dataset gives it, not a {type(data).__name__}")
    with cpu_threads(config.threads):
        return _train(config, data, verbose)


def _resumed(config: TrainConfig) -> tuple[TrainConfig, Recipe, dict[str, Any]]:
    """A resumed run's configuration, recipe and checkpoint: its own, with what may change on
    resuming (the length, where and how it runs) taken from ``config``; refused in one line
    where the run cannot be continued as asked."""
    folder = Path(config.out) if config.out else latest_run_dir(config.model)
    if folder is None:
        ensembles = newest_runs_first(f"*/member-*/{RUN_CHECKPOINT}")
        raise DigitsError(f"--resume: no run{f' of {config.model!r}' if config.model else ''} to resume "
                          f"under {RUNS_DIR}/; give --out DIR"
                          + (" (an ensemble resumes with --ensemble K)" if ensembles else ""))
    checkpoint = folder / RUN_CHECKPOINT
    if not checkpoint.exists() and list(folder.glob(f"member-*/{RUN_CHECKPOINT}")):
        manifest = folder / ENSEMBLE_MANIFEST
        how = (f"--ensemble {len(read_manifest(manifest)['members'])}" if manifest.is_file()
               else "--ensemble K, K the members it began with")
        raise DigitsError(f"--resume: {folder} holds an ensemble's members; resume it with {how}")
    resumed = load_checkpoint(checkpoint)
    if config.model not in (None, resumed["model"]):
        raise DigitsError(f"--resume: {checkpoint} holds model {resumed['model']!r}, "
                          f"not {config.model!r}; leave --model out, or pass --model {resumed['model']}")
    if any(key not in resumed for key in ("recipe", "config", "optimizer", "history")):
        raise DigitsError(f"--resume: {checkpoint} holds no training state to resume from;"
                          " train a new run instead")
    if read_only(checkpoint):  # found now, not once an epoch has trained and cannot be saved
        raise DigitsError(f"--resume: {checkpoint} is read-only, so no epoch could be saved; make it "
                          "writable, or train a new run")
    # A resumed run keeps its own schedule and seed; only the length may change, and not
    # that of a one-cycle schedule, whose learning rate was planned over the whole run.
    recipe = Recipe.from_dict(resumed["recipe"])
    saved = resumed["config"]
    kept = {"batch_size": recipe.batch_size, "lr": recipe.lr, "normalize": recipe.normalize,
            "subset": saved.get("subset"), "holdout": saved.get("holdout"), "seed": saved["seed"],
            "dataset": saved["dataset"]}
    changed = [_flag(name) for name, value in kept.items()
               if getattr(config, name) not in (None, value)]
    if changed:
        raise DigitsError(f"--resume continues {checkpoint} with its own {', '.join(changed)}; "
                          "drop the flag, or train a new run")
    new_rules = [_flag(name) for name in ("time_limit", "target_accuracy")
                 if getattr(config, name) not in (None, saved.get(name))]
    if resumed.get("stopped") and new_rules:
        raise DigitsError(f"--resume: {folder} was stopped ({resumed['stopped']}) and is finished; a new "
                          f"{' or '.join(new_rules)} does not reopen it — train a new run")
    planned = recipe.epochs
    recipe = recipe.with_overrides(epochs=config.epochs)
    if recipe.schedule == "onecycle" and recipe.epochs != planned:
        raise DigitsError(f"--epochs {recipe.epochs}: {checkpoint} follows a one-cycle schedule "
                          f"planned for {planned} epochs, which cannot change; resume without "
                          "--epochs, or train a new run")
    # Where and how it runs may change; stopping rules not given again are the run's own.
    config = TrainConfig(**{**saved, "epochs": recipe.epochs, "resume": True, "out": folder,
                            "device": config.device, "threads": config.threads, "report": config.report,
                            "tensorboard": config.tensorboard, "precision": config.precision,
                            "compile": config.compile, "data_dir": config.data_dir or saved["data_dir"],
                            **{rule: getattr(config, rule) for rule in ("target_accuracy", "time_limit")
                               if getattr(config, rule) is not None}})
    return config, recipe, resumed


def _check_settings(config: TrainConfig, recipe: Recipe) -> None:
    for setting in ("epochs", "batch_size", "lr"):
        value = getattr(recipe, setting)
        if not (value > 0 and math.isfinite(value)):
            raise DigitsError(f"{_flag(setting)} {value:g}: give a positive number")
        if setting != "lr" and value != int(value):
            raise DigitsError(f"{_flag(setting)} {value:g}: give a whole number")
    if config.target_accuracy is not None and not 0 < config.target_accuracy <= 1:
        raise DigitsError(f"--target-accuracy {config.target_accuracy}: give a fraction, e.g. 0.99")
    if config.time_limit is not None and not config.time_limit > 0:
        raise DigitsError(f"--time-limit {config.time_limit}: give a positive number of seconds")


def _train(config: TrainConfig, data: Dataset | None, verbose: bool) -> Run:
    from rich.console import Console

    console = Console(quiet=not verbose, highlight=False, soft_wrap=True)
    if config.resume:
        config, recipe, resumed = _resumed(config)
    else:
        config, resumed = config.with_defaults(), None
        recipe = get_entry(config.model).recipe.with_overrides(epochs=config.epochs, batch_size=config.batch_size,
                                                               lr=config.lr, normalize=config.normalize)
    _check_settings(config, recipe)
    folder = output_folder(Path(config.out) if config.out else default_run_dir(config.model))
    if config.tensorboard:
        output_folder(config.tensorboard, "--tensorboard")
    checkpoint = folder / RUN_CHECKPOINT
    if not config.resume and holds_model(folder):
        raise DigitsError(f"{folder}: already holds a model; give --out a new folder, or --resume to continue it")

    device = distributed.local_device(resolve_device(config.device))
    world = distributed.init(device)
    console.quiet = console.quiet or not world.is_main  # one voice: rank 0's
    precision = resolve_precision(config.precision, device)
    data = data or load_dataset(config.dataset, config.data_dir)
    train_split, validation = split_for_training(data, config.subset, config.holdout)
    images, labels = to_device(train_split.images, device), to_device(train_split.labels, device)
    batch_size = world.local_batch(recipe.batch_size)  # each rank's part of a step's images…
    global_batch = batch_size * world.size  # …which is the recipe's batch unless the ranks do not divide it
    steps_per_epoch = math.ceil(len(world.shard(labels, recipe.batch_size)) / batch_size)

    torch.manual_seed(config.seed)
    model = prepare_model(create_model(config.model, recipe.normalize, recipe.test_time_augment, recipe.temperature),
                          device)
    forward = maybe_compile(world.wrap(model, device), config.compile)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    history: list[dict[str, Any]] = []
    if resumed:
        load_weights(model, resumed, checkpoint)
        optimizer.load_state_dict(resumed["optimizer"])
        history = list(resumed["history"])
        if len(history) >= recipe.epochs or resumed.get("stopped"):
            console.print(f"{folder}: already finished ({len(history)}/{recipe.epochs} epochs"
                          f"{', ' + resumed['stopped'] if resumed.get('stopped') else ''})")
            if world.is_main:
                _write_curves_and_report(folder, history, config, recipe, data, console, only_missing=True)
            return Run(folder, model.eval(), history)
        if scheduler:
            planned = scheduler.total_steps
            scheduler.load_state_dict(resumed["scheduler"])
            if scheduler.total_steps != planned:  # more or fewer images a step: another --nproc
                processes = history[-1].get("processes", 1)
                raise DigitsError(f"--nproc {world.size}: {checkpoint} follows a one-cycle schedule planned "
                                  f"for {processes} process{'es' * (processes != 1)}, which cannot change; "
                                  f"resume with --nproc {processes}")
        console.print(f"Resuming {folder} after epoch {len(history)}/{recipe.epochs}")
    else:
        console.print(f"Training {config.model} ({count_parameters(model):,} parameters) on "
                      f"{data.name}: {len(labels):,} images"
                      f"{f' ({len(validation):,} held out to validate)' if config.holdout else ''}, "
                      f"{recipe.epochs} epoch{'s' * (recipe.epochs > 1)}, batch "
                      f"{global_batch}, lr {recipe.lr:g}, {device.type} {precision}"
                      f"{f', {world.size} processes' if world.size > 1 else ''} → {folder}")
    if world.is_main and not folder.exists():
        # Made now, so that a folder that cannot be made fails before the first epoch, and
        # removed again until the first checkpoint: a run stopped before one leaves nothing.
        folder.mkdir(parents=True)
        folder.rmdir()
    started = resumed["started"] if resumed else datetime.now(timezone.utc).isoformat(timespec="seconds")
    writer = _tensorboard(config.tensorboard) if config.tensorboard and world.is_main else None
    if writer:
        writer.add_images("training digits", images[:32, None].float() / 255, len(history))

    stopped = None
    elapsed = history[-1].get("elapsed", 0.0) if history else 0.0  # training seconds so far
    for epoch in range(len(history), recipe.epochs):
        order = epoch_order(config.seed, epoch, len(labels), recipe.batch_size, world, device)
        model.train()
        seen, loss_sum, correct = 0, torch.zeros((), device=device), torch.zeros((), device=device)
        tick = time.perf_counter()
        with _EpochProgress(console, f"Epoch {epoch + 1}/{recipe.epochs}", steps_per_epoch) as (progress, task):
            for step in range(steps_per_epoch):
                with record_function(STEP_LABEL):
                    index = order[step * batch_size:(step + 1) * batch_size]
                    x, y = as_batch(images[index]), labels[index]
                    if recipe.augment:
                        x = recipe.augment(x)
                    with autocast(device, precision):
                        logits = forward(x).float()
                    loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    lr = optimizer.param_groups[0]["lr"]  # this step's: the schedule moves on after it
                    optimizer.step()
                    if scheduler:
                        scheduler.step()
                seen += len(y)
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                if step % 50 == 49 or step == steps_per_epoch - 1:
                    progress.update(task, completed=step + 1,
                                    stats=f"{seen / (time.perf_counter() - tick):,.0f} img/s loss "
                                          f"{loss_sum.item() / seen:.4f} acc {correct.item() / seen:.4f}")
                if config.time_limit and world.any(elapsed + time.perf_counter() - tick >= config.time_limit):
                    stopped = f"time limit {config.time_limit:g} s reached"
                    break
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - tick
        elapsed += seconds
        seen, loss_sum, correct = world.sum(torch.stack([torch.tensor(float(seen), device=device),
                                                          loss_sum, correct.float()])).tolist()
        if not math.isfinite(loss_sum):  # the weights are lost: the last checkpoint is the last good one
            raise DigitsError(f"training diverged in epoch {epoch + 1} (the loss became {loss_sum / seen}) — "
                              f"lower the learning rate (--lr, {recipe.lr:g} now)")
        val = evaluate(model, validation)
        # Rank 0's figure decides, for every rank: batch norm's running statistics differ a little
        # between ranks, and so would their accuracies and decisions.
        # A run that reaches its target at its last epoch was not stopped: nothing was chosen.
        if (config.target_accuracy and epoch + 1 < recipe.epochs
                and world.any(world.is_main and val.accuracy >= config.target_accuracy)):
            stopped = f"target accuracy {config.target_accuracy:g} reached"
        history.append({"epoch": epoch + 1, "seconds": round(seconds, 3), "elapsed": round(elapsed, 3),
                        "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                        "val_loss": val.loss, "val_accuracy": val.accuracy,
                        "batch_size": global_batch, "lr": lr,
                        "processes": world.size})
        if world.is_main:  # one writer: the other ranks hold the same weights
            save_checkpoint(checkpoint, {
                "model": config.model, "normalize": recipe.normalize,
                "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler else None,
                "classes": list(data.classes), "dataset": data.name,
                "recipe": recipe.as_dict(), "config": _plain(config), "history": history,
                "parameters": count_parameters(model), "device": device.type, "environment": environment(device),
                "precision": precision, "started": started,
                "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "finished": epoch + 1 == recipe.epochs or stopped is not None, "stopped": stopped,
            })
            write_history(folder, history)
        h = history[-1]
        console.print(f"Epoch {epoch + 1}/{recipe.epochs} — {seconds:.1f} s — loss {h['train_loss']:.4f}"
                      f" — accuracy {h['train_accuracy']:.4f} — val_loss {h['val_loss']:.4f}"
                      f" — val_accuracy {h['val_accuracy']:.4f}")
        if writer:
            for metric in ("loss", "accuracy"):
                writer.add_scalar(f"{metric}/train", h[f"train_{metric}"], epoch + 1)
                writer.add_scalar(f"{metric}/validation", h[f"val_{metric}"], epoch + 1)
            writer.add_figure("confusion matrix", confusion_figure(val.confusion(), data.classes), epoch + 1)
            writer.flush()  # a killed run keeps what it logged
        if stopped:
            console.print(f"Stopped: {stopped}, after {elapsed:.1f} s of training")
            break

    if not world.is_main:
        return Run(folder, model.eval(), history)
    console.print(f"{'Validation' if config.holdout else 'Test'} accuracy {history[-1]['val_accuracy']:.2%}"
                  f" — checkpoint {checkpoint}, curves {folder / 'curves.png'}")
    if writer:
        writer.close()
    _write_curves_and_report(folder, history, config, recipe, data, console)
    return Run(folder, model.eval(), history)


def _write_curves_and_report(folder: Path, history: list[dict[str, Any]], config: TrainConfig, recipe: Recipe,
                             data: Dataset, console, only_missing: bool = False) -> None:
    """A finished run's last files: curves.png and, unless --no-report, report.html. With
    ``only_missing``, those a run stopped before writing (a kill after its last checkpoint)."""
    if not (only_missing and (folder / "curves.png").exists()):
        plot_curves(history, folder / "curves.png", recipe.label_smoothing)
    report = folder / REPORT_NAME
    if config.report and len(data.test):  # a dataset without test images has nothing to report on
        from .report import write_report

        if not (only_missing and report.exists()):
            console.print(f"Report {write_report(folder, data=data, device=config.device)}")
    elif not only_missing and report.exists() and not read_only(report):  # it describes fewer epochs
        report.unlink()
        console.print(f"Removed {report}, written before these epochs — `digits report {folder}` writes it anew")


# A resumed ensemble's settings that, when not given again, are as its members began.
MEMBER_SETTINGS = ("model", "dataset", "epochs", "batch_size", "lr", "normalize", "subset", "holdout",
                   "target_accuracy", "time_limit")


def train_ensemble(config: TrainConfig, members: int, data: Dataset | None = None,
                   verbose: bool = True, processes: int | None = None) -> tuple[Path, list[Run]]:
    """Train ``members`` ordinary runs with seeds seed, seed + 1, … into FOLDER/member-k/, then
    write FOLDER/ensemble.json naming them; `load_model(FOLDER)` averages their probabilities.

    ``processes`` members train at once, each in its own process (default: one per GPU,
    else one). With ``resume``, finished members are kept and interrupted ones continue."""
    if members < 1:
        raise DigitsError(f"--ensemble {members}: give a positive number of members")
    device = resolve_device(config.device)
    processes = distributed.default_processes(device) if processes is None else processes
    distributed.check_processes(processes)
    name = f"{config.model or ('*' if config.resume else DEFAULTS['model'])}-ensemble{members}"
    folder = Path(config.out) if config.out else latest_ensemble_dir(name) if config.resume else default_run_dir(name)
    if folder is None:
        raise DigitsError(f"--resume: no ensemble {name}-… to resume under {RUNS_DIR}/; give --out DIR")
    if (folder / RUN_CHECKPOINT).exists():
        raise DigitsError(f"{folder}: already holds a run, not an ensemble; give --out a new folder")
    if (folder / ENSEMBLE_MANIFEST).exists() and not config.resume:
        raise DigitsError(f"{folder}: already holds an ensemble; give --out a new folder, or --resume to continue it")
    if (folder / ENSEMBLE_MANIFEST).exists() and not all(
            Path(member).parent.name.startswith("member-") and Path(member).parent.parent == Path(".")
            for member in read_manifest(folder / ENSEMBLE_MANIFEST)["members"]):
        raise DigitsError(f"{folder}: an ensemble of runs trained elsewhere (made by `digits ensemble`), with "
                          "nothing to resume; give --out a new folder")
    outs = [folder / f"member-{k + 1}" for k in range(members)]
    started = [out / RUN_CHECKPOINT for out in outs if config.resume and (out / RUN_CHECKPOINT).is_file()]
    if started:  # as a resumed run does, go on as the members began, also those yet to start
        begun = load_checkpoint(started[0])["config"]
        first = begun["seed"] - outs.index(started[0].parent)  # member k's seed is the first's + k
        config = replace(config, data_dir=config.data_dir or begun["data_dir"],
                         seed=first if config.seed is None else config.seed,
                         **{key: begun.get(key) for key in MEMBER_SETTINGS if getattr(config, key) is None})
    config = config.with_defaults()
    if config.seed + members - 1 > MAX_SEED:  # member k trains with seed + k - 1
        raise DigitsError(f"--seed {config.seed}: its {members} members need seeds up to {MAX_SEED}; give at most "
                          f"{MAX_SEED - members + 1}")
    configs = [replace(config, seed=config.seed + k, out=out, resume=out / RUN_CHECKPOINT in started)
               for k, out in enumerate(outs)]
    data = data or load_dataset(config.dataset, config.data_dir)
    if processes == 1:
        runs = [train(member, data, verbose) for member in configs]
    else:
        processes = min(processes, members)
        if verbose:
            print(f"Training {members} members of {config.model}, {processes} at a time → {folder}", flush=True)
        distributed.spawn(_train_members, (configs, data, processes, verbose), processes)
        runs = [_finished_run(member.out) for member in configs]
    if not distributed.init(device).is_main:  # under torchrun, ranks trained the members together
        return folder, runs
    validation = split_for_training(data, config.subset, config.holdout)[1]
    # Members trained in other processes come back from their checkpoints, on the CPU.
    accuracy = evaluate(Ensemble([run.model for run in runs]).to(device).eval(), validation).accuracy
    member_accuracy = [run.accuracy for run in runs]
    save_ensemble(folder, [run.checkpoint for run in runs], config.model, member_accuracy=member_accuracy,
                  accuracy=accuracy, **({"holdout": config.holdout} if config.holdout else {}))
    if verbose:
        print(f"Ensemble of {members}: {'validation' if config.holdout else 'test'} accuracy {accuracy:.2%}"
              f" (members {', '.join(f'{a:.2%}' for a in member_accuracy)}) — {folder}")
    return folder, runs


def _train_members(worker: int, configs: list[TrainConfig], data: Dataset, processes: int, verbose: bool) -> None:
    """Ensemble worker ``worker`` of ``processes`` trains members worker, worker + processes, …"""
    for config in configs[worker::processes]:
        sys.stdout = _Tagged(sys.__stdout__, f"{Path(config.out).name} | ")  # members share the terminal
        train(config, data, verbose)


class _Tagged(io.TextIOBase):
    """A text stream that starts every line with a tag (and, not being a terminal, gets no
    live progress bars, which several processes cannot share)."""

    def __init__(self, stream: io.TextIOBase, tag: str):
        self.stream, self.tag, self.line_start = stream, tag, True

    def write(self, text: str) -> int:
        for piece in text.splitlines(keepends=True):
            self.stream.write(self.tag + piece if self.line_start else piece)
            self.line_start = piece.endswith("\n")
        self.stream.flush()
        return len(text)


def _finished_run(folder: Path) -> Run:
    model, payload = load_model(folder / RUN_CHECKPOINT)
    return Run(folder, model, payload["history"])


def environment(device: torch.device) -> dict[str, Any]:
    """What a run ran on, for the record."""
    processor = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"digits": __version__, "python": platform.python_version(), "torch": str(torch.__version__),
            "numpy": np.__version__, "platform": platform.platform(), "processor": processor or platform.machine(),
            "threads": torch.get_num_threads()}


def _tensorboard(folder: str | Path):
    """A SummaryWriter; TensorBoard is an optional extra, imported only when asked for."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DigitsError("--tensorboard needs TensorBoard: pip install 'digits[tensorboard]'") from None
    return SummaryWriter(str(folder))


def _plain(config: TrainConfig) -> dict[str, Any]:
    """The configuration as JSON-like values, so the checkpoint loads with weights_only."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}


def write_history(folder: Path, history: list[dict[str, Any]]) -> None:
    """history.json and history.csv: one row per epoch, rewritten after every epoch."""
    write_json(folder / "history.json", history)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write(folder / "history.csv", table.getvalue().encode())


class _EpochProgress:
    """A rich progress bar for one epoch: batches, images/s, loss, accuracy, ETA."""

    def __init__(self, console, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
            console=console, transient=True, disable=console.quiet or not console.is_terminal)
        # The figures come every 50 batches (reading them waits for the device): none until then.
        self.task = self.progress.add_task(description, total=total, stats="img/s, loss and accuracy soon")

    def __enter__(self):
        self.progress.start()
        return self.progress, self.task

    def __exit__(self, *exc):
        self.progress.stop()
