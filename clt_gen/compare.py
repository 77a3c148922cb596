"""Side-by-side comparison of evaluation reports (regularizers, architectures, ...).

Examples
--------
>>> rows = [{"run": "a", "gap": 0.1, "floor": 0.0}, {"run": "b", "gap": 0.3, "floor": 0.1}]
>>> print(format_table(rows, ["run", "gap", "floor"]))
run  gap     floor
a    0.1000  0.0000
b    0.3000  0.1000
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from clt_gen._io import atomic_write_bytes, atomic_write_text
from clt_gen.errors import ValidationError
from clt_gen.render import new_figure, png_bytes
from clt_gen.report import Report, load_report

__all__ = ["report_row", "compare_reports", "format_table", "COLUMNS", "CLT_TERMS"]

CLT_TERMS = (
    "floor",
    "fitting_error",
    "H_logits_train",
    "H_logits_heldout",
    "info_loss_total",
    "loss_max",
    "train_risk",
)
COLUMNS = [
    "run",
    "train_risk",
    "check_risk",
    "gap",
    "error_gap",
    "floor",
    "fitting_error",
    "H_logits_train",
    "H_logits_heldout",
    "info_loss_total",
    "loss_max",
    "bounds_held",
    "best_error_bound",
    "check_error",
]


def report_row(report: Report, name: str) -> dict[str, Any]:
    """Return the comparison columns of one report (typed fields only)."""
    r, layers = report.risks, report.layers
    losses = [row.information_loss.value for row in layers if row.information_loss]
    best = report.best_error_certificate()
    held = [b.held for b in report.bounds if b.held is not None]
    return {
        "run": name,
        "train_risk": r.train,
        "check_risk": r.check,
        "gap": r.gap,
        "error_gap": r.error_gap,
        "floor": report.floor.value,
        "fitting_error": report.floor.fitting_error,
        "H_logits_train": layers[-1].H_train.value,
        "H_logits_heldout": layers[-1].H_heldout.value,
        "info_loss_total": float(sum(max(v, 0.0) for v in losses)),
        "loss_max": report.loss_max.get("observed"),
        "bounds_held": f"{sum(bool(h) for h in held)}/{len(held)}",
        "best_error_bound": best.value if best is not None else None,
        "check_error": r.check_error,
    }


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Return ``rows`` as a fixed-width text table with the given ``columns``."""

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    widths = {c: max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    for r in rows:
        lines.append("  ".join(cell(r.get(c)).ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def compare_reports(
    runs: list[str | os.PathLike[str]],
    *,
    out: str | None = None,
    names: list[str] | None = None,
) -> str:
    """Table of the CLT terms and bounds of several reports; optional plot and JSON.

    Parameters
    ----------
    runs : list of path
        Evaluation directories (each holding a ``report.json``) or ``report.json`` files.
    out : path, optional
        Also write ``compare.json`` and ``compare.png`` (the CLT terms against the gap) there.
    names : list of str, optional
        One label per run (default: each run's directory name).

    Returns
    -------
    str
        A fixed-width text table, one row per run.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from clt_gen.report import Report, example_report_dict
    >>> run = Report.from_dict(example_report_dict()).save(pathlib.Path(tempfile.mkdtemp()) / "a")
    >>> print(compare_reports([run]).splitlines()[0].split()[0])
    run
    """
    if names is not None and len(names) != len(runs):
        raise ValidationError(
            f"names must give one label per run ({len(runs)} runs, {len(names)} names)"
        )
    rows = []
    for i, run in enumerate(runs):
        p = pathlib.Path(run)
        if not (p / "report.json").exists() and not p.name == "report.json":
            raise ValidationError(f"{p} holds no report.json; pass evaluation directories")
        label = names[i] if names is not None else (p.name if p.is_dir() else p.parent.name)
        rows.append(report_row(load_report(p), label))
    if out:
        d = pathlib.Path(out)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "compare.json", json.dumps(rows, indent=1))
        fig, axes = new_figure((13, 3.5), ncols=3)
        names = [r["run"] for r in rows]
        x = range(len(rows))
        axes[0].bar(x, [r["gap"] for r in rows])
        axes[0].set_title("measured gap (check − train risk)")
        for key in ("floor", "H_logits_train", "H_logits_heldout", "train_risk"):
            axes[1].plot(x, [r[key] for r in rows], "o-", label=key)
        axes[1].set_title("CLT terms")
        axes[1].legend(fontsize=7)
        axes[2].bar(x, [r["info_loss_total"] for r in rows])
        axes[2].set_title("total information loss")
        for ax in axes:
            ax.set_xticks(list(x), names, rotation=30, ha="right", fontsize=7)
        fig.tight_layout()
        atomic_write_bytes(d / "compare.png", png_bytes(fig))
    return format_table(rows, COLUMNS)
