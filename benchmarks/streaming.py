"""Streaming feature extraction: overhead over plain inference, and memory vs dataset size.

1. Speed: a torchvision ``resnet18`` (10 classes) on CIFAR-sized synthetic images from a
   ``DataLoader``; ``clt_gen.stream_pass`` reading 4 layers (``layer1..layer4``, ``avgpool``
   reduction) vs the plain inference loop over the same loader, alternated, best of
   ``--repeats``. Target: ratio <= 1.15.
2. Memory: peak RSS of one streaming pass (small CNN, 4 layers, features written to a
   cache directory) over a 20k- and a 200k-example synthetic dataset, each in a fresh
   subprocess. Target: growth <= 500 MB.

    python benchmarks/streaming.py [--n-speed 4000] [--repeats 2] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class SyntheticImages(Dataset):
    """``n`` images ``3×32×32`` generated from their index (nothing held in memory)."""

    def __init__(self, n: int, size: int = 32) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, self.size, self.size, generator=g), i % 10


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def speed(n: int, repeats: int, dev: torch.device, batch: int) -> dict[str, float]:
    import torchvision

    from clt_gen.sources import as_source
    from clt_gen.streaming import stream_pass

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(dev).eval()
    loader = DataLoader(SyntheticImages(n), batch_size=batch, num_workers=2)
    layers = ["layer1", "layer2", "layer3", "layer4"]

    def plain() -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            for x, _ in loader:
                model(x.to(dev))
        _sync(dev)
        return time.perf_counter() - t0

    def streamed() -> float:
        with tempfile.TemporaryDirectory() as d:
            src = as_source(loader, name="bench")
            t0 = time.perf_counter()
            stream_pass(
                model,
                src,
                layers=layers,
                reduce="avgpool",
                device=dev,
                cache_dir=d,
                cache_parts={"model": f"r18-{time.time()}"},
                progress=False,
            )
            _sync(dev)
            return time.perf_counter() - t0

    plain()  # warm-up (threads, cudnn)
    t_plain, t_stream = [], []
    for _ in range(repeats):
        t_plain.append(plain())
        t_stream.append(streamed())
    return {
        "n": n,
        "plain_s": min(t_plain),
        "stream_s": min(t_stream),
        "ratio": min(t_stream) / min(t_plain),
    }


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.c2(self.c1(x))))


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(n: int, cache: str) -> None:
    """Run one pass; print the RSS before it and the largest RSS sampled during it (MB)."""
    import threading

    from clt_gen.sources import as_source
    from clt_gen.streaming import stream_pass

    torch.manual_seed(0)
    torch.set_num_threads(2)
    loader = DataLoader(SyntheticImages(n), batch_size=512, num_workers=0)
    base = _rss_mb()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    res = stream_pass(
        SmallCNN().eval(),
        as_source(loader, name="mem"),
        layers=["input", "c1", "c2", "fc"],
        reduce="project",
        max_features=128,
        cache_dir=cache,
        cache_parts={"model": "small"},
        digests=True,
        progress=False,
    )
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_mb())
    print(
        json.dumps(
            {
                "n": n,
                "rows": res.n_rows,
                "peak_mb": peak[0],
                "before_mb": base,
                "growth_mb": peak[0] - base,
            }
        )
    )


def memory(sizes: list[int]) -> list[dict[str, float]]:
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(n), "--cache", d],
                check=True,
                capture_output=True,
                text=True,
            )
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-speed", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", type=int, nargs=2, default=[20_000, 200_000])
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    if args.child is not None:
        memory_child(args.child, args.cache)
        return
    dev = _device(args.device)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, {torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'CPU'}",
        "speed": speed(args.n_speed, args.repeats, dev, args.batch),
    }
    print(json.dumps(result["speed"]), flush=True)
    if not args.skip_memory:
        mem = memory(args.sizes)
        result["memory"] = mem
        result["rss_growth_mb"] = mem[1]["peak_mb"] - mem[0]["peak_mb"]
        result["target"] = "speed ratio <= 1.15; rss_growth_mb <= 500"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
