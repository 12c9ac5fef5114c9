"""How :mod:`ntk_lib.iterative` computes a step of the linear model around ``theta_s``.

Each engine gives, for a batch ``x_b``, the outputs ``f(x_b; theta_s) + J_s(x_b) delta``
(``delta = theta_t - theta_s``) and then the gradient ``J_s(x_b)^T g`` for the loss's
``g = dL/df``:

- :class:`Jvp` never forms ``J_s``. Full batch: the forward graph at ``theta_s`` is kept from
  the refresh, ``J_s delta`` is the derivative of ``u -> J_s^T u`` along ``delta`` (reverse over
  reverse, no second forward pass) and ``J_s^T g`` a VJP through the kept graph. For
  convolutional networks over long windows the tangent comes instead from ``torch.func.linearize``
  (a traced graph of the tangent alone, with the primal folded in): torch's forward-mode and
  double-backward convolutions are 3-4x slower than its plain ones on a CPU, and the trace
  (about 15 forward passes) pays for itself within :data:`TRACE_WINDOW` steps.
  Minibatches: one dual-number forward at ``theta_s`` (primal and tangent) and one VJP.
- :class:`Materialized` builds ``J_s`` of the whole training set once per refresh
  (per-point ``vmap(jacrev)``) and then a step is two matrix-vector products.
- :func:`choose` picks one from a flop estimate.
"""

from __future__ import annotations

import warnings

import torch
import torch.autograd.forward_ad as fwad
from torch import nn
from torch.func import functional_call, jacrev, linearize, vmap

GEMV_PENALTY = {"cpu": 3.0, "cuda": 30.0}
"""How many times slower a multiply-add runs in a matrix-vector product than in the network's
own matrix products (memory- versus compute-bound), as ``choose`` assumes: measured on a CPU
(``benchmarks/iterative.py``), estimated from bandwidth and peak flops on a GPU."""


TRACE_WINDOW = 20
"""Refresh windows at least this long trace the tangent of a convolutional network (above)."""


class Net:
    """``f(x; theta)`` of a module via ``functional_call``; frozen parameters and buffers fixed."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        self.names, self.params = [k for k, _ in named], [p for _, p in named]
        self.dtype = self.params[0].dtype
        self.n_params = sum(p.numel() for p in self.params)

    def __call__(self, theta, x: torch.Tensor, *, update_buffers: bool = False) -> torch.Tensor:
        """``f(x; theta)``; buffers are copies unless ``update_buffers`` (a refresh's forward)."""
        buffers = {} if update_buffers else {k: b.clone() for k, b in self.model.named_buffers()}
        out = functional_call(
            self.model, {**dict(zip(self.names, theta, strict=False)), **buffers}, (x,)
        )
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                "model must return one tensor with the points first, (N, ...); "
                f"got {got} for {x.shape[0]} inputs"
            )
        return out

    def theta(self) -> list[torch.Tensor]:
        """A copy of the current trainable parameters."""
        return [p.detach().clone() for p in self.params]

    def delta(self, theta_s: list[torch.Tensor]) -> list[torch.Tensor]:
        """``theta_t - theta_s``."""
        return [p.detach() - s for p, s in zip(self.params, theta_s, strict=False)]


