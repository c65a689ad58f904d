"""The `digits` command, run as a user runs it: a separate process, its output and exit status."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from digits.cli import _print_table

EPOCH_LINE = re.compile(r"^Epoch 1/1 — [\d.]+ s — loss [\d.]+ — accuracy [\d.]+ — "
                        r"val_loss [\d.]+ — val_accuracy [\d.]+$", re.MULTILINE)


def digits(*args: str | Path) -> subprocess.CompletedProcess:
    # Port 9 (discard) has no listener: a closed mirror, so no test can reach the internet.
    env = {**os.environ, "DIGITS_MIRRORS": "http://127.0.0.1:9/"}
    return subprocess.run([sys.executable, "-m", "digits", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def tiny(make_dataset, tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"), train=200, test=50)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """`digits train` with a tiny configuration, and its run folder."""
    out = tmp_path_factory.mktemp("run")
    return digits("train", "--dataset", "tiny", "--data-dir", tiny, "--epochs", "1", "--out", out,
                  "--no-report"), out


def test_help_imports_neither_pytorch_nor_scikit_learn():
    # Every command pays for its imports before it starts: together these two take about 3 s.
    code = ("import contextlib, io, sys\nfrom digits.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['--help'])\n"
            "print(sorted({'torch', 'sklearn'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_is_the_installed_package_s():
    from importlib.metadata import version

    result = digits("--version")
    assert result.returncode == 0 and result.stdout == f"digits {version('digits')}\n"


def test_every_public_name_resolves():
    import digits as api

    assert all(getattr(api, name) is not None for name in api.__all__)
    assert callable(api.prepare) and api.load.__module__ == "digits.inference"


def test_models_lists_seed():
    result = digits("models")
    assert result.returncode == 0, result.stderr
    assert re.search(r"seed\s*│\s*65,194", result.stdout)


def test_data_json_reports_mnist():
    result = digits("data", "--json")
    assert result.returncode == 0, result.stderr
    found = {entry["dataset"]: entry for entry in json.loads(result.stdout)}
    assert found["mnist"]["status"] == "found"
    assert Path(found["mnist"]["folder"]) == Path(os.environ["DIGITS_DATA_DIR"]) / "mnist"


def test_data_verify_prints_the_published_checksums():
    from digits.data import DATASETS

    result = digits("data", "--dataset", "mnist", "--verify")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("mnist: verified in ")
    assert lines[1:] == [f"  {name}  sha256 {digest} (decompressed)" for name, digest in DATASETS["mnist"].sha256.items()]


def test_data_in_a_folder_names_only_the_dataset_it_holds():
    result = digits("data", "--json", "--data-dir", str(Path(os.environ["DIGITS_DATA_DIR"]) / "mnist"))
    assert result.returncode == 0, result.stderr
    found = {entry["dataset"]: entry for entry in json.loads(result.stdout)}
    assert found["mnist"]["status"] == "found"
    assert found["fashion-mnist"]["status"] == "not there" and "a file of mnist" in found["fashion-mnist"]["message"]


def test_data_with_a_damaged_file_is_an_error_not_missing(tmp_path):
    damaged = shutil.copytree(Path(os.environ["DIGITS_DATA_DIR"]) / "mnist", tmp_path / "mnist")
    labels = damaged / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed
    labels.write_bytes(gzip.compress(bytes(raw)))
    result = digits("data", "--dataset", "mnist", "--data-dir", str(damaged), "--verify")
    assert result.returncode == 2 and result.stderr.startswith(f"digits: error: {labels}: checksum mismatch")


def test_train_prints_keras_epoch_lines(trained):
    result, out = trained
    assert result.returncode == 0, result.stderr
    assert EPOCH_LINE.search(result.stdout), result.stdout
    assert "Traceback" not in result.stderr
    assert {"model.pt", "history.json", "history.csv", "curves.png"} <= {p.name for p in out.iterdir()}
    assert f"— checkpoint {out / 'model.pt'}, curves {out / 'curves.png'}\n" in result.stdout  # where to look


def test_evaluate_json_prints_one_object(trained, tiny):
    _, out = trained
    result = digits("evaluate", out / "model.pt", "--data-dir", tiny, "--json")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    report = json.loads(result.stdout)
    assert report["model"] == "seed" and report["dataset"] == "tiny" and report["count"] == 50
    assert 0 <= report["accuracy"] <= 1 and len(report["per_class"]["f1"]) == 10
    # The pictures go beside the checkpoint unless --out says otherwise.
    assert Path(report["files"]["confusion"]) == out / "confusion.png" and (out / "mistakes.png").is_file()


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("damaged") / "model.pt"
    path.write_bytes(os.urandom(4096))
    return path


BAD_INPUTS = {
    "missing checkpoint": (["evaluate", "{tmp}/nope.pt"], "no such checkpoint"),
    "damaged checkpoint": (["evaluate", "{damaged}"], "not a readable digits checkpoint (damaged, or not written"),
    "a run's folder taken": (["train", "--model", "fast", "--out", "{damaged_dir}"],
                             "already holds a model; give --out a new folder, or --resume"),
    "a file where a folder must be": (["train", "--model", "fast", "--out", "{damaged}/run"],
                                      "--out {damaged}/run: {damaged} is a file, not a folder — choose another place"),
    "bad --data-dir": (["train", "--data-dir", "{tmp}/empty", "--out", "{tmp}/run"], "missing train-images"),
    "bad --data-dir for data": (["data", "--data-dir", "{tmp}/empty"], "missing train-images"),
    "unknown model": (["train", "--model", "nope", "--out", "{tmp}/run"], "unknown model 'nope'"),
    "unknown dataset": (["train", "--dataset", "nope", "--out", "{tmp}/run"], "unknown dataset 'nope'"),
    "unknown dataset for data": (["data", "--dataset", "nope"], "unknown dataset 'nope'"),
    "bad subset": (["train", "--subset", "0", "--out", "{tmp}/run"], "--subset 0"),
    "subset past the training set": (["train", "--subset", "70000", "--holdout", "10000", "--out", "{tmp}/run"],
                                     "--subset 70000: give a positive number of training images, at most 50000"),
    "no epochs": (["train", "--epochs", "0", "--out", "{tmp}/run"], "--epochs 0: give a positive number"),
    "negative learning rate": (["train", "--lr", "-1", "--out", "{tmp}/run"], "--lr -1: give a positive number"),
    "bad baselines subset": (["baselines", "--subset", "-5"], "--subset -5"),
    "too few for the baselines": (["baselines", "--subset", "2", "--only", "knn"],
                                  "--subset 2: the baselines need 3 training images or more, of two classes or more"),
    "bad benchmark subset": (["benchmark", "--subset", "0", "--out", "{tmp}/run.json"], "--subset 0"),
    "too few steps to profile": (["benchmark", "--profile", "--models", "fast", "--subset", "256",
                                  "--out", "{tmp}/run.json"], "too few images to profile fast"),
    "epochs with profile": (["benchmark", "--profile", "--epochs", "3", "--out", "{tmp}/run"],
                            "--profile always times one epoch"),
    "no threads": (["train", "--threads", "-1", "--out", "{tmp}/run"], "--threads -1"),
    "a hundred thousand threads": (["train", "--threads", "100000", "--out", "{tmp}/run"],
                                   "--threads 100000: this machine has"),
    "a seed past NumPy's": (["train", "--seed", "100000000000000", "--out", "{tmp}/run"],
                            "--seed 100000000000000: give a whole number from 0 to 4294967295"),
    "members past the last seed": (["train", "--ensemble", "3", "--seed", "4294967294", "--out", "{tmp}/run"],
                                   "--seed 4294967294: its 3 members need seeds up to 4294967295"),
    "a run folder that is a file": (["train", "--out", "{damaged}"], "--out {damaged}: a file, not a folder"),
    "a tensorboard folder that is a file": (["train", "--tensorboard", "{damaged}", "--out", "{tmp}/run"],
                                            "--tensorboard {damaged}: a file, not a folder"),
    "a thousand workers": (["serve", "--workers", "1000"], "--workers 1000: this machine's"),
    "no processes": (["train", "--nproc", "0", "--out", "{tmp}/run"], "--nproc 0"),
    "no processes for members": (["train", "--ensemble", "2", "--nproc", "0", "--out", "{tmp}/run"], "--nproc 0"),
    "one model to combine": (["ensemble", "{damaged}", "--out", "{tmp}/run"], "give two or more models"),
    "damaged model to combine": (["ensemble", "{damaged}", "{tmp}/nope.pt", "--out", "{tmp}/run"],
                                 "not a readable digits checkpoint"),
    "not a number": (["train", "--epochs", "ten", "--out", "{tmp}/run"], "argument --epochs: invalid int value"),
    "unknown option": (["evaluate", "{tmp}/x.pt", "--fast"],
                       "unrecognized arguments: --fast — see `digits evaluate --help`"),  # the command's options
    "unknown option before the command": (["--fast", "evaluate", "{tmp}/x.pt"],
                                          "unrecognized arguments: --fast — see `digits --help`"),  # digits' own
    "no command": ([], "the following arguments are required: COMMAND"),
    "bad port": (["serve", "--port", "abc"], "see `digits serve --help`"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, damaged):
    fill = dict(tmp=tmp_path, damaged=damaged, damaged_dir=damaged.parent)
    args, reason = BAD_INPUTS[case]
    result = digits(*(a.format(**fill) for a in args))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("digits: error:"), result.stderr
    assert reason.format(**fill) in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, reason", [
    (["--models", "fast", "nosuch"], "unknown model 'nosuch': choose one of seed, fast, best"),
    (["--profile", "--models", "fast", "nosuch"], "unknown model 'nosuch': choose one of seed, fast, best"),
    (["--models", "fast", "--out", "{tmp}"], "--out {tmp}: the results are written as JSON; give a file name ending "
                                             "in .json"),
    (["--profile", "--out", "{tmp}"], "--out {tmp}: the results are written as JSON; give a file name ending in .json"),
    (["--out", "{tmp}/model.pt"], "--out {tmp}/model.pt: the results are written as JSON; give a file name ending "
                                  "in .json"),
    (["--out", "{tmp}/a-file/results.json"], "--out {tmp}/a-file/results.json: {tmp}/a-file is a file, not a folder "
                                             "— choose another place"),
])
def test_benchmark_checks_its_models_and_out_before_training_any(args, reason, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = digits("benchmark", "--no-keras", "--subset", "2560", *(a.format(tmp=tmp_path) for a in args))
    assert result.returncode == 2 and result.stdout == ""  # nothing trained
    assert result.stderr == f"digits: error: {reason.format(tmp=tmp_path)}\n"


def test_a_table_wider_than_120_columns_is_drawn_whole(capsys):
    # Two text columns, one wrapping: the case in which rich drew the table a cell wider than it
    # measured it, and cropping cut off the right border.
    figures = {f"figure {i}": (f"figure {i}", "{:,.1f}".format) for i in range(10)}
    columns = {"model": ("model", str), "precision": ("precision", str), **figures}
    rows = [{"model": name, "precision": "fp32", **{f"figure {i}": 123456.7 * (i + 1) for i in range(10)}}
            for name in ("seed", "keras tutorial")]
    _print_table("wide", rows, columns)
    lines = capsys.readouterr().out.splitlines()[1:]  # below the title
    assert len(lines[0]) > 120
    assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in lines), "\n".join(lines)
    assert sum("1,234,567.0 │" in line for line in lines) == 2  # every row's last figure, uncut
