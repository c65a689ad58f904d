"""`digits benchmark`: how fast and how well each zoo model trains, in one run on one machine.

Every model trains with its own recipe through `train`, the code path `digits train` uses,
validating on the test set after every epoch. Per model: median seconds per epoch (training
only), training images per second, the training time at which test accuracy first reached
99.0% and 99.5%, the final accuracy, and inference images per second. When TensorFlow and
Keras are importable, the Keras tutorial's own model and code train on the same data in the
same run, so the seed CNN's epoch time can be compared as a ratio on equal terms.

To show how close each model runs to what the machine can do, it also counts the work of
one training step per image (forward and backward, as PyTorch's flop counter counts it),
the rate training achieved, and the rate of a large matrix product on the same device at
the same precision: the practical peak. `profile_steps` shows where a step's time goes:
per kind of layer, forward and backward, and the rate its convolutions reach.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from .data import Dataset, Split
from .engine import autocast, cpu_threads, predict_logits, resolve_device, resolve_precision
from .errors import DigitsError
from .files import output_file, write_json
from .models import count_parameters, create_model, get_entry
from .training import STEP_LABEL, Run, TrainConfig, train

TARGETS = (0.99, 0.995)
PEAK_SIZE = 2048  # the matrix product that measures the peak: large enough to run at full speed
PROFILE_IMAGES = 12_800  # training images per profiled model: 100 steps at batch 128
PROFILE_WARMUP = 5  # the first steps also create oneDNN's kernels, so they are not counted
# Each operator a training step calls, and each autograd node its backward pass runs, counts
# under the first part with a fragment of its name (lower case); the rest are "other operators".
STEP_PARTS = (
    ("convolutions, backward", ("convolutionbackward",)),
    ("convolutions, forward", ("conv",)),
    ("dense layers", ("linear", "addmm", "aten::mm", ": mmbackward", ": tbackward")),
    ("batch norm", ("batch_norm", "batchnorm")),
    ("pooling", ("pool", "meanbackward")),  # global average pooling's gradient is a mean's
    ("ReLU", ("relu", "threshold")),
    ("loss", ("cross_entropy", "nll", "log_softmax", "logsoftmax")),
    ("optimizer", ("optimizer.", "accumulategrad")),
    ("augmentation", ("affine_grid", "grid_sampler", "upsample")),
    ("batching", ("aten::index", "aten::to")),  # the batch gathered and made float
)
# The operators whose flops each part does, as the flop counter names them.
PART_FLOPS = {"convolutions, forward": ("aten.convolution",),
              "convolutions, backward": ("aten.convolution_backward",),
              "dense layers": ("aten.addmm", "aten.mm")}


def flop_counts(name: str) -> dict[str, float]:
    """Floating-point operations of one training step per image of a zoo model, forward and
    backward, by operator as the flop counter names it: {"aten.convolution": …,
    "aten.convolution_backward": …, "aten.addmm": …, "aten.mm": …}."""
    from torch.utils.flop_counter import FlopCounterMode

    model, images = create_model(name), torch.zeros(16, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        model(images).sum().backward()
    return {str(op): flops / len(images) for op, flops in counter.get_flop_counts()["Global"].items()}


def training_flops(name: str) -> float:
    """Floating-point operations of one training step per image of a zoo model, forward and backward."""
    return sum(flop_counts(name).values())


def training_rates(epoch_seconds: list[float], images: int, flops_per_image: float) -> dict[str, Any]:
    """Each epoch's seconds, their median, and the images and flops per second at that median."""
    seconds = statistics.median(epoch_seconds)
    return {"epochs": len(epoch_seconds), "epoch_seconds": epoch_seconds, "seconds_per_epoch": seconds,
            "train_images_per_s": images / seconds, "train_mflop_per_image": flops_per_image / 1e6,
            "train_gflops": flops_per_image * images / seconds / 1e9}


def peak_gflops(device: torch.device, precision: str, repeats: int = 10) -> float:
    """GFLOP/s of a PEAK_SIZE² matrix product at ``precision``: the fastest of ``repeats``.

    A peak is what the hardware can do, and noise from a shared machine only ever slows a
    product down. On the 2-core CPU the median of five ranged over 185–352 GFLOP/s in bf16
    within a minute, the fastest of ten over 353–364."""
    a, b = (torch.randn(PEAK_SIZE, PEAK_SIZE, device=device) for _ in range(2))
    seconds = []
    for _ in range(repeats + 1):  # the first product warms up and is not counted
        tick = time.perf_counter()
        with autocast(device, precision):
            (a @ b).sum().item()  # .item() waits for a GPU to finish
        seconds.append(time.perf_counter() - tick)
    return 2 * PEAK_SIZE**3 / min(seconds[1:]) / 1e9


