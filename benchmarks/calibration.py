"""Fit a zoo model's reading temperature honestly: trained on the first 50,000 training digits,
the temperature that minimises the log loss on the 10,000 held out (never the test set), for
several seeds, with the expected calibration error at temperature 1, at the fitted one and at
the recipe's. Trains through `digits.train` with `--holdout 10000`.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/calibration.py [--model fast] [--seeds 5] [--subset N] [--threads T]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

import digits
from digits.models import get_entry
from digits.evaluation import calibration
from digits.training import split_for_training

from common import count, run_main

HOLDOUT = 10_000


def log_loss(log_probabilities: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = log_softmax(log_probabilities / temperature, axis=1)
    return float(-scaled[np.arange(len(labels)), labels].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast", help="zoo model (default fast)")
    parser.add_argument("--seeds", type=count, default=5, help="seeds 0, 1, … (default 5)")
    parser.add_argument("--subset", type=count, help="train on the first N training digits only")
    parser.add_argument("--threads", type=count, help="CPU threads for PyTorch (default: its own choice)")
    parser.add_argument("--data-dir", help="folder holding MNIST's four files (default: the usual lookup)")
    args = parser.parse_args()

    recipe_temperature = get_entry(args.model).recipe.temperature
    data = digits.load_dataset("mnist", args.data_dir)
    held_out = split_for_training(data, holdout=HOLDOUT)[1]  # the digits `train` validates on
    labels = held_out.labels.numpy()
    fitted = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as out:
            run = digits.train(digits.TrainConfig(model=args.model, seed=seed, holdout=HOLDOUT, subset=args.subset,
                                                  threads=args.threads, out=out, report=False),
                               data=data, verbose=False)
        network = run.model
        network.temperature = 1.0
        # Log-probabilities: what a temperature divides, also for a model that averages two readings.
        log_probabilities = np.log(np.maximum(digits.evaluate(network, held_out).probabilities, 1e-30))
        fitted.append(minimize_scalar(lambda t: log_loss(log_probabilities, labels, t), bounds=(0.05, 5),
                                      method="bounded").x)
        errors = {t: calibration(softmax(log_probabilities / t, axis=1), labels)[3]
                  for t in (1.0, fitted[-1], recipe_temperature)}
        print(f"seed {seed}: temperature {fitted[-1]:.3f}; expected calibration error {errors[1.0]:.4f} at 1, "
              f"{errors[fitted[-1]]:.4f} fitted, {errors[recipe_temperature]:.4f} at the recipe's "
              f"{recipe_temperature:g}; log loss {log_loss(log_probabilities, labels, 1.0):.4f} at 1, "
              f"{log_loss(log_probabilities, labels, recipe_temperature):.4f} at the recipe's", flush=True)
    print(f"{args.model}: fitted temperatures {min(fitted):.3f}–{max(fitted):.3f}, "
          f"median {statistics.median(fitted):.3f}; the recipe reads at {recipe_temperature:g}")


if __name__ == "__main__":
    run_main(main)
