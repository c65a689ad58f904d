"""Distributed data-parallel training: real gloo process groups on the CPU."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from digits import load_checkpoint
from digits.distributed import World

TRAIN = ["--model", "fast", "--subset", "4000", "--no-report", "--threads", "1"]


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


def test_single_process_world_is_a_no_op():
    world = World()
    order = torch.arange(10)
    assert world.is_main and world.shard(order, 4) is order and world.local_batch(32) == 32
    assert world.sum(torch.tensor(3.0)).item() == 3.0 and world.any(True) and not world.any(False)


def test_two_process_run_learns_and_writes_once(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(digits_cmd("train", *TRAIN, "--epochs", "2", "--nproc", "2", "--out", str(out)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 processes" in done.stdout
    assert done.stdout.count("Epoch 2/2 —") == 1  # only rank 0 speaks
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(h["processes"] == 2 and h["batch_size"] == 128 for h in history)
    assert history[-1]["val_accuracy"] >= 0.90
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".json")) == ["history.json", "model.pt"]
    assert load_checkpoint(out / "model.pt")["history"] == history


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
    assert "Traceback" not in stderr

    saved = load_checkpoint(out / "model.pt")  # the last checkpoint is intact
    assert 1 <= len(saved["history"]) < 3
    resumed = subprocess.run(digits_cmd("train", *TRAIN, "--epochs", "3", "--nproc", "2", "--out", str(out),
                                        "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_accuracy"] >= 0.90


def test_the_cuda_path_is_chosen_right_without_a_gpu(monkeypatch):
    """Device, precision and autocast choices for GPUs, checked on the CPU (torch's own
    CUDA queries are stood in for; the logic under test is ours)."""
    from digits.distributed import local_device
    from digits.engine import autocast, optimizer_options, resolve_precision

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
    assert optimizer_options(torch.device("cuda")) == {"fused": True}
