"""The neural tangent kernel: in closed form at infinite width, and empirically for a network.

Closed forms (:func:`nngp_ntk`) follow the NTK-parametrization convention of the course
(ARCHITECTURE.md; Jacot et al. 2018, Lee et al. 2019, Arora et al. 2019)::

    K^1(x, x')     = sigma_w^2 x.x' / d + sigma_b^2,          Theta^1 = K^1,
    K^{l+1}(x, x') = sigma_w^2 E[phi(u) phi(v)] + sigma_b^2,
    Theta^{l+1}    = K^{l+1} + sigma_w^2 E[phi'(u) phi'(v)] Theta^l,

with ``(u, v) ~ N(0, [[K^l(x,x), K^l(x,x')], [K^l(x,x'), K^l(x',x')]])``; the network's
NNGP and NTK are ``K^{depth+1}`` and ``Theta^{depth+1}``.

The empirical NTK ``Theta(x, x') = sum_p df(x)/dtheta_p df(x')/dtheta_p`` of a finite
network (:func:`empirical_ntk`) has three implementations: Jacobian contraction and
NTK-vector products with :mod:`torch.func` (the two methods of PyTorch's NTK tutorial,
Novak et al. 2022), and a structured one for :class:`~ntk_lib.models.MLP` that never forms a
Jacobian. For ``K`` outputs per input it is the ``(N1, N2, K, K)`` kernel of all outputs, or
the mean of its ``K`` diagonal blocks; at infinite width it is ``Theta I_K``.

Taught in lessons 01 and 02.
"""

from __future__ import annotations

import math

import torch
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from . import _checks
from .models import MLP

CLOSED_FORM_ACTIVATIONS: tuple[str, ...] = ("relu", "erf", "identity")
"""Activations whose NNGP/NTK :func:`nngp_ntk` knows in closed form."""

EMPIRICAL_METHODS: tuple[str, ...] = ("auto", "structured", "jacobian", "ntvp")
"""Methods accepted by :func:`empirical_ntk`."""

OUTPUT_KINDS: tuple[str, ...] = ("full", "mean")
"""What :func:`empirical_ntk` returns for a model with several outputs per input."""

_FEATURE_MEMORY = 2 * 2**30  # bytes of per-point Jacobians / signals / tangents held at once
_BLOCK_ENTRIES = 2**18  # kernel entries per block of the closed-form recursion


# ---------------------------------------------------------------------------------------
# Closed form
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Empirical NTK
# ---------------------------------------------------------------------------------------


