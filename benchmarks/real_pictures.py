"""How well `digits predict` reads real-looking pictures made from MNIST test digits.

Writes the picture set of tests/picture_set.py into a temporary folder — every test digit
chosen as each kind of picture (ink on paper, big canvas off-centre, thick and thin strokes,
JPEG with uneven light, RGBA canvas exports, light on dark) and numbers of 2–4 digits with
gaps and slight overlaps — then reads it exactly as `digits predict` does and prints the
accuracy per kind, overall, on the same digits as MNIST-style images, and the share of
numbers read whole. The digits are the first --count of the test set: reported, never tuned on.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/real_pictures.py --model runs/best-…/model.pt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import digits
from digits.inference import predict_files

from common import count, run_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from picture_set import KINDS, write_numbers, write_pictures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint (.pt) or ONNX file")
    parser.add_argument("--count", type=count, default=300, help="test digits per kind of picture")
    parser.add_argument("--numbers", type=count, default=300, help="number pictures")
    parser.add_argument("--data-dir", help="folder of the MNIST files (default: as `digits data` finds them)")
    args = parser.parse_args()

    test = digits.load_dataset("mnist", args.data_dir).test
    if args.count > len(test):
        raise digits.DigitsError(f"--count {args.count}: the test set has only {len(test):,} digits")
    images, labels = test.images[:args.count].numpy(), test.labels[:args.count].numpy()
    classifier = digits.load(args.model)
    print(f"model {classifier.info['name']} ({classifier.info['source']}), {args.count} test digits "
          f"per kind, {args.numbers} numbers")
    mnist_style = (classifier.predict(images) == labels).mean()

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        pictures = write_pictures(Path(folder) / "pictures", images, labels)
        numbers = write_numbers(Path(folder) / "numbers", test.images.numpy(), test.labels.numpy(),
                                args.numbers)
        print(f"wrote {len(pictures) + len(numbers):,} pictures in {time.perf_counter() - start:.0f} s")

        start = time.perf_counter()
        read = {r["file"]: r.get("digit") for r in predict_files(classifier, [p for p, _, _ in pictures])}
        seconds = time.perf_counter() - start
        right = defaultdict(list)
        for path, kind, label in pictures:
            right[kind].append(read[str(path)] == label)
        for kind in KINDS:
            print(f"{kind:24} {np.mean(right[kind]):7.2%}  ({len(right[kind]) - sum(right[kind])} wrong)")
        overall = np.mean([r for kind in KINDS for r in right[kind]])
        print(f"{'overall':24} {overall:7.2%}  ({len(pictures) / seconds:.0f} pictures/s)")
        print(f"{'same digits, MNIST-style':24} {mnist_style:7.2%}")

        results = predict_files(classifier, [p for p, _ in numbers], number=True)
        read = {r["file"]: r.get("number") for r in results}
        whole = defaultdict(list)
        for path, number in numbers:
            whole[len(number)].append(read[str(path)] == number)
        for length in sorted(whole):
            print(f"numbers of {length} digits         {np.mean(whole[length]):7.2%}  (of {len(whole[length])})")
        print(f"{'numbers read whole':24} {np.mean([w for v in whole.values() for w in v]):7.2%}")


if __name__ == "__main__":
    run_main(main)
