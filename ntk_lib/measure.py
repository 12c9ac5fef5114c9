"""The measurement floor: relative change, log-log slopes, top eigenvalues, bisection, probes.

One implementation of each measurement the lessons share (see ARCHITECTURE.md):

- :func:`relative_change` ``||B - A||_F / ||A||_F``; over a series of kernels,
  :func:`change_since_init` (``Theta_t`` against ``Theta_0``) and
  :func:`change_between_refreshes` (``Theta_i`` against ``Theta_{i-1}``);
- :func:`loglog_slope`, the least-squares power law ``y = c x^s`` (plots draw it, the
  science modules and tests fit it);
- :func:`power_iteration` for the largest eigenvalue of a symmetric operator, and with it
  :func:`ntk_top_eigenvalue` and :func:`critical_lr` ``= 2 D / lambda_max(Theta)``;
- :func:`largest_true`, the geometric bisection for the largest trainable rate;
- :func:`ridge_predict`, the one ridge readout on frozen features, and :func:`accuracy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import _checks
from .device import generator
from .kernels import empirical_ntk


def relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """Return ``||after - before||_F / ||before||_F`` (features, kernels, parameters), in float64.

    Lesson 05 measures lazy training with it: of order ``n^{-1/2}`` for ``q = 1/2``,
    of order one for ``q = 1`` (Chizat et al. 2019; Yang & Hu 2021).

    Raises:
        ValueError: if the shapes differ or ``before`` is zero or not finite.
    """
    if not isinstance(before, torch.Tensor) or not isinstance(after, torch.Tensor):
        raise TypeError(
            "before and after must be torch tensors; "
            f"got {type(before).__name__}, {type(after).__name__}"
        )
    if before.shape != after.shape:
        raise ValueError(
            "before and after must have the same shape; "
            f"got {tuple(before.shape)} and {tuple(after.shape)}"
        )
    b, a = before.detach().to(torch.float64), after.detach().to(torch.float64)
    norm = b.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError(f"before must be finite with a non-zero norm; got norm {float(norm)}")
    return float((a - b).norm() / norm)


def change_since_init(series: Sequence[torch.Tensor]) -> torch.Tensor:
    """Return ``||K_t - K_0||_F / ||K_0||_F`` for every ``K_t`` of ``series`` (float64, CPU)."""
    if not series:
        raise ValueError("series must hold at least one tensor (was anything recorded?)")
    return torch.tensor([relative_change(series[0], k) for k in series], dtype=torch.float64)


def change_between_refreshes(series: Sequence[torch.Tensor]) -> torch.Tensor:
    """Return ``||K_i - K_{i-1}||_F / ||K_{i-1}||_F`` for ``i >= 1`` (float64, CPU)."""
    return torch.tensor([relative_change(a, b) for a, b in zip(series, series[1:], strict=False)],
                        dtype=torch.float64)


def positive_values(name: str, v: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    """Return ``v`` as a float64 NumPy vector of at least two finite positive numbers (a log-log
    axis)."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size < 2 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(
            f"{name} must hold at least two finite positive numbers for a log-log fit; got {a}"
        )
    return a


def loglog_slope(
    x: Sequence[float] | np.ndarray | torch.Tensor, y: Sequence[float] | np.ndarray | torch.Tensor
) -> tuple[float, float]:
    """Return ``(slope, prefactor)`` of the least-squares fit ``log y = slope log x + log
    prefactor``.

    A scaling law ``y = Theta(x^s)`` shows as the slope ``s`` (lessons 01-09 print it next to
    the predicted exponent).
    """
    lx, ly = np.log(positive_values("x", x)), np.log(positive_values("y", y))
    if lx.shape != ly.shape:
        raise ValueError(f"x and y must have the same length; got {lx.size} and {ly.size}")
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(np.exp(intercept))


