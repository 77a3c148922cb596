"""Render benchmarks/results/estimators_accuracy.json as Markdown tables (for RESULTS.md).

python benchmarks/accuracy_table.py
"""

from __future__ import annotations

import json
import pathlib

PATH = pathlib.Path(__file__).parent / "results" / "estimators_accuracy.json"
METHODS = ("gaussian", "probe", "knn", "ksg", "quantized")


def main() -> None:
    data = json.loads(PATH.read_text())["results"]
    for n in sorted({v["n_samples"] for v in data.values()}):
        print(f"\n#### n_samples = {n}: bias / RMSE / 95% CI coverage (information-loss bias)\n")
        print("| omega | K | d | truth | " + " | ".join(METHODS) + " |")
        print("|---|---|---|---|" + "---|" * len(METHODS))
        keys = sorted({(v["omega"], v["n_classes"], v["n_features"]) for v in data.values()})
        for omega, k, d in keys:
            cells = []
            truth = None
            for m in METHODS:
                v = data.get(f"K={k} d={d} n={n} {m} {omega}")
                if v is None:
                    cells.append("—")
                    continue
                truth = v["truth"]
                loss = f" ({v['loss_bias']:+.3f})" if v["loss_bias"] is not None else ""
                cells.append(f"{v['bias']:+.3f} / {v['rmse']:.3f} / {v['coverage']:.0%}{loss}")
            print(f"| {omega} | {k} | {d} | {truth:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
