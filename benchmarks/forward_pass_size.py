"""Test digits classified per second by each zoo model against the size of its forward passes.

`predict_logits` sizes a pass on a CPU so that the model's largest activation stays within
engine.CPU_PASS_BYTES (about half the last-level cache); this prints, per model, images/s at that
size ("chosen") and at fixed sizes, measured in one run, rounds interleaved, median of
--repeats. Weights are as built (speed does not depend on them).

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/forward_pass_size.py [--models seed fast best] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import digits
from digits.engine import inference_batch_size, predict_logits, prepare_model
from digits.models import create_model

from common import count, run_main

CPU = torch.device("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["seed", "fast", "best"])
    parser.add_argument("--sizes", nargs="+", type=count, default=[256, 2000])
    parser.add_argument("--repeats", type=count, default=5)
    parser.add_argument("--data-dir", help="folder of the MNIST files (default: $DIGITS_DATA_DIR/mnist)")
    args = parser.parse_args()

    images = digits.load_dataset("mnist", args.data_dir).test.images
    print(f"{len(images):,} test digits, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name in args.models:
        model = prepare_model(create_model(name), CPU).eval()
        sizes = {"chosen": inference_batch_size(model, CPU), **{str(s): s for s in args.sizes}}
        seconds: dict[str, list[float]] = {label: [] for label in sizes}
        for _ in range(args.repeats + 1):  # the first round warms up and is not counted
            for label, size in sizes.items():
                start = time.perf_counter()
                predict_logits(model, images, size)
                seconds[label].append(time.perf_counter() - start)
        rates = "  ".join(f"{label} ({size}): {len(images) / statistics.median(seconds[label][1:]):,.0f}/s"
                          for label, size in sizes.items())
        print(f"{name:5} {rates}", flush=True)


if __name__ == "__main__":
    run_main(main)
