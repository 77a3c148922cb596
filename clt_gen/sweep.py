"""Sweeps: a manifest of train + evaluate jobs over a grid, run locally or on Ray.

A manifest is a TOML file::

    [sweep]
    out = "runs/my-sweep"        # where job directories go
    evaluate = true              # evaluate each trained checkpoint
    measures = true              # classic generalization measures too
    measure_samples = 2000       # training rows the data-dependent measures read (the first)
    independent_splits = false   # true: each job draws its own seeded certify/check split

    [train]                      # TrainConfig fields shared by every job
    arch = "model-a"
    dataset = "digits"
    epochs = 10

    [grid]                       # every combination becomes one job
    "arch_kwargs.k" = [1, 2, 3]
    weight_decay = [0.0, 1e-4]
    "data.random_labels" = [0.0, 0.5]

    [evaluate]                   # EvaluateConfig overrides
    n_bootstrap = 50

A job is identified by the hash of its resolved configuration; its directory holds the
checkpoint, the report and ``result.json`` (written atomically last). Finished jobs are
skipped, so a killed sweep resumes with nothing lost or duplicated. A job that fails
(training, evaluation or measures) writes ``error.json`` instead (stage, error, traceback)
and the sweep goes on; :func:`collect_failures` lists them, and the next run retries them.

Examples
--------
>>> grid = {"random_state": [0, 1], "lr": [0.1]}
>>> jobs = expand_grid({"train": {"arch": "mlp"}, "grid": grid})
>>> [j["train"]["random_state"] for j in jobs]
[0, 1]
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import pathlib
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import tomllib
from tqdm.auto import tqdm

from clt_gen._parallel import die_with_parent
from clt_gen.checkpoints import atomic_write_text, load_checkpoint
from clt_gen.data import DataConfig, renamed_keys
from clt_gen.errors import ValidationError, unknown_name_error
from clt_gen.evaluation import EvaluateConfig, evaluate
from clt_gen.training import TrainConfig, train

__all__ = [
    "load_manifest",
    "expand_grid",
    "validate_jobs",
    "job_id",
    "run_job",
    "run_sweep",
    "collect",
    "collect_failures",
    "check_population_grid",
    "JobFailedError",
]


MEASURE_SAMPLES = 2000  # default training rows read by the data-dependent measures
SWEEP_KEYS = ("out", "evaluate", "measures", "measure_samples", "independent_splits")


def _check_sweep_section(section: dict[str, Any]) -> None:
    """Refuse unknown ``[sweep]`` keys (with the closest match) and bad row counts."""
    for key in section:
        if key not in SWEEP_KEYS:
            raise unknown_name_error("[sweep] key", key, SWEEP_KEYS)
    n = section.get("measure_samples", MEASURE_SAMPLES)
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ValidationError(
            f"[sweep] measure_samples must be an int >= 1 (got {n!r}); it is the number of "
            "training rows the data-dependent measures read"
        )


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a sweep manifest.

    Parameters
    ----------
    path : path
        A TOML file with sections ``sweep``, ``train``, ``grid`` and ``evaluate``.

    Returns
    -------
    dict
        The manifest with defaults filled in (``sweep.out`` next to the file).

    Raises
    ------
    ValidationError
        Unreadable TOML or unknown sections.

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "m.toml")
    >>> lines = ["[train]", 'arch = "mlp"', "[grid]", "lr = [0.1, 0.01]"]
    >>> _ = open(f, "w").write(chr(10).join(lines))
    >>> load_manifest(f)["grid"]
    {'lr': [0.1, 0.01]}
    """
    p = pathlib.Path(path)
    try:
        manifest = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValidationError(f"cannot read manifest {p}: {exc}") from None
    unknown = set(manifest) - {"sweep", "train", "grid", "evaluate"}
    if unknown:
        raise ValidationError(
            f"manifest sections must be sweep, train, grid, evaluate (unknown: {sorted(unknown)})"
        )
    manifest.setdefault("sweep", {}).setdefault("out", str(p.with_suffix("")))
    _check_sweep_section(manifest["sweep"])
    return manifest


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def expand_grid(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One job specification per grid point: ``{"train": {...}, "evaluate": {...}}``."""
    grid = manifest.get("grid", {})
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValidationError(f"grid[{name!r}] must be a non-empty list (got {values!r})")
    names = sorted(grid)
    jobs = []
    independent = bool(manifest.get("sweep", {}).get("independent_splits", False))
    for combo in itertools.product(*(grid[n] for n in names)):
        train_cfg = copy.deepcopy(manifest.get("train", {}))
        for n, v in zip(names, combo, strict=True):
            _set(train_cfg, n, v)
        if independent:  # each grid point its own certify/check draw, seeded by the point
            point = json.dumps(dict(zip(names, combo, strict=True)), sort_keys=True, default=str)
            seed = int(hashlib.sha256(point.encode()).hexdigest()[:8], 16) % 2**31
            train_cfg.setdefault("data", {}).setdefault("split_random_state", seed)
        jobs.append(
            {
                "train": train_cfg,
                "evaluate": dict(manifest.get("evaluate", {})),
                "sweep": {k: v for k, v in manifest.get("sweep", {}).items() if k != "out"},
                "grid_point": dict(zip(names, combo, strict=True)),
            }
        )
    return jobs


def job_id(job: dict[str, Any]) -> str:
    """Stable hash of a job's configuration."""
    spec = {"train": job["train"], "evaluate": job["evaluate"], "sweep": job.get("sweep", {})}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def validate_jobs(jobs: list[dict[str, Any]]) -> None:
    """Build every job's training and evaluation configuration, or name what is wrong.

    Unknown keys in ``[train]`` (grid keys included), ``train.data`` and ``[evaluate]``
    get the closest valid name; wrong types and invalid values get the field's own rule.
    Nothing is trained or written.

    Parameters
    ----------
    jobs : list of dict
        From :func:`expand_grid`.

    Returns
    -------
    None

    Raises
    ------
    ValidationError
        Naming the table, the key, the value, the rule, and the grid point.

    Examples
    --------
    >>> validate_jobs(expand_grid({"train": {"arch": "mlp", "epochs": "two"}}))
    Traceback (most recent call last):
    ...
    estimators.errors.ValidationError: [train] epochs must be an int (got 'two') (grid point {})
    """
    import dataclasses

    train_keys = sorted(f.name for f in dataclasses.fields(TrainConfig))
    eval_keys = sorted(
        f.name for f in dataclasses.fields(EvaluateConfig) if f.name not in ("checkpoint", "out")
    )
    for job in jobs:
        where = f" (grid point {job.get('grid_point', {})})"
        spec = renamed_keys(job["train"])
        for key in spec:
            if key not in train_keys:
                raise ValidationError(
                    str(unknown_name_error("[train] key", key, train_keys)) + where
                )
        for key in job.get("evaluate", {}):
            if key not in eval_keys:
                raise ValidationError(
                    str(unknown_name_error("[evaluate] key", key, eval_keys)) + where
                )
        try:
            _train_config(job["train"])
        except ValidationError as exc:
            raise ValidationError(f"[train] {exc}{where}") from None
        ev: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in job.get("evaluate", {}).items()
        }
        try:
            EvaluateConfig(checkpoint="<job>", **ev)
        except ValidationError as exc:
            raise ValidationError(f"[evaluate] {exc}{where}") from None