def inference_rate(model: torch.nn.Module, images: torch.Tensor, device: torch.device, precision: str,
                   repeats: int = 3) -> float:
    """Test images classified per second at ``precision``, the row's (`digits evaluate` reads
    in fp32), in forward passes of the size evaluate uses; the median of ``repeats`` passes over
    the test set."""
    seconds = []
    for _ in range(repeats + 1):  # the first pass warms up oneDNN's kernels and is not counted
        tick = time.perf_counter()
        with autocast(device, precision):
            predict_logits(model, images)
        seconds.append(time.perf_counter() - tick)
    return len(images) / statistics.median(seconds[1:])


def model_row(run: Run, data: Dataset, device: torch.device, precision: str) -> dict[str, Any]:
    return {"model": run.model.name, "parameters": count_parameters(run.model), "precision": precision,
            **training_rates([h["seconds"] for h in run.history], len(data.train), training_flops(run.model.name)),
            **{f"time_to_{t:.1%}": run.time_to(t) for t in TARGETS},
            "training_seconds": run.history[-1]["elapsed"], "accuracy": run.accuracy,
            "inference_images_per_s": inference_rate(run.model, data.test.images, device, precision)}


def keras_row(data: Dataset, epochs: int) -> dict[str, Any] | None:
    """The Keras tutorial's CNN, as its code trains it; None if TensorFlow or Keras is missing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras
        import tensorflow  # noqa: F401  (the backend the tutorial ran on)
    except ImportError:
        return None
    from keras import layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(64, 3, activation="relu"),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPool2D(),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x_train, y_train = _keras_arrays(data.train, keras)
    x_test, y_test = _keras_arrays(data.test, keras)

    class EpochClock(keras.callbacks.Callback):
        """Each epoch's training time, then its test accuracy, measured outside that time."""

        def __init__(self):
            super().__init__()
            self.seconds, self.accuracy = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.tick = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.tick)
            self.accuracy.append(self.model.evaluate(x_test, y_test, batch_size=1000, verbose=0)[1])

    clock = EpochClock()
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, callbacks=[clock], verbose=0)
    elapsed = list(itertools.accumulate(clock.seconds))
    predict = []
    for _ in range(4):
        tick = time.perf_counter()
        model.predict(x_test, batch_size=1000, verbose=0)
        predict.append(time.perf_counter() - tick)
    return {"model": "keras tutorial", "keras": keras.__version__, "parameters": model.count_params(),
            "precision": "fp32",
            **training_rates(clock.seconds, len(data.train), training_flops("seed")),  # the seed CNN, layer for layer
            **{f"time_to_{t:.1%}": next((s for s, a in zip(elapsed, clock.accuracy) if a >= t), None)
               for t in TARGETS},
            "training_seconds": elapsed[-1], "accuracy": float(clock.accuracy[-1]),
            "inference_images_per_s": len(data.test) / statistics.median(predict[1:])}


def _keras_arrays(split: Split, keras):
    """Raw 0–255 pixels and one-hot labels, as the tutorial feeds them."""
    return split.images.numpy()[..., None].astype("float32"), keras.utils.to_categorical(split.labels.numpy(), 10)


def benchmark(data: Dataset, models: tuple[str, ...] = ("seed", "fast"), epochs: int | None = None,
              keras: bool = True, precision: str = "auto", device: str = "auto", subset: int | None = None,
              threads: int | None = None, out: str | Path | None = None, verbose: bool = True) -> dict[str, Any]:
    """Train each model (and the Keras tutorial's, if importable) and measure; writes ``out`` as JSON.

    ``subset`` trains on the first N training images only: a quicker measure of epoch time
    and images/s (accuracy is still measured on the whole test set)."""
    _check_names_and_out(models, out)
    target = resolve_device(device)
    data = Dataset(data.name, data.classes, data.train.first(subset), data.test)
    with cpu_threads(threads):  # training, classifying and the peak alike
        rows = []
        for name in models:
            if verbose:  # in place of train's own lines, which name its run folder, soon deleted
                print(f"Training {name}…", flush=True)
            with tempfile.TemporaryDirectory() as folder:
                run = train(TrainConfig(model=name, epochs=epochs, precision=precision, device=device,
                                        out=folder, report=False), data, verbose=False)
            rows.append(model_row(run, data, target, resolve_precision(precision, target)))
        result: dict[str, Any] = {"dataset": data.name, "train_images": len(data.train), "device": target.type,
                                  "threads": torch.get_num_threads(),
                                  "torch": str(torch.__version__), "rows": rows}
        if keras:
            keras_epochs = next((r["epochs"] for r in rows if r["model"] == "seed"), epochs or 10)
            row = keras_row(data, keras_epochs)
            if row:
                rows.append(row)
                seed = next((r for r in rows if r["model"] == "seed"), None)
                if seed:
                    result["seed_to_keras_epoch_ratio"] = seed["seconds_per_epoch"] / row["seconds_per_epoch"]
        with torch.inference_mode():
            result["peak_gflops"] = {p: peak_gflops(target, p) for p in sorted({r["precision"] for r in rows})}
        for row in rows:
            row["share_of_peak"] = row["train_gflops"] / result["peak_gflops"][row["precision"]]
    if out:
        write_json(out, result)
    return result


