"""Iterative linearisation: train a network on its Taylor model, refreshed every K steps.

Gradient descent updates two things at once, the weights ``theta_t`` and the features
``phi_t = grad_theta f(X; theta_t)`` (Goldwaser & Ge 2022). Iterative linearisation updates
the features only every ``K`` steps: with ``s = K floor(t / K)`` the last refresh::

    f^lin_{s,t}(x) = f(x; theta_s) + J_s(x) (theta_t - theta_s),      J_s = df/dtheta at theta_s
    theta_{t+1}    = theta_t - lr J_s(X)^T L'(f^lin_{s,t}(X))

for any differentiable loss ``L`` (their Appendix A: the softmax of the cross-entropy stays
outside the linearisation). ``K = 1`` is gradient descent; ``K = inf`` trains the linearised
network of :func:`ntk_lib.linearize.linearize` (Lee et al. 2019); ``K = "adaptive"``
refreshes when the linear model's predictions drift from the network's (the paper's future
work, after Fort et al. 2020's observation that the kernel moves fastest early).

A step between refreshes costs about one forward, one JVP and one VJP without forming
``J_s`` (``path="jvp"``), or two matrix-vector products with ``J_s`` built once per refresh
(``path="materialize"``); ``path="auto"`` picks the cheaper (``ntk_lib._linear_steps``).
:func:`~ntk_lib.measure.critical_lr` gives the learning rate above which the linear model
diverges under the MSE loss, ``2 D / lam_max(Theta)``.

Taught in lesson 10.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jacrev
from tqdm.auto import tqdm

from . import _checks
from ._linear_steps import Net, choose, linear_outputs
from .device import generator
from .linearize import TaylorModel
from .measure import (
    accuracy,
    critical_lr,  # noqa: F401 (lessons import it from here)
    relative_change,
)
from .training import DIVERGENCE_FACTOR, ON_DIVERGENCE, Divergence, mse_loss

LOSSES: tuple[str, ...] = ("mse", "mse_sum", "cross_entropy")
"""The named losses, ``(1/2D) sum (f - y)^2`` (the course's MSE), ``1/2 ||f - y||^2`` (the
paper's) and the cross-entropy averaged over the batch."""

PATHS: tuple[str, ...] = ("auto", "jvp", "materialize")
"""How a step of the linear model is computed (module docstring)."""


@dataclass
class IterativeHistory:
    """What :func:`train` recorded; the metrics are float64 tensors on the CPU.

    Attributes:
        loss: the training loss of the linear model at each step, before its update, on that
            step's batch; shape ``(steps,)``, shorter if training diverged.
        accuracy: the batch accuracy at the same steps, or ``None`` when ``y`` holds no classes.
        eval_steps: the steps at which the test set was evaluated (every ``eval_every``, and
            ``steps`` at the end).
        test_loss, test_accuracy: the linear model's loss and accuracy on the test set then.
        refresh_steps: the steps at which the features were computed (``0`` included).
        ntk_change_between_refreshes: ``||Theta_i - Theta_{i-1}||_F / ||Theta_{i-1}||_F``, the
            empirical NTK on
            the probe set between consecutive refreshes and the end, if ``ntk_probe``.
        ntk_change_since_init: ``||Theta_i - Theta_0||_F / ||Theta_0||_F`` at the same times.
        drift: with ``K="adaptive"``, the drift measured at each step (0 right after a refresh).
        path: the path that computed the steps, ``"jvp"`` or ``"materialize"``.
        expansion_point: ``theta_s`` of the last refresh, by parameter name, on the model's
            device and in its dtype (:func:`taylor_model` builds the final linear model).
        diverged_at: the step whose loss was non-finite or exploded, ``-1`` if none.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor | None = None
    eval_steps: list[int] = field(default_factory=list)
    test_loss: torch.Tensor | None = None
    test_accuracy: torch.Tensor | None = None
    refresh_steps: list[int] = field(default_factory=list)
    ntk_change_between_refreshes: torch.Tensor | None = None
    ntk_change_since_init: torch.Tensor | None = None
    drift: torch.Tensor | None = None
    path: str = ""
    expansion_point: dict[str, torch.Tensor] = field(default_factory=dict)
    diverged_at: int = -1

    @property
    def n_refreshes(self) -> int:
        """Feature updates after the initial ones (``K = inf``: 0; ``K = 1``: ``steps - 1``)."""
        return max(len(self.refresh_steps) - 1, 0)

    @property
    def diverged(self) -> bool:
        """Whether training was stopped by divergence."""
        return self.diverged_at >= 0


def minibatches(
    n: int, batch_size: int, steps: int, seed: int | torch.Generator | None = 0
) -> Iterator[torch.Tensor]:
    """Yield the ``steps`` minibatches of :func:`train`, as CPU index tensors of ``batch_size``.

    Each epoch is a fresh random permutation of ``range(n)`` cut into ``n // batch_size``
    batches (the remainder is dropped), so a reference SGD run can replay the same order.
    """
    n, batch_size = _checks.positive_int("n", n), _checks.positive_int("batch_size", batch_size)
    steps, gen = _checks.nonnegative_int("steps", steps), generator(seed)
    if batch_size > n:
        raise ValueError(f"batch_size must be at most the number of points {n}; got {batch_size}")
    per_epoch, done = n // batch_size, 0
    while done < steps:
        order = torch.randperm(n, generator=gen)
        for i in range(min(per_epoch, steps - done)):
            yield order[i * batch_size : (i + 1) * batch_size]
        done += per_epoch


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lr: float,
    K: int | float | str,
    steps: int,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    tol: float | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    path: str = "auto",
    jacobian_memory: int = 256 * 2**20,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
    eval_every: int = 10,
    ntk_probe: int | torch.Tensor | None = None,
    drift_points: int = 128,
    seed: int | torch.Generator | None = 0,
    on_divergence: str = ON_DIVERGENCE[0],
    divergence_factor: float = DIVERGENCE_FACTOR,
    progress: bool = False,
) -> IterativeHistory:
    """Train ``model`` in place by iterative linearisation; return what happened.

    Algorithm 1 of Goldwaser & Ge (2022), for any loss (their eq. 5-6): step ``t`` evaluates
    the loss on ``f^lin(x) = f(x; theta_s) + J_s(x) (theta_t - theta_s)`` and gives
    ``torch.optim.SGD`` the gradient ``J_s^T L'(f^lin)``. The features are refreshed,
    ``theta_s <- theta_t``, at ``t = 0`` and then every ``K`` steps, or with ``K="adaptive"``
    whenever ``||f(x; theta_t) - f^lin(x)|| / ||f(x; theta_t) - f(x; theta_s)|| > tol`` on the
    step's first ``drift_points`` inputs (then the step is a gradient step). ``K = 1`` is
    gradient descent exactly, ``K = math.inf`` training ``linearize(model)``. The velocity
    of ``momentum`` carries across refreshes. Buffers (batch-norm statistics) change only in
    the forward passes of refreshes; put stochastic layers (dropout) in eval mode.

    Args:
        model: any ``torch.nn.Module``; its trainable parameters are trained in place (with
            ``model.param_groups(lr)`` when it has them, as :func:`~ntk_lib.dynamics.train_gd`).
        x, y: the training set, points along the first dimension.
        loss: ``"mse"``, ``(1/2D) sum (f - y)^2`` (the course's convention); ``"mse_sum"``,
            ``1/2 ||f - y||^2`` (the paper's, so ``lr`` is ``D`` times smaller);
            ``"cross_entropy"`` (``y`` class indices or probabilities); or any callable
            ``(output, target) -> scalar``. Accuracy is recorded for class-index or one-hot ``y``.
        lr: learning rate (> 0).
        K: refresh period, a positive integer or ``math.inf``, or ``"adaptive"`` (needs ``tol``).
        steps: number of updates (>= 0).
        batch_size: ``None`` for full-batch GD, else the minibatch size (:func:`minibatches`).
        device: where to train (the model is moved there); default where its parameters are.
        tol: drift tolerance of ``K="adaptive"`` (> 0), e.g. 0.1.
        momentum, weight_decay: of ``torch.optim.SGD``.
        path: ``"auto"``, ``"jvp"`` or ``"materialize"``: ``"auto"`` materializes ``J_s``
            when it fits in ``jacobian_memory`` bytes, the model treats points independently
            and a flop estimate says two matrix-vector products per step win.
        x_test, y_test: a test set, on which the linear model is evaluated every ``eval_every``
            steps and at the end.
        ntk_probe: record how the empirical NTK changes between refreshes on these inputs, or
            on the first ``ntk_probe`` training points (an int).
        drift_points: how many of a step's inputs ``K="adaptive"`` checks.
        seed: seed or generator of the minibatch order.
        on_divergence, divergence_factor: the rule of :mod:`ntk_lib.training` (a loss that is
            non-finite or above ``divergence_factor`` times the larger of the first loss and
            the loss of predicting 0; for a callable loss, the first loss alone): ``"stop"``
            returns with ``diverged_at`` set, ``"raise"`` raises
            :class:`~ntk_lib.training.DivergenceError`.
        progress: show a progress bar.
    """
    _check_data(model, x, y, x_test, y_test, loss)
    K, tol = _schedule(K, tol)
    _checks.real("lr", lr, positive=True)
    _checks.nonnegative_int("steps", steps)
    if batch_size is not None and _checks.positive_int("batch_size", batch_size) > x.shape[0]:
        raise ValueError(f"batch_size must be at most the {x.shape[0]} points; got {batch_size}")
    _checks.real("momentum", momentum, nonnegative=True)
    _checks.real("weight_decay", weight_decay, nonnegative=True)
    _checks.choice("path", path, PATHS)
    _checks.positive_int("jacobian_memory", jacobian_memory)
    _checks.positive_int("eval_every", eval_every)
    _checks.positive_int("drift_points", drift_points)
    if ntk_probe is not None and not isinstance(ntk_probe, torch.Tensor):
        _checks.positive_int("ntk_probe", ntk_probe)
        if ntk_probe > x.shape[0]:
            raise ValueError(
                f"ntk_probe must be at most the {x.shape[0]} training points; got {ntk_probe}"
            )
    divergence = Divergence(divergence_factor, on_divergence)
    device = _checks.available(device) if device is not None else next(model.parameters()).device
    net = Net(model.to(device))
    x, y = _to(x, net, device), _to(y, net, device)
    test = None if x_test is None else (_to(x_test, net, device), _to(y_test, net, device))
    probe = x[:ntk_probe] if isinstance(ntk_probe, int) else ntk_probe
    loss_fn = _loss_function(loss)
    groups = model.param_groups(lr) if hasattr(model, "param_groups") else [{"params": net.params}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    n, full = x.shape[0], batch_size is None or batch_size == x.shape[0]
    batches = iter(()) if full else minibatches(n, batch_size, steps, seed)
    rec = _Recorder(None if probe is None else _to(probe, net, device), test, loss_fn, divergence)
    engine = None
    for t in tqdm(range(steps), disable=not progress, leave=False):
        idx = None if full else next(batches).to(device)
        xb, yb = (x, y) if full else (x[idx], y[idx])
        if t == 0:
            window = min(steps, 10 if K == "adaptive" else K)
            engine = choose(path, net, x, window, xb.shape[0], jacobian_memory)
            rec.refreshed(net, t)
        elif K != "adaptive" and t - rec.refresh_steps[-1] >= K:
            engine.refresh(x)
            rec.refreshed(net, t)
        out = engine.forward(xb, idx)
        if K == "adaptive":
            fresh = rec.refresh_steps[-1] == t
            drift = 0.0 if fresh else _drift(net, xb, out, engine.f_s_batch, drift_points)
            rec.drift.append(drift)
            if drift > tol:  # the linear model has drifted: refresh and take a gradient step
                engine.refresh(x)
                rec.refreshed(net, t)
                out = engine.forward(xb, idx)
        if t % eval_every == 0:
            rec.evaluate(net, engine.theta_s, t)
        o = out.detach().requires_grad_(True)
        value = loss_fn(o, yb)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise ValueError(f"loss must return a scalar tensor; got {value!r:.80}")
        value = value.reshape(())
        (g,) = torch.autograd.grad(value, o)
        value = float(value.detach())
        if t == 0:
            rec.start(value, out.detach(), yb, isinstance(loss, str))
        if divergence.check(t, value):
            break
        rec.step(value, out, yb)
        for p, grad in zip(net.params, engine.backward(g), strict=False):
            p.grad = grad
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if engine is not None and not divergence.diverged:
        final = float(loss_fn(linear_outputs(net, engine.theta_s, x).detach(), y))
        if not (rec.loss and divergence.check(steps, final)):  # the last step may blow up
            rec.evaluate(net, engine.theta_s, steps)
            rec.kernels(net)
    return rec.history(net, engine, K == "adaptive")


def taylor_model(model: nn.Module, history: IterativeHistory) -> TaylorModel:
    """Return the linear model training ended with, ``f(x; theta_s) + J_s(x) (theta - theta_s)``.

    ``theta_s`` is ``history.expansion_point`` and ``theta`` the parameters of ``model`` (as
    trained by :func:`train`). With ``K = inf`` this is ``linearize`` of the initial network,
    trained; right after a refresh it computes the same function as ``model``.
    """
    base = copy.deepcopy(model)
    params = dict(base.named_parameters())
    if not history.expansion_point or set(history.expansion_point) - set(params):
        raise ValueError(
            "history.expansion_point does not match model's parameters: pass the "
            "model and the history of the same train(...) call"
        )
    with torch.no_grad():
        for name, value in history.expansion_point.items():
            params[name].copy_(value)
        lin, current = TaylorModel(base), dict(model.named_parameters())
        for p, name in zip(lin.theta, lin._names, strict=False):
            p.copy_(current[name])
    return lin


# ---------------------------------------------------------------------------------------
# Losses and what is recorded
# ---------------------------------------------------------------------------------------


def _loss_function(loss):
    if not isinstance(loss, str):
        return loss
    if loss == "cross_entropy":
        return _cross_entropy
    fn = mse_loss if loss == "mse" else lambda f, y: 0.5 * (f - y).pow(2).sum()

    def checked(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if f.shape != y.shape:
            hint = "" if y.is_floating_point() else " (for classes, pass one-hot float targets)"
            raise ValueError(
                f"model output shape {tuple(f.shape)} does not match y's shape "
                f"{tuple(y.shape)}{hint}"
            )
        return fn(f, y)

    return checked


def _cross_entropy(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy`` after checking that ``f`` holds class scores and ``y`` classes."""
    if f.ndim != 2 or f.shape[1] < 2:
        raise ValueError(
            "loss='cross_entropy' needs class scores, model output of shape (N, classes >= 2); "
            f"got output shape {tuple(f.shape)}"
        )
    if y.is_floating_point():
        if y.shape != f.shape:
            raise ValueError(
                f"y must hold class probabilities of shape {tuple(f.shape)} or class "
                f"indices of shape ({f.shape[0]},); got {y.dtype} {tuple(y.shape)}"
            )
    elif y.shape != f.shape[:1] or y.min() < 0 or y.max() >= f.shape[1]:
        raise ValueError(
            f"y must hold class indices in [0, {f.shape[1]}) of shape ({f.shape[0]},); "
            f"got shape {tuple(y.shape)}, range [{int(y.min())}, {int(y.max())}]"
        )
    return F.cross_entropy(f, y)


def _drift(
    net: Net, xb: torch.Tensor, f_lin: torch.Tensor, f_s: torch.Tensor, points: int
) -> float:
    """``||f(theta_t) - f_lin|| / ||f(theta_t) - f(theta_s)||`` on the first ``points`` inputs."""
    with torch.no_grad():
        f = net([p.detach() for p in net.params], xb[:points])
        moved = (f - f_s[:points]).norm()
        return 0.0 if moved == 0 else float((f - f_lin[:points]).norm() / moved)


class _Recorder:
    """Collects per-step metrics, test evaluations and empirical-NTK changes."""

    def __init__(self, probe: torch.Tensor | None, test, loss_fn, divergence: Divergence) -> None:
        self.probe, self.test, self.loss_fn, self.divergence = probe, test, loss_fn, divergence
        self.loss, self.acc, self.test_loss, self.test_acc, self.drift = [], [], [], [], []
        self.eval_steps, self.refresh_steps = [], []
        self.ntk_first = self.ntk_last = None
        self.ntk_change, self.ntk_from_init = [], []

    def refreshed(self, net: Net, t: int) -> None:
        self.refresh_steps.append(t)
        self.kernels(net)

    def start(self, value: float, out: torch.Tensor, y: torch.Tensor, named: bool) -> None:
        """Set the divergence reference: the first loss and, for a named loss, that of
        predicting 0 (:mod:`ntk_lib.training`). A callable loss is not called again here (it
        may record its calls)."""
        zero = 0.0
        if named:
            with torch.no_grad():
                zero = float(self.loss_fn(torch.zeros_like(out), y))
        self.divergence.start(value, zero)

    def step(self, value: float, out: torch.Tensor, y: torch.Tensor) -> None:
        self.loss.append(value)
        if (acc := accuracy(out, y)) is not None:
            self.acc.append(acc)

    def evaluate(self, net: Net, theta_s: list[torch.Tensor], t: int) -> None:
        if self.test is None:
            return
        x, y = self.test
        out = linear_outputs(net, theta_s, x)
        with torch.no_grad():
            self.test_loss.append(float(self.loss_fn(out, y)))
        if (acc := accuracy(out, y)) is not None:
            self.test_acc.append(acc)
        self.eval_steps.append(t)

    def kernels(self, net: Net) -> None:
        """Record the empirical NTK ``J J^T`` on the probe set at the current parameters."""
        if self.probe is None:
            return
        theta = tuple(p.detach() for p in net.params)
        jac = jacrev(lambda p: net(list(p), self.probe).reshape(-1))(theta)
        jac = torch.cat([j.reshape(j.shape[0], -1) for j in jac], dim=1).to(torch.float64)
        kernel = jac @ jac.T
        if self.ntk_last is None:
            self.ntk_first = kernel
        else:
            self.ntk_change.append(relative_change(self.ntk_last, kernel))
            self.ntk_from_init.append(relative_change(self.ntk_first, kernel))
        self.ntk_last = kernel

    def history(self, net: Net, engine, adaptive: bool) -> IterativeHistory:
        def f64(values: list[float], keep: bool = True) -> torch.Tensor | None:
            return torch.tensor(values, dtype=torch.float64) if keep else None

        testing = self.test is not None
        return IterativeHistory(
            loss=f64(self.loss),
            accuracy=f64(self.acc, bool(self.acc)),
            eval_steps=self.eval_steps,
            test_loss=f64(self.test_loss, testing),
            test_accuracy=f64(self.test_acc, bool(self.test_acc)),
            refresh_steps=self.refresh_steps,
            ntk_change_between_refreshes=f64(self.ntk_change, self.probe is not None),
            ntk_change_since_init=f64(self.ntk_from_init, self.probe is not None),
            drift=f64(self.drift, adaptive),
            path="" if engine is None else engine.name,
            expansion_point={}
            if engine is None
            else dict(zip(net.names, engine.theta_s, strict=False)),
            diverged_at=self.divergence.diverged_at,
        )


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


def _check_data(model, x, y, x_test, y_test, loss) -> None:
    _checks.trainable("model", model)
    for name, v in (("x", x), ("y", y), ("x_test", x_test), ("y_test", y_test)):
        if v is None and name in ("x_test", "y_test"):
            continue
        if not isinstance(v, torch.Tensor):
            raise TypeError(
                f"{name} must be a tensor of points (first dimension); got {type(v).__name__}"
            )
        if v.is_floating_point() or v.ndim < 1:  # class labels stay integers
            _checks.points(name, v)
    if x.shape[0] < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold the same number (>= 1) of points; got {x.shape[0]} and {y.shape[0]}"
        )
    if (x_test is None) != (y_test is None) or (
        x_test is not None and (x_test.shape[0] < 1 or x_test.shape[0] != y_test.shape[0])
    ):
        raise ValueError("x_test and y_test must come together, with the same number of points")
    if isinstance(loss, str):
        _checks.choice("loss", loss, LOSSES)
    elif not callable(loss):
        raise TypeError(
            f"loss must be one of {LOSSES} or a callable (output, target) -> scalar; got {loss!r}"
        )


def _schedule(K, tol) -> tuple[int | float | str, float | None]:
    """Return ``(K, tol)`` checked: ``K`` a positive integer, ``math.inf`` or ``"adaptive"``."""
    accepted = "a positive integer, math.inf or 'adaptive'"
    if isinstance(K, torch.Tensor) and K.numel() == 1:
        K = K.item()
    if isinstance(K, bool) or not isinstance(K, (int, float, str)) and not hasattr(K, "__index__"):
        raise TypeError(f"K must be {accepted}; got {K!r} ({type(K).__name__})")
    if K == "adaptive":
        if tol is None:
            raise ValueError("K='adaptive' needs tol, the drift that triggers a refresh (e.g. 0.1)")
        return K, _checks.real("tol", tol, positive=True)
    if tol is not None:
        raise ValueError(f"tol is only used with K='adaptive'; got K={K!r} and tol={tol!r}")
    if isinstance(K, str) or (isinstance(K, float) and not (K == math.inf or K.is_integer())):
        raise ValueError(f"K must be {accepted}; got {K!r}")
    if K < 1:
        raise ValueError(f"K must be {accepted} (>= 1); got {K!r}")
    return (K if K == math.inf else int(K)), None


def _to(v: torch.Tensor, net: Net, device: torch.device) -> torch.Tensor:
    return v.to(device=device, dtype=net.dtype if v.is_floating_point() else v.dtype)
