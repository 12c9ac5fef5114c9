"""Taylor models of a network in its parameters: the linearised network and its second-order correction.

Around parameters ``theta_0`` (Lee et al. 2019)::

    f_lin(x; theta)  = f(x; theta_0) + J(x) (theta - theta_0),            J = df/dtheta at theta_0
    f_quad(x; theta) = f_lin(x; theta) + 1/2 (theta - theta_0)^T H(x) (theta - theta_0)

Both are ordinary ``torch.nn.Module``\\ s whose trainable parameters are ``theta`` (a copy
of the network's, initialised at ``theta_0``), so they train with the same loop as the
network (:func:`ntk_lib.dynamics.train_gd`). Evaluations never form ``J`` or ``H``: the
first-order model is one forward-mode pass (``torch.func.jvp``: the forward and the JVP
together), the second-order model a JVP of a JVP.

Taught in lesson 03.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, jvp

from . import _checks


class TaylorModel(nn.Module):
    """The first- or second-order Taylor expansion of ``model`` in its parameters around ``theta_0``.

    ``forward(x)`` returns ``f(x; theta_0) + J delta`` (``order=1``) or
    ``f(x; theta_0) + J delta + 1/2 delta^T H delta`` (``order=2``) with ``delta = theta -
    theta_0``. The model is copied: training the Taylor model leaves ``model`` untouched.

    Attributes:
        order: 1 or 2.
        net: the frozen copy of the network being expanded.
        theta: the trained parameters (a ``ParameterList`` in the order of ``net``'s).
    """

    def __init__(self, model: nn.Module, order: int = 1) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2; got {order!r}")
        self.order = order
        self.net = copy.deepcopy(model).requires_grad_(False)
        self._names = [name for name, p in model.named_parameters() if p.requires_grad]
        if not self._names:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        params = dict(model.named_parameters())
        for i, name in enumerate(self._names):
            self.register_buffer(f"theta0_{i}", params[name].detach().clone())
        self.theta = nn.ParameterList(nn.Parameter(params[name].detach().clone()) for name in self._names)

    @property
    def theta0(self) -> dict[str, torch.Tensor]:
        """The expansion point, keyed like the network's parameters."""
        return {name: getattr(self, f"theta0_{i}") for i, name in enumerate(self._names)}

    def delta(self) -> dict[str, torch.Tensor]:
        """Return ``theta - theta_0`` keyed by parameter name."""
        theta0 = self.theta0
        return {name: p - theta0[name] for name, p in zip(self._names, self.theta)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta, theta0 = self.delta(), self.theta0

        def f(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.net, params, (x,))

        if self.order == 1:
            f0, jd = jvp(f, (theta0,), (delta,))
            return f0 + jd

        def f_and_jd(params):
            return jvp(f, (params,), (delta,))

        (f0, jd), (_, hdd) = jvp(f_and_jd, (theta0,), (delta,))
        return f0 + jd + 0.5 * hdd


def linearize(model: nn.Module, order: int = 1) -> TaylorModel:
    """Return the Taylor model of ``model`` of the given ``order`` (1: linearised) around its current parameters."""
    return TaylorModel(model, order=_checks.positive_int("order", order))
