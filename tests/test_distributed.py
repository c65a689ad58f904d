"""Distributed data-parallel training: real gloo process groups on the CPU; ensemble members
side by side, on a GPU where there is one."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from digits import DigitsError, load_checkpoint
from digits.distributed import World

TRAIN = ["--model", "fast", "--subset", "4000", "--no-report", "--threads", "1", "--device", "cpu"]


def digits_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "digits", *args]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_shards_cover_each_step_once(size):
    order = torch.randperm(103)
    world_batch = 12
    shards = [World(rank, size).shard(order, world_batch) for rank in range(size)]
    local = World(0, size).local_batch(world_batch)
    assert all(len(s) == len(shards[0]) for s in shards)  # every rank takes as many steps
    for step in range(len(shards[0]) // local):
        together = torch.cat([s[step * local:(step + 1) * local] for s in shards])
        assert len(together.unique()) == len(together)  # no image twice within a step
    assert set(torch.cat(shards).tolist()) == set(order.tolist())  # every image seen


def test_fewer_images_than_a_step_still_fill_one_step_on_every_rank():
    order = torch.randperm(10)
    shards = [World(rank, 2).shard(order, 64) for rank in range(2)]
    assert [len(s) for s in shards] == [32, 32]
    assert set(torch.cat(shards).tolist()) == set(order.tolist())


def test_single_process_world_is_a_no_op():
    world = World()
    order = torch.arange(10)
    assert world.is_main and world.shard(order, 4) is order and world.local_batch(32) == 32
    assert world.sum(torch.tensor(3.0)).item() == 3.0 and world.any(True) and not world.any(False)


def test_two_process_run_learns_and_writes_once(tmp_path):
    out, temporary = tmp_path / "run", tmp_path / "tmp"
    temporary.mkdir()
    done = subprocess.run(digits_cmd("train", *TRAIN, "--epochs", "2", "--nproc", "2", "--out", str(out)),
                          capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(temporary)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 processes" in done.stdout
    assert done.stdout.count("Epoch 2/2 —") == 1  # only rank 0 speaks
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["processes"] == 2 and h["batch_size"] == 256 for h in history)
    assert history[-1]["val_accuracy"] >= 0.90
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".json")) == ["history.json", "model.pt"]
    assert load_checkpoint(out / "model.pt")["history"] == history
    assert not list(temporary.glob("torchelastic_*")) + list(temporary.glob("digits-launch-*"))  # cleaned up


def test_killed_rank_fails_clearly_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    launcher = subprocess.Popen(digits_cmd("train", *TRAIN, "--epochs", "3", "--nproc", "2", "--out", str(out)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "history.json").exists():  # epoch 1 is saved; epoch 2 is under way
        assert launcher.poll() is None and time.monotonic() < deadline, "run ended before its first epoch"
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-f", f"digits train.*--out {out}"], capture_output=True, text=True)
    ranks = [int(pid) for pid in workers.stdout.split() if int(pid) != launcher.pid]
    assert ranks, "no worker processes found"
    os.kill(max(ranks), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode != 0
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("digits: error: distributed run failed: rank ")
    assert "killed by signal 9" in last and "--resume" in last
    assert [line for line in stderr.splitlines() if line.startswith("digits:")] == [last]  # the survivor is quiet
    assert "Traceback" not in stderr

    saved = load_checkpoint(out / "model.pt")  # the last checkpoint is intact
    assert 1 <= len(saved["history"]) < 3
    resumed = subprocess.run(digits_cmd("train", *TRAIN, "--epochs", "3", "--nproc", "2", "--out", str(out),
                                        "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_accuracy"] >= 0.90


def test_a_rank_killed_before_the_first_checkpoint_is_not_advised_to_resume(tmp_path):
    out = tmp_path / "run"
    launcher = subprocess.Popen(digits_cmd("train", *TRAIN, "--epochs", "3", "--nproc", "2", "--out", str(out)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in launcher.stdout:
        if line.startswith("Training fast"):  # both ranks have joined; epoch 1 is under way
            break
    workers = subprocess.run(["pgrep", "-f", f"digits train.*--out {out}"], capture_output=True, text=True)
    os.kill(max(int(pid) for pid in workers.stdout.split() if int(pid) != launcher.pid), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=300)
    assert stderr.strip().endswith("it ended before its first checkpoint, so nothing was saved — run the same "
                                   "command again")
    assert "--resume" not in stderr and not out.exists()


def test_every_rank_draws_its_own_distortions_from_a_shared_order():
    from digits.training import epoch_order, epoch_seed

    shards, draws = [], []
    for world in (World(0, 1), World(0, 2), World(1, 2)):
        shards.append(epoch_order(5, 2, 100, 10, world))
        draws.append(torch.rand(4))  # what the epoch's distortions would draw first
    whole, first, second = shards
    assert torch.equal(whole, torch.cat([first.view(-1, 5), second.view(-1, 5)], 1).view(-1))  # one order
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])

    seeds = {epoch_seed(seed, epoch, rank) for seed in (0, 1, 2**32 - 1) for epoch in range(300) for rank in range(8)}
    assert len(seeds) == 3 * 300 * 8 and max(seeds) < 2**64
    assert epoch_seed(7, 3) == 7 * 1_000_003 + 3  # rank 0, and a run of one process, as before


def test_a_batch_smaller_than_the_processes_is_refused():
    with pytest.raises(DigitsError, match="--batch-size 1 on 2 processes: .* give a batch of at least 2"):
        World(0, 2).local_batch(1)


def test_a_refused_distributed_run_says_why_without_advice_to_resume(tmp_path):
    done = subprocess.run(digits_cmd("train", *TRAIN, "--subset", "99999", "--nproc", "2", "--out", str(tmp_path / "x")),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [  # said once, for both ranks
        "digits: error: --subset 99999: give a positive number of training images, at most 60000"]


def test_a_one_cycle_run_resumes_with_as_many_processes_as_it_began(tmp_path):
    out, options = tmp_path / "run", [*TRAIN, "--subset", "20480", "--epochs", "3", "--out", str(tmp_path / "run")]
    run = subprocess.Popen(digits_cmd("train", *options), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "history.json").exists():  # killed once its first epoch is saved
        assert run.poll() is None and time.monotonic() < deadline, "run ended before its first epoch"
        time.sleep(0.05)
    run.kill()
    run.wait()
    before = (out / "model.pt").read_bytes()
    assert not load_checkpoint(out / "model.pt")["finished"]
    # On three processes a step takes 255 images, not 256: 81 steps an epoch instead of 80.
    resumed = subprocess.run(digits_cmd("train", *options, "--nproc", "3", "--resume"), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert (f"digits: error: --nproc 3: {out / 'model.pt'} follows a one-cycle schedule planned for 1 process, "
            "which cannot change; resume with --nproc 1") in resumed.stderr.splitlines()
    assert (out / "model.pt").read_bytes() == before


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["kill", "ctrl-c"])
def test_stopping_a_distributed_run_is_one_line(tmp_path, ctrl_c):
    run = subprocess.Popen(digits_cmd("train", *TRAIN, "--epochs", "1000", "--nproc", "2", "--out", str(tmp_path / "x")),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in run.stdout:
            if line.startswith("Epoch 1/1000"):  # both ranks are training
                break
        if ctrl_c:  # the terminal interrupts the whole foreground group: the ranks too
            os.killpg(run.pid, signal.SIGINT)
        else:
            run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 130 and run.stderr.read().strip() == "digits: interrupted"
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing left of it, as it should be
            os.killpg(run.pid, signal.SIGKILL)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CUDA choices where there is no GPU")
def test_the_cuda_path_is_chosen_right_without_a_gpu(monkeypatch):
    """Device, precision and autocast choices for GPUs, checked on the CPU (torch's own
    CUDA queries are stood in for; the logic under test is ours)."""
    from digits.distributed import local_device
    from digits.engine import autocast, resolve_precision

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device(torch.device("cuda")) == torch.device("cuda", 1)  # one GPU per rank
    assert local_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.warns(UserWarning):  # no CUDA here, so torch disables it, but the settings stand
        cast = autocast(torch.device("cuda"), "bf16")
    assert cast.device == "cuda" and cast.fast_dtype == torch.bfloat16


def test_more_ranks_than_gpus_is_a_clear_error(monkeypatch):
    """NCCL cannot put two ranks on one GPU: say so before starting any (torch's count of GPUs
    is stood in for where there is none)."""
    from digits.distributed import check_gpus

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_gpus(1, torch.device("cuda"))
    check_gpus(2, torch.device("cpu"))
    with pytest.raises(DigitsError, match="--nproc 2 on cuda takes one GPU per process and this machine has 1; "
                                          "give --nproc 1 or fewer, or --device cpu"):
        check_gpus(2, torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_run_on_more_gpus_than_there_are_fails_in_one_line(tmp_path):
    gpus = torch.cuda.device_count()
    done = subprocess.run(digits_cmd("train", "--model", "fast", "--device", "cuda", "--nproc", str(gpus + 1),
                                     "--out", str(tmp_path / "run")), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"digits: error: --nproc {gpus + 1} on cuda takes one GPU per process and this machine has {gpus}; "
        f"give --nproc {gpus} or fewer, or --device cpu"]
    assert not (tmp_path / "run").exists()


def test_ensemble_members_train_side_by_side_as_they_would_one_by_one(mnist, tmp_path):
    from digits import Dataset, TrainConfig, train
    from digits.training import train_ensemble

    data = Dataset("mnist", mnist.classes, mnist.train.take(slice(0, 2000)), mnist.test.take(slice(0, 500)))
    # On the CPU, where a seed fixes a run exactly (a GPU's kernels need not be deterministic).
    config = TrainConfig(model="fast", out=tmp_path / "ensemble", report=False, threads=1, device="cpu")
    folder, runs = train_ensemble(config, 3, data, verbose=False, processes=2)
    manifest = json.loads((folder / "ensemble.json").read_text())
    assert manifest["members"] == ["member-1/model.pt", "member-2/model.pt", "member-3/model.pt"]
    assert [run.folder.name for run in runs] == ["member-1", "member-2", "member-3"]

    # Each member is exactly the run its seed gives in this process, one after another.
    threads = torch.get_num_threads()
    alone = train(replace(config, seed=2, out=tmp_path / "alone"), data, verbose=False)
    assert torch.get_num_threads() == threads  # the caller's setting is back
    member = load_checkpoint(folder / "member-3" / "model.pt")
    assert member["config"]["seed"] == 2 and member["environment"]["threads"] == 1
    assert all(torch.equal(member["state_dict"][k], v) for k, v in alone.model.state_dict().items())
    assert runs[2].history[-1]["val_accuracy"] == alone.accuracy
    assert len({json.dumps(run.history[-1]["val_loss"]) for run in runs}) == 3  # three different seeds


def test_members_side_by_side_tag_their_lines(tmp_path):
    out = tmp_path / "ensemble"
    done = subprocess.run(digits_cmd("train", "--model", "fast", "--subset", "1000", "--no-report",
                                     "--ensemble", "2", "--nproc", "2", "--out", str(out)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"Training 2 members of fast, 2 at a time → {out}"
    for member in ("member-1", "member-2"):
        assert any(line.startswith(f"{member} | Epoch 1/1 — ") for line in lines)
    assert lines[-1].startswith("Ensemble of 2: test accuracy ")
    assert json.loads((out / "ensemble.json").read_text())["members"] == ["member-1/model.pt", "member-2/model.pt"]


def test_an_ensemble_under_torchrun_is_written_and_told_once(tmp_path):
    out = tmp_path / "ensemble"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "digits",
                           "train", *TRAIN, "--subset", "2000", "--ensemble", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    (told,) = [line for line in done.stdout.splitlines() if line.startswith("Ensemble of 2:")]
    manifest = json.loads((out / "ensemble.json").read_text())
    assert manifest["member_accuracy"] == [load_checkpoint(out / f"member-{k}" / "model.pt")["history"][-1]
                                           ["val_accuracy"] for k in (1, 2)]  # rank 0's, as saved
    assert f"test accuracy {manifest['accuracy']:.2%}" in told


def test_a_failing_ensemble_member_is_one_line(tmp_path):
    done = subprocess.run(digits_cmd("train", "--model", "fast", "--ensemble", "2", "--nproc", "2",
                                     "--subset", "-5", "--out", str(tmp_path / "x")),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    expected = "digits: error: --subset -5: give a positive number of training images, at most 60000"
    assert done.stderr.strip() == expected


def test_stopping_an_ensemble_with_sigterm_stops_its_workers(tmp_path):
    run = subprocess.Popen(digits_cmd("train", "--model", "fast", "--subset", "1000", "--epochs", "1000",
                                      "--no-report", "--ensemble", "2", "--nproc", "2", "--out", str(tmp_path / "x")),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in run.stdout:  # both workers are training once each has finished an epoch
            if "Epoch 1/1000" in line and "member-2" in line:
                break
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
        workers = [pid for pid in pids if _stat(pid)[1:2] == [str(run.pid)]]  # its children
        assert len(workers) >= 2
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 130 and run.stderr.read().strip() == "digits: interrupted"
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_running(pid) for pid in workers)
    finally:
        run.kill()


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, parent pid, …); [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _running(pid: int) -> bool:
    return _stat(pid)[:1] not in ([], ["Z"])  # a zombie has ended
