"""Errors raised by :mod:`clt_gen`: one family rooted at :class:`ValidationError`."""

from __future__ import annotations

from estimators.errors import ValidationError, unknown_name_error

__all__ = ["ValidationError", "CheckpointError", "DataError", "unknown_name_error"]


class CheckpointError(ValidationError):
    """A checkpoint is missing, corrupted, unsafe to load or inconsistent with its metadata."""


class DataError(ValidationError):
    """A dataset is missing, malformed, or inconsistent with the model or the splits."""