def _train_config(spec: dict[str, Any]) -> TrainConfig:
    spec = renamed_keys(spec)
    data = DataConfig.from_dict(spec.pop("data", {}))
    try:
        return TrainConfig(**spec, data=data, progress=False)
    except TypeError as exc:
        raise ValidationError(f"train section: {exc}") from None


class JobFailedError(RuntimeError):
    """A sweep job failed; ``record`` is what its ``error.json`` holds."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(
            f"job {record['job_id']} failed in {record['stage']}: {record['error']} "
            f"(grid point {record['grid_point']})"
        )
        self.record = record


def run_job(job: dict[str, Any], out_root: str, threads: int | None = None) -> dict[str, Any]:
    """Train, evaluate and measure one job; return its result record (also saved).

    Raises
    ------
    JobFailedError
        When a stage raised; ``error.json`` in the job directory then names the stage,
        the error and its traceback, and nothing is written as ``result.json``.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    jid = job_id(job)
    jdir = pathlib.Path(out_root) / "jobs" / jid
    result_path = jdir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    t0 = time.perf_counter()
    stages = ["train"]  # the stage reached, for the error record
    try:
        record = _run_stages(job, jid, jdir, threads, stages)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        import traceback

        failure = {
            "job_id": jid,
            "grid_point": job["grid_point"],
            "train": job["train"],
            "stage": stages[-1],
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - t0,
        }
        jdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(jdir / "error.json", json.dumps(failure, default=str))
        raise JobFailedError(failure) from None
    record["seconds"] = time.perf_counter() - t0
    atomic_write_text(result_path, json.dumps(record, default=float))
    (jdir / "error.json").unlink(missing_ok=True)  # an earlier failure, now retried
    return record


