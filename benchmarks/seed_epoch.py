"""Seconds per epoch of the seed CNN with its recipe (batch 32) on the MNIST training set (or its first N images).

Trains through `digits.train`, the code path `digits train` uses, into a temporary run
folder, and reads each epoch's training time from the run's history (validation is not
counted). Prints the run's own lines (device, precision, one line per epoch), then the
median seconds per epoch and training images per second.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/seed_epoch.py [--epochs 2] [--threads T] [--subset N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

import digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: its own choice)")
    parser.add_argument("--subset", type=int, help="train on the first N training images only (a quicker measure)")
    parser.add_argument("--data-dir", help="folder holding MNIST's four files (default: the usual lookup)")
    args = parser.parse_args()

    data = digits.load_dataset("mnist", args.data_dir)
    with tempfile.TemporaryDirectory() as out:
        run = digits.train(digits.TrainConfig(model="seed", epochs=args.epochs, threads=args.threads,
                                              subset=args.subset, out=out, report=False), data=data)
    seconds = [row["seconds"] for row in run.history]
    median = statistics.median(seconds)
    images = len(data.train.first(args.subset))
    print(f"seed, batch 32, {images:,} images, threads: {args.threads or torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    print(f"epochs: {', '.join(f'{s:.1f} s' for s in seconds)}")
    print(f"median: {median:.1f} s/epoch, {images / median:,.0f} training images/s")


if __name__ == "__main__":
    main()
