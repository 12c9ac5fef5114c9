"""Argument validation shared by every module of :mod:`ntk_lib`.

Each check raises at the library's edge with a message that names the argument, the
value that was given and what is accepted, so that a learner never has to decode a shape
error from deep inside torch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


def choice(name: str, value: Any, accepted: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``accepted`` (a string option), else raise
    ``ValueError``."""
    accepted = tuple(accepted)
    if not isinstance(value, str) or value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
    return value


def _integer(name: str, value: Any, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a {what} integer; got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be a {what} integer (>= {minimum}); got {value}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1, else raise."""
    return _integer(name, value, 1, "positive")


def nonnegative_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 0, else raise."""
    return _integer(name, value, 0, "non-negative")


def real(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Return ``value`` as a finite ``float``, optionally required to be > 0 or >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value


def tensor(name: str, v: Any, what: str) -> torch.Tensor:
    """Return ``v`` as a tensor (a tensor as it is; arrays, lists and numbers as float64)."""
    if isinstance(v, torch.Tensor):
        return v
    try:
        return torch.as_tensor(np.asarray(v, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be {what}; got {type(v).__name__}") from err


def vector(
    name: str,
    v: Any,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return ``v`` as a 1-D finite floating tensor with at least one entry (tensor, array or
    list)."""
    v = tensor(name, v, "a 1-D array of numbers")
    if v.ndim != 1 or v.numel() < 1:
        raise ValueError(
            f"{name} must be a 1-D vector with at least one entry; got shape {tuple(v.shape)}"
        )
    if v.is_complex() or v.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers; got dtype {v.dtype}")
    return matrix(name, v[None], dtype=dtype, device=device)[0]


def matrix(
    name: str,
    x: Any,
    *,
    cols: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return ``x`` as a 2-D floating tensor of shape ``(rows, cols)`` with at least one row.

    Accepts tensors, NumPy arrays and nested lists. ``cols`` (if given) is the required
    number of columns, e.g. a model's input dimension.
    """
    x = tensor(name, x, "a 2-D array of numbers")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D tensor of shape (points, dims); got shape {tuple(x.shape)}"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{name} must contain at least one point; got shape {tuple(x.shape)}")
    if cols is not None and x.shape[1] != cols:
        raise ValueError(
            f"{name} must have {cols} columns (the input dimension); got shape {tuple(x.shape)}"
        )
    if not (x.is_floating_point() or dtype is not None):
        x = x.to(torch.get_default_dtype())
    x = x.to(device=available(device) if device is not None else x.device, dtype=dtype or x.dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite entries")
    return x


def points(name: str, x: Any, *, like: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x`` as a tensor of points (first dimension, at least one), finite and real.

    Integer and other-precision inputs are converted to ``like``'s dtype (and moved to its
    device) when given, else integers to the default float dtype. The messages show the
    shape the caller passed.
    """
    x = tensor(name, x, "a tensor of points")
    if x.ndim == 0 or x.shape[0] < 1:
        raise ValueError(
            f"{name} must be a batch of at least one point, shape (N, ...); got shape"
            f" {tuple(x.shape)}"
        )
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers; got dtype {x.dtype}")
    if like is not None:
        x = x.to(device=like.device, dtype=like.dtype)
    elif not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite entries (shape {tuple(x.shape)})")
    return x


def trainable(name: str, model: Any) -> list[torch.nn.Parameter]:
    """Return the trainable parameters of ``model`` (a ``torch.nn.Module`` with at least one)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module; got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            f"{name} has no trainable parameters (requires_grad=True); got {type(model).__name__}"
        )
    return params


def deterministic(name: str, model: torch.nn.Module) -> None:
    """Raise ``ValueError`` if ``model`` has batch norm or dropout in training mode.

    Their outputs depend on the batch (batch norm) or are random (dropout), and a forward
    pass changes batch norm's running statistics: a measurement of the network as a
    function (its NTK, a Hessian) has no meaning then.
    """
    stochastic = (torch.nn.modules.batchnorm._NormBase, torch.nn.modules.dropout._DropoutNd)
    for path, m in model.named_modules():
        if m.training and isinstance(m, stochastic):
            raise ValueError(
                f"{name} has {type(m).__name__} in training mode (layer {path!r}), whose output "
                f"depends on the batch or is random: call {name}.eval() first"
            )


def batch_independent(name: str, model: torch.nn.Module, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``model``'s output on the first two points of ``x`` depends on the
    batch.

    Compares ``model(x[:2])`` with ``model(x[:1])`` and ``model(x[1:2])`` (without gradient;
    buffers restored afterwards), which per-example methods assume to agree.
    """
    if x.shape[0] < 2:
        return
    saved = {k: b.clone() for k, b in model.named_buffers()}
    try:
        with torch.no_grad():
            together = model(x[:2])
            apart = torch.cat([model(x[:1]), model(x[1:2])])
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])
    scale = together.abs().max().clamp(min=1.0)
    tol = 1e3 * torch.finfo(together.dtype).eps * scale
    if together.shape != apart.shape or (together - apart).abs().max() > tol:
        raise ValueError(
            f"{name}'s outputs depend on the batch (a point gives a different output alone than "
            f"next to another), so per-example quantities are undefined: use a model that treats "
            f"points independently (e.g. in eval mode)"
        )


def fits(
    name: str,
    value: Any,
    nbytes: float,
    what: str,
    device: torch.device | str = "cpu",
    hint: str = "",
) -> None:
    """Raise ``ValueError`` naming ``name=value`` if ``nbytes`` would not fit in free memory.

    Free memory: the available physical memory (``/proc/meminfo``'s ``MemAvailable``, else
    ``sysconf``) on the CPU, ``torch.cuda.mem_get_info`` on a GPU. Checked before
    allocating, so a size typed with a zero too many is an error, not the OOM killer.
    """
    device = torch.device(device)
    free = _free_bytes(device)
    if nbytes > free:
        raise ValueError(
            f"{name}={value!r:.80} needs about {nbytes / 2**30:.3g} GiB for {what}, more than the "
            f"{free / 2**30:.3g} GiB free on {device.type}: choose a smaller {name}{hint}"
        )


def _free_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def available(device: torch.device | str) -> torch.device:
    """Return ``device`` as a ``torch.device`` if this machine has it, else raise ``ValueError``.

    ``"cuda"`` without a CUDA GPU (or an index past the last one) and unknown names are
    refused here, naming ``device``, instead of failing at the first allocation.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>'; got {device!r}") from err
    if device.type == "cuda" and (
        not torch.cuda.is_available()
        or (device.index is not None and device.index >= torch.cuda.device_count())
    ):
        raise ValueError(
            f"device={str(device)!r} is not available on this machine "
            f"({torch.cuda.device_count()} CUDA device(s)): use device='cpu' or device=None"
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda'; got {str(device)!r}")
    return device
