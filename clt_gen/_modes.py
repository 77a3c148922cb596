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

from torch import nn

__all__ = ["eval_mode"]


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
