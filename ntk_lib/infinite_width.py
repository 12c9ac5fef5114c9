"""The closed-form NNGP and NTK of the infinite-width network (:func:`nngp_ntk`).

The NTK-parametrization convention of the course (ARCHITECTURE.md; Jacot et al. 2018, Lee
et al. 2019, Arora et al. 2019)::

    K^1(x, x')     = sigma_w^2 x.x' / d + sigma_b^2,          Theta^1 = K^1,
    K^{l+1}(x, x') = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2,
    Theta^{l+1}    = K^{l+1} + sigma_w^2 E[phi'(u) phi'(v)] Theta^l,

with ``(u, v) ~ N(0, [[K^l(x,x), K^l(x,x')], [K^l(x,x'), K^l(x',x')]])``; the network's
NNGP and NTK are ``K^{depth+1}`` and ``Theta^{depth+1}``. Importable from
:mod:`ntk_lib.kernels` too, next to the empirical kernels it is compared with.

Taught in lesson 02.
"""

from __future__ import annotations

import math

import torch

from . import _checks

CLOSED_FORM_ACTIVATIONS: tuple[str, ...] = ("relu", "erf", "identity")
"""Activations whose NNGP/NTK :func:`nngp_ntk` knows in closed form."""

_BLOCK_ENTRIES = 2**18  # kernel entries per block of the closed-form recursion


