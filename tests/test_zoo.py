"""The zoo's models train, runs stop when told to, ensembles average their members, and the
baselines and the benchmark report what they measured."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from digits import (Dataset, DigitsError, TrainConfig, create_model, evaluate, evaluate_checkpoint, list_models, load,
                    load_model, make_ensemble, train)
from digits.baselines import run_baselines
from digits.benchmark import PROFILE_WARMUP, STEP_PARTS, benchmark, profile_steps, step_part, training_flops
from digits.checkpoint import load_checkpoint, save_checkpoint, save_ensemble
from digits.cli import main
from digits.engine import autocast
from digits.models import Ensemble, get_entry
from digits.training import split_for_training, train_ensemble

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small(mnist: Dataset) -> Dataset:
    """3,000 training and 1,000 test digits: enough to learn, quick to train on."""
    return Dataset(mnist.name, mnist.classes, mnist.train.take(slice(0, 3000)), mnist.test.take(slice(0, 1000)))


@pytest.mark.parametrize("name", [entry.name for entry in list_models()])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_model_learns_from_a_small_batch(name, precision):
    torch.manual_seed(0)
    model = create_model(name).train()
    x, y = torch.rand(8, 1, 28, 28) * 255, torch.arange(8)
    with autocast(CPU, precision):
        logits = model(x).float()
    assert logits.shape == (8, 10) and torch.isfinite(logits).all()
    F.cross_entropy(logits, y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)
    # It tells eight noise images apart within 20 steps: a model blind to its pixels could not
    # do better than a cross-entropy of ln 8 ≈ 2.08.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(20):
        optimizer.step()
        optimizer.zero_grad()
        with autocast(CPU, precision):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
    assert loss.item() < 0.5


def test_every_recipe_trains_without_flags(make_dataset, tmp_path, capsys):
    data_dir = make_dataset(tmp_path / "tiny", train=256, test=64)
    for entry in list_models():
        out = tmp_path / entry.name
        assert main(["train", "--model", entry.name, "--dataset", "tiny", "--data-dir", str(data_dir),
                     "--out", str(out), "--no-report"]) == 0, capsys.readouterr().err
        history = json.loads((out / "history.json").read_text())
        assert len(history) == entry.recipe.epochs and history[-1]["batch_size"] == entry.recipe.batch_size


def test_target_accuracy_stops_the_run_and_records_when(small, tmp_path):
    run = train(TrainConfig(model="fast", epochs=4, target_accuracy=0.5, out=tmp_path, report=False),
                small, verbose=False)
    assert len(run.history) == 1 and run.accuracy >= 0.5
    assert run.time_to(0.5) == run.history[0]["elapsed"] > 0
    assert run.time_to(1.01) is None
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert checkpoint["finished"] and "target accuracy 0.5 reached" in checkpoint["stopped"]
    # A stopped run is finished: resuming it trains nothing more, and a new rule is refused, not ignored.
    again = train(TrainConfig(model="fast", resume=True, out=tmp_path, report=False), small, verbose=False)
    assert again.history == run.history
    # the same rule given again (as an ensemble's resume gives its members theirs) is no new one
    again = train(TrainConfig(resume=True, target_accuracy=0.5, out=tmp_path, report=False), small, verbose=False)
    assert again.history == run.history
    with pytest.raises(DigitsError, match=r"^--resume: .* was stopped \(target accuracy 0.5 reached\) and is finished; "
                                          "a new --target-accuracy does not reopen it — train a new run$"):
        train(TrainConfig(resume=True, target_accuracy=0.99, out=tmp_path, report=False), small, verbose=False)
    assert load_checkpoint(tmp_path / "model.pt")["history"] == run.history


def test_time_limit_stops_within_the_epoch(small, tmp_path):
    # An epoch of the seed CNN on 3,000 digits takes about 0.8 s on two CPU cores, 0.2 s on a GPU.
    run = train(TrainConfig(model="seed", epochs=3, time_limit=0.1, out=tmp_path, report=False),
                small, verbose=False)
    assert len(run.history) == 1
    assert 0.1 <= run.history[0]["elapsed"] < 30
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert "time limit" in checkpoint["stopped"]
    # Adam counts its steps: the run stopped part of the way through its first epoch's 94 batches
    steps = {int(state["step"]) for state in checkpoint["optimizer"]["state"].values()}
    assert len(steps) == 1 and 1 <= steps.pop() < math.ceil(3000 / 32)


def test_elapsed_time_accumulates_over_epochs(small, tmp_path):
    run = train(TrainConfig(model="fast", epochs=2, out=tmp_path, report=False), small, verbose=False)
    first, second = run.history
    assert second["elapsed"] == pytest.approx(first["seconds"] + second["seconds"], abs=0.01)
    # the lr of each epoch's last step: a one-cycle schedule ends at lr / (25 × 10⁴)
    assert second["lr"] == pytest.approx(get_entry("fast").recipe.lr / 25e4, rel=1e-6)


def test_a_target_reached_at_the_last_epoch_stopped_nothing(small, tmp_path):
    run = train(TrainConfig(model="fast", epochs=1, target_accuracy=0.1, out=tmp_path, report=False),
                small, verbose=False)
    assert run.accuracy >= 0.1 and run.time_to(0.1) == run.history[0]["elapsed"]
    assert load_checkpoint(tmp_path / "model.pt").get("stopped") is None


@pytest.mark.parametrize("flag, message", [
    (["--target-accuracy", "1.5"], "--target-accuracy 1.5: give a fraction"),
    (["--time-limit", "0"], "--time-limit 0.0: give a positive number of seconds"),
    (["--holdout", "60000"], "--holdout 60000: give a number between 1 and 59999"),
    (["--ensemble", "0"], "--ensemble 0: give a positive number of members"),
])
def test_bad_stopping_and_ensemble_flags_are_one_line_errors(flag, message, tmp_path, capsys):
    assert main(["train", "--model", "fast", "--out", str(tmp_path / "run"), *flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith("digits: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_holdout_validates_on_training_images_never_seen_in_training(mnist):
    train_split, validation = split_for_training(mnist, holdout=10_000)
    assert len(train_split) == 50_000 and len(validation) == 10_000
    assert torch.equal(validation.images, mnist.train.images[50_000:])
    assert torch.equal(train_split.images, mnist.train.images[:50_000])


def test_an_ensemble_averages_its_members_probabilities(small, tmp_path):
    folder, runs = train_ensemble(TrainConfig(model="fast", epochs=3, out=tmp_path, report=False), 2, small,
                                  verbose=False)
    manifest = json.loads((folder / "ensemble.json").read_text())
    assert manifest["members"] == ["member-1/model.pt", "member-2/model.pt"]
    seeds = [load_checkpoint(folder / m)["config"]["seed"] for m in manifest["members"]]
    assert seeds == [0, 1]

    ensemble, payload = load_model(folder)
    assert isinstance(ensemble, Ensemble) and payload["model"] == "fast ensemble of 2"
    x = torch.rand(5, 1, 28, 28) * 255
    with torch.no_grad():
        expected = torch.stack([run.model.cpu()(x).softmax(1) for run in runs]).mean(0)  # as loaded: on the CPU
        assert torch.allclose(ensemble(x).softmax(1), expected, atol=1e-6)

    result = evaluate_checkpoint(folder / "ensemble.json", data_dir=None)
    assert result["model"] == "fast ensemble of 2" and (folder / "confusion.png").is_file()
    assert result["accuracy"] > 0.9
    # What the ensemble says of itself is its own accuracy, not its first member's.
    assert manifest["member_accuracy"] == [run.accuracy for run in runs]
    assert manifest["accuracy"] == evaluate(ensemble, small.test).accuracy  # the data it trained with
    assert payload["accuracy"] == load(folder).info["accuracy"] == manifest["accuracy"]
    assert "history" not in payload

    # Validated on held-out training digits, an ensemble claims no test accuracy.
    held_out, _ = train_ensemble(TrainConfig(model="fast", epochs=1, holdout=500, out=tmp_path / "held-out",
                                             report=False), 2, small, verbose=False)
    assert json.loads((held_out / "ensemble.json").read_text())["holdout"] == 500
    assert load(held_out).info["accuracy"] is None


def test_a_resumed_ensemble_goes_on_with_its_own_model_and_folder(small, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ is relative to the working folder
    config = TrainConfig(model="fast", epochs=1, holdout=500, seed=5, report=False)
    folder, first = train_ensemble(config, 2, small, verbose=False)
    assert folder.parent == Path("runs") and folder.name.startswith("fast-ensemble2-")
    kept = (folder / "member-1" / "model.pt").read_bytes()
    for name in ("member-2/model.pt", "ensemble.json"):  # as if stopped while member 2 trained
        (folder / name).unlink()

    # Only --resume: the newest ensemble of two fast members goes on as it began, with member 2
    # trained afresh as it was the first time (seed 6, held-out digits) and the ensemble validated
    # on the held-out digits, not the test set.
    again, runs = train_ensemble(TrainConfig(resume=True, report=False), 2, small, verbose=False)
    assert again == folder and (folder / "member-1" / "model.pt").read_bytes() == kept
    assert [run.model.name for run in runs] == ["fast", "fast"]
    assert [h["train_loss"] for h in runs[1].history] == [h["train_loss"] for h in first[1].history]
    assert load_checkpoint(folder / "member-2" / "model.pt")["config"]["seed"] == 6
    manifest = json.loads((folder / "ensemble.json").read_text())
    assert manifest["model"] == "fast" and manifest["holdout"] == 500


def test_an_ensemble_is_not_trained_over_another_model(small, tmp_path):
    run = train(TrainConfig(model="fast", epochs=1, out=tmp_path / "run", report=False), small, verbose=False)
    before = run.checkpoint.read_bytes()
    for resume in (False, True):
        with pytest.raises(DigitsError, match="run: already holds a run, not an ensemble; give --out a new folder"):
            train_ensemble(TrainConfig(model="fast", epochs=1, resume=resume, out=run.folder, report=False), 2,
                           small, verbose=False)
    assert run.checkpoint.read_bytes() == before and not (run.folder / "member-1").exists()
    # nor resumed into an ensemble that `digits ensemble` made of runs trained elsewhere
    other = train(TrainConfig(model="fast", epochs=1, seed=1, out=tmp_path / "other", report=False), small,
                  verbose=False)
    manifest = save_ensemble(tmp_path / "combined", [run.checkpoint, other.checkpoint], "fast")
    written = manifest.read_bytes()
    with pytest.raises(DigitsError, match="combined: an ensemble of runs trained elsewhere"):
        train_ensemble(TrainConfig(resume=True, out=manifest.parent, report=False), 2, small, verbose=False)
    assert manifest.read_bytes() == written and not (manifest.parent / "member-1").exists()
    folder, _ = train_ensemble(TrainConfig(model="fast", epochs=1, out=tmp_path / "ensemble", report=False), 2,
                               small, verbose=False)
    with pytest.raises(DigitsError, match="already holds an ensemble; give --out a new folder, or --resume"):
        train_ensemble(TrainConfig(model="fast", epochs=1, out=folder, report=False), 2, small, verbose=False)


def test_trained_models_of_different_kinds_combine_into_an_ensemble(small, tmp_path, capsys):
    runs = [train(TrainConfig(model=name, epochs=1, out=tmp_path / name, report=False), small, verbose=False)
            for name in ("fast", "seed")]
    models = [str(tmp_path / "fast"), str(tmp_path / "seed" / "model.pt")]
    # A failed evaluation leaves no ensemble behind, so the same command can be tried again.
    assert main(["ensemble", *models, "--out", str(tmp_path / "both"), "--dataset", "nope"]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "both" / "ensemble.json").exists()

    assert main(["ensemble", *models, "--out", str(tmp_path / "both")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("fast+seed ensemble of 2: mnist test accuracy ")
    manifest = json.loads((tmp_path / "both" / "ensemble.json").read_text())
    assert manifest["members"] == ["../fast/model.pt", "../seed/model.pt"]  # relative: the folders move together
    assert f"test accuracy {manifest['accuracy']:.2%}" in printed
    assert evaluate_checkpoint(tmp_path / "both")["accuracy"] == manifest["accuracy"]

    ensemble, payload = load_model(tmp_path / "both")
    assert payload["model"] == "fast+seed ensemble of 2"
    x = torch.rand(5, 1, 28, 28) * 255
    with torch.no_grad():
        expected = torch.stack([run.model.cpu()(x).softmax(1) for run in runs]).mean(0)  # as loaded: on the CPU
        assert torch.allclose(ensemble(x).softmax(1), expected, atol=1e-6)

    # An ensemble given as a model stands for its members.
    third = train(TrainConfig(model="fast", epochs=1, seed=1, out=tmp_path / "third", report=False), small,
                  verbose=False)
    manifest = make_ensemble([tmp_path / "both", third.folder], tmp_path / "three")
    assert json.loads(manifest.read_text())["members"] == ["../fast/model.pt", "../seed/model.pt", "../third/model.pt"]

    # Members must read the same classes.
    fashion = {**load_checkpoint(third.checkpoint), "dataset": "fashion-mnist"}
    del fashion["format"]
    save_checkpoint(tmp_path / "fashion" / "model.pt", fashion)
    with pytest.raises(DigitsError, match=r"different datasets \(fashion-mnist, mnist\)"):
        make_ensemble([tmp_path / "fast", tmp_path / "fashion"], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()


def test_a_folder_without_checkpoint_or_manifest_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "no model.pt or ensemble.json there" in capsys.readouterr().err


@pytest.mark.parametrize("members, message", [
    (["."], "member '.' is an ensemble, not a checkpoint; name its members instead"),
    ("member-1/model.pt", "not a digits ensemble manifest"),
    ([1, 2], "not a digits ensemble manifest"),
    ([], "the ensemble has no members"),
])
def test_a_damaged_manifest_is_a_clear_error(tmp_path, capsys, members, message):
    (tmp_path / "ensemble.json").write_text(json.dumps({"model": "fast", "members": members}))
    for command in (["evaluate", str(tmp_path)], ["ensemble", str(tmp_path), str(tmp_path), "--out", "x"]):
        assert main(command) == 2
        assert capsys.readouterr().err == f"digits: error: {tmp_path / 'ensemble.json'}: {message}" + (
            " (it names its members' checkpoints in a list)\n" if "manifest" in message else "\n")


def test_an_ensemble_written_through_a_symbolic_link_loads(learned, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as typed
    for name in ("a", "b"):
        Path(name).mkdir()
        Path(name, "model.pt").write_bytes(learned.checkpoint.read_bytes())
    Path("elsewhere", "deep").mkdir(parents=True)
    Path("link").symlink_to(Path("elsewhere", "deep"))
    manifest = make_ensemble(["a", "b"], Path("link", "both"))
    ensemble, payload = load_model(manifest)
    assert len(ensemble.members) == 2 and payload["members"] == ["../../../a/model.pt", "../../../b/model.pt"]


def test_baselines_report_accuracy_and_fit_time(mnist):
    results = run_baselines(mnist, subset=500)
    assert [r["baseline"] for r in results] == ["logistic", "knn", "svc", "forest"]
    for r in results:
        assert r["train_images"] == 500 and 0.7 < r["accuracy"] < 1 and r["fit_seconds"] > 0


def test_benchmark_measures_each_model_and_writes_json(small, tmp_path):
    result = benchmark(small, ("fast",), epochs=3, keras=False, out=tmp_path / "bench.json", verbose=False)
    (row,) = result["rows"]
    assert row["model"] == "fast" and row["epochs"] == 3 and row["accuracy"] > 0.9
    assert len(row["epoch_seconds"]) == 3 and row["seconds_per_epoch"] == statistics.median(row["epoch_seconds"]) > 0
    assert row["train_images_per_s"] == pytest.approx(3000 / row["seconds_per_epoch"])
    assert row["inference_images_per_s"] > 0
    assert row["train_mflop_per_image"] == pytest.approx(training_flops("fast") / 1e6)
    assert row["train_gflops"] == pytest.approx(row["train_mflop_per_image"] * row["train_images_per_s"] / 1e3)
    assert set(result["peak_gflops"]) == {row["precision"]} and result["peak_gflops"][row["precision"]] > 0
    assert row["share_of_peak"] == pytest.approx(row["train_gflops"] / result["peak_gflops"][row["precision"]])
    assert json.loads((tmp_path / "bench.json").read_text()) == result


def test_training_flops_count_forward_and_backward():
    # The seed CNN's multiply-adds per image: conv 1→64 at 26×26, conv 64→32 at 24×24, dense 4608→10.
    conv1, conv2, dense = 26 * 26 * 64 * 9, 24 * 24 * 32 * 64 * 9, 32 * 12 * 12 * 10
    forward = 2 * (conv1 + conv2 + dense)
    # Backward is twice the forward work, less the first layer's gradient for its input, the pixels.
    assert training_flops("seed") == 3 * forward - 2 * conv1


@pytest.mark.parametrize("name, images, has, lacks", [
    ("seed", 640, {"ReLU", "pooling"}, {"batch norm", "augmentation"}),
    ("fast", 3000, {"batch norm", "pooling", "ReLU"}, {"augmentation"}),
    ("best", 896, {"batch norm", "augmentation"}, set()),
])
def test_profile_says_where_a_training_step_goes(small, name, images, has, lacks):
    result = profile_steps(small, name, images=images, threads=1)
    batch = get_entry(name).recipe.batch_size
    assert result["batch_size"] == batch and result["steps"] == images // batch - PROFILE_WARMUP  # whole steps
    parts = {p["part"]: p for p in result["parts"]}
    assert {"convolutions, forward", "convolutions, backward", "dense layers", "loss", "optimizer",
            "outside operators"} | has <= set(parts) and not lacks & set(parts)
    # The parts add up to the step, and convolutions take more of it than anything else.
    assert sum(p["ms_per_step"] for p in parts.values()) == pytest.approx(result["ms_per_step"])
    assert sum(p["share"] for p in parts.values()) == pytest.approx(1)
    convolutions = parts["convolutions, forward"]["share"] + parts["convolutions, backward"]["share"]
    assert convolutions > max(p["share"] for part, p in parts.items() if not part.startswith("convolutions"))
    for part in ("convolutions, forward", "convolutions, backward", "dense layers"):
        assert parts[part]["gflops"] > 0
        assert parts[part]["share_of_peak"] == pytest.approx(parts[part]["gflops"] / result["peak_gflops"])
    assert parts["ReLU"]["gflops"] is None and result["gflops"] == pytest.approx(
        training_flops(name) * batch / result["ms_per_step"] / 1e6)


def test_profile_parts_are_named_by_operator():
    assert step_part("aten::conv2d") == "convolutions, forward"
    assert step_part("autograd::engine::evaluate_function: ConvolutionBackward0") == "convolutions, backward"
    assert step_part("autograd::engine::evaluate_function: TBackward0") == "dense layers"
    assert step_part("autograd::engine::evaluate_function: SplitBackward0") == "other operators"
    assert step_part("autograd::engine::evaluate_function: MaxPool2DWithIndicesBackward0") == "pooling"
    assert step_part("Optimizer.step#Adam.step") == "optimizer"
    assert {step_part(name) for name in ("aten::affine_grid_generator", "aten::grid_sampler")} == {"augmentation"}
    assert len({part for part, _ in STEP_PARTS}) == len(STEP_PARTS)


def test_profile_command_prints_a_table_per_model_and_writes_json(mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIGITS_DATA_DIR", str(Path(os.environ["DIGITS_DATA_DIR"]).resolve()))  # often relative
    monkeypatch.chdir(tmp_path)
    (tmp_path / "benchmark.json").write_text("{}")  # the benchmark's own results, which a profile leaves alone
    assert main(["benchmark", "--profile", "--models", "fast", "--subset", "2560", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "fast: a training step of 256 images" in printed and "convolutions, backward" in printed
    (profile,) = json.loads((tmp_path / "profile.json").read_text())["profiles"]
    assert profile["model"] == "fast" and profile["steps"] == 10 - PROFILE_WARMUP
    assert (tmp_path / "benchmark.json").read_text() == "{}"
