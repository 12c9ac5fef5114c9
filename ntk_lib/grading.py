"""Friendly checks for the autograded tests of the exercises.

Each check raises ``AssertionError`` with a message a student can act on: what was
expected, what was received, and the tolerance used (and why it is that loose), rather
than a bare ``assert``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _as_array(value: Any, name: str = "value") -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    try:
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(name)
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AssertionError(
            f"{name}: expected a number, a list of numbers or a tensor, got "
            f"{type(value).__name__} {value!r:.60}"
        ) from None


def _describe(e: np.ndarray) -> str:
    """A short description of an expected array for a message."""
    if e.ndim == 0:
        return f"{float(e):.6g}"
    if e.size <= 4:
        return "[" + ", ".join(f"{x:.6g}" for x in e.reshape(-1)) + "]"
    return f"an array of shape {e.shape}"


def check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> None:
    """Fail unless ``value`` is an instance of ``expected``."""
    if not isinstance(value, expected):
        names = (
            expected.__name__
            if isinstance(expected, type)
            else " or ".join(t.__name__ for t in expected)
        )
        raise AssertionError(f"{name}: expected a {names}, got {type(value).__name__}")


def check_shape(name: str, value: Any, shape: Sequence[int]) -> None:
    """Fail unless ``value`` (tensor or array) has exactly ``shape``."""
    got = tuple(value.shape) if hasattr(value, "shape") else None
    if got != tuple(shape):
        raise AssertionError(
            f"{name}: expected a tensor of shape {tuple(shape)}, "
            f"got {got if got is not None else type(value).__name__}"
        )


def check_close(
    name: str, value: Any, expected: Any, *, rtol: float = 1e-6, atol: float = 0.0, why: str = ""
) -> None:
    """Fail unless ``|value - expected| <= atol + rtol |expected|`` elementwise.

    ``why`` explains the tolerance to the student (e.g. "Monte Carlo with 10^4 samples").
    """
    v, e = _as_array(value, name), _as_array(expected, f"{name} (expected value)")
    if not np.all(np.isfinite(e)):
        raise AssertionError(
            f"{name}: the expected value itself contains NaN or infinite entries "
            f"({_describe(e)}), so no answer can be checked against it"
        )
    if v.shape != e.shape:
        raise AssertionError(
            f"{name}: expected shape {e.shape} ({_describe(e)}), got shape {v.shape}"
        )
    if not np.all(np.isfinite(v)):
        raise AssertionError(
            f"{name}: expected finite values close to {_describe(e)}, got NaN or infinite values"
        )
    err = np.abs(v - e)
    bound = atol + rtol * np.abs(e)
    if np.any(err > bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape) if err.ndim else ()
        where = f" at index {tuple(int(k) for k in i)}" if err.ndim else ""
        note = f" ({why})" if why else ""
        raise AssertionError(
            f"{name}: expected {e[i]:.6g}{where}, got {v[i]:.6g}; allowed error "
            f"{bound[i] if err.ndim else bound:.2g} = atol {atol:g} + rtol {rtol:g} *"
            f" |expected|{note}"
        )


def check_between(name: str, value: float, low: float, high: float, *, why: str = "") -> None:
    """Fail unless ``low <= value <= high`` (e.g. a fitted slope in a theory's range).

    A NaN bound, ``low > high`` or a value that is not a finite number fails.
    """
    low, high = float(low), float(high)
    if not (low <= high):
        raise AssertionError(
            f"{name}: the expected range [{low:g}, {high:g}] is empty or NaN, "
            "so no answer can be checked against it"
        )
    value = _as_array(value, name)
    if value.size != 1:
        raise AssertionError(
            f"{name}: expected a single number in [{low:g}, {high:g}], "
            f"got an array of shape {value.shape}"
        )
    value = float(value.reshape(()))
    if not low <= value <= high:
        note = f" ({why})" if why else ""
        raise AssertionError(
            f"{name}: expected a value in [{low:g}, {high:g}], got {value:.4g}{note}"
        )