def nngp_ntk(
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    depth: int,
    activation: str = "relu",
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the closed-form ``(nngp, ntk)`` matrices of shape ``(len(x1), len(x2))``, float64.

    Implements the recursions of the module docstring for ``depth`` hidden layers. For
    ``relu`` (arc-cosine kernel, Cho & Saul 2009), with ``cos(theta) = K^l(x,x') /
    sqrt(K^l(x,x) K^l(x',x'))``::

        E[phi(u) phi(v)]   = sqrt(K(x,x) K(x',x')) (sin theta + (pi - theta) cos theta) / (2 pi)
        E[phi'(u) phi'(v)] = (pi - theta) / (2 pi)

    and for ``erf`` (Williams 1997), with ``k_ab = K^l`` entries::

        E[phi(u) phi(v)]   = (2/pi) arcsin(2 k_12 / sqrt((1 + 2 k_11)(1 + 2 k_22)))
        E[phi'(u) phi'(v)] = (4/pi) / sqrt((1 + 2 k_11)(1 + 2 k_22) - 4 k_12^2)

    The relu angle is not taken as ``arccos`` of a rounded cosine, which near ``theta = 0``
    (equal or parallel inputs) loses half the digits, a loss that compounds with depth: the
    recursion carries ``1 - cos(theta)`` itself, taken at the input from the distance between
    normalised inputs and propagated as a sum of non-negative terms (see ``_relu_layer``),
    and ``theta = 2 arcsin(sqrt((1 - cos)/2))``. The result is exact to rounding near and on
    the diagonal at any depth. Zero-norm inputs are allowed.

    Args:
        x1, x2: inputs of shape ``(N1, d)`` and ``(N2, d)``; ``x2=None`` means ``x1``
            (then both matrices are exactly symmetric).
        depth: number of hidden layers (0: the linear model ``K^1``).
        activation: ``"relu"``, ``"erf"`` or ``"identity"``.
        sigma_w, sigma_b: weight and bias standard deviations (>= 0).
    """
    depth = _checks.nonnegative_int("depth", depth)
    _checks.choice("activation", activation, CLOSED_FORM_ACTIVATIONS)
    sw2 = _checks.real("sigma_w", sigma_w, nonnegative=True) ** 2
    sb2 = _checks.real("sigma_b", sigma_b, nonnegative=True) ** 2
    x1 = _checks.matrix("x1", x1, dtype=torch.float64)
    symmetric = x2 is None
    x2 = (
        x1
        if symmetric
        else _checks.matrix("x2", x2, cols=x1.shape[1], dtype=torch.float64, device=x1.device)
    )
    _checks.fits(
        "x1",
        f"{x1.shape[0]} points x {x2.shape[0]}",
        2 * x1.shape[0] * x2.shape[0] * 8,
        "the two kernel matrices",
        x1.device,
    )

    n1, n2 = x1.shape[0], x2.shape[0]
    k22 = sw2 * (x2 * x2).sum(1)[None, :] / x2.shape[1] + sb2
    nngp = torch.empty(n1, n2, dtype=torch.float64, device=x1.device)
    ntk = torch.empty_like(nngp)
    # Row blocks of about 2^18 entries keep every temporary in cache; for x2 = x1 only
    # the blocks on and above the diagonal are computed, and mirrored.
    rows = max(1, _BLOCK_ENTRIES // n2)
    for i in range(0, n1, rows):
        j = i if symmetric else 0
        block = _recursion(x1[i : i + rows], x2[j:], k22[:, j:], depth, activation, sw2, sb2)
        for out, b in zip((nngp, ntk), block, strict=False):
            if symmetric:
                r = b.shape[0]
                out[i:, i : i + r] = b.T
                b[:, :r] = (b[:, :r] + b[:, :r].T) / 2  # the diagonal square, exactly symmetric
            out[i : i + rows, j:] = b
    return nngp, ntk


def _recursion(x1, x2, k22, depth, activation, sw2, sb2):
    """The recursion of :func:`nngp_ntk` for a block of rows ``x1`` against all of ``x2``."""
    d = x1.shape[1]
    k11 = sw2 * (x1 * x1).sum(1, keepdim=True) / d + sb2  # (N1, 1)
    k12 = torch.addmm(torch.tensor(sb2, dtype=x1.dtype), x1, x2.T, alpha=sw2 / d)
    if activation == "relu":
        omc = _one_minus_cos(x1, x2, sw2, sb2)
    ntk = k12
    for _ in range(depth):
        if activation == "relu":
            k11, k22, k12, omc, ntk = _relu_layer(k11, k22, omc, ntk, sw2, sb2)
        elif activation == "erf":
            k11, k22, k12, ntk = _erf_layer(k11, k22, k12, ntk, sw2, sb2)
        else:
            k11, k22, k12 = sw2 * k11 + sb2, sw2 * k22 + sb2, sw2 * k12 + sb2
            ntk = k12 + sw2 * ntk
    return k12, ntk


def _one_minus_cos(x1, x2, sw2, sb2):
    """``1 - cos(theta)`` of the first layer, exact to rounding for (nearly) parallel inputs.

    ``K^1(x, x') = z.z'`` with ``z = (sigma_w x / sqrt(d), sigma_b)``, so ``1 - cos(theta) =
    |z/|z| - z'/|z'||^2 / 2``, a sum of squares (zero-norm ``z`` count as orthogonal).
    """

    def unit(x):
        z = torch.cat(
            [x * math.sqrt(sw2 / x.shape[1]), torch.full_like(x[:, :1], math.sqrt(sb2))], dim=1
        )
        norm = z.norm(dim=1, keepdim=True)
        return torch.where(norm > 0, z / torch.where(norm > 0, norm, 1.0), 0.0)

    dist = torch.cdist(unit(x1), unit(x2), compute_mode="donot_use_mm_for_euclid_dist")
    # Antipodal inputs can round to |z - z'|^2 / 2 = 2 + eps: clamp, or asin/sqrt give NaN.
    return dist.square_().mul_(0.5).clamp_(0.0, 2.0)


def _relu_layer(k11, k22, omc, ntk, sw2, sb2):
    """One relu layer of the recursion, carrying ``omc = 1 - cos(theta)`` (see :func:`nngp_ntk`).

    With ``p = sqrt(k11 k22)``, ``J = sin(theta) + (pi - theta) cos(theta)``, ``a = sw2/2``,
    ``b = sb2`` and the next diagonals ``A = a k11 + b``, ``B = a k22 + b``::

        k12'   = sw2 p J / (2 pi) + sb2
        ntk'   = k12' + sw2 (pi - theta) / (2 pi) ntk
        1-cos' = [a b (sqrt k11 - sqrt k22)^2 / (sqrt(AB) + a p + b)
                  + sw2 p (pi (1 - cos) - (sin - theta cos)) / (2 pi)] / sqrt(AB)

    The last line is ``(sqrt(AB) - k12') / sqrt(AB)`` rearranged into a sum of
    non-negative terms, so the angle stays exact to rounding at every depth, where
    ``arccos`` of a rounded cosine would lose half the digits near ``theta = 0``.
    """
    s1, s2 = k11.sqrt(), k22.sqrt()
    p = s1 * s2
    theta = (omc * 0.5).sqrt_().asin_().mul_(2)
    cos = 1 - omc
    sin = (2 - omc).mul_(omc).sqrt_()
    pi_minus = math.pi - theta
    j = torch.addcmul(sin, pi_minus, cos)
    k12_next = torch.addcmul(torch.tensor(sb2, dtype=p.dtype), p, j, value=sw2 / (2 * math.pi))
    ntk_next = torch.addcmul(k12_next, pi_minus, ntk, value=sw2 / (2 * math.pi))
    a, b = sw2 / 2, sb2
    k11_next, k22_next = a * k11 + b, a * k22 + b
    root = k11_next.sqrt() * k22_next.sqrt()  # sqrt(AB), outer product
    inner = omc.mul(math.pi).sub_(sin.sub_(theta.mul_(cos)))  # pi - J >= 0
    omc_next = torch.mul(p, inner).mul_(sw2 / (2 * math.pi))
    if b > 0:
        omc_next += (s1 - s2).square_().mul_(a * b).div_(root + (a * p + b))
    omc_next = omc_next.div_(root.clamp_(min=1e-300)).clamp_(0.0, 2.0)
    return k11_next, k22_next, k12_next, omc_next, ntk_next


def _erf_layer(k11, k22, k12, ntk, sw2, sb2):
    """One erf layer of the recursion (Williams 1997)::

        k12' = sw2 (2/pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22))) + sb2
        ntk' = k12' + sw2 (4/pi) ntk / sqrt((1 + 2 k11)(1 + 2 k22) - 4 k12^2)

    with the determinant written as ``1 + 2(k11 + k22) + 4 (k11 k22 - k12^2)``, visibly >= 1.
    """
    r1, r2 = (1 + 2 * k11).rsqrt(), (1 + 2 * k22).rsqrt()
    arg = ((2 * r1) * r2).mul_(k12).clamp_(-1.0, 1.0)
    k12_next = arg.asin_().mul_(sw2 * 2 / math.pi).add_(sb2)
    det = (k11 * k22).sub_(k12.square()).clamp_(min=0).mul_(4).add_(1 + 2 * k11).add_(2 * k22)
    ntk_next = torch.addcmul(k12_next, det.rsqrt_(), ntk, value=sw2 * 4 / math.pi)

    def diag(k):
        return sw2 * (2 / math.pi) * torch.asin(2 * k / (1 + 2 * k)) + sb2

    return diag(k11), diag(k22), k12_next, ntk_next
