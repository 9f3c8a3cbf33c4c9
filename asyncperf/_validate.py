"""Argument checks shared by every layer: the error names the parameter."""

from __future__ import annotations

import math

__all__ = ["check_int", "check_number"]


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    """``value`` as an int (not a bool) of at least ``minimum``.

    Raises:
        TypeError: ``value`` is not an int.
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    return value


def check_number(name: str, value: object, *, minimum: float = 0.0, strict: bool = True) -> float:
    """``value`` as a finite float above ``minimum`` (or equal to it, when not ``strict``).

    Raises:
        TypeError: ``value`` is not an int or a float.
        ValueError: ``value`` is out of range, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not (value > minimum if strict else value >= minimum):  # also refuses NaN
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}, not {value!r}")
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    return float(value)
