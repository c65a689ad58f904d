"""Seconds per epoch of the seed CNN with its recipe (batch 32) on the MNIST training set (or its first N images).

Trains through `digits.train`, the code path `digits train` uses, into a temporary run
folder, and reads each epoch's training time from the run's history (validation is not
counted). Prints the device and precision it trains at, then each epoch's seconds, loss and
test accuracy once training ends, the median seconds per epoch and training images per second.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/seed_epoch.py [--epochs 2] [--threads T] [--subset N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

import digits
from digits.engine import resolve_device, resolve_precision

from common import count, run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=count, default=2)
    parser.add_argument("--threads", type=count, help="CPU threads for PyTorch (default: its own choice)")
    parser.add_argument("--subset", type=count, help="train on the first N training images only (a quicker measure)")
    parser.add_argument("--data-dir", help="folder holding MNIST's four files (default: the usual lookup)")
    args = parser.parse_args()

    data = digits.load_dataset("mnist", args.data_dir)
    images = len(data.train.first(args.subset))
    device = resolve_device()  # where, and at what precision, `train` runs by default
    print(f"seed, batch 32, {images:,} images, {device.type} {resolve_precision('auto', device)}, "
          f"threads: {args.threads or torch.get_num_threads()}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        # Quietly: train's own lines name the run folder, which is gone once they could be read.
        run = digits.train(digits.TrainConfig(model="seed", epochs=args.epochs, threads=args.threads,
                                              subset=args.subset, out=out, report=False), data=data, verbose=False)
    for epoch, row in enumerate(run.history, 1):
        print(f"epoch {epoch}: {row['seconds']:.1f} s, loss {row['train_loss']:.4f}, "
              f"test accuracy {row['val_accuracy']:.2%}")
    median = statistics.median(row["seconds"] for row in run.history)
    print(f"median: {median:.1f} s/epoch, {images / median:,.0f} training images/s")


if __name__ == "__main__":
    run_main(main)
