"""The demo: train a small network on the embedded ``digits`` data and evaluate it.

Runs in well under a minute on a laptop CPU and writes ``runs/demo/report.{json,html}``.
"""

from __future__ import annotations

import pathlib

from clt_gen.data import DataConfig
from clt_gen.evaluation import EvaluateConfig, evaluate
from clt_gen.report import Report
from clt_gen.training import TrainConfig, train

__all__ = ["run_demo", "DEMO_TRAIN", "demo_evaluate_config"]

DEMO_TRAIN = TrainConfig(
    arch="lenet",
    dataset="digits",
    epochs=15,
    batch_size=32,
    optimizer="adamw",
    lr=3e-3,
    weight_decay=1e-4,
    data=DataConfig(random_state=0, val_fraction=0.1, check_fraction=0.5),
    random_state=0,
)


def demo_evaluate_config(out_dir: str | pathlib.Path, *, progress: bool = True) -> EvaluateConfig:
    """Return the evaluation configuration ``clt-gen demo`` runs, writing to ``out_dir``."""
    out = pathlib.Path(out_dir)
    return EvaluateConfig(
        checkpoint=str(out / "checkpoint"),
        out=str(out),
        delta=0.05,
        n_bootstrap=200,
        pac_bayes=True,
        progress=progress,
    )


def run_demo(out_dir: str | pathlib.Path = "runs/demo", *, progress: bool = True) -> Report:
    """Train (skipped when a finished checkpoint exists), evaluate, return the report."""
    out = pathlib.Path(out_dir)
    ckpt = out / "checkpoint"
    meta = ckpt / "meta.json"
    if not meta.exists() or "init_sha256" not in meta.read_text():  # older demos lack w_0
        cfg = TrainConfig(**{**DEMO_TRAIN.__dict__, "progress": progress})
        train(cfg, ckpt)
    return evaluate(demo_evaluate_config(out, progress=progress))
