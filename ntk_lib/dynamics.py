"""Training dynamics under the MSE loss: full-batch gradient descent that records what moves.

The loss is ``L = (1/2D) sum_alpha (f(x_alpha) - y_alpha)^2`` over ``D`` training points
(DESIGN.md), so that gradient flow moves the outputs by ``df/dt = -(1/D) Theta (f - y)``
(Jacot et al. 2018; Lee et al. 2019). :func:`train_gd` runs the discrete version and
records the loss, the relative movement of the parameters and, optionally, the empirical
NTK, so that lessons can measure how all of these shrink with width.

Closed forms (Lee et al. 2019, Sec. 2; Bahri's lecture): with ``Theta = V diag(lam) V^T``
the training residual evolves mode by mode, ``f_t - y = V exp(-lr lam t / D) V^T (f_0 - y)``
under gradient flow (:func:`mse_flow`) and ``f_k - y = V (1 - lr lam / D)^k V^T (f_0 - y)``
under gradient descent (:func:`mse_gd`); test points follow through ``Theta_test,train``,
and the parameters of the linearised network through ``J^T`` (:func:`mse_flow_params`).
One eigendecomposition serves any number of times, and any number ``K`` of outputs
(targets ``(D, K)``, e.g. one-hot classes): each output flows as in the scalar case.
:func:`mse_flow_ensemble` gives the mean and covariance of the test outputs of infinitely
wide networks trained from random initialisation (the NTK-GP, Lee et al. 2019, eq. 16).

Taught in lessons 01 and 03.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import _checks
from .kernels import empirical_nngp, empirical_ntk
from .models import MLP


RCOND = 1e-12
"""Eigenvalues of the training kernel below ``RCOND * lam_max`` count as zero modes at ``t = inf``."""


class DivergenceError(RuntimeError):
    """Training diverged: the loss became non-finite or grew by ``divergence_factor``."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged at step {step} (loss {loss:.3g})")
        self.step, self.loss = step, loss


@dataclass
class TrainHistory:
    """What :func:`train_gd` recorded. Tensors are float64 on the CPU.

    Attributes:
        loss: the loss before each step and after the last one, shape ``(steps + 1,)``
            (shorter if training diverged: only finite values are kept).
        param_change: ``||theta_t - theta_0|| / ||theta_0||`` at the same times.
        ntk_steps, ntk: the steps at which the empirical NTK was recorded, and the NTKs
            (``(D, D)``; for several outputs the ``"mean"`` kernel unless ``train_gd`` was
            asked for ``ntk_outputs="full"``).
        nngp: the empirical NNGP (last-layer feature kernel) at the same steps, for an
            :class:`~ntk_lib.models.MLP` (empty otherwise).
        outputs: the outputs on ``x`` before each step and after the last one, if
            ``record_outputs``.
        diverged_at: the step whose loss was non-finite or exploded, ``-1`` if none.
    """

    loss: torch.Tensor
    param_change: torch.Tensor
    ntk_steps: list[int] = field(default_factory=list)
    ntk: list[torch.Tensor] = field(default_factory=list)
    nngp: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    diverged_at: int = -1

    @property
    def diverged(self) -> bool:
        """Whether training was stopped by divergence."""
        return self.diverged_at >= 0

    def ntk_change(self) -> torch.Tensor:
        """Return ``||Theta_t - Theta_0||_F / ||Theta_0||_F`` at each recorded step."""
        return _relative_change(self.ntk, "NTK")

    def nngp_change(self) -> torch.Tensor:
        """Return ``||K_t - K_0||_F / ||K_0||_F`` of the empirical NNGP at each recorded step."""
        return _relative_change(self.nngp, "NNGP (recorded for ntk_lib MLPs only)")


def _relative_change(kernels: list[torch.Tensor], what: str) -> torch.Tensor:
    if not kernels:
        raise ValueError(f"no {what} was recorded: call train_gd with ntk_every=k")
    return torch.stack([(k - kernels[0]).norm() / kernels[0].norm() for k in kernels])


