"""Load test of `digits serve`: POST /predict with a 28×28 JSON digit, over loopback only.

Starts its own server on a free port of 127.0.0.1 and drives it with a raw asyncio socket
client (keep-alive HTTP/1.1, one request in flight per connection), in three loads:

- 8 connections offering a fixed rate (--rate, default 1,000 requests/s) — open loop: each
  latency counts from the moment its request was due, so a stalled server cannot hide its
  queue (no coordinated omission);
- 8 connections, and 32 connections, each sending its next request as soon as the answer
  arrives — closed loop: the most the server can do.

Each load is bounded in time (--seconds, after a short warm-up) and in requests (--max-requests).
Prints p50 and p99 latency, requests/s, errors (non-200 answers and broken connections), the
server's CPU time per request and its resident memory before and after each load. The client
runs on the same cores as the server; the CPU it used is printed too, since on a 2-core
machine every millisecond it spends is one the server does not get.

    python benchmarks/serve_load.py --model runs/seed-…/model.pt
    python benchmarks/serve_load.py --model runs/seed-…/model.pt --max-batch 1   # no micro-batching
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

from digits import DigitsError

from common import count, positive, run_main

WARM_UP_SECONDS = 2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def a_drawn_zero() -> list[list[int]]:
    """A ring about as thick and as large as an MNIST 0: the payload every request sends."""
    y, x = np.mgrid[:28, :28]
    r = np.hypot((y - 14) / 1.25, x - 14)
    return (np.clip(1.6 - abs(r - 6.5) / 1.5, 0, 1) * 255).astype(int).tolist()


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise DigitsError(f"the server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise DigitsError("the server did not answer /healthz within a minute")


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (uvicorn's workers)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += map(int, task.read_text().split())
    return found


def rss_mib(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        status = Path(f"/proc/{p}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    return total / 1024


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process tree so far."""
    total = 0
    for p in process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


async def load(port: int, request: bytes, connections: int, seconds: float,
               rate: float | None, max_requests: int) -> tuple[list[float], Counter, float]:
    """Latencies (s) of the answered requests, the errors by kind, and the seconds it took.

    Connection i sends the load's requests i, i + connections, … below max_requests, so that
    however few they are, they are all sent. With a rate, request n is due at start + n / rate
    (open loop); without one, each connection sends again as soon as it has its answer.
    """
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    end = start + seconds
    latencies: list[float] = []
    errors: Counter = Counter()

    async def connection(i: int) -> None:
        reader = writer = None
        for n in range(i, max_requests, connections):
            due = start + n / rate if rate else max(start, loop.time())
            if due >= end:
                break
            await asyncio.sleep(due - loop.time())
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
                await reader.readexactly(length)
                latencies.append(loop.time() - due)
                if head[9:12] != b"200":
                    errors[f"HTTP {head[9:12].decode()}"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, AttributeError):
                errors["broken connection"] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    return latencies, errors, loop.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint or ONNX file to serve (default: digits' default model)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"))
    parser.add_argument("--workers", type=count, default=1)
    parser.add_argument("--max-batch", type=count, default=64, help="1 turns micro-batching off")
    parser.add_argument("--rate", type=positive, default=1000, help="requests/s offered by the open-loop load")
    parser.add_argument("--seconds", type=positive, default=10, help="length of each load (at most 60)")
    parser.add_argument("--max-requests", type=count, default=200_000, help="most requests in one load")
    args = parser.parse_args()
    seconds = min(args.seconds, 60)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "digits", "serve", "--port", str(port), "--workers", str(args.workers),
               "--backend", args.backend, "--max-batch", str(args.max_batch)]
    server = subprocess.Popen(command + (["--model", args.model] if args.model else []))
    try:
        wait_until_up(url, server)
        with urllib.request.urlopen(url + "/model") as answer:
            model = json.load(answer)
        body = json.dumps({"pixels": a_drawn_zero()}, separators=(",", ":")).encode()
        request = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        print(f"model {model['name']} ({model['backend']}), {args.workers} worker(s), max batch {args.max_batch};"
              f" {len(body):,}-byte JSON body; {seconds:g} s per load after a {WARM_UP_SECONDS} s warm-up;"
              f" {os.cpu_count()} cores shared by client and server")
        print(f"{'load':<32} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'requests':>8} {'errors':>6}"
              f" {'server CPU ms/req':>17} {'server RSS MiB':>16} {'growth':>7} {'client CPU':>10}")
        for connections, rate in ((8, args.rate), (8, None), (32, None)):
            asyncio.run(load(port, request, connections, WARM_UP_SECONDS, rate, args.max_requests))
            memory, cpu, client = rss_mib(server.pid), cpu_seconds(server.pid), time.process_time()
            latencies, errors, took = asyncio.run(load(port, request, connections, seconds, rate, args.max_requests))
            after = rss_mib(server.pid)
            served = len(latencies)
            p50, p99 = np.percentile(latencies, [50, 99]) * 1e3 if served else (float("nan"),) * 2
            name = f"{connections} connections, " + (f"{rate:,.0f} req/s offered" if rate else "closed loop")
            print(f"{name:<32} {p50:>7.2f} {p99:>7.2f} {served / took:>7.0f} {served:>8} "
                  f"{sum(errors.values()):>6} {(cpu_seconds(server.pid) - cpu) / max(served, 1) * 1e3:>17.2f}"
                  f" {memory:>7.1f} → {after:>6.1f} {(after - memory) / memory:>+7.1%}"
                  f" {(time.process_time() - client) / took:>9.0%}"
                  + (f"  {dict(errors)}" if errors else ""))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    run_main(main)