def empirical_ntk(
    model: torch.nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    method: str = "auto",
    outputs: str = "full",
) -> torch.Tensor:
    """Return the empirical NTK ``J(x1) J(x2)^T`` of a model, for one or many outputs per input.

    ``J(x)`` is the Jacobian of the outputs with respect to the trainable parameters, so
    for :class:`~ntk_lib.models.MLP` in the NTK parametrization this converges to
    :func:`nngp_ntk`'s ``ntk`` as the width grows (Jacot et al. 2018), times ``I_K`` for
    ``K`` outputs (the outputs become independent).

    Shapes. A model with one scalar output per input (output ``(N,)`` or ``(N, 1)``) gives
    ``(N1, N2)`` whatever ``outputs`` is. A model with ``K > 1`` outputs per input (output
    ``(N, K)``, or ``(N, *shape)`` read as ``K = prod(shape)`` outputs in row-major order)
    gives, for ``outputs="full"``, the kernel of shape ``(N1, N2, K, K)`` with entry
    ``[a, b, k, l] = df_k(x_a)/dtheta . df_l(x_b)/dtheta``, and for ``outputs="mean"`` the
    ``(N1, N2)`` mean of its ``K`` diagonal blocks, ``(1/K) sum_k Theta[:, :, k, k]``
    (neural-tangents' ``trace_axes=(-1,)``, which also averages). ``"mean"`` is ``K``
    times cheaper in memory and, for every method but ``"ntvp"``, in time.

    Methods (same result to rounding; ``"auto"`` picks the cheapest that applies):

    - ``"structured"`` (``MLP`` only): the Jacobian of ``f_k`` with respect to layer
      ``l``'s weight is ``m_l delta_l^k(x) a_{l-1}(x)^T`` (backward signal of output ``k``
      times layer input), so ``Theta[a, b, k, l'] = sum_l (m_l^2 A_l A_l^T + m_{b,l}^2)[a, b]
      (delta_l^k(x_a) . delta_l^{l'}(x_b))``: the ``K x K`` blocks differ only through the
      backward signals, which start from the readout's rows. Cost ``O(N1 N2 K^2 width)`` per
      layer for ``"full"``, ``O(N1 N2 K width)`` for ``"mean"`` (the signals of all outputs
      are contracted at once), plus ``K`` backward passes; no Jacobian is formed.
    - ``"jacobian"``: per-example Jacobians with ``vmap(jacrev)``, contracted
      (PyTorch's NTK tutorial), in blocks of points whose Jacobians fit in 2 GiB.
      Cost ``O(N1 N2 K^2 P)`` for ``"full"``, ``O(N1 N2 K P)`` for ``"mean"``.
    - ``"ntvp"``: NTK-vector products (Novak et al. 2022): for each of the ``N2 K``
      columns, a VJP at one point of ``x2`` then a JVP on ``x1``. Cost ``O(N1 N2 K P)``
      for both outputs; memory ``O(P)`` per column.

    ``"auto"`` takes ``"structured"`` for an ``MLP`` and otherwise the cheaper of the other
    two by their operation counts. The result (``N1 N2 K^2`` entries for ``"full"``) must fit
    in a quarter of the device's memory; a larger request is refused, naming the sizes,
    before anything is computed.

    Args:
        model: any ``torch.nn.Module`` mapping a batch ``(N, ...)`` to outputs ``(N, ...)``,
            one row per input, that does not mix inputs (batch norm or dropout in training
            mode are refused: call ``model.eval()``).
        x1, x2: batches of inputs (first dimension is the batch), finite; ``x2=None``
            means ``x1``. They are moved to the model's device and dtype.
        method: one of ``"auto"``, ``"structured"``, ``"jacobian"``, ``"ntvp"``.
        outputs: ``"full"`` or ``"mean"`` (see above).
    """
    _checks.choice("method", method, EMPIRICAL_METHODS)
    _checks.choice("outputs", outputs, OUTPUT_KINDS)
    ref = _checks.trainable("model", model)[0]
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    _checks.deterministic("model", model)
    if any(not torch.isfinite(p).all() for p in params.values()):
        raise ValueError("model has NaN or infinite parameters: its NTK is undefined")
    x1 = _checks.points("x1", x1, like=ref)
    x2 = None if x2 is None else _checks.points("x2", x2, like=ref)
    if x2 is not None and x2.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"x2 must have the same per-point shape as x1 {tuple(x1.shape[1:])}; got"
            f" {tuple(x2.shape)}"
        )
    k = _outputs_per_input(model, x1)
    n1, n2 = x1.shape[0], (x1 if x2 is None else x2).shape[0]
    mean = outputs == "mean" or k == 1
    _check_fits(n1, n2, 1 if mean else k, ref, x2 is None)
    _checks.batch_independent("model", model, x1)
    if method == "auto":
        method = _auto_method(model, params, n1, n2, k, mean, x2 is None)
    if method == "structured":
        if not isinstance(model, MLP):
            raise ValueError(
                f"method='structured' needs an ntk_lib.models.MLP; got {type(model).__name__}"
            )
        ntk = _structured_ntk(model, x1, x2, k, mean)
    else:
        buffers = {name: v.detach() for name, v in model.named_buffers()}
        frozen = {name: v.detach() for name, v in model.named_parameters() if not v.requires_grad}

        def f(p: dict, x: torch.Tensor) -> torch.Tensor:  # all outputs of the batch, flat
            return functional_call(model, (p, frozen, buffers), (x,)).reshape(-1)

        if method == "jacobian":
            ntk = _jacobian_ntk(f, params, x1, x2, k, mean)
        else:
            ntk = _ntvp_ntk(f, params, x1, x2, k, mean)
    return ntk


