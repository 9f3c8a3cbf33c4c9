"""Argument checks shared by every layer: the error names the parameter."""

from __future__ import annotations

import math

__all__ = ["check_bool", "check_cost", "check_int", "check_number", "check_rate"]


def check_bool(name: str, value: object) -> bool:
    """``value`` as a bool (not an int that means one).

    Raises:
        TypeError: ``value`` is not a bool.
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


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


def check_rate(rate: object, per: object, burst: object) -> tuple[float, float, int]:
    """The settings of a GCRA rate limit: ``rate`` calls per ``per`` seconds, ``burst`` at once.

    Shared by the in-process and the Redis rate limiters, which must agree.

    Raises:
        TypeError: a setting of the wrong type (``burst`` must be an int, not a bool).
        ValueError: a setting out of range.
    """
    checked_rate = check_number("rate", rate)
    checked_per = check_number("per", per)
    if type(burst) is not int:  # bool is an int, but never a burst
        raise TypeError(f"burst must be an int, not {type(burst).__name__}")
    if burst < 1:
        raise ValueError("burst must be >= 1")
    return checked_rate, checked_per, burst


def check_cost(cost: object, burst: int) -> float:
    """The cost of one acquire: a positive number no larger than the limit's ``burst``.

    Raises:
        TypeError, ValueError: as :func:`check_number`, or ``cost`` above ``burst``.
    """
    checked = check_number("cost", cost)
    if checked > burst:
        raise ValueError(f"cost must be <= burst ({burst}), not {checked:g}")
    return checked
