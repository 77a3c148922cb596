"""Per-layer fits on several processes: same numbers, same order, errors surface."""

from __future__ import annotations

import numpy as np
import pytest

from clt_gen import _parallel
from clt_gen._parallel import MIN_WORK, check_jobs, resolve_jobs, run_calls
from clt_gen.errors import ValidationError
from clt_gen.evaluation import EvaluateConfig
from clt_gen.profiles import layer_entropies
from estimators.certified import estimate_and_bound


def _layers(n: int = 600, seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_tr, y_ho = rng.integers(0, 3, n), rng.integers(0, 3, n)
    feats: dict = {"train": {}, "certify": {}}
    for i, d in enumerate((6, 4, 3)):
        for split, y in (("train", y_tr), ("certify", y_ho)):
            z = rng.normal(size=(n, d))
            z[:, 0] += (2.0 - 0.5 * i) * y
            feats[split][f"l{i}"] = z
    return feats, y_tr, y_ho


def test_run_calls_in_workers_matches_this_process_in_order() -> None:
    rng = np.random.default_rng(1)
    calls = []
    for seed in range(4):
        y = rng.integers(0, 2, 400)
        z = rng.normal(size=(400, 3)) + y[:, None]
        calls.append((estimate_and_bound, (z, y), {"random_state": seed, "n_bootstrap": 20}))
    serial = run_calls(calls, 1)
    parallel = run_calls(calls, 2)
    for (e1, b1, t1), (e2, b2, t2) in zip(serial, parallel, strict=True):
        assert e1.value == e2.value and e1.ci == e2.ci
        assert b1.value == b2.value
        np.testing.assert_array_equal(t1, t2)


def test_run_calls_raises_the_first_error_of_a_call() -> None:
    calls = [(int, ("7",), {}), (int, ("not a number",), {}), (int, ("8",), {})]
    assert run_calls(calls[::2], 2) == [7, 8]
    with pytest.raises(ValueError, match="not a number"):
        run_calls(calls, 2)


def test_layer_entropies_do_not_depend_on_n_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    feats, y_tr, y_ho = _layers()
    kw = dict(n_classes=3, omega="shannon", alpha=1.5, method="auto", delta=0.05)
    one = layer_entropies(["l0", "l1", "l2"], feats, y_tr, y_ho, **kw, n_bootstrap=20,
                          random_state=0, n_jobs=1)  # fmt: skip
    monkeypatch.setattr(_parallel, "MIN_WORK", 0)  # small data: force the workers
    monkeypatch.setattr(_parallel, "MIN_WORK_WARM", 0)
    two = layer_entropies(["l0", "l1", "l2"], feats, y_tr, y_ho, **kw, n_bootstrap=20,
                          random_state=0, n_jobs=2)  # fmt: skip
    assert [r.to_dict() for r in one] == [r.to_dict() for r in two]


def test_resolve_jobs_keeps_small_work_here_and_never_exceeds_the_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_parallel, "_started", set())
    assert resolve_jobs(4, 12, MIN_WORK - 1) == 1
    monkeypatch.setattr(_parallel, "_started", {3})  # workers already running
    assert resolve_jobs(4, 12, MIN_WORK - 1) == 4
    assert resolve_jobs(1, 12, 10 * MIN_WORK) == 1
    assert resolve_jobs(8, 2, 10 * MIN_WORK) == 2
    assert resolve_jobs(None, 12, 10 * MIN_WORK) == min(_parallel.available_cores(), 12)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_n_jobs_is_refused_with_the_rule(bad: object) -> None:
    with pytest.raises(ValidationError, match=r"n_jobs must be None .* or an int >= 1"):
        check_jobs(bad)
    with pytest.raises(ValidationError, match="n_jobs"):
        EvaluateConfig(n_jobs=bad)  # type: ignore[arg-type]


def test_cli_jobs_reaches_the_config() -> None:
    from clt_gen.cli import build_parser, evaluate_config_from_args

    parser = build_parser()
    args = parser.parse_args(["evaluate", "runs/x", "--out", "o", "--jobs", "1"])
    assert evaluate_config_from_args(args).n_jobs == 1
    args = parser.parse_args(["evaluate", "runs/x", "--out", "o"])
    assert evaluate_config_from_args(args).n_jobs is None
    with pytest.raises(ValidationError, match="n_jobs"):
        evaluate_config_from_args(parser.parse_args(["evaluate", "x", "--out", "o", "--jobs", "0"]))


def test_an_error_in_this_process_stops_handing_out_calls() -> None:
    # the first call runs here and fails; the worker must not go on through the rest
    import time

    calls = [(int, ("x",), {})] + [(time.sleep, (0.5,), {}) for _ in range(80)]
    t0 = time.perf_counter()
    with pytest.raises(ValueError):
        run_calls(calls, 2)
    assert time.perf_counter() - t0 < 12.0  # 80 x 0.5 s: 20 s on two processes if it went on


def _jobs_in_a_daemon(_: int) -> int:
    return resolve_jobs(2, 12, 10 * MIN_WORK)


def test_a_daemonic_process_runs_its_calls_itself() -> None:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:  # Pool workers are daemons
        assert pool.map(_jobs_in_a_daemon, [0]) == [1]


def test_layer_flags_say_which_split_they_come_from() -> None:
    """A row's flags are the held-out estimate's, plus the train estimate's marked ``train:``."""
    feats, y_tr, y_ho = _layers(n=120)
    feats["train"] = {k: v[:40] for k, v in feats["train"].items()}  # too small: upper estimate
    y_tr = y_tr[:40]
    kw = dict(n_classes=3, omega="shannon", random_state=0)
    rows = layer_entropies(["l0", "l1", "l2"], feats, y_tr, y_ho, alpha=1.5, method="auto",
                           delta=0.05, n_bootstrap=20, n_jobs=1, **kw)  # fmt: skip
    seen_train = False
    for row in rows:
        z_ho = feats["certify"][row.name]
        ho = estimate_and_bound(z_ho, y_ho, delta=0.05 / 3, n_bootstrap=20, **kw)
        tr = estimate_and_bound(feats["train"][row.name], y_tr, n_bootstrap=20, **kw)
        checks = ("raw_order_violation", "order_violation", "dpi_violation")
        own = {f for f in row.flags if f not in checks}
        assert own == set(ho[0].flags) | {f"train:{f}" for f in tr[0].flags}
        seen_train |= any(f.startswith("train:") for f in own)
    assert seen_train