def mse_loss(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return ``(1/2D) sum (f - y)^2`` (summed over output dimensions, averaged over points)."""
    return 0.5 * (f - y).pow(2).sum() / f.shape[0]


def _flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).to(torch.float64)


def train_gd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    ntk_every: int | None = None,
    ntk_outputs: str = "mean",
    on_divergence: str = "stop",
    divergence_factor: float = 1e6,
    record_outputs: bool = False,
    progress: bool = False,
) -> TrainHistory:
    """Train ``model`` in place by full-batch gradient descent on the MSE loss; return its history.

    ``theta <- theta - lr * lr_scale * grad L`` with ``L = (1/2D) sum (f - y)^2`` (per-layer
    ``lr_scale`` from ``model.param_groups`` when the model has it, e.g. :class:`~ntk_lib.models.MLP`).

    Args:
        model: any module mapping ``x`` to outputs of ``y``'s shape.
        x, y: the training set; ``y`` of shape ``(D,)`` for a scalar-output model.
        lr: learning rate (> 0).
        steps: number of gradient steps (>= 0).
        ntk_every: record the empirical NTK (and, for an MLP, NNGP) on ``x`` every this many
            steps and at the end.
        ntk_outputs: for a model with ``K > 1`` outputs per input, which kernel is recorded:
            ``"mean"`` (the default: the ``(D, D)`` mean of the ``K`` diagonal blocks, which
            tends to the infinite-width ``Theta`` as the outputs decouple) or ``"full"``
            (``(D, D, K, K)``); see :func:`~ntk_lib.kernels.empirical_ntk`. A scalar-output
            model records ``(D, D)`` either way.
        on_divergence: ``"stop"`` (return the history with ``diverged_at`` set) or ``"raise"``
            (:class:`DivergenceError`). Divergence means a non-finite loss or a loss larger
            than ``divergence_factor`` times the initial one.
        record_outputs: keep the outputs on ``x`` at every step (float64, CPU).
        progress: show a tqdm progress bar.
    """
    lr = _checks.real("lr", lr, positive=True)
    steps = _checks.nonnegative_int("steps", steps)
    _checks.choice("on_divergence", on_divergence, ("stop", "raise"))
    divergence_factor = _checks.real("divergence_factor", divergence_factor, positive=True)
    if ntk_every is not None:
        ntk_every = _checks.positive_int("ntk_every", ntk_every)
    _checks.choice("ntk_outputs", ntk_outputs, ("full", "mean"))
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if x.shape[0] != y.shape[0] or x.shape[0] < 1:
        raise ValueError(f"x and y must hold the same number (>= 1) of points; got {x.shape[0]} and {y.shape[0]}")
    groups = model.param_groups(lr) if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
    optimizer = torch.optim.SGD(groups, lr=lr)
    theta0 = _flat_params(model)
    norm0 = theta0.norm().clamp(min=torch.finfo(torch.float64).tiny)
    history = TrainHistory(loss=torch.empty(0), param_change=torch.empty(0))
    losses, moves = [], []
    for step in tqdm(range(steps + 1), disable=not progress, leave=False):
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        if out.shape != y.shape:
            raise ValueError(f"model output shape {tuple(out.shape)} does not match y's shape {tuple(y.shape)}")
        loss = mse_loss(out, y)
        value = float(loss.detach())
        if not math.isfinite(value) or (losses and value > divergence_factor * max(losses[0], 1e-30)):
            history.diverged_at = step
            if on_divergence == "raise":
                raise DivergenceError(step, value)
            break
        losses.append(value)
        if record_outputs:
            history.outputs.append(out.detach().to("cpu", torch.float64))
        if ntk_every is not None and (step % ntk_every == 0 or step == steps):
            history.ntk_steps.append(step)
            history.ntk.append(empirical_ntk(model, x, outputs=ntk_outputs).to("cpu", torch.float64))
            if isinstance(model, MLP):
                history.nngp.append(empirical_nngp(model, x).to("cpu", torch.float64))
        moves.append(float((_flat_params(model) - theta0).norm() / norm0))
        if step < steps:
            loss.backward()
            optimizer.step()
    history.loss = torch.tensor(losses, dtype=torch.float64)
    history.param_change = torch.tensor(moves, dtype=torch.float64)
    return history


# ---------------------------------------------------------------------------------------
# Closed-form MSE dynamics on a fixed kernel
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelDynamics:
    """Predictions of kernel gradient flow/descent on train and test points.

    ``train`` has shape ``(len(t), D)`` (or ``(D,)`` for a scalar time), ``test`` likewise
    with the test points, or ``None`` when no ``k_test_train`` was given.
    """

    train: torch.Tensor
    test: torch.Tensor | None


def _spectral(k_train, y_train, f0_train, lr, *, vector_only=False):
    """Validate the inputs; return ``(lam, V, r0, y, vec, D)`` with ``r0 = V^T (y - f0)``.

    ``y`` and ``r0`` have shape ``(D, K)``; ``vec`` says the targets were a vector ``(D,)``.
    """
    source = k_train.dtype if isinstance(k_train, torch.Tensor) and k_train.is_floating_point() else torch.float64
    k = _checks.matrix("k_train", k_train, dtype=torch.float64)
    d = k.shape[0]
    if k.shape != (d, d):
        raise ValueError(f"k_train must be a square (D, D) kernel matrix; got shape {tuple(k.shape)}")
    # Rounding in the kernel's own precision (e.g. a float32 empirical NTK) is not an error.
    tol = max(1e-10, 10 * d * torch.finfo(source).eps)
    if (k - k.T).abs().max() > tol * k.abs().max():
        raise ValueError("k_train must be symmetric (a kernel matrix); got an asymmetric matrix")
    if vector_only:
        y, vec = _vector("y_train", y_train, d, k.device)[:, None], True
    else:
        y, vec = _targets("y_train", y_train, d, k.device)
    f0 = torch.zeros_like(y) if f0_train is None else _like("f0_train", f0_train, y, vec, "that of y_train")
    _checks.real("lr", lr, positive=True)
    lam, v = torch.linalg.eigh((k + k.T) / 2)
    if lam[0] < -max(tol, 1e-8) * max(lam[-1].item(), 0.0) - 1e-300:
        raise ValueError(f"k_train must be positive semi-definite; its smallest eigenvalue is {lam[0].item():.3g}")
    return lam.clamp(min=0), v, v.T @ (y - f0), y, vec, d


def _vector(name, v, d, device):
    v = _checks.vector(name, v, dtype=torch.float64, device=device)
    if v.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},) to match k_train; got {tuple(v.shape)}")
    return v


def _targets(name, y, d, device):
    """``y`` of shape ``(D,)`` or ``(D, K)`` as a float64 ``(D, K)`` matrix, and whether it was a vector."""
    shape = tuple(y.shape) if hasattr(y, "shape") else None
    if shape is not None and len(shape) == 1:
        return _vector(name, y, d, device)[:, None], True
    y = _checks.matrix(name, y, dtype=torch.float64, device=device)
    if y.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d},) or ({d}, K) to match k_train; got {tuple(y.shape)}")
    return y, False


def _like(name, f, y, vec, what):
    """``f`` with the shape of ``y`` (``(D, K)``, or ``(D,)`` if the targets were a vector), as ``(D, K)``."""
    want = (y.shape[0],) if vec else tuple(y.shape)
    shape = tuple(f.shape) if hasattr(f, "shape") else None
    if shape is not None and shape != want:
        raise ValueError(f"{name} must have shape {want} ({what}); got {shape}")
    check = _checks.vector if vec else _checks.matrix
    f = check(name, f, dtype=torch.float64, device=y.device)
    if tuple(f.shape) != want:
        raise ValueError(f"{name} must have shape {want} ({what}); got {tuple(f.shape)}")
    return f[:, None] if vec else f


def _times(name, t, device):
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    if t.ndim > 1 or t.numel() < 1 or torch.isnan(t).any() or (t < 0).any():
        raise ValueError(f"{name} must be a non-negative number or a 1-D sequence of them; got {t.tolist()}")
    return t


def _flow_factors(lam: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(-a lam)`` and ``(1 - exp(-a lam)) / lam`` for times ``a = lr t / D`` of shape ``(T, 1)``.

    The second is ``a`` on exact zero modes; at ``a = inf`` modes below ``RCOND * lam_max``
    do not move (decay 1, gain 0), the others relax fully (decay 0, gain ``1/lam``).
    """
    zero = lam <= RCOND * lam[-1]
    positive = lam > 0
    finite_gain = torch.where(positive, -torch.expm1(-a * lam) / torch.where(positive, lam, 1.0), a)
    inf = torch.isinf(a)
    decay = torch.where(inf, torch.where(zero, 1.0, 0.0), torch.exp(-a * lam))
    gain = torch.where(inf, torch.where(zero, 0.0, 1 / lam.clamp(min=1e-300)), finite_gain)
    return decay, gain


def _predict(v, r0, y, vec, decay, gain, k_test_train, f0_test, scalar):
    """``train = y - V (decay * r0)``; ``test = f0_test + K_test,train V (gain * r0)``, per output."""
    train = y - torch.einsum("ij,tj,jk->tik", v, decay, r0)
    test = None
    if k_test_train is not None:
        kt = _checks.matrix("k_test_train", k_test_train, cols=len(y), dtype=torch.float64, device=y.device)
        f0t = torch.zeros(kt.shape[0], y.shape[1], dtype=torch.float64, device=y.device)
        if f0_test is not None:
            f0t = _like("f0_test", f0_test, f0t, vec, "one row per row of k_test_train, outputs as y_train")
        test = f0t + torch.einsum("mj,tj,jk->tmk", kt @ v, gain, r0)
    if vec:
        train, test = train[..., 0], None if test is None else test[..., 0]
    if scalar:
        return KernelDynamics(train[0], None if test is None else test[0])
    return KernelDynamics(train, test)


def mse_flow(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    t: float | torch.Tensor,
    *,
    k_test_train: torch.Tensor | None = None,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
    lr: float = 1.0,
) -> KernelDynamics:
    """Return train (and test) predictions of gradient flow on the MSE loss with a fixed kernel.

    Solves ``df/dt = -(lr/D) Theta (f - y)`` on the ``D`` training points (the loss
    ``(1/2D) sum_a sum_k (f_k(x_a) - y_ak)^2``; Jacot et al. 2018, Lee et al. 2019, eq. 9-10)::

        f_t(train) = y + exp(-lr Theta t / D) (f_0 - y)
        f_t(test)  = f_0(test) + Theta_test,train Theta^{-1} (I - exp(-lr Theta t / D)) (y - f_0)

    from one eigendecomposition ``Theta = V diag(lam) V^T``; the factor
    ``(1 - exp(-lr lam t/D)) / lam`` is evaluated with ``expm1`` and equals its limit
    ``lr t / D`` on zero modes, so singular kernels are exact at finite ``t``. At
    ``t = inf`` the test prediction is kernel regression, ``f_0 + Theta_test,train
    Theta^+ (y - f_0)``, with the pseudo-inverse: eigenvalues below ``RCOND * lam_max``
    (1e-12) are zero modes, which gradient flow never moves.

    Several outputs: targets ``(D, K)`` (one column per output, e.g. one-hot classes) flow
    independently through the same kernel (``Theta`` times ``I_K``, the infinite-width
    kernel of a ``K``-output network or the ``"mean"`` empirical NTK), each as in the
    scalar case, from the one eigendecomposition. The time is ``t = lr * steps`` of
    gradient descent; neural-tangents' ``predict.gradient_descent_mse`` divides the loss by
    the number of targets ``D K`` instead of ``D``, so its time ``K t`` is this ``t``.

    Args:
        k_train: the ``(D, D)`` kernel on the training points (symmetric, PSD).
        y_train: targets, shape ``(D,)`` or ``(D, K)``.
        t: a time (``float('inf')`` allowed) or a 1-D sequence of times (>= 0).
        k_test_train: the ``(M, D)`` kernel between test and training points.
        f0_train, f0_test: outputs at ``t = 0``, shaped like ``y_train`` (``(D,)``/``(D, K)``)
            and ``(M,)``/``(M, K)``; default zero (e.g. a centred network).
        lr: learning rate multiplying the time.

    Returns:
        :class:`KernelDynamics` with ``train`` of shape ``(T, D, K)`` (``(T, D)`` for vector
        targets; no ``T`` axis for a scalar ``t``) and ``test`` likewise with ``M``.
    """
    lam, v, r0, y, vec, d = _spectral(k_train, y_train, f0_train, lr)
    times = _times("t", t, lam.device)
    decay, gain = _flow_factors(lam, lr * times.reshape(-1, 1) / d)
    return _predict(v, r0, y, vec, decay, gain, k_test_train, f0_test, times.ndim == 0)


def mse_gd(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    steps: int | torch.Tensor,
    *,
    lr: float,
    k_test_train: torch.Tensor | None = None,
    f0_train: torch.Tensor | None = None,
    f0_test: torch.Tensor | None = None,
    divergence_factor: float = 1e6,
) -> KernelDynamics:
    """Return train (and test) predictions after ``steps`` of gradient descent with a fixed kernel.

    The discrete counterpart of :func:`mse_flow`: ``f_{k+1} = f_k - (lr/D) Theta (f_k - y)``,
    so mode by mode ``f_k - y`` shrinks by ``(1 - lr lam / D)^k`` and the test factor is
    ``(1 - (1 - lr lam/D)^k) / lam`` (limit ``k lr / D`` on zero modes). As ``lr -> 0`` with
    ``k lr`` fixed it tends to the flow. GD on this kernel converges iff
    ``lr < 2 D / lam_max``; beyond that the residual grows geometrically, and when the
    training loss at a requested step is non-finite or above ``divergence_factor`` times
    both the initial loss and the loss of predicting zero (the rule of :func:`train_gd`),
    :class:`DivergenceError` reports the first such step, rather than returning outputs
    that only count the growth.

    Args:
        steps: a number of steps or a 1-D sequence of them (integers >= 0).
        divergence_factor: see above (> 0).

    The other arguments, and the shapes (targets ``(D,)`` or ``(D, K)``), are as in
    :func:`mse_flow`.
    """
    lam, v, r0, y, vec, d = _spectral(k_train, y_train, f0_train, lr)
    divergence_factor = _checks.real("divergence_factor", divergence_factor, positive=True)
    k = _times("steps", steps, lam.device)
    if (k != k.round()).any() or torch.isinf(k).any():
        raise ValueError(f"steps must be whole numbers; got {k.tolist()}")
    u = lr * lam / d
    kk = k.reshape(-1, 1)
    with torch.no_grad():
        factor = (1 - u) ** kk  # (T, D)
        small = u < 0.5  # accurate (1 - (1-u)^k) / lam via expm1/log1p where u is small
        accurate = -torch.expm1(kk * torch.log1p(-u.clamp(max=0.5)))
        numer = torch.where(small, accurate, 1 - factor)
        gain = torch.where(lam > 0, numer / torch.where(lam > 0, lam, 1.0), kk * lr / d)
        # Training loss at each requested step, (1/2D) sum_i factor_i^2 |r0_i|^2.
        loss = (factor.square() * r0.square().sum(1)).sum(1) / (2 * d)
        reference = max(float(r0.square().sum()), float(y.square().sum())) / (2 * d)
    bad = ~torch.isfinite(loss) | ~torch.isfinite(gain).all(1) | (loss > divergence_factor * reference)
    if bad.any():
        first = int(k.reshape(-1)[bad].min())
        value = float(loss[bad][k.reshape(-1)[bad].argmin()])
        err = DivergenceError(first, value)
        err.args = (
            f"{err}: gradient descent on this kernel diverges for lr >= 2 D / lam_max = "
            f"{2 * d / lam[-1].item():.4g} (lr = {lr:g}); the loss at step {first} is more than "
            f"divergence_factor = {divergence_factor:g} times the initial one and that of predicting 0",
        )
        raise err
    return _predict(v, r0, y, vec, factor, gain, k_test_train, f0_test, k.ndim == 0)


def mse_flow_params(
    jac_train: torch.Tensor,
    y_train: torch.Tensor,
    t: float | torch.Tensor,
    *,
    f0_train: torch.Tensor | None = None,
    lr: float = 1.0,
) -> torch.Tensor:
    """Return ``theta_t - theta_0`` of the linearised network under gradient flow, shape ``(T, P)`` or ``(P,)``.

    With ``J`` the ``(D, P)`` Jacobian at ``theta_0`` of a scalar-output network (targets
    ``(D,)``) and ``Theta = J J^T`` (Lee et al. 2019, eq. 8)::

        theta_t - theta_0 = J^T Theta^{-1} (I - exp(-lr Theta t / D)) (y - f_0)

    which is what ``(lr/D) int_0^t J^T (y - f_s) ds`` integrates to; at ``t = inf`` it is the
    minimum-norm change that interpolates the data.
    """
    jac = _checks.matrix("jac_train", jac_train, dtype=torch.float64)
    lam, v, r0, _, _, d = _spectral(jac @ jac.T, y_train, f0_train, lr, vector_only=True)
    times = _times("t", t, lam.device)
    _, gain = _flow_factors(lam, lr * times.reshape(-1, 1) / d)
    out = (gain * r0[:, 0]) @ (jac.T @ v).T
    return out[0] if times.ndim == 0 else out


@dataclass(frozen=True)
class Gaussian:
    """Mean and covariance of the test outputs of an infinite ensemble (:func:`mse_flow_ensemble`).

    ``mean`` has shape ``(M, K)`` (``(M,)`` for vector targets) and ``cov`` ``(M, M)``, the
    covariance of each output (the outputs are independent and identically distributed
    around their means), with a leading time axis ``T`` for a sequence of times.
    """

    mean: torch.Tensor
    cov: torch.Tensor


def mse_flow_ensemble(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    t: float | torch.Tensor,
    *,
    nngp_train: torch.Tensor,
    k_test_train: torch.Tensor,
    nngp_test_train: torch.Tensor,
    nngp_test: torch.Tensor,
    lr: float = 1.0,
) -> Gaussian:
    """Return the distribution of infinitely wide networks' test outputs after gradient flow for time ``t``.

    The NTK-GP (Lee et al. 2019, eq. 16): a network of infinite width starts as a Gaussian
    process with the NNGP ``K`` (mean 0) and then trains as its linearisation with the
    deterministic NTK ``Theta``, so that with ``A_t = Theta_*X Theta^{-1} (I - exp(-lr Theta t / D))``
    (the test map of :func:`mse_flow`) its test outputs ``f_t(x_*) = f_0(x_*) + A_t (y -
    f_0(X))`` are Gaussian with::

        mean = A_t y
        cov  = K_** - A_t K_X* - K_*X A_t^T + A_t K_XX A_t^T

    the same covariance for every output (the ``K`` outputs of the network are independent).
    All times come from one eigendecomposition of ``Theta``; ``t = inf`` gives ``A =
    Theta_*X Theta^+`` (zero modes as in :func:`mse_flow`). The loss is ``(1/2D) sum_a sum_k
    (f_k(x_a) - y_ak)^2`` and ``t = lr * steps``: after ``s`` steps of gradient descent at
    rate ``eta`` take ``t = s`` with ``lr = eta`` (or ``t = eta s`` with ``lr = 1``).
    neural-tangents' ``predict.gradient_descent_mse_ensemble`` (``get="ntk"``) is the same
    formula with the loss divided by ``D K``: its time ``K t`` is this ``t``.

    Args:
        k_train: the NTK ``Theta`` on the ``D`` training points, ``(D, D)``.
        y_train: targets ``(D,)`` or ``(D, K)``.
        t: a time (``inf`` allowed) or a 1-D sequence of times.
        nngp_train: the NNGP ``K_XX``, ``(D, D)``.
        k_test_train: the NTK ``Theta_*X`` between ``M`` test points and the training points, ``(M, D)``.
        nngp_test_train: the NNGP ``K_*X``, ``(M, D)``.
        nngp_test: the NNGP ``K_**`` on the test points, ``(M, M)``.
        lr: learning rate multiplying the time.

    Returns:
        :class:`Gaussian` with ``mean`` ``(M, K)`` (``(M,)`` for vector targets) and ``cov``
        ``(M, M)``, each with a leading ``(T,)`` axis for a sequence of times; float64.
    """
    lam, v, _, y, vec, d = _spectral(k_train, y_train, None, lr)
    kxx = _checks.matrix("nngp_train", nngp_train, dtype=torch.float64, device=y.device)
    if kxx.shape != (d, d):
        raise ValueError(f"nngp_train must have shape ({d}, {d}) like k_train; got {tuple(kxx.shape)}")
    kt = _checks.matrix("k_test_train", k_test_train, cols=d, dtype=torch.float64, device=y.device)
    m = kt.shape[0]
    ktx = _checks.matrix("nngp_test_train", nngp_test_train, dtype=torch.float64, device=y.device)
    if ktx.shape != (m, d):
        raise ValueError(f"nngp_test_train must have shape ({m}, {d}) like k_test_train; got {tuple(ktx.shape)}")
    ktt = _checks.matrix("nngp_test", nngp_test, dtype=torch.float64, device=y.device)
    if ktt.shape != (m, m):
        raise ValueError(f"nngp_test must have shape ({m}, {m}) (M test points); got {tuple(ktt.shape)}")
    times = _times("t", t, lam.device)
    _, gain = _flow_factors(lam, lr * times.reshape(-1, 1) / d)  # (T, D)
    b = kt @ v  # Theta_*X V, (M, D); A_t = b diag(gain_t) V^T
    mean = torch.einsum("mj,tj,jk->tmk", b, gain, v.T @ y)
    bg = b * gain[:, None, :]  # (T, M, D)
    cross = bg @ (v.T @ ktx.T)  # A_t K_X*, (T, M, M)
    inner = bg @ (v.T @ kxx @ v) @ bg.transpose(1, 2)  # A_t K_XX A_t^T
    cov = ktt + inner - cross - cross.transpose(1, 2)
    cov = (cov + cov.transpose(1, 2)) / 2
    if vec:
        mean = mean[..., 0]
    if times.ndim == 0:
        return Gaussian(mean[0], cov[0])
    return Gaussian(mean, cov)
