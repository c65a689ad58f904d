"""Data-parallel training on PyTorch's own engine: torchrun and DistributedDataParallel.

Under torchrun every process runs the same training loop. The recipe's batch size is the
global batch: each of the N ranks takes 1/N of it from its own shard of the epoch's
order, DDP averages the gradients, so one step sees the same images and takes the same
learning rate whatever N is. Metrics are summed across ranks; only rank 0 prints and
writes files.

The members of an ensemble exchange nothing, so they need no process group: `spawn` runs
them side by side in plain worker processes, one per GPU where there are several.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from .errors import DigitsError
from .files import RUN_CHECKPOINT

# Set by `launch` for the ranks it starts, to a folder of its own: their parent says in one line
# how the run ended, so they keep quiet about interrupts and lost peers (exiting with LOST_CONTACT
# for the latter) and leave the line saying why they refused to run in that folder.
LAUNCHED = "DIGITS_LAUNCHED"
LOST_CONTACT = 3


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, batch_size: int) -> int:
        if batch_size < self.size:
            raise DigitsError(f"--batch-size {batch_size} on {self.size} processes: each takes batch/N images of "
                              f"every step; give a batch of at least {self.size}")
        return batch_size // self.size

    def shard(self, order: torch.Tensor, batch_size: int) -> torch.Tensor:
        """This rank's part of an epoch's order, step by step.

        Global batch b is split as b/N per rank at every step; the order is padded by
        wrapping around (as DistributedSampler does) so all ranks take the same number
        of steps.
        """
        if self.size == 1:
            return order
        per_step = self.local_batch(batch_size) * self.size
        pad = (-len(order)) % per_step
        order = order[torch.arange(len(order) + pad, device=order.device) % len(order)]  # wraps, however short
        return order.view(-1, self.size, per_step // self.size)[:, self.rank].reshape(-1)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all ranks, in place; every rank gets the total."""
        if self.size > 1:
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any: ranks must stop together."""
        if self.size == 1:
            return flag
        vote = torch.tensor(float(flag))
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        return bool(vote.item())

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if self.size == 1:
            return model
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)


def init(device: torch.device) -> World:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA), if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        check_gpus(int(os.environ.get("LOCAL_WORLD_SIZE", size)), device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        # A dead rank must end the run, not hang it: collectives time out.
        dist.init_process_group(backend, timeout=timedelta(seconds=120))
    return World(dist.get_rank(), dist.get_world_size())


def check_gpus(processes: int, device: torch.device) -> None:
    """NCCL gives each rank a GPU of its own: two ranks cannot share one."""
    gpus = torch.cuda.device_count()
    if device.type == "cuda" and processes > gpus:
        raise DigitsError(f"--nproc {processes} on cuda takes one GPU per process and this machine has {gpus}; "
                          f"give --nproc {gpus} or fewer, or --device cpu")


def local_device(device: torch.device) -> torch.device:
    """On a multi-GPU machine each rank takes the GPU of its local rank."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))
    return device


def default_processes(device: torch.device) -> int:
    """How many ensemble members train at once by default: one per GPU, else one."""
    return max(1, torch.cuda.device_count()) if device.type == "cuda" and device.index is None else 1


