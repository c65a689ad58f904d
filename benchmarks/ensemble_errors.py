"""How much an ensemble's members disagree: for each test digit the ensemble misreads, how many
of its members misread it too.

If most of the ensemble's mistakes are shared by most members, more members of the same recipe
are unlikely to mend them; members that err differently might.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/ensemble_errors.py runs/best-x10
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

import digits
from digits.models import Ensemble

from common import run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ensemble", help="an ensemble's folder or its ensemble.json")
    parser.add_argument("--data-dir", help="folder holding MNIST's four files (default: the usual lookup)")
    args = parser.parse_args()

    ensemble, payload = digits.load_model(args.ensemble)
    if not isinstance(ensemble, Ensemble):
        raise digits.DigitsError(f"{args.ensemble} is one model, not an ensemble; "
                                 "give an ensemble's folder or its ensemble.json")
    test = digits.load_dataset(payload.get("dataset", "mnist"), args.data_dir).test
    # The ensemble averages its members' probabilities; so does this, from the members' own readings.
    probabilities = np.stack([digits.evaluate(member, test).probabilities for member in ensemble.members])
    labels = test.labels.numpy()
    wrong = probabilities.argmax(2) != labels  # (member, digit)
    members_wrong = wrong.sum(0)
    ensemble_wrong = probabilities.mean(0).argmax(1) != labels

    members = len(wrong)
    print(f"{members} members, each wrong on: {', '.join(map(str, wrong.sum(1)))} of {len(labels):,} test digits")
    print(f"the ensemble is wrong on {ensemble_wrong.sum()} ({1 - ensemble_wrong.mean():.2%} right)")
    shared = Counter(members_wrong[ensemble_wrong].tolist())
    print("its mistakes, by how many members also made them: "
          + ", ".join(f"{k} of {members}: {shared[k]}" for k in sorted(shared, reverse=True)))
    print(f"digits every member misreads: {(members_wrong == members).sum()}; "
          f"misread by some member but read right by the ensemble: {(~ensemble_wrong & (members_wrong > 0)).sum()}")
    print(f"indices of the ensemble's mistakes: {' '.join(map(str, np.flatnonzero(ensemble_wrong)))}")


if __name__ == "__main__":
    run_main(main)
