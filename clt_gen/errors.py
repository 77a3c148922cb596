"""Errors raised by :mod:`clt_gen`: one family rooted at :class:`ValidationError`."""

from __future__ import annotations

from estimators.errors import ValidationError, unknown_name_error

__all__ = [
    "ValidationError",
    "CheckpointError",
    "DataError",
    "unknown_name_error",
    "check_field_types",
]


class CheckpointError(ValidationError):
    """A checkpoint is missing, corrupted, unsafe to load or inconsistent with its metadata."""


class DataError(ValidationError):
    """A dataset is missing, malformed, or inconsistent with the model or the splits."""


def check_field_types(obj: object, where: str = "") -> None:
    """Refuse dataclass fields whose values are not of their annotated simple type.

    ``int``, ``float``, ``str`` and ``bool`` fields (and ``X | None``) are checked; an
    int is accepted for a float, a bool is never an int. Other annotations are left to
    the class's own checks.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     epochs: int = 1
    >>> check_field_types(C(epochs="two"), "[train]")
    Traceback (most recent call last):
    ...
    estimators.errors.ValidationError: [train] epochs must be an int (got 'two')
    """
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(type(obj))
    names = {int: "an int", float: "a float", str: "a string", bool: "true or false"}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        hint = hints.get(f.name)
        origin = typing.get_origin(hint)
        if origin is None:
            base, optional = hint, False
        elif origin in (typing.Union, types.UnionType):
            args = typing.get_args(hint)
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                continue
            base, optional = rest[0], len(args) == 2
        else:
            continue  # dict[...], tuple[...], Literal[...]: the class checks them itself
        if base not in names:
            continue
        v = getattr(obj, f.name)
        if v is None and optional:
            continue
        ok = isinstance(v, base) and not (base is not bool and isinstance(v, bool))
        if base is float and isinstance(v, int) and not isinstance(v, bool):
            ok = True
        if not ok:
            prefix = f"{where} " if where else ""
            raise ValidationError(
                f"{prefix}{f.name} must be {names[base]}"
                + (" or None" if optional else "")
                + f" (got {v!r})"
            )
