"""Sweep throughput (jobs/minute) with 1 and 2 local workers on the same small manifest.

Each job trains a small MLP on the embedded digits data for 10 epochs and evaluates it.

    python benchmarks/sweep_throughput.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time

from _common import save

from clt_gen.sweep import run_sweep


def manifest(out: str) -> dict:
    return {
        "sweep": {"out": out, "evaluate": True, "measures": False},
        "train": {
            "arch": "mlp",
            "dataset": "digits",
            "epochs": 10,
            "optimizer": "adamw",
            "lr": 3e-3,
        },
        "grid": {"arch_kwargs.width": [32, 64], "random_state": [0, 1, 2, 3]},
        "evaluate": {"n_bootstrap": 50, "cells": [2, 4, 8, 16]},
    }


def main() -> None:
    rows = []
    for workers in (1, 2):
        out = tempfile.mkdtemp()
        t0 = time.perf_counter()
        records = run_sweep(manifest(out), workers=workers, progress=False)
        secs = time.perf_counter() - t0
        rows.append(
            {
                "workers": workers,
                "jobs": len(records),
                "seconds": secs,
                "jobs_per_minute": 60 * len(records) / secs,
            }
        )
        print(json.dumps(rows[-1]))
        shutil.rmtree(out)
    rows.append({"speedup_2_over_1": rows[1]["jobs_per_minute"] / rows[0]["jobs_per_minute"]})
    print(json.dumps(rows[-1]))
    save("sweep_throughput", rows)


if __name__ == "__main__":
    main()