def power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor],
    v: torch.Tensor,
    *,
    iters: int,
    rtol: float = 0.0,
    estimate: str = "rayleigh",
) -> torch.Tensor:
    """Return the largest eigenvalue (in size) of a symmetric operator by power iteration.

    ``v_{k+1} = A v_k / ||A v_k||`` from the start ``v`` (batched over leading dimensions,
    vectors along the last one); the estimate is the Rayleigh quotient ``v_k . A v_k``
    (``estimate="rayleigh"``, for a positive semi-definite ``A``) or ``||A v_k||``
    (``"norm"``, for an indefinite one such as a Hessian). It stops after ``iters`` steps or
    when every estimate changes by at most ``rtol`` relatively. The error falls like
    ``(lambda_2 / lambda_1)^{2k}`` (Golub & Van Loan, Sec. 8.2.1).
    """
    est = torch.zeros(v.shape[:-1], dtype=v.dtype, device=v.device)
    for _ in range(iters):
        norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
        v = v / torch.where(norm == 0, torch.ones_like(norm), norm)
        u = apply(v)
        new = (v * u).sum(-1) if estimate == "rayleigh" else torch.linalg.vector_norm(u, dim=-1)
        done = bool(((new - est).abs() <= rtol * new.abs()).all())
        est, v = new, u
        if done:
            break
    return est


