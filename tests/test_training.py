"""Training: it learns, writes its run folder, is deterministic, and resumes exactly,
even after a kill -9; a damaged or foreign checkpoint is refused with a clear error."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from digits import Dataset, DigitsError, Run, TrainConfig, load_checkpoint, load_model, save_checkpoint, train
from digits.checkpoint import save_ensemble
from digits.evaluation import evaluate

KEYS = ["epoch", "seconds", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]


def without_times(history: list[dict]) -> list[dict]:
    """A history without its wall-clock times, the one part that is not reproducible."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "elapsed")} for row in history]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(checkpoint)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.fixture(scope="module")
def small(mnist) -> Dataset:
    """300 training and 100 test digits: enough to tell runs apart, quick to train on."""
    return Dataset("mnist", mnist.classes, mnist.train.take(slice(0, 300)), mnist.test.take(slice(0, 100)))


def test_a_short_run_learns(learned):
    # One epoch on 3,000 digits, measured on 2,000 test digits it never saw.
    assert learned.accuracy >= 0.90


def test_a_run_and_an_evaluation_print_briefly(learned, mnist):
    assert repr(learned) == f"Run(folder={learned.folder!r})"  # not the network and every epoch
    result = evaluate(learned.model, mnist.test.take(slice(0, 100)))
    assert repr(result) == f"Evaluation(loss={result.loss!r}, accuracy={result.accuracy!r})"


def test_the_run_folder(learned):
    folder = learned.folder
    model, payload = load_model(folder / "model.pt")
    assert payload["model"] == "seed" and payload["finished"] and payload["history"] == learned.history
    assert load_model(folder)[1]["history"] == learned.history  # the folder stands for its checkpoint

    history = json.loads((folder / "history.json").read_text())
    assert history == learned.history
    assert set(KEYS) <= set(history[0])
    assert history[0]["epoch"] == 1 and history[0]["seconds"] > 0

    with open(folder / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [{k: float(v) for k, v in row.items()} for row in rows] == history

    with Image.open(folder / "curves.png") as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 300


def test_same_seed_same_history(small, tmp_path):
    runs = [train(TrainConfig(epochs=1, seed=seed, out=tmp_path / str(i), report=False), data=small, verbose=False)
            for i, seed in enumerate((7, 7, 8))]
    assert without_times(runs[0].history) == without_times(runs[1].history)
    assert_same_weights(runs[0].checkpoint, runs[1].checkpoint)
    assert without_times(runs[0].history) != without_times(runs[2].history)


def test_resume_continues_exactly(small, tmp_path):
    def run(out: str, **config) -> Run:
        return train(TrainConfig(out=tmp_path / out, report=False, **config), data=small, verbose=False)

    straight = run("straight", epochs=2)
    assert len(run("resumed", epochs=1).history) == 1
    resumed = run("resumed", epochs=2, resume=True)
    assert without_times(resumed.history) == without_times(straight.history)
    assert resumed.accuracy == straight.accuracy
    assert_same_weights(resumed.checkpoint, straight.checkpoint)


def test_resume_keeps_a_one_cycle_schedule_s_length(small, tmp_path):
    out = tmp_path / "fast"
    train(TrainConfig(model="fast", epochs=2, out=out, report=False), data=small, verbose=False)
    before = (out / "model.pt").read_bytes()
    with pytest.raises(DigitsError, match="one-cycle schedule planned for 2 epochs"):
        train(TrainConfig(model="fast", epochs=3, resume=True, out=out, report=False), data=small, verbose=False)
    assert (out / "model.pt").read_bytes() == before


def test_resume_refuses_to_change_the_recipe_silently(small, tmp_path):
    out = tmp_path / "seed"
    train(TrainConfig(epochs=1, out=out, report=False), data=small, verbose=False)
    with pytest.raises(DigitsError, match="continues .* with its own --lr, --subset, --seed, --dataset; drop the"):
        train(TrainConfig(epochs=2, lr=0.5, subset=100, seed=7, dataset="fashion-mnist", resume=True, out=out,
                          report=False), data=small, verbose=False)
    resumed = train(TrainConfig(epochs=2, lr=1e-3, resume=True, out=out, report=False), data=small, verbose=False)
    assert len(resumed.history) == 2  # the run's own values may be repeated


def test_resume_takes_stopping_rules_given_again(small, tmp_path):
    out = tmp_path / "seed"
    train(TrainConfig(epochs=1, out=out, report=False), data=small, verbose=False)
    resumed = train(TrainConfig(epochs=3, target_accuracy=0.01, resume=True, out=out, report=False), data=small,
                    verbose=False)
    assert len(resumed.history) == 2 and load_checkpoint(out / "model.pt")["stopped"] == "target accuracy 0.01 reached"


def test_a_report_older_than_the_epochs_a_resume_adds_is_not_left_behind(small, tmp_path, capsys):
    train(TrainConfig(model="seed", epochs=1, subset=300, out=tmp_path), data=small, verbose=False)
    assert (tmp_path / "report.html").is_file()
    train(TrainConfig(epochs=2, resume=True, report=False, out=tmp_path), data=small)
    assert not (tmp_path / "report.html").exists()
    assert f"Removed {tmp_path / 'report.html'}, written before these epochs" in capsys.readouterr().out
    # a report its owner made read-only is theirs to keep; a read-only checkpoint is refused before training
    (tmp_path / "report.html").write_text("kept")
    (tmp_path / "report.html").chmod(0o444)
    train(TrainConfig(epochs=3, resume=True, report=False, out=tmp_path), data=small, verbose=False)
    assert (tmp_path / "report.html").read_text() == "kept"
    (tmp_path / "model.pt").chmod(0o444)
    before = (tmp_path / "model.pt").read_bytes()
    with pytest.raises(DigitsError, match=r"model.pt is read-only, so no epoch could be saved; make it writable"):
        train(TrainConfig(epochs=4, resume=True, report=False, out=tmp_path), data=small, verbose=False)
    assert (tmp_path / "model.pt").read_bytes() == before


def test_resuming_a_run_killed_after_its_last_checkpoint_writes_what_it_lacks(small, tmp_path):
    train(TrainConfig(model="fast", epochs=1, out=tmp_path), data=small, verbose=False)
    for name in ("curves.png", "report.html"):  # as if killed before writing them
        (tmp_path / name).unlink()
    train(TrainConfig(resume=True, out=tmp_path), data=small, verbose=False)
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "report.html").is_file()


