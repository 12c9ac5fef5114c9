"""Taylor models of a network in its parameters: the linearised network and its second-order
correction.

Around parameters ``theta_0`` (Lee et al. 2019)::

    f_lin(x; theta)  = f(x; theta_0) + J(x) (theta - theta_0),            J = df/dtheta at theta_0
    f_quad(x; theta) = f_lin(x; theta) + 1/2 (theta - theta_0)^T H(x) (theta - theta_0)

Both are ordinary ``torch.nn.Module``\\ s whose trainable parameters are ``theta`` (a copy
of the network's, initialised at ``theta_0``), so they train with the same loop as the
network (:func:`ntk_lib.dynamics.train_gd`). Evaluations never form ``J`` or ``H``: the
first-order model costs one JVP per evaluation (``torch.func.jvp``) plus the forward at
``theta_0``, which is cached for repeated inputs, and its backward is one VJP at ``theta_0``;
the second-order model is a JVP of a JVP.

Taught in lesson 03.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp

from . import _checks


class TaylorModel(nn.Module):
    """The first- or second-order Taylor expansion of ``model`` in its parameters around
    ``theta_0``.

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
        self.theta = nn.ParameterList(
            nn.Parameter(params[name].detach().clone()) for name in self._names
        )
        self._cache: tuple | None = None

    @property
    def theta0(self) -> dict[str, torch.Tensor]:
        """The expansion point, keyed like the network's parameters."""
        return {name: getattr(self, f"theta0_{i}") for i, name in enumerate(self._names)}

    def delta(self) -> dict[str, torch.Tensor]:
        """Return ``theta - theta_0`` keyed by parameter name."""
        theta0 = self.theta0
        return {name: p - theta0[name] for name, p in zip(self._names, self.theta, strict=False)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.order == 1 and not _under_transform(x, *self.theta):
            return _FirstOrder.apply(self, x, *self.theta)
        delta, theta0 = self.delta(), self.theta0

        def f_and_jd(params):
            return jvp(lambda p: functional_call(self.net, p, (x,)), (params,), (delta,))

        if self.order == 1:  # inside vmap/grad/jacrev (e.g. empirical_ntk): plain, transformable
            f0, jd = f_and_jd(theta0)
            return f0 + jd
        (f0, jd), (_, hdd) = jvp(f_and_jd, (theta0,), (delta,))
        return f0 + jd + 0.5 * hdd

    def _at_theta0(self, x: torch.Tensor, need_vjp: bool):
        """``(f(x; theta_0), vjp_fn)`` for ``x``, cached for the last ``x`` seen (full-batch
        training
        evaluates the same ``x`` every step, so the forward pass at ``theta_0`` is done once)."""
        key = (
            x.data_ptr(),
            x._version,
            x.shape,
            x.dtype,
            x.device,
            tuple(t.data_ptr() for t in self.theta0.values()),
        )
        if (
            self._cache is not None
            and self._cache[0] == key
            and (self._cache[2] is not None or not need_vjp)
        ):
            return self._cache[1], self._cache[2]

        def f(params):
            return functional_call(self.net, params, (x,))

        if need_vjp:
            f0, vjp_fn = vjp(f, self.theta0)
        else:
            f0, vjp_fn = f(self.theta0), None
        self._cache = (key, f0, vjp_fn)
        return f0, vjp_fn


def _under_transform(*tensors: torch.Tensor) -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jacrev, ...) is tracing these tensors."""
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


class _FirstOrder(torch.autograd.Function):
    """``f0 + J delta`` whose backward is the VJP at ``theta_0``: ``dL/dtheta = J^T dL/df``.

    Forward: one JVP (``J delta``) plus the cached forward at ``theta_0``; backward: one VJP.
    Differentiating through the JVP instead would redo the forward-mode pass in reverse.
    """

    @staticmethod
    def forward(ctx, taylor: TaylorModel, x: torch.Tensor, *theta: torch.Tensor) -> torch.Tensor:
        need_vjp = any(ctx.needs_input_grad[2:])
        f0, vjp_fn = taylor._at_theta0(x, need_vjp)
        theta0 = taylor.theta0
        delta = {name: p - theta0[name] for name, p in zip(taylor._names, theta, strict=False)}
        _, jd = jvp(lambda p: functional_call(taylor.net, p, (x,)), (theta0,), (delta,))
        ctx.vjp_fn, ctx.names = vjp_fn, taylor._names
        return f0 + jd

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grads,) = ctx.vjp_fn(grad_out.contiguous())
        return (None, None, *(grads[name] for name in ctx.names))


def linearize(model: nn.Module, order: int = 1) -> TaylorModel:
    """Return the Taylor model of ``model`` of the given ``order`` (1: linearised) around its
    current parameters."""
    return TaylorModel(model, order=_checks.positive_int("order", order))