def _run_stages(
    job: dict[str, Any], jid: str, jdir: pathlib.Path, threads: int | None, stages: list[str]
) -> dict[str, Any]:
    cfg = _train_config(job["train"])
    ckpt = jdir / "checkpoint"
    meta_path = ckpt / "meta.json"
    if not (meta_path.exists() and json.loads(meta_path.read_text()).get("status") == "complete"):
        train(cfg, ckpt)
    record: dict[str, Any] = {"job_id": jid, "grid_point": job["grid_point"], "train": job["train"]}
    ck = load_checkpoint(ckpt)
    record["metrics"] = ck.meta["metrics"]
    if job.get("sweep", {}).get("evaluate", True):
        stages.append("evaluate")
        # the job's share of the cores, unless the manifest says otherwise
        ev = {"n_bootstrap": 50, "progress": False, "n_jobs": threads, **job["evaluate"]}
        for key in ("layers", "cells"):
            if key in ev:
                ev[key] = tuple(ev[key])
        report = evaluate(EvaluateConfig(checkpoint=str(ckpt), out=str(jdir / "eval"), **ev))
        record["report"] = report.to_dict()
    if job.get("sweep", {}).get("measures", False):
        stages.append("measures")
        n_rows = int(job["sweep"].get("measure_samples", MEASURE_SAMPLES))
        record["measures"] = _measures(ck, cfg, n_rows)
        record["measures_data"] = {"split": "train", "rows": "first", "max_samples": n_rows}
    return record


def _measures(ck: Any, cfg: TrainConfig, n_rows: int) -> dict[str, Any]:
    import torch

    from clt_gen.data import load_dataset, make_splits
    from clt_gen.measures import all_measures
    from clt_gen.models import build_model

    splits = make_splits(
        load_dataset(cfg.dataset, data_dir=cfg.data_dir, **cfg.dataset_params), cfg.data
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.random_state)  # the trainer's initialization, rebuilt exactly
        init = build_model(
            ck.meta["arch"],
            ck.meta["input_shape"],
            ck.meta["n_classes"],
            **ck.meta.get("arch_kwargs", {}),
        )
    x, y = splits.x["train"][:n_rows], splits.y["train"][:n_rows]
    return all_measures(ck.model, init, x, y, tuple(ck.meta["input_shape"]))


def run_sweep(
    manifest: dict[str, Any],
    *,
    backend: str = "local",
    workers: int = 1,
    address: str | None = None,
    progress: bool = True,
    min_seeds: int | None = None,
) -> list[dict[str, Any]]:
    """Run every job of the manifest that has not finished; return all records.

    Parameters
    ----------
    manifest : dict
        From :func:`load_manifest`.
    backend : {"local", "ray"}
        A local process pool, or a Ray cluster.
    workers : int
        Concurrent jobs.
    address : str, optional
        Ray cluster address (``ray`` backend).
    progress : bool
        Show a progress bar across jobs.
    min_seeds : int, optional
        Treat the manifest as a population: check before training that every grid
        hyperparameter takes two values or more and every cell has this many seeds
        (:func:`check_population_grid`).

    Returns
    -------
    list of dict
        One record per job (finished earlier or now), each with its config and results.
        Jobs that failed are not in it: a ``RuntimeWarning`` names them, and
        :func:`collect_failures` returns their error records.

    Examples
    --------
    >>> import tempfile, os
    >>> manifest = {"sweep": {"out": os.path.join(tempfile.mkdtemp(), "s")},
    ...             "train": {"arch": "mlp", "epochs": 1},
    ...             "grid": {"lr": [0.1]}}
    >>> len(run_sweep(manifest, progress=False))
    1
    """
    out = manifest["sweep"]["out"]
    if min_seeds is not None:
        check_population_grid(manifest, min_seeds=min_seeds)
    jobs = expand_grid(manifest)
    validate_jobs(jobs)  # every job's configuration, before the first one trains
    pathlib.Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(pathlib.Path(out) / "manifest.json", json.dumps(manifest, default=str))
    if workers < 1:
        raise ValidationError(f"workers must be an int >= 1 (got {workers})")
    pending = [
        j for j in jobs if not (pathlib.Path(out) / "jobs" / job_id(j) / "result.json").exists()
    ]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="jobs", disable=not progress)
    failed = _execute(pending, out, backend, workers, address, bar)
    bar.close()
    if failed:
        warnings.warn(
            f"{len(failed)} of {len(pending)} sweep jobs failed and were not recorded as "
            f"finished: {'; '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}. Each "
            f"job directory under {out}/jobs holds an error.json with the traceback "
            "(clt_gen.sweep.collect_failures lists them); running the sweep again retries "
            "them.",
            RuntimeWarning,
            stacklevel=2,
        )
    return collect(out)


