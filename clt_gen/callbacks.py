"""Training callbacks: the state a callback sees, and the base class.

Kept apart from :mod:`clt_gen.training` so that modules providing callbacks (for example
:class:`clt_gen.trainability.TrainabilityProbe`) need not import the trainer.

Examples
--------
>>> class CountSteps(Callback):
...     def __init__(self):
...         self.n = 0
...     def on_step(self, state):
...         self.n += 1
>>> CountSteps().n
0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["TrainState", "Callback"]


@dataclass
class TrainState:
    """What callbacks see after each optimisation step.

    Attributes
    ----------
    model : nn.Module
    step, epoch : int
    loss : float
        Mean loss of the batch.
    x, y : torch.Tensor
        The batch.
    config : TrainConfig
    log : callable
        ``log(dict)`` appends a record to ``metrics.jsonl``.
    """

    model: nn.Module
    step: int
    epoch: int
    loss: float
    x: torch.Tensor
    y: torch.Tensor
    config: Any
    log: Any


class Callback:
    """Override ``on_step`` and/or ``on_epoch_end``; both receive a :class:`TrainState`."""

    def on_step(self, state: TrainState) -> None:  # noqa: B027 - optional hook
        """Run after every optimisation step."""

    def on_epoch_end(self, state: TrainState) -> None:  # noqa: B027 - optional hook
        """Run after every epoch."""
