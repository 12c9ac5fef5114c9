"""The neural tangent kernel of a network: empirically, to compare with its closed form.

The closed-form NNGP and NTK at infinite width (``nngp_ntk``, NTK parametrization) are in
:mod:`ntk_lib.infinite_width` and importable from here too.

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
from .infinite_width import CLOSED_FORM_ACTIVATIONS, nngp_ntk  # noqa: F401 (importable here)
from .models import MLP

EMPIRICAL_METHODS: tuple[str, ...] = ("auto", "structured", "jacobian", "ntvp")
"""Methods accepted by :func:`empirical_ntk`."""

OUTPUT_KINDS: tuple[str, ...] = ("full", "mean")
"""What :func:`empirical_ntk` returns for a model with several outputs per input."""

_FEATURE_MEMORY = 2 * 2**30  # bytes of per-point Jacobians / signals / tangents held at once


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
    :func:`~ntk_lib.infinite_width.nngp_ntk`'s ``ntk`` as the width grows (Jacot et al. 2018),
    times ``I_K`` for
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
    :func:`~ntk_lib.infinite_width.nngp_ntk`'s ``nngp`` as the width grows (Lee et al. 2018). It is
    also the
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
