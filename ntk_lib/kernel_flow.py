"""Closed-form MSE dynamics on a fixed kernel: gradient flow and gradient descent, train and test.

The loss is ``L = (1/2D) sum_alpha (f(x_alpha) - y_alpha)^2`` over ``D`` training points
(:func:`~ntk_lib.training.mse_loss`). With ``Theta = V diag(lam) V^T`` the training residual
evolves mode by mode (Lee et al. 2019, Sec. 2; Bahri's lecture),
``f_t - y = V exp(-lr lam t / D) V^T (f_0 - y)`` under gradient flow (:func:`mse_flow`) and
``f_k - y = V (1 - lr lam / D)^k V^T (f_0 - y)`` under gradient descent (:func:`mse_gd`); test
points follow through ``Theta_test,train``, the parameters of the linearised network through
``J^T`` (:func:`mse_flow_params`), and an infinite ensemble's test outputs are Gaussian
(:func:`mse_flow_ensemble`). One eigendecomposition serves any number of times. The names
are importable from :mod:`ntk_lib.dynamics` too. See ARCHITECTURE.md.

Taught in lessons 02 and 03.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _checks
from .training import DIVERGENCE_FACTOR, Divergence, DivergenceError

RCOND = 1e-12
"""Eigenvalues of the training kernel below ``RCOND * lam_max`` count as zero modes at ``t =
inf``."""


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
    source = (
        k_train.dtype
        if isinstance(k_train, torch.Tensor) and k_train.is_floating_point()
        else torch.float64
    )
    k = _checks.matrix("k_train", k_train, dtype=torch.float64)
    d = k.shape[0]
    if k.shape != (d, d):
        raise ValueError(
            f"k_train must be a square (D, D) kernel matrix; got shape {tuple(k.shape)}"
        )
    # Rounding in the kernel's own precision (e.g. a float32 empirical NTK) is not an error.
    tol = max(1e-10, 10 * d * torch.finfo(source).eps)
    if (k - k.T).abs().max() > tol * k.abs().max():
        raise ValueError("k_train must be symmetric (a kernel matrix); got an asymmetric matrix")
    if vector_only:
        y, vec = _vector("y_train", y_train, d, k.device)[:, None], True
    else:
        y, vec = _targets("y_train", y_train, d, k.device)
    f0 = (
        torch.zeros_like(y)
        if f0_train is None
        else _like("f0_train", f0_train, y, vec, "that of y_train")
    )
    _checks.real("lr", lr, positive=True)
    lam, v = torch.linalg.eigh((k + k.T) / 2)
    if lam[0] < -max(tol, 1e-8) * max(lam[-1].item(), 0.0) - 1e-300:
        raise ValueError(
            f"k_train must be positive semi-definite; its smallest eigenvalue is"
            f" {lam[0].item():.3g}"
        )
    return lam.clamp(min=0), v, v.T @ (y - f0), y, vec, d


def _vector(name, v, d, device):
    v = _checks.vector(name, v, dtype=torch.float64, device=device)
    if v.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},) to match k_train; got {tuple(v.shape)}")
    return v


def _targets(name, y, d, device):
    """``y`` of shape ``(D,)`` or ``(D, K)`` as a float64 ``(D, K)`` matrix, and whether it was a
    vector."""
    shape = tuple(y.shape) if hasattr(y, "shape") else None
    if shape is not None and len(shape) == 1:
        return _vector(name, y, d, device)[:, None], True
    y = _checks.matrix(name, y, dtype=torch.float64, device=device)
    if y.shape[0] != d:
        raise ValueError(
            f"{name} must have shape ({d},) or ({d}, K) to match k_train; got {tuple(y.shape)}"
        )
    return y, False


def _like(name, f, y, vec, what):
    """``f`` with the shape of ``y`` (``(D, K)``, or ``(D,)`` if the targets were a vector), as
    ``(D, K)``."""
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
        raise ValueError(
            f"{name} must be a non-negative number or a 1-D sequence of them; got {t.tolist()}"
        )
    return t


def _flow_factors(lam: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``exp(-a lam)`` and ``(1 - exp(-a lam)) / lam`` for times ``a = lr t / D`` of shape ``(T,
    1)``.

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
    """``train = y - V (decay * r0)``; ``test = f0_test + K_test,train V (gain * r0)``, per
    output."""
    train = y - torch.einsum("ij,tj,jk->tik", v, decay, r0)
    test = None
    if k_test_train is not None:
        kt = _checks.matrix(
            "k_test_train", k_test_train, cols=len(y), dtype=torch.float64, device=y.device
        )
        f0t = torch.zeros(kt.shape[0], y.shape[1], dtype=torch.float64, device=y.device)
        if f0_test is not None:
            f0t = _like(
                "f0_test", f0_test, f0t, vec, "one row per row of k_test_train, outputs as y_train"
            )
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
    _checks.fits(
        "t", f"{times.numel()} times", 4 * times.numel() * d * 8, "the trajectories", lam.device
    )
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
    divergence_factor: float = DIVERGENCE_FACTOR,
) -> KernelDynamics:
    """Return train (and test) predictions after ``steps`` of gradient descent with a fixed kernel.

    The discrete counterpart of :func:`mse_flow`: ``f_{k+1} = f_k - (lr/D) Theta (f_k - y)``,
    so mode by mode ``f_k - y`` shrinks by ``(1 - lr lam / D)^k`` and the test factor is
    ``(1 - (1 - lr lam/D)^k) / lam`` (limit ``k lr / D`` on zero modes). As ``lr -> 0`` with
    ``k lr`` fixed it tends to the flow. GD on this kernel converges iff
    ``lr < 2 D / lam_max``; beyond that the residual grows geometrically, and when the
    training loss at a requested step breaks the rule of :mod:`ntk_lib.training`
    (non-finite, or above ``divergence_factor`` times both the initial loss and the loss of
    predicting zero), :class:`~ntk_lib.training.DivergenceError` reports the first such
    step, rather than returning outputs that only count the growth.

    Args:
        steps: a number of steps or a 1-D sequence of them (integers >= 0).
        divergence_factor: see above (> 0).

    The other arguments, and the shapes (targets ``(D,)`` or ``(D, K)``), are as in
    :func:`mse_flow`.
    """
    rule = Divergence(divergence_factor, "raise")
    lam, v, r0, y, vec, d = _spectral(k_train, y_train, f0_train, lr)
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
    rule.start(float(r0.square().sum()) / (2 * d), float(y.square().sum()) / (2 * d))
    bad = (
        ~torch.isfinite(loss) | ~torch.isfinite(gain).all(1) | (loss > rule.factor * rule.reference)
    )
    if bad.any():
        first = int(k.reshape(-1)[bad].min())
        value = float(loss[bad][k.reshape(-1)[bad].argmin()])
        err = DivergenceError(first, value)
        err.args = (
            f"{err}: gradient descent on this kernel diverges for lr >= 2 D / lam_max = "
            f"{2 * d / lam[-1].item():.4g} (lr = {lr:g}); the loss at step {first} is more than "
            f"divergence_factor = {divergence_factor:g} times the initial one and that of"
            f" predicting 0",
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
    """Return ``theta_t - theta_0`` of the linearised network under gradient flow, shape ``(T, P)``
    or ``(P,)``.

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
    """Return the distribution of infinitely wide networks' test outputs after gradient flow for
    time ``t``.

    The NTK-GP (Lee et al. 2019, eq. 16): a network of infinite width starts as a Gaussian
    process with the NNGP ``K`` (mean 0) and then trains as its linearisation with the
    deterministic NTK ``Theta``, so that with ``A_t = Theta_*X Theta^{-1} (I - exp(-lr Theta t /
    D))``
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
        k_test_train: the NTK ``Theta_*X`` between ``M`` test points and the training points, ``(M,
            D)``.
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
        raise ValueError(
            f"nngp_train must have shape ({d}, {d}) like k_train; got {tuple(kxx.shape)}"
        )
    kt = _checks.matrix("k_test_train", k_test_train, cols=d, dtype=torch.float64, device=y.device)
    m = kt.shape[0]
    ktx = _checks.matrix("nngp_test_train", nngp_test_train, dtype=torch.float64, device=y.device)
    if ktx.shape != (m, d):
        raise ValueError(
            f"nngp_test_train must have shape ({m}, {d}) like k_test_train; got {tuple(ktx.shape)}"
        )
    ktt = _checks.matrix("nngp_test", nngp_test, dtype=torch.float64, device=y.device)
    if ktt.shape != (m, m):
        raise ValueError(
            f"nngp_test must have shape ({m}, {m}) (M test points); got {tuple(ktt.shape)}"
        )
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