def step_part(operator: str) -> str:
    name = operator.lower()
    return next((part for part, fragments in STEP_PARTS if any(f in name for f in fragments)), "other operators")


def profile(data: Dataset, models: tuple[str, ...] = ("seed", "fast"), images: int | None = None,
            precision: str = "auto", device: str = "auto", threads: int | None = None,
            out: str | Path | None = None) -> list[dict[str, Any]]:
    """profile_steps for each model; writes ``out`` as JSON, {"profiles": [...]}."""
    _check_names_and_out(models, out)
    profiles = [profile_steps(data, name, images, precision, device, threads) for name in models]
    if out:
        write_json(out, {"profiles": profiles})
    return profiles


def _check_names_and_out(models: tuple[str, ...], out: str | Path | None) -> None:
    """A misspelt model name or an --out that cannot be written fails now, not after the
    models before it have trained."""
    for name in models:
        get_entry(name)
    if out:
        output_file(out, ".json", "the results are written as JSON")


def profile_steps(data: Dataset, name: str, images: int | None = None, precision: str = "auto",
                  device: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Where the time of a training step of zoo model ``name`` goes, on the CPU.

    Trains one epoch on the first ``images`` training images (default PROFILE_IMAGES) through
    `train`, under torch's profiler, and adds up each step's operators by part (STEP_PARTS);
    "outside operators" is the rest of the step (Python, the autograd engine's own work). Parts
    with a flop count get their rate and its share of the measured peak."""
    target = torch.device("cpu") if device == "auto" else resolve_device(device)  # auto: the CPU, even beside a GPU
    if target.type != "cpu":
        raise DigitsError(f"--profile times operators on the CPU, where they run in order, not on "
                          f"{target.type}; add --device cpu")
    images = PROFILE_IMAGES if images is None else images
    batch_size = get_entry(name).recipe.batch_size
    whole_steps = images // batch_size * batch_size  # a short last step would be counted as a whole one
    if images // batch_size <= PROFILE_WARMUP:  # at least one whole step must follow the warm-up
        raise DigitsError(f"--subset {images}: too few images to profile {name} after its first "
                          f"{PROFILE_WARMUP} steps of {batch_size}; give --subset "
                          f"{(PROFILE_WARMUP + 1) * batch_size} or more")
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # the profiler's start and stop lines (level 5) on stderr
    small = Dataset(data.name, data.classes, data.train.first(whole_steps), data.test.take(slice(0, 16)))
    with cpu_threads(threads), warnings.catch_warnings():
        # Some torch versions warn, as the profiler starts, that a second cycle would drop the
        # first one's events; there is one cycle.
        warnings.filterwarnings("ignore", "Warning: Profiler clears events", UserWarning)
        with tempfile.TemporaryDirectory() as folder, torch.profiler.profile() as profiler:
            train(TrainConfig(model=name, epochs=1, precision=precision, device="cpu", out=folder, report=False),
                  small, verbose=False)
        steps = sorted((e for e in profiler.events() if e.name == STEP_LABEL), key=lambda e: e.time_range.start)
        steps = steps[PROFILE_WARMUP:]
        precision = resolve_precision(precision, target)
        with torch.inference_mode():
            peak = peak_gflops(target, precision)
        used_threads = torch.get_num_threads()
    microseconds = dict.fromkeys([part for part, _ in STEP_PARTS] + ["other operators", "outside operators"], 0.0)
    for step in steps:
        for operator in step.cpu_children:
            microseconds[step_part(operator.name)] += operator.cpu_time_total
        microseconds["outside operators"] += step.cpu_time_total - sum(o.cpu_time_total for o in step.cpu_children)
    step_ms = sum(microseconds.values()) / len(steps) / 1e3
    flops = flop_counts(name)
    parts = []
    for part, total in microseconds.items():
        if not total:
            continue  # a part this model has none of, such as batch norm in the seed CNN
        ms = total / len(steps) / 1e3
        work = sum(flops.get(op, 0.0) for op in PART_FLOPS.get(part, ())) * batch_size
        gflops = work / ms / 1e6 if work else None
        parts.append({"part": part, "ms_per_step": ms, "share": ms / step_ms, "gflops": gflops,
                      "share_of_peak": gflops / peak if gflops else None})
    gflops = sum(flops.values()) * batch_size / step_ms / 1e6
    return {"model": name, "batch_size": batch_size, "precision": precision, "threads": used_threads,
            "steps": len(steps), "ms_per_step": step_ms, "gflops": gflops, "peak_gflops": peak,
            "share_of_peak": gflops / peak, "parts": parts}