def spawn(function: Callable[..., None], args: tuple, processes: int) -> None:
    """Run ``function(worker, *args)`` in ``processes`` fresh processes and wait for all.

    Worker w sees LOCAL_RANK=w, as under torchrun, so on a machine with several GPUs it
    takes its own (local_device), and gets an equal share of the CPU threads. A failing
    worker ends them all; its DigitsError comes back here as the same one line.
    """
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    errors = mp.get_context("spawn").SimpleQueue()
    threads = max(1, torch.get_num_threads() // processes)
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # our one line says it
    context = mp.start_processes(_worker, (function, args, errors, threads), nprocs=processes,
                                 join=False, start_method="spawn")
    # SIGTERM reaches this process alone, not the workers as Ctrl-C does: turn it into an
    # interrupt, so that stopping the run stops them too instead of leaving them training.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        while not context.join():  # join returns as each process ends, True once all have
            pass
    except ProcessException as e:
        raise DigitsError(errors.get() if not errors.empty() else
                          f"worker process {e.error_index} failed (pid {e.pid})") from None
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt


def _worker(index: int, function: Callable[..., None], args: tuple, errors, threads: int) -> None:
    os.environ["LOCAL_RANK"] = str(index)
    torch.set_num_threads(threads)
    try:
        function(index, *args)
    except DigitsError as e:
        errors.put(str(e))
        sys.exit(1)


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_processes(processes: int) -> None:
    if processes < 1:
        raise DigitsError(f"--nproc {processes}: give a number of processes ≥ 1")


@contextmanager
def failures_reported() -> Iterator[None]:
    """In a rank, a lost peer (a collective failing) becomes one line, not a traceback; under
    `launch`, no line at all, as the parent names the rank that failed."""
    try:
        yield
    except RuntimeError as e:
        if not dist.is_initialized():
            raise
        if LAUNCHED in os.environ:
            raise SystemExit(LOST_CONTACT) from None
        # gloo's message: "[path/to/pair.cc:537] Read error …: Connection reset by peer. This is …"
        message = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip().partition("\n")[0]).partition(". ")[0]
        raise DigitsError(f"rank {dist.get_rank()} lost contact with the other processes "
                          f"({message or type(e).__name__})") from None


def hand_to_launcher(refusal: str) -> bool:
    """Under `launch`, leave this rank's refusal for its parent to say once for all the ranks;
    False elsewhere (under torchrun each rank says it)."""
    folder = os.environ.get(LAUNCHED)
    if folder is None:
        return False
    (Path(folder) / f"refused-{os.environ['RANK']}").write_text(refusal)
    return True


def launch(nproc: int, train_args: list[str], device: torch.device, folder: Path | None) -> None:
    """Run `digits train ARGS` on nproc local processes on ``device``, as torchrun would, into
    the run ``folder`` (None: the newest run, resumed)."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_processes(nproc)
    check_gpus(nproc, device)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun does: N processes of N threads would fight
    # The agent's own log lines would bury the one line that says what happened. (Its modules'
    # loggers have levels of their own, so the parent's is not enough.)
    for name in [*logging.root.manager.loggerDict, "torch.distributed.elastic"]:
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # The agent keeps its per-run files (error reports of failed ranks) in a folder of its
    # own, which it would leave behind in the temporary directory after every run.
    with tempfile.TemporaryDirectory(prefix="digits-launch-") as launch_files:
        os.environ[LAUNCHED] = launch_files
        try:
            config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id="digits",
                                  rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
                                  monitor_interval=0.5, logs_specs=DefaultLogsSpecs(log_dir=launch_files))
            elastic_launch(config, sys.executable)("-m", "digits", "train", *train_args)
        except SignalException:  # Ctrl-C or kill: the agent stopped the ranks, which keep their checkpoint
            raise KeyboardInterrupt from None
        except ChildFailedError as e:
            # Ranks the agent stopped (SIGTERM) or that lost their peer only followed the one that failed.
            failures = {r: f for r, f in e.failures.items()
                        if f.exitcode not in (-signal.SIGTERM, LOST_CONTACT)} or e.failures
            if all(f.exitcode == 2 for f in failures.values()):  # refused, each rank most often for one reason
                refusals = dict.fromkeys(p.read_text() for p in sorted(Path(launch_files).glob("refused-*")))
                if refusals:
                    raise DigitsError("; ".join(refusals)) from None
                raise SystemExit(2) from None
            what = ", ".join(f"rank {rank} " + (f"was killed by signal {-f.exitcode}" if f.exitcode < 0
                                                else f"exited with status {f.exitcode}")
                             for rank, f in sorted(failures.items()))
            saved = folder is None or (folder / RUN_CHECKPOINT).is_file()
            raise DigitsError(f"distributed run failed: {what}; " + (
                "the last checkpoint is intact — run the same command with --resume to continue" if saved else
                "it ended before its first checkpoint, so nothing was saved — run the same command again")) from None
