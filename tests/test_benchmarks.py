"""The benchmark scripts run and print what their documentation says, on the smallest settings
(their figures are measured by running them, never here), and refuse what they cannot do in one
line; so does `digits benchmark`, which prints no run folder it has deleted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from digits import Dataset, DigitsError, make_ensemble
from digits.benchmark import benchmark, profile_steps

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str, *args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run benchmarks/NAME with ARGS as a user would."""
    env = {**os.environ, "DIGITS_DATA_DIR": str(Path(os.environ["DIGITS_DATA_DIR"]).resolve())}
    return subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def run_script(name: str, *args: str | Path, timeout: float = 300) -> str:
    """Run benchmarks/NAME with ARGS; its standard output."""
    done = script(name, *args, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def refusal(name: str, *args: str | Path) -> str:
    """What benchmarks/NAME says is wrong with ARGS: one line on standard error (after the usage,
    for a bad option), exit status 2 and no traceback."""
    done = script(name, *args, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    *usage, line = done.stderr.strip().splitlines()
    assert all(u.startswith(("usage: ", " ")) for u in usage), done.stderr
    assert line.startswith(f"{name}: error: ")
    return line.removeprefix(f"{name}: error: ")


def percent(text: str, label: str) -> float:
    return float(re.search(rf"{label}\s+([\d.]+)%", text).group(1))


def test_every_script_is_tested():
    tested = set(re.findall(r'run_script\("(\w+\.py)"', Path(__file__).read_text()))
    assert tested == {path.name for path in BENCHMARKS.glob("*.py")} - {"common.py"}  # the scripts' helpers


@pytest.mark.parametrize("name, args, says", [
    ("seed_epoch.py", ["--subset", "0"], "argument --subset: give a whole number, 1 or more, not 0"),
    ("forward_pass_size.py", ["--sizes", "256", "-3"], "argument --sizes: give a whole number, 1 or more, not -3"),
    ("serve_load.py", ["--rate", "0"], "argument --rate: give a positive number, not 0"),
    ("calibration.py", ["--model", "nope"], "unknown model 'nope': choose one of seed, fast, best"),
    ("real_pictures.py", ["--model", "nope.pt", "--count", "10001"],
     "--count 10001: the test set has only 10,000 digits"),
])
def test_a_script_refuses_what_it_cannot_do_in_one_line(name, args, says):
    assert refusal(name, *args) == says


def test_startup_names_the_command_that_failed_and_its_own_error(tmp_path):
    assert refusal("startup.py", "--model", tmp_path / "nope", "--repeats", "1") == \
        f"digits predict (torch) failed: digits: error: {tmp_path / 'nope'}: no such checkpoint"


def test_profile_asks_for_the_images_it_needs_and_they_suffice(mnist):
    with pytest.raises(DigitsError, match=r"give --subset \d+ or more$") as refused:
        profile_steps(mnist, "seed", images=100, threads=1)
    enough = int(re.search(r"give --subset (\d+)", str(refused.value)).group(1))
    assert profile_steps(mnist, "seed", images=enough, threads=1)["steps"] == 1  # the least it can profile


def test_benchmark_names_no_run_folder_it_deletes(mnist, capsys):
    small = Dataset(mnist.name, mnist.classes, mnist.train, mnist.test.take(slice(0, 500)))
    benchmark(small, ("fast",), epochs=1, keras=False, subset=512, threads=1)
    assert capsys.readouterr().out == "Training fast…\n"  # train's own lines named a temporary folder


def test_seed_epoch():
    out = run_script("seed_epoch.py", "--epochs", "1", "--subset", "640")
    assert "seed, batch 32, 640 images" in out
    assert re.search(r"^epoch 1: [\d.]+ s, loss [\d.]+, test accuracy [\d.]+%$", out, re.MULTILINE)
    assert re.search(r"median: [\d.]+ s/epoch, [\d,]+ training images/s", out)
    assert "checkpoint" not in out  # the run's folder is temporary: gone before anyone could open it


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


def test_ensemble_errors_refuses_a_single_model(learned):
    assert refusal("ensemble_errors.py", learned.folder) == \
        f"{learned.folder} is one model, not an ensemble; give an ensemble's folder or its ensemble.json"


def test_predict_speed(learned):
    out = run_script("predict_speed.py", "--model", learned.checkpoint, "--repeats", "1")
    assert re.search(r"^batch  onnx\s+[\d,]+ images/s", out, re.MULTILINE)
    assert re.search(r"^photo  torch\s+[\d.]+ ms", out, re.MULTILINE)
    agreement = re.findall(r"argmax agrees ([\d.]+)%", out)
    assert agreement and all(float(a) >= 99 for a in agreement)


def test_real_pictures(learned):
    out = run_script("real_pictures.py", "--model", learned.checkpoint, "--count", "3", "--numbers", "3")
    # a learned model reads nearly all of the pictures of test digits; a script that scored them wrongly would not
    assert 70 <= percent(out, "overall") <= 100 and 70 <= percent(out, "same digits, MNIST-style") <= 100
    assert 60 <= percent(out, "numbers read whole") <= 100  # two of its three numbers, at least


def test_startup(learned):
    out = run_script("startup.py", "--model", learned.folder, "--repeats", "1")
    assert re.search(r"^digits --help\s+median [\d.]+ s", out, re.MULTILINE)
    assert re.search(r"^digits predict \(torch\)\s+median [\d.]+ s", out, re.MULTILINE)


def test_serve_load(learned):
    # Fewer requests than connections: each load still sends them all, the 32 connections' too.
    out = run_script("serve_load.py", "--model", learned.checkpoint, "--seconds", "1", "--rate", "100",
                     "--max-requests", "20")
    rows = re.findall(r"^(\d+) connections, .*?\s+[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)", out, re.MULTILINE)
    assert [int(connections) for connections, _, _ in rows] == [8, 8, 32]
    assert all(0 < int(served) <= 20 and int(errors) == 0 for _, served, errors in rows)


def test_best_holdout():
    out = run_script("best_holdout.py", "--seeds", "2", "--epochs", "1", "--subset", "2000",
                     "--optimizer", "adam", "--weight-decay", "0", "--rotate", "15")
    # Each flag differs from best's own recipe (AdamW, weight decay 0.05, ±10°), so it must show.
    assert "optimizer='adam'" in out and "weight_decay=0.0," in out and "rotate=15" in out
    each = [int(n) for n in re.findall(r"seed \d: misreads (\d+) of 10,000 held-out digits reading twice", out)]
    mean, ensemble = re.search(r"mean ([\d.]+) misread .* the ensemble of 2 misreads (\d+)", out).groups()
    assert len(each) == 2 and float(mean) == sum(each) / 2
    # averaged probabilities read about as well as the better member, never far worse than the worse one
    assert 0 <= int(ensemble) <= max(each) + 500


def test_calibration():
    out = run_script("calibration.py", "--seeds", "2", "--subset", "2000")
    fitted = [float(t) for t in re.findall(r"seed \d: temperature ([\d.]+); expected calibration error", out)]
    lowest, highest = re.search(r"fast: fitted temperatures ([\d.]+)–([\d.]+), median", out).groups()
    assert len(fitted) == 2 and float(lowest) == min(fitted) and float(highest) == max(fitted)
    assert "the recipe reads at 0.43" in out
