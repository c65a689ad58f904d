"""The `fast` model over several seeds: test accuracy of each, their mean, and the median
training time (training only: validation after the epoch is not counted).

Trains through `digits.train`, the code path `digits train --model fast` uses, with the
model's own recipe and nothing else changed.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/fast_seeds.py [--seeds 5] [--threads T]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

import digits

from common import count, run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast")
    parser.add_argument("--seeds", type=count, default=5)
    parser.add_argument("--threads", type=count, help="CPU threads for PyTorch (default: its own choice)")
    parser.add_argument("--data-dir", help="folder holding MNIST's four files (default: the usual lookup)")
    args = parser.parse_args()

    data = digits.load_dataset("mnist", args.data_dir)
    accuracy, seconds = [], []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as out:
            run = digits.train(digits.TrainConfig(model=args.model, seed=seed, threads=args.threads,
                                                  out=out, report=False), data=data, verbose=False)
        accuracy.append(run.accuracy)
        seconds.append(run.history[-1]["elapsed"])
        print(f"seed {seed}: test accuracy {run.accuracy:.2%}, training {seconds[-1]:.2f} s", flush=True)
    print(f"{args.model}, threads: {args.threads or torch.get_num_threads()}, torch {torch.__version__}: "
          f"mean test accuracy {statistics.mean(accuracy):.2%} over {args.seeds} seeds, "
          f"median training time {statistics.median(seconds):.2f} s")


if __name__ == "__main__":
    run_main(main)