def ntk_top_eigenvalue(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    method: str = "exact",
    rtol: float | None = None,
    max_iters: int = 2000,
    seed: int = 0,
) -> float:
    """Return ``lambda_max(Theta)``, the largest eigenvalue of the empirical NTK on ``x``.

    ``Theta = J J^T`` over all ``N * out`` outputs. ``method="exact"`` forms ``Theta``
    (:func:`~ntk_lib.kernels.empirical_ntk`) and takes ``eigvalsh``; ``"power"`` runs
    :func:`power_iteration` on ``u -> J (J^T u)`` (one VJP and one JVP per step, ``Theta``
    never formed) from a start drawn with ``seed``, to ``rtol`` (default ``1e-10``, or
    ``10 eps`` of the model's dtype if larger). With the MSE loss, GD on the linearised
    network converges iff ``lr < 2 D / lambda_max`` (:func:`critical_lr`; Lee et al. 2019).
    """
    _checks.choice("method", method, ("exact", "power"))
    ref = _checks.trainable("model", model)[0]
    _checks.deterministic("model", model)
    x = _checks.points("x", x, like=ref)
    if method == "exact":
        ntk = empirical_ntk(model, x, outputs="full").to(torch.float64)
        if ntk.ndim == 4:  # (D, D, K, K): the kernel of all D K outputs
            d, k = ntk.shape[0], ntk.shape[2]
            ntk = ntk.permute(0, 2, 1, 3).reshape(d * k, d * k)
        return torch.linalg.eigvalsh(ntk)[-1].item()
    max_iters = _checks.positive_int("max_iters", max_iters)
    names, params = zip(
        *[(k, p) for k, p in model.named_parameters() if p.requires_grad], strict=False
    )
    eps = torch.finfo(params[0].dtype).eps
    rtol = max(1e-10, 10 * eps) if rtol is None else _checks.real("rtol", rtol, positive=True)
    buffers = {k: b.clone() for k, b in model.named_buffers()}  # batch norm: leave them alone

    def f(*theta: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(
            model, {**dict(zip(names, theta, strict=False)), **buffers}, (x,)
        )

    theta = tuple(p.detach() for p in params)
    out, vjp_fn = torch.func.vjp(f, *theta)
    v = torch.randn(out.numel(), generator=generator(seed), dtype=torch.float64).to(out)
    lam = power_iteration(
        lambda u: torch.func.jvp(f, theta, vjp_fn(u.reshape(out.shape)))[1].reshape(-1),
        v,
        iters=max_iters,
        rtol=rtol,
    )
    return float(lam)


def critical_lr(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    loss: str = "mse",
    rtol: float | None = None,
    max_iters: int = 2000,
    seed: int = 0,
) -> float:
    """Return ``2 D / lambda_max`` (``loss="mse"``) or ``2 / lambda_max`` (``"mse_sum"``): the
    learning rate above which gradient descent on the linearised ``model`` diverges.

    With the MSE loss the linear model's residual evolves as ``r <- (I - (lr / D) Theta) r``
    (Lee et al. 2019), so it converges iff ``lr < 2 D / lambda_max(Theta)``;
    ``lambda_max`` by :func:`ntk_top_eigenvalue` (``method="power"``). Gradient descent on
    the network itself can train above it, by the catapult mechanism (lesson 04). Lesson 10.
    """
    _checks.choice("loss", loss, ("mse", "mse_sum"))
    lam = ntk_top_eigenvalue(model, x, method="power", rtol=rtol, max_iters=max_iters, seed=seed)
    return 2 * (x.shape[0] if loss == "mse" else 1) / lam


def largest_true(
    predicate: Callable[[float], bool],
    low: float,
    high: float,
    *,
    iters: int | None = None,
    rtol: float | None = None,
) -> tuple[float, float]:
    """Return the bracket ``(lo, hi)`` of the largest ``r`` with ``predicate(r)``, by geometric
    bisection.

    ``predicate(low)`` must hold and ``predicate(high)`` must not (the caller checks, to
    name its own arguments); the bracket is halved in ``log r`` (``mid = sqrt(lo hi)``)
    ``iters`` times, or until ``hi - lo <= rtol lo``. Used for the maximal stable learning
    rate (lesson 08) and the maximal trainable rate of the catapult (lesson 04).
    """
    if (iters is None) == (rtol is None):
        raise ValueError("give exactly one of iters and rtol")
    k = 0
    while (k < iters) if iters is not None else (high - low > rtol * low):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if predicate(mid) else (low, mid)
        k += 1
    return low, high


def ridge_predict(
    features: torch.Tensor,
    targets: torch.Tensor,
    features_test: torch.Tensor,
    ridge: float,
    *,
    centre: bool,
) -> torch.Tensor:
    """Return the ridge readout's predictions ``F_t F^T (F F^T + lambda I)^{-1} Y`` on
    ``features_test``.

    The penalty is normalised by the features' scale, ``lambda = ridge * mean_alpha
    ||F_alpha||^2`` (``= ridge * mean diag K`` for the Gram matrix ``K = F F^T``), so the same
    ``ridge`` means the same at every width. With ``centre`` the features are centred by
    their training mean and the targets by theirs (added back to the predictions). Kernel
    ridge regression with the features' linear kernel: least squares on frozen features with
    an L2 penalty, the "linear probe" of lessons 05 and 08 (Yang & Hu 2021). float64.
    """
    f, ft, y = (t.to(torch.float64) for t in (features, features_test, targets))
    mean_y = y.mean(dim=0) if centre else torch.zeros_like(y[0])
    if centre:
        mean = f.mean(dim=0)
        f, ft = f - mean, ft - mean
    gram = f @ f.T
    lam = ridge * gram.diagonal().mean().clamp(min=torch.finfo(torch.float64).tiny)
    eye = torch.eye(len(f), dtype=gram.dtype, device=gram.device)
    return mean_y + ft @ (f.T @ torch.linalg.solve(gram + lam * eye, y - mean_y))


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float | None:
    """Return the fraction of points whose largest output is their class, or ``None``.

    ``y`` holds class indices (shape ``(N,)``, integers) or one-hot / probability rows
    (shape ``out.shape``, the class is the argmax); ``None`` when ``out`` is not a matrix of
    at least two class scores or ``y`` is neither.
    """
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    if not y.is_floating_point() and y.shape == out.shape[:1]:
        return float((out.argmax(1) == y).double().mean())
    if y.shape == out.shape:
        return float((out.argmax(1) == y.argmax(1)).double().mean())
    return None
