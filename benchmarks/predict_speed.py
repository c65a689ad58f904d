"""Prediction speed of both backends, and how closely the ONNX export agrees with PyTorch.

Prints medians over --repeats runs:
- batch: the 10,000 MNIST test digits, already MNIST-style, through predict_prepared, on
  PyTorch at its default precision (bf16 where the CPU computes it natively) and in fp32, and
  on ONNX Runtime (the target for the `fast` model is 50,000 images/s or more on 2 CPU cores);
- photo: one 4000×3000 JPEG photo of a digit, opened, prepared and predicted (target ≤ 100 ms),
  and the part of that spent preparing;
- agreement on the whole test set (argmax, max |Δprobability|): ONNX Runtime against PyTorch
  in fp32, and PyTorch's default precision against fp32.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/predict_speed.py --model runs/fast-…/model.pt

Without --onnx the checkpoint is exported to a temporary file first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import digits
from digits.export import export_onnx

from common import count, run_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pictures import big_canvas_off_centre  # noqa: E402


def median_seconds(work, repeats: int) -> float:
    work()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint (.pt)")
    parser.add_argument("--onnx", help="its ONNX export (default: exported now to a temporary file)")
    parser.add_argument("--data-dir", help="folder of the MNIST files (default: $DIGITS_DATA_DIR/mnist)")
    parser.add_argument("--repeats", type=count, default=7)
    args = parser.parse_args()

    test = digits.load_dataset("mnist", args.data_dir).test
    images = test.images.numpy()
    with tempfile.TemporaryDirectory() as folder:
        onnx_file = args.onnx or export_onnx(args.model, Path(folder) / "model.onnx")["onnx"]
        backends = {"torch": digits.load(args.model), "torch fp32": digits.load(args.model, precision="fp32"),
                    "onnx": digits.load(onnx_file)}
        info = backends["torch"].info
        print(f"model {info['name']} ({info['parameters']:,} parameters); torch is {info['precision']} "
              f"(its default here); median of {args.repeats} runs")

        for backend, classifier in backends.items():
            seconds = median_seconds(lambda: classifier.predict_prepared(images), args.repeats)
            print(f"batch  {backend:10}  {len(images) / seconds:9,.0f} images/s  "
                  f"({len(images):,} prepared test digits in {seconds * 1e3:.1f} ms)")

        photo = Path(folder) / "photo.jpg"
        big_canvas_off_centre(images[0], canvas=(4000, 3000), size=1200, seed=0).save(photo, quality=90)
        for backend in ("torch", "onnx"):
            seconds = median_seconds(lambda: backends[backend].predict(photo), args.repeats)
            print(f"photo  {backend:10}  {seconds * 1e3:9.1f} ms  (4000×3000 JPEG of "
                  f"{photo.stat().st_size / 1e6:.1f} MB: open, prepare, predict)")
        seconds = median_seconds(lambda: digits.prepare(photo), args.repeats)
        print(f"photo  {'prepare':10}  {seconds * 1e3:9.1f} ms  (of that: open and prepare alone)")

        probabilities = {backend: c.predict_prepared(images) for backend, c in backends.items()}
        for a, b in (("onnx", "torch fp32"), ("torch", "torch fp32")):
            agree = (probabilities[a].argmax(1) == probabilities[b].argmax(1)).mean()
            print(f"{a} against {b} on {len(images):,} test digits: argmax agrees {agree:.2%}, "
                  f"max |Δprobability| {np.abs(probabilities[a] - probabilities[b]).max():.1e}")


if __name__ == "__main__":
    run_main(main)
