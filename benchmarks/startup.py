"""Seconds from the shell to a `digits` command's answer, imports included: `digits --help`, and
`digits predict` on one picture with a run's checkpoint (and with its ONNX export, when
`digits export` has written one). Each command runs --repeats times, interleaved; medians.

    DIGITS_DATA_DIR=DATA_ROOT python benchmarks/startup.py --model RUN [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

import digits
from digits.files import model_file

from common import count, run_main


def seconds_to_answer(label: str, command: list[str | Path]) -> float:
    """Seconds `digits COMMAND` took to answer; one that fails ends the benchmark with its own
    last line of error (its arguments are left out: they name a temporary picture)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "digits", *map(str, command)], check=False,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        said = done.stderr.strip().splitlines()
        raise digits.DigitsError(f"{label} failed: {said[-1] if said else f'exit status {done.returncode}'}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run's folder or its checkpoint")
    parser.add_argument("--repeats", type=count, default=5)
    parser.add_argument("--data-dir", help="folder of the MNIST files (default: $DIGITS_DATA_DIR/mnist)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        picture = Path(folder) / "digit.png"
        Image.fromarray(255 - digits.load_dataset("mnist", args.data_dir).test.images[0].numpy()).save(picture)
        commands = {"digits --help": ["--help"],
                    "digits predict (torch)": ["predict", "--model", args.model, picture]}
        if model_file(args.model).with_suffix(".onnx").exists():  # where `digits.load` looks for the export
            commands["digits predict (onnx)"] = ["predict", "--model", args.model, "--backend", "onnx", picture]
        seconds: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.repeats + 1):  # the first round fills the file cache and is not counted
            for label, command in commands.items():
                seconds[label].append(seconds_to_answer(label, command))
    for label, times in seconds.items():
        print(f"{label:24} median {statistics.median(times[1:]):.2f} s  ({', '.join(f'{t:.2f}' for t in times[1:])})")


if __name__ == "__main__":
    run_main(main)
