"""One context manager for train/eval mode, used wherever the package runs a model.

Examples
--------
>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
>>> net[1].eval()  # a mixed state: the container trains, the dropout does not
Dropout(p=0.5, inplace=False)
>>> with eval_mode(net):
...     net.training
False
>>> net.training, net[1].training
(True, False)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from clt_gen.errors import ValidationError

__all__ = ["eval_mode", "resolve_device"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own flag on exit."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def resolve_device(device: str | None = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValidationError(
            "device='cuda' was requested but no CUDA device is available; "
            "use device='auto' or 'cpu'"
        )
    return torch.device(device)