def empirical_nngp(model: MLP, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """Return the empirical NNGP of an :class:`~ntk_lib.models.MLP`: its last-layer feature kernel.

    ``K(x, x') = m_w^2 phi(h^L(x)) . phi(h^L(x')) + m_b^2`` with the readout's multipliers
    (``sigma_w^2 / n`` and ``sigma_b^2`` in the NTK parametrization): the covariance of the
    output over the readout's random weights given the features, which tends to
    :func:`nngp_ntk`'s ``nngp`` as the width grows (Lee et al. 2018). It is also the
    readout layer's share of the empirical NTK, and how much it moves in training measures
    feature learning.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an ntk_lib.models.MLP; got {type(model).__name__}")
    readout = model.layers[-1]
    with torch.no_grad():
        a1 = model.forward_cache(_checks.points("x1", x1, like=readout.weight))[0][-1]
        a2 = (
            a1
            if x2 is None
            else model.forward_cache(_checks.points("x2", x2, like=readout.weight))[0][-1]
        )
        gram = readout.scale.weight_mult**2 * (a1 @ a2.T)
        return gram + readout.scale.bias_mult**2 if readout.bias is not None else gram


def _outputs_per_input(model: torch.nn.Module, x: torch.Tensor) -> int:
    """The number ``K`` of outputs per input, from one forward pass on the whole of ``x``."""
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ValueError(f"model cannot be applied to x1 of shape {tuple(x.shape)}: {err}") from err
    if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model must return one row of outputs per input: x1 of shape {tuple(x.shape)} gave"
            f" {shape}"
        )
    return math.prod(out.shape[1:])


def _check_fits(n1: int, n2: int, k: int, ref: torch.Tensor, symmetric: bool) -> None:
    """Refuse a kernel of ``n1 n2 k^2`` entries if four arrays of its size do not fit in free
    memory.

    Computing it holds up to four arrays of its size (the result, a block product, the
    transposed half and the symmetrised copy), so larger requests would end in the allocator
    failing or the operating system killing the process.
    """
    entries = n1 * n2 * k * k
    what = f"N1={n1} points of x1" + (" (x2=None)" if symmetric else f", N2={n2} points of x2")
    hint = " or ask for outputs='mean' (K^2 times smaller)" if k > 1 else ""
    _checks.fits(
        "x1",
        what,
        4 * entries * ref.element_size(),
        f"a kernel of N1*N2*K^2 = {entries:.3g} entries with K={k} outputs (four arrays of "
        f"its size while it is computed)",
        ref.device,
        hint,
    )


def _auto_method(
    model: torch.nn.Module, params: dict, n1: int, n2: int, k: int, mean: bool, symmetric: bool
) -> str:
    """``"structured"`` for an MLP, else the cheaper of ``"jacobian"`` and ``"ntvp"`` in
    operations."""
    if isinstance(model, MLP):
        return "structured"
    n_params = sum(p.numel() for p in params.values())
    itemsize = next(iter(params.values())).element_size()
    if k * n_params * itemsize > _FEATURE_MEMORY // 2:  # not even one point's Jacobian fits
        return "ntvp"
    # jacobian: K backward passes per point (recomputed per block pair when blocked), then
    # a contraction over P of K (mean) or K^2 (full) products per pair of points.
    chunk = _jacobian_chunk(k, n_params, itemsize)
    blocks = -(-(n1 if symmetric else n2) // chunk)
    build = 3 * k * n_params * (n1 + (n2 if not symmetric else 0) + (blocks - 1) * n2)
    contract = 2 * n1 * n2 * n_params * (k if mean else k * k) / (2 if symmetric else 1)
    # ntvp: per column (n2 K of them) one VJP at one point and one JVP on the n1 points.
    ntvp = n2 * k * (3 * n_params + 4 * n1 * n_params)
    return "jacobian" if build + contract <= ntvp else "ntvp"


def _tiled(
    features, block, x1: torch.Tensor, x2: torch.Tensor | None, chunk: int, k: int, mean: bool
):
    """Assemble the kernel from blocks of at most ``chunk`` points: ``block(features(a),
    features(b))``.

    ``features`` maps a batch of points to what the method keeps per point (Jacobians,
    backward signals); ``block`` contracts two of them into a ``(na, nb)`` or
    ``(na, nb, K, K)`` block. For ``x2=None`` only blocks on and above the diagonal are
    computed; the others are their transposes (``Theta[b, a, l, k] = Theta[a, b, k, l]``).
    """
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]
    shape = (n1, n2) if mean else (n1, n2, k, k)

    def mirror(b: torch.Tensor) -> torch.Tensor:
        return b.transpose(0, 1) if mean else b.permute(1, 0, 3, 2)

    if (n1 if symmetric else n1 + n2) <= chunk:  # everything at once
        f1 = features(x1)
        if symmetric:
            b = block(f1, f1)
            return (b + mirror(b)) / 2  # exactly symmetric
        return block(f1, features(x2))
    out = torch.empty(shape, dtype=x1.dtype, device=x1.device)
    cols = [(s, min(s + chunk, n2)) for s in range(0, n2, chunk)]
    cached = features(x2) if not symmetric and len(cols) == 1 else None
    for i0 in range(0, n1, chunk):
        i1 = min(i0 + chunk, n1)
        fa = features(x1[i0:i1])
        for j0, j1 in cols:
            if symmetric and j0 < i0:
                continue
            if symmetric and j0 == i0:
                b = block(fa, fa)
                out[i0:i1, i0:i1] = (b + mirror(b)) / 2
                continue
            b = block(fa, cached if cached is not None else features(x2[j0:j1]))
            out[i0:i1, j0:j1] = b
            if symmetric:
                out[j0:j1, i0:i1] = mirror(b)
    return out


def _structured_ntk(
    model: MLP, x1: torch.Tensor, x2: torch.Tensor | None, k: int, mean: bool
) -> torch.Tensor:
    per_point = k * sum(model.widths) + sum(layer.fan_in for layer in model.layers)
    chunk = max(1, _FEATURE_MEMORY // (2 * per_point * x1.element_size()))
    with torch.no_grad():
        return _tiled(
            lambda x: _signals(model, x, k),
            lambda fa, fb: _structured_block(model, fa, fb, k, mean),
            x1,
            x2,
            chunk,
            k,
            mean,
        )


def _structured_block(model: MLP, fa, fb, k: int, mean: bool) -> torch.Tensor:
    """``sum_l (m_l^2 A_l A_l^T + m_{b,l}^2) * (Delta_l Delta_l^T)`` over the trainable layers."""
    (a1, d1), (a2, d2) = fa, fb
    n1, n2 = a1[0].shape[0], a2[0].shape[0]
    out = a1[0].new_zeros((n1, n2) if mean else (n1, k, n2, k))  # full: permuted at the end
    for layer, x_1, x_2, g_1, g_2 in zip(model.layers, a1, a2, d1, d2, strict=False):
        inner = a1[0].new_zeros(n1, n2)
        if layer.weight.requires_grad:
            inner.addmm_(x_1, x_2.T, alpha=layer.scale.weight_mult**2)
        if layer.bias is not None and layer.bias.requires_grad:
            inner += layer.scale.bias_mult**2
        if g_1 is None:  # the readout: delta^k = e_k, so only the diagonal blocks
            if mean:
                out += inner
            else:
                out.diagonal(dim1=1, dim2=3).add_(inner[..., None])
        elif mean:  # (1/K) sum_k delta^k(a) . delta^k(b): all outputs in one product
            gram = g_1.reshape(n1, -1) @ g_2.reshape(n2, -1).T
            out.addcmul_(gram, inner, value=1.0 / k)
        else:
            gram = (g_1.reshape(n1 * k, -1) @ g_2.reshape(n2 * k, -1).T).view(n1, k, n2, k)
            out.addcmul_(gram, inner[:, None, :, None])
    return out if mean else out.permute(0, 2, 1, 3)


def _signals(
    model: MLP, x: torch.Tensor, k: int
) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Layer inputs ``a_{l-1}`` (N, fan_in) and backward signals ``delta_l^k = df_k/dh^l`` (N, K,
    width).

    The readout's entry is ``None`` (its signal is ``e_k``). Below it the signal of output
    ``k`` starts from the readout's row ``m_w w_k`` and is propagated by
    ``delta_l = phi'(h^l) * (m_w delta_{l+1} W^{l+1})``: ``K`` backward passes in one GEMM.
    """
    inputs, pre = model.forward_cache(x)
    deltas: list[torch.Tensor | None] = [None]
    delta = None
    for l in range(model.depth, 0, -1):  # hidden layers, top down  # noqa: E741 (the paper's layer index)
        upper = model.layers[l]
        if delta is None:  # below the readout: m_w w_k for every input
            delta = (upper.scale.weight_mult * upper.weight).reshape(1, k, -1)
        else:
            delta = torch.matmul(delta, upper.weight).mul_(upper.scale.weight_mult)
        delta = model.phi_prime(pre[l - 1]).unsqueeze(1) * delta
        deltas.insert(0, delta)
    return inputs, deltas


def _jacobian_chunk(k: int, n_params: int, itemsize: int) -> int:
    """Points per block such that two blocks of Jacobians (``K P`` entries a point) fit in
    memory."""
    return max(1, _FEATURE_MEMORY // (2 * k * n_params * itemsize))


def _jacobian_ntk(
    f, params: dict, x1: torch.Tensor, x2: torch.Tensor | None, k: int, mean: bool
) -> torch.Tensor:
    def f_single(p: dict, x: torch.Tensor) -> torch.Tensor:  # the K outputs of one input
        return f(p, x.unsqueeze(0))

    jac = vmap(jacrev(f_single), (None, 0))

    def features(x: torch.Tensor) -> list[torch.Tensor]:  # per parameter: (n, K, p)
        j = jac(params, x)
        return [j[name].reshape(x.shape[0], k, -1) for name in params]

    def block(ja: list[torch.Tensor], jb: list[torch.Tensor]) -> torch.Tensor:
        na, nb = ja[0].shape[0], jb[0].shape[0]
        if mean:  # sum_k J_k(a) . J_k(b) is one product over (K, p)
            return (
                sum(a.reshape(na, -1) @ b.reshape(nb, -1).T for a, b in zip(ja, jb, strict=False))
                / k
            )
        g = sum(
            a.reshape(na * k, -1) @ b.reshape(nb * k, -1).T for a, b in zip(ja, jb, strict=False)
        )
        return g.view(na, k, nb, k).permute(0, 2, 1, 3)

    n_params = sum(p.numel() for p in params.values())
    chunk = _jacobian_chunk(k, n_params, x1.element_size())
    return _tiled(features, block, x1, x2, chunk, k, mean)


def _ntvp_ntk(
    f, params: dict, x1: torch.Tensor, x2: torch.Tensor | None, k: int, mean: bool
) -> torch.Tensor:
    """Column ``(b, l)`` of the kernel is ``J(x1) (J_l(x_b)^T)``: a VJP at one point, a JVP on
    ``x1``."""
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]

    def column(xb: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        _, pullback = vjp(lambda p: f(p, xb.unsqueeze(0)), params)
        (tangent,) = pullback(e)
        col = jvp(lambda p: f(p, x1), (params,), (tangent,))[1].reshape(n1, k)
        return col @ e if mean else col  # mean: only output l of column (b, l)

    n_params = sum(p.numel() for p in params.values())
    per_column = (8 * n_params + 4 * n1 * k) * x1.element_size()
    chunk = max(1, min(n2 * k, _FEATURE_MEMORY // per_column))
    points = x2.repeat_interleave(k, dim=0)  # column (b, l) at row b k + l
    basis = torch.eye(k, dtype=x1.dtype, device=x1.device).repeat(n2, 1)
    cols = vmap(column, chunk_size=chunk)(points, basis)  # (n2 K, n1) or (n2 K, n1, K)
    if mean:
        out = cols.view(n2, k, n1).sum(1).T / k
        return (out + out.T) / 2 if symmetric else out  # exactly symmetric
    out = cols.view(n2, k, n1, k).permute(2, 0, 3, 1)
    return (out + out.permute(1, 0, 3, 2)) / 2 if symmetric else out