def _execute(
    pending: list[dict[str, Any]],
    out: str,
    backend: str,
    workers: int,
    address: str | None,
    bar: Any,
) -> list[str]:
    """Run the pending jobs on the backend; return the failed jobs' messages."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    failed: list[str] = []
    if backend == "local":
        if workers == 1:
            for j in pending:
                _finish(lambda j=j: run_job(j, out, threads), failed, bar)
        else:
            with ProcessPoolExecutor(
                max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                futures = [pool.submit(run_job, j, out, threads) for j in pending]
                for fut in as_completed(futures):
                    _finish(fut.result, failed, bar)
    elif backend == "ray":
        _run_ray(pending, out, workers, address, bar, failed)
    else:
        raise ValidationError(f"backend must be 'local' or 'ray' (got {backend!r})")
    return failed


def _finish(get: Any, failed: list[str], bar: Any) -> None:
    try:
        get()
    except JobFailedError as exc:
        failed.append(str(exc))
    bar.update()


def _run_ray(
    jobs: list[dict[str, Any]],
    out: str,
    workers: int,
    address: str | None,
    bar: Any,
    failed: list[str],
) -> None:
    try:
        import ray
    except ImportError:
        raise ValidationError("backend='ray' needs Ray: pip install 'clt-gen[ray]'") from None
    import torch

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        gpus = 1 if torch.cuda.is_available() and address else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus)(run_job)
        refs = [remote.remote(j, os.path.abspath(out), 1) for j in jobs]
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            try:
                ray.get(done)
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if not isinstance(cause, JobFailedError):
                    raise
                failed.append(str(cause))
            bar.update(len(done))
    finally:
        if started:
            ray.shutdown()


def collect(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every finished job's record under a sweep directory."""
    return [json.loads(p.read_text()) for p in sorted(pathlib.Path(out).glob("jobs/*/result.json"))]


def collect_failures(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every job under a sweep directory whose last attempt failed (no ``result.json``).

    Each record names the job, its grid point, the stage that failed (``train``,
    ``evaluate`` or ``measures``), the error and its traceback.
    """
    return [
        json.loads(p.read_text())
        for p in sorted(pathlib.Path(out).glob("jobs/*/error.json"))
        if not (p.parent / "result.json").exists()
    ]


def check_population_grid(
    manifest: dict[str, Any], *, min_seeds: int = 3, seed_key: str = "random_state"
) -> None:
    """Refuse a population grid that cannot support per-hyperparameter comparisons.

    Before anything trains: every grid hyperparameter other than ``seed_key`` must take
    at least two values (one value compares nothing, and the granulated and robust views
    would be silent about it), and every grid cell must be repeated with at least
    ``min_seeds`` seeds.

    Parameters
    ----------
    manifest : dict
        From :func:`load_manifest`.
    min_seeds : int
        Seeds each cell needs.
    seed_key : str
        The grid key that holds the seeds.

    Raises
    ------
    ValidationError
        Naming every one-valued hyperparameter and the seed count, with the fix.

    Examples
    --------
    >>> try:
    ...     check_population_grid({"grid": {"lr": [0.1], "random_state": [0, 1, 2]}})
    ... except ValueError as exc:
    ...     print(str(exc)[:58])
    population grid: hyperparameter 'lr' takes one value ([0.

    """
    grid = manifest.get("grid", {})
    if seed_key == "random_state" and "seed" in grid and "random_state" not in grid:
        seed_key = "seed"  # the older name, still read by expand_grid's jobs
    problems = []
    for name, values in sorted(grid.items()):
        if name == seed_key:
            continue
        if isinstance(values, list) and len({json.dumps(v, default=str) for v in values}) < 2:
            problems.append(
                f"hyperparameter {name!r} takes one value ({values!r}); give it at least two "
                "values in [grid], or move it to [train] if it is meant to stay fixed"
            )
    if not [n for n in grid if n != seed_key]:
        problems.append("the grid varies no hyperparameter besides the seed")
    seeds = grid.get(seed_key, [])
    n_seeds = len({json.dumps(v, default=str) for v in seeds}) if isinstance(seeds, list) else 0
    if n_seeds < min_seeds:
        problems.append(
            f"each grid cell has {n_seeds} seed(s) ({seed_key} = {seeds!r} in [grid]) but "
            f"{min_seeds} are requested; list at least {min_seeds} distinct values of "
            f"{seed_key!r} in [grid]"
        )
    if problems:
        raise ValidationError("population grid: " + "; ".join(problems))