def linear_outputs(net: Net, theta_s: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``f(x; theta_s) + J_s(x) (theta_t - theta_s)`` by one dual-number forward, no graph."""
    with torch.no_grad(), fwad.dual_level():
        dual = [fwad.make_dual(s, d) for s, d in zip(theta_s, net.delta(theta_s), strict=False)]
        primal, tangent = fwad.unpack_dual(net(dual, x))
    return primal if tangent is None else primal + tangent


def _grad(out, inputs, cotangent, **kwargs):
    return torch.autograd.grad(out, inputs, cotangent, allow_unused=True, **kwargs)


class Jvp:
    """Linearised steps without Jacobians (module docstring)."""

    name = "jvp"

    def __init__(self, net: Net, full: bool, window: float = 1) -> None:
        self.net, self.full = net, full
        convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in net.model.modules())
        self.trace = full and convolutional and window >= TRACE_WINDOW

    def refresh(self, x: torch.Tensor) -> None:
        self.leaves = [s.requires_grad_(True) for s in self.net.theta()]
        self.theta_s = [leaf.detach() for leaf in self.leaves]
        self.fresh, self.jtu, self.traced = True, None, None

    def forward(self, xb: torch.Tensor, idx) -> torch.Tensor:
        """``f(x_b; theta_s) + J_s(x_b) (theta_t - theta_s)`` for the batch ``x_b = x[idx]``."""
        if self.fresh:  # theta_t = theta_s: the network itself, exactly as gradient descent sees it
            self.fresh = False
            self.out = self.net(self.leaves, xb, update_buffers=True)
            self.f_s_batch = self.out.detach()
            return self.f_s_batch
        delta = self.net.delta(self.theta_s)
        if self.trace and self.traced is None:
            self.traced = _trace_tangent(self.net, self.theta_s, xb)
        if self.traced:
            return self.f_s_batch + self.traced(*delta)
        if self.full and self.jtu is None:  # the same x at every step: reuse the refresh's graph
            # custom autograd.Functions may have no (or a silently wrong) double backward
            self.full = not _custom_functions(self.out.grad_fn)
            u = torch.zeros_like(self.out, requires_grad=True)
            jtu = _grad(self.out, self.leaves, u, create_graph=True) if self.full else ()
            self.jtu = (u, [(i, a) for i, a in enumerate(jtu) if a is not None])
        if self.full:
            u, jtu = self.jtu
            if not jtu:
                return self.f_s_batch
            try:
                rows, tangents = [a for _, a in jtu], [delta[i] for i, _ in jtu]
                (tangent,) = _grad(rows, u, tangents, retain_graph=True)
                return self.f_s_batch if tangent is None else self.f_s_batch + tangent
            except RuntimeError:  # an op without a double backward: dual numbers from now on
                self.full = False
        with fwad.dual_level():
            dual = [fwad.make_dual(leaf, d) for leaf, d in zip(self.leaves, delta, strict=False)]
            self.out, tangent = fwad.unpack_dual(self.net(dual, xb))
        self.f_s_batch = self.out.detach()
        return self.f_s_batch if tangent is None else self.f_s_batch + tangent.detach()

    def backward(self, g: torch.Tensor) -> list[torch.Tensor | None]:
        """``J_s^T g``; ``None`` for parameters the output does not use (as in ``backward()``)."""
        return list(_grad(self.out, self.leaves, g, retain_graph=self.full))


def _custom_functions(node) -> bool:
    """Whether the autograd graph below ``node`` holds a custom ``torch.autograd.Function``."""
    seen, stack = set(), [node]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            return True
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


def _trace_tangent(net: Net, theta_s: list[torch.Tensor], x: torch.Tensor):
    """``delta -> J_s(x) delta`` traced by ``torch.func.linearize``, or ``False`` if untraceable."""
    try:
        with warnings.catch_warnings():  # torch.fx's constant folding warns about its own graph
            warnings.simplefilter("ignore")
            return linearize(lambda *p: net(list(p), x), *theta_s)[1]
    except Exception:  # noqa: BLE001 - an untraceable model: use reverse over reverse
        return False


class NotPerPoint(ValueError):
    """The Jacobian cannot be built point by point: the model mixes the points of a batch."""


class Materialized:
    """Linearised steps as two matrix-vector products with ``J_s`` of the whole training set."""

    name = "materialize"

    def __init__(self, net: Net) -> None:
        self.net, self.used, self._rows = net, None, None

    def refresh(self, x: torch.Tensor) -> None:
        self.theta_s = self.net.theta()
        if self.used is None:  # which parameters the output uses at all (the others get no grad)
            leaves = [s.clone().requires_grad_(True) for s in self.theta_s]
            f_s = self.net(leaves, x, update_buffers=True)
            grads = _grad(f_s, leaves, torch.ones_like(f_s))
            self.used, f_s = [a is not None for a in grads], f_s.detach()
        else:
            f_s = self.net(self.theta_s, x, update_buffers=True).detach()
        self.shape, self.f_s = f_s.shape[1:], f_s.reshape(f_s.shape[0], -1)
        self.jac, per_point = jacobian(self.net, self.theta_s, x, self.f_s.shape[1])
        scale = self.f_s.abs().max().item() + 1e-3
        if not torch.allclose(per_point, self.f_s, rtol=1e-4, atol=1e-4 * scale):
            raise NotPerPoint(
                "the output for a point depends on the other points of the batch "
                "(e.g. batch norm in training mode)"
            )

    def forward(self, xb: torch.Tensor, idx) -> torch.Tensor:
        d = torch.cat([v.reshape(-1) for v in self.net.delta(self.theta_s)])
        if idx is None:
            self.rows = self.jac  # (B, out, P)
        else:  # gathered into a reused buffer: allocating the rows afresh costs several times more
            if self._rows is None or self._rows.shape[0] != len(idx):
                self._rows = self.jac.new_empty(len(idx), *self.jac.shape[1:])
            self.rows = torch.index_select(self.jac, 0, idx, out=self._rows)
        f_s = self.f_s if idx is None else self.f_s[idx]
        self.f_s_batch = f_s.reshape(-1, *self.shape)
        return (f_s + self.rows @ d).reshape(-1, *self.shape)

    def backward(self, g: torch.Tensor) -> list[torch.Tensor | None]:
        """``J_s^T g``; ``None`` for parameters the output does not use (as in ``backward()``)."""
        flat = self.rows.reshape(-1, self.net.n_params).T @ g.reshape(-1)
        sizes = [s.numel() for s in self.theta_s]
        parts = zip(flat.split(sizes), self.theta_s, self.used, strict=False)
        return [v.view_as(s) if used else None for v, s, used in parts]


def jacobian(
    net: Net,
    theta: list[torch.Tensor],
    x: torch.Tensor,
    out_dim: int,
    chunk_bytes: int = 64 * 2**20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J, f)``: the per-point Jacobians ``(N, out, P)`` at ``theta`` and outputs ``(N, out)``,
    in chunks of points holding about ``chunk_bytes`` of Jacobian."""

    def single(params, xi):
        out = net(list(params), xi.unsqueeze(0))[0].reshape(-1)
        return out, out

    n = x.shape[0]
    jac = torch.empty(n, out_dim, net.n_params, dtype=net.dtype, device=x.device)
    outs = torch.empty(n, out_dim, dtype=net.dtype, device=x.device)
    chunk = max(1, chunk_bytes // (out_dim * net.n_params * jac.element_size()))
    per_point = vmap(jacrev(single, has_aux=True), in_dims=(None, 0))
    try:
        for i in range(0, n, chunk):
            blocks, outs[i : i + chunk] = per_point(tuple(theta), x[i : i + chunk])
            jac[i : i + chunk] = torch.cat([b.reshape(*b.shape[:2], -1) for b in blocks], dim=2)
    except (
        RuntimeError,
        ValueError,
    ) as err:  # vmap cannot batch it (batch norm, data-dependent code)
        raise NotPerPoint(f"vmap over the points failed ({err})") from err
    return jac, outs


def choose(
    path: str, net: Net, x: torch.Tensor, window: float, batch: int, budget: int
) -> Jvp | Materialized:
    """The engine for ``path``, refreshed at the current parameters. ``"auto"`` materializes when
    ``J`` fits in ``budget`` bytes and :func:`materializing_pays` over a refresh ``window``."""
    full = batch == x.shape[0]
    if path == "jvp" or (path == "auto" and not materializing_pays(net, x, window, batch, budget)):
        engine = Jvp(net, full, window)
        engine.refresh(x)
        return engine
    engine = Materialized(net)
    buffers = {name: b.clone() for name, b in net.model.named_buffers()}
    try:
        engine.refresh(x)
    except NotPerPoint as err:
        if path == "materialize":
            raise ValueError(
                f"path='materialize' needs the Jacobian point by point: {err}"
            ) from err
        # The failed attempt ran a forward pass: undo its update of running statistics.
        with torch.no_grad():
            for name, b in net.model.named_buffers():
                b.copy_(buffers[name])
        engine = Jvp(net, full, window)
        engine.refresh(x)
    return engine


def materializing_pays(net: Net, x: torch.Tensor, window: float, batch: int, budget: int) -> bool:
    """Whether ``J`` (``N out P`` numbers) fits in ``budget`` bytes and saves work over a window.

    In multiply-adds, with ``m`` those of one forward pass per point (counted by torch's
    ``FlopCounterMode``): building ``J`` costs about ``2 (1 + 2 out) m`` per training point,
    then a step ``2 out P`` per batch point, times :data:`GEMV_PENALTY`; without ``J`` the
    refresh step costs ``3 m`` and each later one ``4 m`` per batch point.
    """
    if window <= 1:
        return False
    from torch.utils.flop_counter import FlopCounterMode

    sample = x[: min(64, x.shape[0])]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = net([p.detach() for p in net.params], sample)
    n, out_dim, p = x.shape[0], out[0].numel(), net.n_params
    if n * out_dim * p * out.element_size() > budget:
        return False
    m = counter.get_total_flops() / (2 * sample.shape[0])
    penalty = GEMV_PENALTY.get(x.device.type, GEMV_PENALTY["cuda"])
    materialized = 2 * (1 + 2 * out_dim) * m * n + window * batch * 2 * out_dim * p * penalty
    return materialized < batch * m * (3 + 4 * (window - 1))
