"""Run independent estimator calls on several cores.

The per-layer cross-fits of an evaluation are independent and, inside, single-threaded
(the heads' matrices are small; see :func:`estimators.heads.cross_fit`). So the layers
run side by side in worker processes: joblib's ``loky`` executor (spawned workers that
never re-import ``__main__``, reused across calls), each worker limited to its share of
the cores. Every call carries its own ``random_state``, so the numbers do not depend on
``n_jobs`` or on the order in which the workers finish.

A worker costs ~3 s to start and import the heads' dependencies, so calls run in this
process unless their work (rows x features, summed) is at least :data:`MIN_WORK`, and
:func:`prestart` lets a caller start the workers while it does something else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from clt_gen.errors import ValidationError

Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

#: Least summed rows x features worth starting workers: at ~4 us per row-feature for a
#: cross-fit with every head (measured on LeNet features), ~4 s of serial work, about
#: what a worker takes to start.
MIN_WORK = 1_000_000
#: The same once this process has started its workers (no start-up left to pay).
MIN_WORK_WARM = 200_000
_started: set[int] = set()  # worker counts of the executors started here

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def check_jobs(n_jobs: Any) -> int | None:
    """Return ``n_jobs`` checked: ``None`` (all available cores) or an int >= 1."""
    if n_jobs is None:
        return None
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValidationError(
            f"n_jobs must be None (all available cores) or an int >= 1 (got {n_jobs!r}); "
            "use 1 to run in this process only"
        )
    return n_jobs


def resolve_jobs(n_jobs: int | None, n_calls: int, work: float) -> int:
    """Return how many processes ``n_calls`` calls of total ``work`` should use (1: here)."""
    import multiprocessing

    jobs = min(check_jobs(n_jobs) or available_cores(), n_calls)
    if multiprocessing.current_process().daemon:  # e.g. a multiprocessing.Pool worker
        return 1  # may not start processes of its own
    least = MIN_WORK_WARM if jobs - 1 in _started else MIN_WORK
    return jobs if jobs > 1 and work >= least else 1


def die_with_parent(parent: int, every: float = 0.5) -> None:
    """Make this worker process end soon after its parent ``parent`` dies.

    Without it, a worker whose parent was killed (SIGKILL, an out-of-memory kill) is
    adopted by init and runs its job to the end, holding cores, memory and cache locks.
    A daemon thread checks the parent's pid every ``every`` seconds and ends the process
    once it changed (the worker was re-parented). ``prctl(PR_SET_PDEATHSIG)`` would be
    immediate, but it fires when the *thread* that started the worker ends, and the
    executors here start workers from short-lived threads.
    """
    import threading
    import time

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(every)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _init_worker(parent: int | None = None) -> None:
    """End with the parent, lower the worker's priority, import what the heads use.

    A worker is often started while this process still extracts features on every
    core; at a lower priority its imports take only idle time. Once the fits run (one
    per core) the priority changes nothing.
    """
    if parent is not None:
        die_with_parent(parent)
    if hasattr(os, "nice"):  # not on Windows
        os.nice(5)
    import sklearn.decomposition  # noqa: F401
    import torch  # noqa: F401

    import estimators.certified  # noqa: F401


def _executor(workers: int, threads: int) -> Any:
    from joblib.externals.loky import get_reusable_executor

    _started.add(workers)
    env = {v: str(threads) for v in _THREAD_VARS}
    return get_reusable_executor(
        max_workers=workers,
        timeout=300,
        env=env,
        initializer=_init_worker,
        initargs=(os.getpid(),),
    )


def prestart(jobs: int) -> None:
    """Start the workers :func:`run_calls` with ``jobs`` will use; returns at once."""
    if jobs > 1:
        ex = _executor(jobs - 1, max(1, available_cores() // jobs))
        for _ in range(jobs - 1):
            ex.submit(int)


def _apply(call: Call) -> Any:
    func, args, kwargs = call
    return func(*args, **kwargs)


def run_calls(calls: Sequence[Call], jobs: int) -> list[Any]:
    """Return ``[f(*args, **kwargs) for f, args, kwargs in calls]``, in that order.

    With ``jobs`` > 1, this process and ``jobs − 1`` workers take the calls in the order
    given (put the costly ones first), each the next call as soon as it is free: this
    process starts at once while the workers start up. ``f`` must be importable from a
    module. The first exception raised by a call is raised here.
    """
    if jobs <= 1:
        return [_apply(c) for c in calls]
    import threading

    import torch
    from threadpoolctl import threadpool_limits

    threads, torch_threads = max(1, available_cores() // jobs), torch.get_num_threads()
    ex, results = _executor(jobs - 1, threads), [None] * len(calls)
    todo, lock, errors = list(range(len(calls)))[::-1], threading.Lock(), list[BaseException]()

    def take() -> int | None:
        with lock:
            return todo.pop() if todo and not errors else None

    def feed() -> None:  # one thread per worker: hands it the next call when it is free
        while (i := take()) is not None:
            try:
                results[i] = ex.submit(_apply, calls[i]).result()
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)

    feeders = [threading.Thread(target=feed, daemon=True) for _ in range(jobs - 1)]
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            for t in feeders:
                t.start()
            while (i := take()) is not None:
                results[i] = _apply(calls[i])
    except BaseException:  # an error or Ctrl-C here: the feeders hand out nothing more
        with lock:
            todo.clear()
        raise
    finally:
        for t in feeders:
            t.join()
        torch.set_num_threads(torch_threads)
    if errors:
        raise errors[0]
    return results


def _work(calls: Sequence[Call]) -> int:
    """Rows x features of each call's first argument (an array), summed."""
    total = 0
    for _, args, _ in calls:
        shape: tuple[int, ...] = tuple(getattr(args[0], "shape", ())) if args else ()
        total += shape[0] * shape[1] if len(shape) == 2 else 0
    return total


def run_array_calls(calls: Sequence[Call], n_jobs: int | None) -> list[Any]:
    """:func:`run_calls` on as many processes as ``n_jobs`` and the calls' sizes warrant.

    Each call's first argument is its ``(n_samples, n_features)`` array; their summed
    size decides whether starting workers pays (:func:`resolve_jobs`).
    """
    return run_calls(calls, resolve_jobs(n_jobs, len(calls), _work(calls)))
