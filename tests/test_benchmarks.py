"""The benchmark scripts run and print what their documentation says, on the smallest settings
(their figures are measured by running them, never here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from digits import make_ensemble

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str | Path, timeout: float = 300) -> str:
    """Run benchmarks/NAME with ARGS as a user would; its standard output."""
    env = {**os.environ, "DIGITS_DATA_DIR": str(Path(os.environ["DIGITS_DATA_DIR"]).resolve())}
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def percent(text: str, label: str) -> float:
    return float(re.search(rf"{label}\s+([\d.]+)%", text).group(1))


def test_every_script_is_tested():
    tested = set(re.findall(r'run_script\("(\w+\.py)"', Path(__file__).read_text()))
    assert tested == {path.name for path in BENCHMARKS.glob("*.py")}


def test_seed_epoch():
    out = run_script("seed_epoch.py", "--epochs", "1", "--subset", "640")
    assert "seed, batch 32, 640 images" in out
    assert re.search(r"median: [\d.]+ s/epoch, [\d,]+ training images/s", out)


def test_fast_seeds():
    out = run_script("fast_seeds.py", "--seeds", "1")
    accuracy = float(re.search(r"seed 0: test accuracy ([\d.]+)%", out).group(1))
    assert accuracy > 98.5  # one epoch of the `fast` recipe on the whole training set


def test_forward_pass_size():
    out = run_script("forward_pass_size.py", "--models", "fast", "--sizes", "256", "--repeats", "1")
    assert "10,000 test digits" in out and re.search(r"^fast ", out, re.MULTILINE)


def test_ensemble_errors_of_two_copies_of_one_model(learned, tmp_path):
    for copy in ("a", "b"):
        (tmp_path / copy).mkdir()
        shutil.copy(learned.checkpoint, tmp_path / copy / "model.pt")
    make_ensemble([tmp_path / "a", tmp_path / "b"], tmp_path / "pair")
    out = run_script("ensemble_errors.py", tmp_path / "pair")
    # Two copies make the same mistakes, which are the ensemble's: every one shared by both.
    each = re.search(r"2 members, each wrong on: (\d+), (\d+) of 10,000", out).groups()
    ensemble = re.search(r"the ensemble is wrong on (\d+)", out).group(1)
    every = re.search(r"digits every member misreads: (\d+)", out).group(1)
    assert each[0] == each[1] == ensemble == every and int(ensemble) > 0


def test_predict_speed(learned):
    out = run_script("predict_speed.py", "--model", learned.checkpoint, "--repeats", "1")
    assert re.search(r"^batch  onnx\s+[\d,]+ images/s", out, re.MULTILINE)
    assert re.search(r"^photo  torch\s+[\d.]+ ms", out, re.MULTILINE)
    agreement = re.findall(r"argmax agrees ([\d.]+)%", out)
    assert agreement and all(float(a) >= 99 for a in agreement)


def test_real_pictures(learned):
    out = run_script("real_pictures.py", "--model", learned.checkpoint, "--count", "3", "--numbers", "3")
    assert 0 <= percent(out, "overall") <= 100 and 0 <= percent(out, "numbers read whole") <= 100


def test_startup(learned):
    out = run_script("startup.py", "--model", learned.folder, "--repeats", "1")
    assert re.search(r"^digits --help\s+median [\d.]+ s", out, re.MULTILINE)
    assert re.search(r"^digits predict \(torch\)\s+median [\d.]+ s", out, re.MULTILINE)


def test_serve_load(learned):
    out = run_script("serve_load.py", "--model", learned.checkpoint, "--seconds", "1", "--rate", "100")
    rows = re.findall(r"^(\d+) connections, .*?\s+[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)", out, re.MULTILINE)
    assert [int(connections) for connections, _, _ in rows] == [8, 8, 32]
    assert all(int(served) > 0 and int(errors) == 0 for _, served, errors in rows)


def test_best_holdout():
    out = run_script("best_holdout.py", "--seeds", "2", "--epochs", "1", "--subset", "2000",
                     "--optimizer", "adam", "--weight-decay", "0", "--rotate", "15")
    # Each flag differs from best's own recipe (AdamW, weight decay 0.05, ±10°), so it must show.
    assert "optimizer='adam'" in out and "weight_decay=0.0," in out and "rotate=15" in out
    each = [int(n) for n in re.findall(r"seed \d: misreads (\d+) of 10,000 held-out digits reading twice", out)]
    mean, ensemble = re.search(r"mean ([\d.]+) misread .* the ensemble of 2 misreads (\d+)", out).groups()
    assert len(each) == 2 and float(mean) == sum(each) / 2 and 0 <= int(ensemble) <= 10_000


def test_calibration():
    out = run_script("calibration.py", "--seeds", "2", "--subset", "2000")
    fitted = [float(t) for t in re.findall(r"seed \d: temperature ([\d.]+); expected calibration error", out)]
    lowest, highest = re.search(r"fast: fitted temperatures ([\d.]+)–([\d.]+), median", out).groups()
    assert len(fitted) == 2 and float(lowest) == min(fitted) and float(highest) == max(fitted)
    assert "the recipe reads at 0.43" in out
