"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import time
from typing import Any

import torch

from clt_gen._io import atomic_write_text

RESULTS = pathlib.Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "date": time.strftime("%Y-%m-%d"),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, rows: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text((RESULTS / f"{name}.json"), json.dumps({**machine(), "rows": rows}, indent=1))


def best_of(fn: Any, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def load_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    """Rows of a one-run-per-line cache (empty when the file does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def my_share(jobs: list[Any], shard: str, done: set[Any], key: Any) -> list[Any]:
    """The jobs of shard ``"I/N"`` not in ``done`` (compared through ``key(job)``).

    The full list is sliced first and the done jobs dropped after: shards started at
    different times see different caches, and slicing the filtered list would make
    their shares overlap and miss runs.
    """
    i, n = (int(v) for v in shard.split("/"))
    return [j for j in jobs[i::n] if key(j) not in done]
