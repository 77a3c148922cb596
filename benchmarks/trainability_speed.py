"""Examples/s of structure-matrix spectra against (a) the naive loop of K backward passes
per example and (b) K batched backward passes over the same batch (the cost floor).

    python benchmarks/trainability_speed.py
"""

from __future__ import annotations

import json
from functools import partial

import torch
from _common import best_of, peak_rss_mb, save

from clt_gen.models import build_model
from clt_gen.trainability import structure_matrices_naive, structure_spectrum

CASES = [
    ("lenet", (1, 28, 28), {}, 64),
    ("model-c", (1, 28, 28), {"k": 3, "w": 32}, 64),
    ("resnet18", (3, 32, 32), {"norm": "batchnorm"}, 16),
]


def batched_backward(model: torch.nn.Module, x: torch.Tensor) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    out = model(x)
    for k in range(out.shape[1]):
        torch.autograd.grad(out[:, k].sum(), params, retain_graph=k < out.shape[1] - 1)


def main() -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for arch, shape, kw, n in CASES:
        torch.manual_seed(0)
        model = build_model(arch, shape, 10, **kw).to(dev).eval()
        x = torch.randn(n, *shape, device=dev)
        n_naive = min(n, 8)
        t_naive = best_of(partial(structure_matrices_naive, model, x[:n_naive]), 1) / n_naive
        t_floor = best_of(partial(batched_backward, model, x)) / n
        t_fast = best_of(partial(structure_spectrum, model, x)) / n
        row = {
            "arch": arch,
            "batch": n,
            "device": str(dev),
            "fast_examples_per_s": 1 / t_fast,
            "naive_examples_per_s": 1 / t_naive,
            "floor_examples_per_s": 1 / t_floor,
            "speedup_vs_naive": t_naive / t_fast,
            "fast_over_floor": t_fast / t_floor,
            "peak_rss_mb": peak_rss_mb(),
        }
        rows.append(row)
        print(json.dumps(row))
    save("trainability_speed", rows)


if __name__ == "__main__":
    main()
