"""The activation functions of the course and their derivatives.

The closed-form kernels (:mod:`ntk_lib.kernels`) know ``relu``, ``erf`` and ``identity``;
``tanh`` is offered for finite-width experiments. The derivatives are written out (not
taken by autograd) because the structured empirical NTK needs ``phi'(h)`` for whole
batches at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import _checks

Activation = Callable[[torch.Tensor], torch.Tensor]

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _relu_prime(h: torch.Tensor) -> torch.Tensor:
    return (h > 0).to(h.dtype)


def _erf_prime(h: torch.Tensor) -> torch.Tensor:
    return _TWO_OVER_SQRT_PI * torch.exp(-h * h)


def _tanh_prime(h: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.tanh(h) ** 2


def _identity(h: torch.Tensor) -> torch.Tensor:
    return h


def _one(h: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(h)


_TABLE: dict[str, tuple[Activation, Activation]] = {
    "relu": (torch.relu, _relu_prime),
    "erf": (torch.erf, _erf_prime),
    "tanh": (torch.tanh, _tanh_prime),
    "identity": (_identity, _one),
}

NAMES: tuple[str, ...] = tuple(_TABLE)
"""Activation names accepted by :class:`ntk_lib.models.MLP`."""


def get(name: str) -> tuple[Activation, Activation]:
    """Return ``(phi, phi_prime)`` for the activation called ``name``.

    ``relu'(0)`` is taken to be 0, as torch's autograd does.
    """
    return _TABLE[_checks.choice("activation", name, NAMES)]