def test_resume_without_out_finds_the_newest_run_whatever_its_name(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train(TrainConfig(model="fast", epochs=1, report=False), data=small, verbose=False)  # runs/fast-…
    train(TrainConfig(epochs=1, out="runs/mine", report=False), data=small, verbose=False)
    again = train(TrainConfig(epochs=2, resume=True, report=False), data=small, verbose=False)
    assert again.folder == Path("runs/mine") and len(again.history) == 2
    assert train(TrainConfig(model="fast", resume=True, report=False), data=small, verbose=False).model.name == "fast"


def test_resume_reads_the_model_from_the_run(small, tmp_path):
    out = tmp_path / "fast"
    first = train(TrainConfig(model="fast", epochs=1, out=out, report=False), data=small, verbose=False)
    again = train(TrainConfig(resume=True, out=out, report=False), data=small, verbose=False)  # no model named
    assert again.model.name == "fast" and again.history == first.history  # finished: nothing more to train


def test_resume_survives_kill_9(make_dataset, tmp_path):
    data_dir = make_dataset(tmp_path / "digits", train=2000, test=100)
    run = tmp_path / "killed"
    # Small batches make an epoch last long enough (500 steps) to be killed in the middle of.
    args = ["train", "--dataset", "digits", "--data-dir", str(data_dir), "--epochs", "3",
            "--batch-size", "4", "--out", str(run), "--no-report"]
    log = tmp_path / "train.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "digits", *args], stdout=out, stderr=out)
        try:
            history = run / "history.json"
            deadline = time.monotonic() + 240
            while not (history.exists() and len(json.loads(history.read_text())) == 1):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "epoch 1 never finished"
                time.sleep(0.05)
            time.sleep(0.1)  # into epoch 2
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert len(json.loads(history.read_text())) == 1, "killed too late: epoch 2 had finished"
    _, payload = load_model(run / "model.pt")
    assert len(payload["history"]) == 1 and not payload["finished"]

    resume = subprocess.run([sys.executable, "-m", "digits", "train", "--resume", "--out", str(run), "--no-report"],
                            capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr
    assert "Resuming" in resume.stdout
    resumed = json.loads(history.read_text())

    straight = train(TrainConfig(dataset="digits", data_dir=data_dir, epochs=3, batch_size=4,
                                 out=tmp_path / "straight", report=False), verbose=False)
    assert [row["epoch"] for row in resumed] == [1, 2, 3]
    assert resumed[-1]["val_accuracy"] == straight.accuracy
    assert without_times(resumed) == without_times(straight.history)


def test_a_run_interrupted_before_its_first_checkpoint_leaves_no_folder(make_dataset, tmp_path):
    data_dir = make_dataset(tmp_path / "digits", train=2000, test=100)
    run = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-m", "digits", "train", "--dataset", "digits", "--data-dir",
                                str(data_dir), "--batch-size", "4", "--out", str(run), "--no-report"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # Ctrl-C's default, which a shell's background job (the tests', say) lacks
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().startswith("Training seed")  # into the first epoch
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.endswith("digits: interrupted\n")
    assert not run.exists()


class Exploit:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


DAMAGE = {"truncated": lambda good: good[:20_000], "random": lambda good: os.urandom(20_000),
          "empty": lambda good: b""}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_is_refused(learned, tmp_path, kind):
    path = tmp_path / "run" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(DAMAGE[kind](learned.checkpoint.read_bytes()))
    with pytest.raises(DigitsError, match="not a readable digits checkpoint") as error:
        load_model(path)
    assert str(error.value).startswith(str(path))
    with pytest.raises(DigitsError, match="not a readable digits checkpoint"):
        train(TrainConfig(resume=True, out=path.parent), verbose=False)


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "model.pt"
    torch.save({"format": "digits-checkpoint-1", "model": "seed", "exploit": Exploit(marker)}, path)
    torch.load(path, weights_only=False)  # the file is live: a trusting load runs it
    assert marker.exists()
    marker.unlink()

    with pytest.raises(DigitsError, match="not a readable digits checkpoint"):
        load_model(path)
    assert not marker.exists()


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(DigitsError, match="not a digits checkpoint"):
        load_model(path)
    with pytest.raises(DigitsError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("change, message", [
    ({"format": "digits-checkpoint-2"}, "written by another version of digits (digits-checkpoint-2; this version "
                                        "reads digits-checkpoint-1)"),
    ({"recipe": None, "classes": 5}, "a damaged digits checkpoint (classes of the wrong kind)"),
    ({"classes": ["a", "b", "c"]}, "classes are not ten names"),
    ({"config": [1], "history": "abc"}, "config, history of the wrong kind"),
    ({"history": [{"x": 1}]}, "a history row without its val_accuracy"),
    ({"recipe": {"temperature": "hot"}}, "a recipe of the wrong kind"),
    ({"recipe": {"test_time_augment": "no"}}, "a recipe of the wrong kind"),
    ({"model": "resnet9000"}, "model 'resnet9000' is not in this version's zoo"),
])
def test_a_tampered_or_foreign_checkpoint_is_one_line(learned, tmp_path, change, message):
    save_checkpoint(tmp_path / "model.pt", {**load_checkpoint(learned.checkpoint), **change})
    with pytest.raises(DigitsError) as error:
        load_model(tmp_path / "model.pt")
    assert str(error.value).startswith(f"{tmp_path / 'model.pt'}: ") and message in str(error.value)


def test_resuming_another_models_checkpoint_is_refused(learned, tmp_path):
    payload = load_checkpoint(learned.checkpoint)
    save_checkpoint(tmp_path / "model.pt", {**payload, "model": "lenet"})
    with pytest.raises(DigitsError, match="holds model 'lenet', not 'seed'; leave --model out, or pass --model lenet"):
        train(TrainConfig(model="seed", resume=True, out=tmp_path), verbose=False)


def test_weights_of_another_architecture_are_refused_with_a_way_out(learned, tmp_path):
    # What a checkpoint of a zoo model looks like after the model's layers changed in a new version.
    payload = load_checkpoint(learned.checkpoint)
    save_checkpoint(tmp_path / "model.pt", {**payload, "model": "fast", "normalize": True,
                                            "config": {**payload["config"], "model": "fast"}})
    before = (tmp_path / "model.pt").read_bytes()
    expected = "do not fit model 'fast' as this version of digits builds it .* retrain with `digits train --model fast`"
    with pytest.raises(DigitsError, match=expected):
        load_model(tmp_path / "model.pt")
    with pytest.raises(DigitsError, match=expected):
        train(TrainConfig(model="fast", resume=True, out=tmp_path, report=False), verbose=False)
    assert (tmp_path / "model.pt").read_bytes() == before


def test_resuming_an_ensemble_as_a_run_says_to_give_its_members(learned, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = Path("runs", "seed-ensemble2-x")
    (folder / "member-1").mkdir(parents=True)
    shutil.copy(learned.checkpoint, folder / "member-1" / "model.pt")  # interrupted in its second member
    with pytest.raises(DigitsError, match="^--resume: no run to resume under runs/; give --out DIR "
                                          r"\(an ensemble resumes with --ensemble K\)$"):
        train(TrainConfig(resume=True), verbose=False)
    with pytest.raises(DigitsError, match=f"^--resume: {folder} holds an ensemble's members; resume it with "
                                          "--ensemble K, K the members it began with$"):
        train(TrainConfig(resume=True, out=folder), verbose=False)
    save_ensemble(folder, [folder / "member-1" / "model.pt"] * 2, "seed")
    with pytest.raises(DigitsError, match="holds an ensemble's members; resume it with --ensemble 2$"):
        train(TrainConfig(resume=True, out=folder), verbose=False)


def test_resuming_a_checkpoint_without_training_state_is_refused(learned, tmp_path):
    payload = load_checkpoint(learned.checkpoint)
    inference_only = {k: v for k, v in payload.items() if k not in ("optimizer", "recipe", "config")}
    save_checkpoint(tmp_path / "model.pt", inference_only)
    with pytest.raises(DigitsError, match="holds no training state to resume from"):
        train(TrainConfig(model="seed", resume=True, out=tmp_path), verbose=False)
    assert load_checkpoint(tmp_path / "model.pt").keys() == inference_only.keys()  # left as it was


@pytest.mark.parametrize("setting", [{"epochs": 0}, {"batch_size": 0}, {"lr": -1.0}, {"subset": 0},
                                     {"lr": math.inf}, {"epochs": math.inf}, {"lr": math.nan}])
def test_bad_settings_are_refused(small, tmp_path, setting):
    with pytest.raises(DigitsError, match="positive"):
        train(TrainConfig(out=tmp_path, **setting), data=small, verbose=False)
    assert not tmp_path.joinpath("model.pt").exists()


def test_what_is_not_a_config_or_a_dataset_is_refused_in_one_line(small, tmp_path):
    with pytest.raises(DigitsError, match=r"^train takes a TrainConfig, not a dict: train\(TrainConfig\(model='fast'"):
        train({"model": "fast"}, small, verbose=False)
    with pytest.raises(DigitsError, match="^train's data is a whole Dataset, as load_dataset gives it, not a Split$"):
        train(TrainConfig(model="fast", out=tmp_path / "run"), small.test, verbose=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("setting", ["model", "dataset", "device", "precision"])
def test_a_setting_named_by_something_not_a_name_is_refused_in_one_line(setting):
    with pytest.raises(DigitsError, match=rf"^{setting}=5: give a name, such as {setting}='\w+'$"):
        TrainConfig(**{setting: 5})


def test_a_run_that_diverges_stops_in_one_line_and_saves_nothing(small, tmp_path):
    with pytest.raises(DigitsError, match=r"training diverged in epoch 1 \(the loss became nan\) — lower the "
                                          r"learning rate \(--lr, 1e\+30 now\)"):
        train(TrainConfig(model="seed", epochs=1, subset=300, lr=1e30, out=tmp_path / "wild"), small, verbose=False)
    assert not (tmp_path / "wild").exists()  # no checkpoint of ruined weights, to be taken for a model


def test_a_dataset_without_training_images_is_refused_and_leaves_no_folder(make_dataset, tmp_path):
    empty = make_dataset(tmp_path / "empty", train=0, test=50)
    for model in ("seed", "fast"):
        with pytest.raises(DigitsError, match="empty has no training images"):
            train(TrainConfig(model=model, dataset="empty", data_dir=empty, out=tmp_path / model), verbose=False)
        assert not (tmp_path / model).exists()
