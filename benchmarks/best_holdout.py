"""Tune `best` honestly: a variant of its recipe trained on 50,000 training digits, read on the
10,000 held out (never the test set), over several seeds, alone and as an ensemble.

Each flag changes one part of the recipe; without flags it measures the recipe as it is. For
every seed it prints the held-out digits misread, reading each twice as `best` does and once,
then how many the seeds' ensemble misreads. Trains through `digits.train` with `--holdout
10000`, the code path of `digits train --model best --holdout 10000`.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/best_holdout.py [--seeds 3] [--epochs 24]
        [--optimizer adamw] [--weight-decay 0.05] [--lr 5e-3] [--rotate 10] [--threads T]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace

import numpy as np
import torch

import digits
from digits.models import get_entry, register_model
from digits.training import split_for_training

from common import count, run_main

HOLDOUT = 10_000


def variant(args: argparse.Namespace) -> str:
    """Register `best`'s network with the recipe the flags describe, as a model of its own."""
    recipe = get_entry("best").recipe
    augment = recipe.augment if args.rotate is None else replace(recipe.augment, rotate=args.rotate)
    recipe = replace(recipe.with_overrides(epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
                                           weight_decay=args.weight_decay), augment=augment)
    print(f"best's network, {recipe}", flush=True)

    def best_variant() -> torch.nn.Module:
        """`best`'s network with a recipe under trial."""
        return get_entry("best").build()

    register_model(recipe)(best_variant)
    return best_variant.__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=count, default=3, help="seeds 0, 1, … (default 3)")
    parser.add_argument("--epochs", type=count)
    parser.add_argument("--lr", type=float, help="the peak learning rate")
    parser.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--rotate", type=float, help="largest random rotation, degrees")
    parser.add_argument("--subset", type=count, help="train on the first N training digits only")
    parser.add_argument("--threads", type=count, help="CPU threads for PyTorch (default: its own choice)")
    parser.add_argument("--data-dir", help="folder holding MNIST's four files (default: the usual lookup)")
    args = parser.parse_args()

    model = variant(args)
    data = digits.load_dataset("mnist", args.data_dir)
    held_out = split_for_training(data, holdout=HOLDOUT)[1]  # the digits `train` validates on
    labels = held_out.labels.numpy()
    readings, wrong, seconds = [], [], []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as out:
            run = digits.train(digits.TrainConfig(model=model, seed=seed, holdout=HOLDOUT, subset=args.subset,
                                                  threads=args.threads, out=out, report=False),
                               data=data, verbose=False)
        network = run.model
        readings.append(digits.evaluate(network, held_out).probabilities)
        network.test_time_augment = False
        once = digits.evaluate(network, held_out).probabilities
        wrong.append(int((readings[-1].argmax(1) != labels).sum()))
        seconds.append(run.history[-1]["elapsed"])
        print(f"seed {seed}: misreads {wrong[-1]} of {len(labels):,} held-out digits reading twice, "
              f"{(once.argmax(1) != labels).sum()} reading once; training {seconds[-1]:.0f} s", flush=True)
    ensemble = (np.mean(readings, 0).argmax(1) != labels).sum()
    print(f"mean {statistics.mean(wrong):.1f} misread ({1 - statistics.mean(wrong) / len(labels):.2%} right); "
          f"the ensemble of {args.seeds} misreads {ensemble}; median training time {statistics.median(seconds):.0f} s")


if __name__ == "__main__":
    run_main(main)
