"""The one exception family shared by :mod:`estimators` and :mod:`clt_gen`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ValidationError", "unknown_name_error"]


class ValidationError(ValueError):
    """Raised for bad input at a public boundary.

    Messages name the parameter, the rule, the value received and the fix.
    It subclasses :class:`ValueError`, so generic handlers keep working.
    """


def unknown_name_error(kind: str, name: object, valid: Iterable[str]) -> ValidationError:
    """Build the error for an unknown registry name, listing the valid names.

    Examples
    --------
    >>> str(unknown_name_error("omega", "shanon", ["shannon", "squared"]))
    "omega must be one of ['shannon', 'squared'] (got 'shanon'); did you mean 'shannon'?"
    """
    names = sorted(valid)
    msg = f"{kind} must be one of {names} (got {name!r})"
    close = difflib.get_close_matches(str(name), names, n=1)
    if close:
        msg += f"; did you mean {close[0]!r}?"
    return ValidationError(msg)
