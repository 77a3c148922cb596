"""The Bayes risk of the random-MLP-teacher tasks: what no head can beat (issue 11).

The certified bound's slack and the ``auto`` estimate's bias on ``fmnist-* mlp K=10`` are
made of the selected head's excess risk ``E_z D(p(.|z), q(.|z))`` at 5,000 fitting rows
(THEORY §5.1). ``teacher_oracle.py`` shows heads that are handed the teacher's hidden
layer do far better; this script asks what a head that knows *everything except the
weights* can do: the teacher's architecture (one tanh layer of 64 units, no biases), its
scales and the Gaussian law its weights were drawn from (``estimators_accuracy.
teacher_layers``). With that prior, the posterior predictive

    q(y|z) = E[ softmax(f_θ(z))_y | the n fitting rows ]

minimizes the expected excess log loss (and Brier) over teachers drawn from that prior
and samples drawn from them: its excess is the Bayes risk of the task family, a floor
for every head fitted on ``n`` rows, ours or anyone's, on average over such teachers.

The expectation is computed by Hamiltonian Monte Carlo on all 2,688 (``pca32``; 2,368
for ``net32``) weights, full batch, float64, 30 leapfrog steps of a size tuned during
burn-in (the first third of the iterations) to a 75% acceptance rate, then fixed. Each
row reports, on the 20,000 test rows ``teacher_oracle.py`` uses for the same seed and
``n`` (same draws, so the columns line up with its table):

* ``bayes_shannon`` / ``bayes_squared``: excess log loss ``E_z KL(p || q)`` and excess
  Brier ``E_z ½‖p − q‖²`` of the posterior predictive (nats / squared units);
* ``single_shannon``: the mean excess of one posterior draw (a sample, not a predictor
  anyone would use; it shows how far apart the weights consistent with the data are);
* ``u_true`` and ``u_chain``: the negative log posterior of the teacher's own weights
  and the chain's median after burn-in. The teacher is a typical draw of its posterior
  when the two agree;
* ``post_shannon`` / ``post_squared``: the posterior mean of the conditional entropy
  functional ``E_z H_Ω(softmax(f_θ(z)))`` minus the truth: the Bayes estimate of
  ``H_Ω(Y|Z)`` itself, which needs no held-out score.

``--init planted`` starts the chain at the teacher's own weights instead of at a MAP fit
from a random start: if both chains give the same predictive, the chain has forgotten
where it started (a mixing check).

    python benchmarks/bayes_teacher.py --shard 0/2 &   # about 25 min per shard
    python benchmarks/bayes_teacher.py --shard 1/2
    python benchmarks/bayes_teacher.py --report

Rows are appended to ``results/bayes_teacher.jsonl`` one per run (resumable).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import estimators_accuracy as battery  # noqa: E402
from _common import load_jsonl, my_share  # noqa: E402

OUT = pathlib.Path(__file__).parent / "results" / "bayes_teacher.jsonl"
N_TEST = 20_000  # as teacher_oracle.py
K = 10
WIDTH = 64
LEAPFROG = 30
TARGET_ACCEPT = 0.75


class Posterior:
    """The teacher's model, prior and likelihood on ``n`` rows; ``θ = (W, V)`` flattened."""

    def __init__(self, z: np.ndarray, y: np.ndarray) -> None:
        self.d = z.shape[1]
        self.z, self.y = torch.tensor(z), torch.tensor(y)
        self.s1, self.s2 = 1.5 / np.sqrt(self.d), 3.0 / np.sqrt(WIDTH)
        self.dim = self.d * WIDTH + WIDTH * K

    def logits(self, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        w = theta[: self.d * WIDTH].view(self.d, WIDTH)
        v = theta[self.d * WIDTH :].view(WIDTH, K)
        return torch.tanh(z @ w * self.s1) @ v * self.s2

    def energy(self, theta: torch.Tensor) -> torch.Tensor:
        """Negative log posterior up to a constant (standard normal prior on every weight)."""
        logp = torch.log_softmax(self.logits(theta, self.z), 1)
        return -logp[torch.arange(len(self.y)), self.y].sum() + 0.5 * (theta**2).sum()

    def grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = theta.detach().requires_grad_(True)
        u = self.energy(t)
        (g,) = torch.autograd.grad(u, t)
        return u.detach(), g


def _map_start(post: Posterior, seed: int, steps: int = 1500) -> torch.Tensor:
    torch.manual_seed(seed)
    theta = torch.randn(post.dim, dtype=torch.float64).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        post.energy(theta).backward()
        opt.step()
    return theta.detach()


def _leapfrog(
    post: Posterior, theta: torch.Tensor, step: float, gen: torch.Generator
) -> tuple[torch.Tensor, float, float]:
    """One HMC proposal from ``theta``: ``(proposal, acceptance probability, energy at theta)``."""
    mom = torch.randn(post.dim, dtype=torch.float64, generator=gen)
    u0, g = post.grad(theta)
    th, pm = theta.clone(), mom - 0.5 * step * g
    for i in range(LEAPFROG):
        th = th + step * pm
        u1, g = post.grad(th)
        if i < LEAPFROG - 1:
            pm = pm - step * g
    pm = pm - 0.5 * step * g
    dh = float(u0 + 0.5 * (mom**2).sum() - u1 - 0.5 * (pm**2).sum())
    accept = float(np.exp(min(dh, 0.0))) if np.isfinite(dh) else 0.0
    return th, accept, float(u0)


def run(task: str, n: int, seed: int, init: str, iters: int) -> dict[str, Any]:
    """One (task, n, seed, init) row."""
    from estimators.entropies import generalized_entropy

    torch.set_num_threads(1)
    pixels = battery._fashion_pixels()
    pool = battery._pca(pixels, 32) if task == "pca32" else battery._penultimate(pixels)
    d = pool.shape[1]
    p_all = battery._teacher(pool, K, "mlp", seed=K)
    gen = np.random.default_rng(seed)  # the draws of teacher_oracle.py for (seed, n)
    idx = gen.integers(0, len(pool), n + N_TEST)
    z, p = pool[idx], p_all[idx]
    y = battery._sample_labels(p, gen)
    post = Posterior(z[:n], y[:n])
    z_test, p_test = torch.tensor(z[n:]), torch.tensor(p[n:])

    w_gen = np.random.default_rng(700 + K)  # teacher_layers' draws, in its order
    w_true, v_true = w_gen.normal(size=(d, WIDTH)), w_gen.normal(size=(WIDTH, K))
    true = torch.tensor(np.concatenate([w_true.ravel(), v_true.ravel()]))
    hidden, v, scale = battery.teacher_layers(d, K, "mlp", seed=K)
    expected = hidden(z[n : n + 5]) @ v * scale
    if not np.allclose(post.logits(true, z_test[:5]).numpy(), expected):
        raise RuntimeError("the teacher's weights were not rebuilt: teacher_layers changed")
    t0 = time.perf_counter()
    theta = true.clone() if init == "planted" else _map_start(post, seed)
    tgen = torch.Generator().manual_seed(seed)
    burn, log_step, tuned = iters // 3, np.log(0.003), []
    mean_q = torch.zeros_like(p_test)
    singles, energies, funcs, kept, accepted = [], [], [], 0, 0
    for it in tqdm(range(iters), desc=f"{task} n={n} seed={seed} {init}", leave=False):
        step = float(np.exp(log_step) * np.random.default_rng(it).uniform(0.8, 1.2))
        proposal, accept, u0 = _leapfrog(post, theta, step, tgen)
        if float(torch.rand((), generator=tgen, dtype=torch.float64)) < accept:
            theta, accepted = proposal, accepted + 1
        if it < burn:  # Robbins-Monro on log step size, then the mean of the second half
            log_step += 0.05 * (accept - TARGET_ACCEPT)
            tuned += [log_step] if it >= burn // 2 else []
            log_step = float(np.mean(tuned)) if it == burn - 1 else log_step
            continue
        q = torch.softmax(post.logits(theta, z_test), 1)
        mean_q += q
        kept += 1
        energies.append(u0)
        log_q = torch.log(q)
        singles.append(float((p_test * (torch.log(p_test) - log_q)).sum(1).mean()))
        funcs.append([float(generalized_entropy(q.numpy(), omega=o).mean())
                      for o in ("shannon", "squared")])  # fmt: skip
    q = mean_q / kept
    truth = {o: float(generalized_entropy(p[n:], omega=o).mean()) for o in ("shannon", "squared")}
    func = np.mean(funcs, axis=0)
    return {
        "task": f"fmnist-{task} mlp K={K}",
        "n": n,
        "seed": seed,
        "init": init,
        "iters": iters,
        "kept": kept,
        "accept": accepted / iters,
        "step": float(np.exp(log_step)),
        "bayes_shannon": float((p_test * (torch.log(p_test) - torch.log(q))).sum(1).mean()),
        "bayes_squared": float(0.5 * ((p_test - q) ** 2).sum(1).mean()),
        "single_shannon": float(np.mean(singles)),
        "u_true": float(post.energy(true)),
        "u_chain": float(np.median(energies)),
        "post_shannon": float(func[0] - truth["shannon"]),
        "post_squared": float(func[1] - truth["squared"]),
        "seconds": time.perf_counter() - t0,
    }


COLUMNS = (
    ("bayes_shannon", "Bayes predictive: excess log loss", "+.3f"),
    ("bayes_squared", "excess Brier", "+.4f"),
    ("single_shannon", "one posterior draw: excess log loss", "+.3f"),
    ("post_shannon", "posterior mean of H − truth (shannon)", "+.3f"),
    ("post_squared", "(squared)", "+.4f"),
    ("u_true", "energy: teacher", ".0f"),
    ("u_chain", "energy: chain median", ".0f"),
    ("accept", "acceptance", ".2f"),
)


def report(rows: list[dict[str, Any]]) -> str:
    heads = " | ".join(title for _, title, _ in COLUMNS)
    lines = [f"| task | n | start | seeds | {heads} |", "|---" * (len(COLUMNS) + 4) + "|"]
    groups = sorted({(r["task"], r["n"], r["init"]) for r in rows})
    for task, n, init in groups:
        sub = [r for r in rows if (r["task"], r["n"], r["init"]) == (task, n, init)]

        def cell(key: str, fmt: str, _sub: list[dict[str, Any]] = sub) -> str:
            vals = [r[key] for r in _sub]
            if len(vals) == 1:
                return format(vals[0], fmt)
            mean, lo, hi = (format(v, fmt) for v in (np.mean(vals), min(vals), max(vals)))
            return f"{mean} ({lo} to {hi})"

        seeds = ",".join(str(r["seed"]) for r in sorted(sub, key=lambda r: r["seed"]))
        cells = " | ".join(cell(key, fmt) for key, _, fmt in COLUMNS)
        lines.append(f"| {task} | {n:,} | {init} | {seeds} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["pca32", "net32"], choices=["pca32", "net32"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2500, 5000, 10000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--planted",
        type=int,
        nargs="*",
        default=[5000],
        help="sizes also run from the teacher's weights (seed 0; a mixing check)",
    )
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--shard", default="0/1", help="I/N: this process runs every N-th job")
    ap.add_argument("--report", action="store_true", help="print the table from the cache")
    args = ap.parse_args()
    if not args.report:
        jobs = [(t, n, s, "map") for t in args.tasks for n in args.sizes for s in args.seeds]
        jobs += [(t, n, 0, "planted") for t in args.tasks for n in args.planted]
        done = {(r["task"], r["n"], r["seed"], r["init"]) for r in load_jsonl(OUT)}
        todo = my_share(jobs, args.shard, done, lambda j: (f"fmnist-{j[0]} mlp K={K}", *j[1:]))
        OUT.parent.mkdir(parents=True, exist_ok=True)
        for task, n, seed, init in tqdm(todo, desc="Bayes teacher"):
            row = run(task, n, seed, init, args.iters)
            with open(OUT, "a") as fh:  # one complete line per run: a kill loses one row
                fh.write(json.dumps(row) + "\n")
    print(report(load_jsonl(OUT)))


if __name__ == "__main__":
    main()
