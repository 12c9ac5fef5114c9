"""abc-parametrizations of an MLP, and which infinite-width limit each one has.

An *abc-parametrization* (Yang & Hu 2021) of an MLP with ``L`` hidden layers of width
``n`` is a list of numbers ``a_1..a_{L+1}``, ``b_1..b_{L+1}`` and ``c``:

- the effective weights are ``W^l = n^{-a_l} w^l`` (a *multiplier* in the forward pass),
- the trained weights are initialised ``w^l_{ij} ~ N(0, n^{-2 b_l})``,
- SGD uses the learning rate ``eta n^{-c}``.

With

.. math::

   r = \\min(a_{L+1} + b_{L+1},\\; 2a_{L+1} + c) + c - 1 + \\min_{l=1}^{L}\\,[2a_l + \\mathbb{1}(l
   = 1)]

(Definition 3.2 of the paper; ``Delta x^L = Theta(n^{-r})`` after a step), the paper's
Theorems 3.3 and 3.6-3.8 say: the parametrization is **stable** iff
``a_1 + b_1 = 0``, ``a_l + b_l = 1/2`` for ``2 <= l <= L``, ``a_{L+1} + b_{L+1} >= 1/2``,
``r >= 0``, ``2a_{L+1} + c >= 1`` and ``a_{L+1} + b_{L+1} + r >= 1``; a stable one is
**nontrivial** iff ``a_{L+1} + b_{L+1} + r = 1`` or ``2a_{L+1} + c = 1``; a stable
nontrivial one **learns features** iff ``r = 0`` and is in the **kernel regime** iff
``r > 0`` -- never both (the dynamical dichotomy). :func:`classify` evaluates all of it.

The shift ``a_l <- a_l + theta, b_l <- b_l - theta, c <- c - 2 theta`` (:func:`shift`)
changes neither the function at initialisation nor its SGD trajectory.

Presets (:func:`preset`; the table of the Yang & Hu talk): ``"ntk"``, ``"sp"`` (PyTorch
default with a width-independent learning rate), ``"sp_lr"`` (SP with a ``1/n`` learning
rate), ``"mf"`` (mean field, one hidden layer) and ``"mup"`` (the Maximal Update
Parametrization).

Taught in lessons 07 and 08; :class:`ntk_lib.models.MLP` accepts any :class:`ABC`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import _checks

PRESETS: tuple[str, ...] = ("ntk", "sp", "sp_lr", "mf", "mup")
"""Names accepted by :func:`preset`."""

NAMES: tuple[str, ...] = ("ntk", "standard", "sp", "sp_lr", "mf", "mup")
"""Names accepted wherever a parametrization is given by name (``"standard"`` is ``"sp"``)."""

_TOL = 1e-9  # exponents are compared up to rounding of user-given floats such as 1/3


@dataclass(frozen=True)
class ABC:
    """An abc-parametrization: ``a`` and ``b`` per layer (first hidden ... readout) and ``c``.

    ``constants_in`` says where the width-independent constants of a layer (``sigma_w``,
    and ``1/sqrt(d)`` for the input layer) go when the parametrization is built into an
    :class:`ntk_lib.models.MLP`: into the init (``"init"``, PyTorch's fan-in-aware
    initialisation) or into the multiplier (``"multiplier"``, the NTK convention). It does
    not change the width scaling, only an O(1) per-layer learning-rate factor.
    """

    a: tuple[float, ...]
    b: tuple[float, ...]
    c: float
    constants_in: str = field(default="init")

    def __post_init__(self) -> None:
        a, b = _exponents("a", self.a), _exponents("b", self.b)
        if len(a) < 1:
            raise ValueError(
                "a must have L+1 >= 1 entries (hidden layers 1..L, then the readout); got none"
            )
        if len(b) != len(a):
            raise ValueError(f"b must have as many entries as a (L+1 = {len(a)}); got {len(b)}")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", _checks.real("c", self.c))
        _checks.choice("constants_in", self.constants_in, ("init", "multiplier"))

    @property
    def depth(self) -> int:
        """Return the number of hidden layers ``L``."""
        return len(self.a) - 1


@dataclass(frozen=True)
class Classification:
    """What :func:`classify` says of an :class:`ABC`.

    ``r`` is Definition 3.2's exponent, ``r_layers[l-1] = r_l`` (Proposition 5.3: ``W^l``
    is updated maximally iff ``r_l = 0``), ``regime`` is ``"unstable"``, ``"trivial"``,
    ``"feature learning"`` or ``"kernel"``, and ``reason`` says which conditions decided it.
    """

    r: float
    r_layers: tuple[float, ...]
    stable: bool
    nontrivial: bool
    feature_learning: bool
    kernel_regime: bool
    regime: str
    reason: str


def _exponents(name: str, values: Sequence[float]) -> tuple[float, ...]:
    """Return ``values`` (a list, tuple, array or tensor of numbers) as a tuple of finite floats."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a sequence of L+1 real exponents; got {values!r}")
    items = values.tolist() if hasattr(values, "tolist") else list(values)
    return tuple(_checks.real(f"{name}[{i}]", v) for i, v in enumerate(items))


def preset(name: str, depth: int) -> ABC:
    """Return the named abc-parametrization for ``depth`` hidden layers (Yang & Hu 2021, Table 1).

    - ``"ntk"``: ``a = (0, 1/2, ..., 1/2)``, ``b = 0``, ``c = 0``;
    - ``"sp"``: ``a = 0``, ``b = (0, 1/2, ..., 1/2)``, ``c = 0``;
    - ``"sp_lr"``: as ``"sp"`` with ``c = 1`` (the ``1/n`` learning rate);
    - ``"mf"`` (``depth = 1`` only): ``a = (0, 1)``, ``b = (0, 0)``, ``c = -1``;
    - ``"mup"``: ``a = (-1/2, 0, ..., 0, 1/2)``, ``b = 1/2``, ``c = 0``.
    """
    _checks.choice("name", name, PRESETS)
    depth = _checks.nonnegative_int("depth", depth)
    if name == "ntk":
        return ABC((0.0, *[0.5] * depth), (0.0,) * (depth + 1), 0.0, constants_in="multiplier")
    if name in ("sp", "sp_lr"):
        return ABC((0.0,) * (depth + 1), (0.0, *[0.5] * depth), 1.0 if name == "sp_lr" else 0.0)
    if name == "mf":
        if depth != 1:
            raise ValueError(
                f"the mean-field preset 'mf' is defined for depth=1 only; got depth={depth}"
            )
        return ABC((0.0, 1.0), (0.0, 0.0), -1.0)
    if depth < 1:
        raise ValueError(f"the 'mup' preset needs at least one hidden layer; got depth={depth}")
    return ABC((-0.5, *[0.0] * (depth - 1), 0.5), (0.5,) * (depth + 1), 0.0)


def shift(abc: ABC, theta: float) -> ABC:
    """Return ``a_l + theta, b_l - theta, c - 2 theta``: the same network and SGD trajectory.

    ``W^l = n^{-a_l} w^l`` is unchanged at init, and its SGD update
    ``n^{-a_l} (eta n^{-c}) n^{-a_l} dL/dW^l`` depends on ``a_l`` and ``c`` only through
    ``2a_l + c`` (Yang & Hu 2021, Section 3).
    """
    theta = _checks.real("theta", theta)
    return ABC(
        tuple(x + theta for x in abc.a),
        tuple(x - theta for x in abc.b),
        abc.c - 2 * theta,
        abc.constants_in,
    )


def classify(abc: ABC) -> Classification:
    """Return the stability / triviality / regime of ``abc`` under SGD (Yang & Hu 2021, Thms
    3.3-3.8).

    See the module docstring for ``r`` and the conditions. ``reason`` names every failed
    stability condition, or the condition that makes it trivial, or the value of ``r``.
    """
    if not isinstance(abc, ABC):
        raise TypeError(f"abc must be an ntk_lib.parametrizations.ABC; got {type(abc).__name__}")
    a, b, c, L = abc.a, abc.b, abc.c, abc.depth
    if L < 1:
        raise ValueError(
            "classify needs at least one hidden layer (len(abc.a) >= 2); got a linear model"
        )
    out = a[L] + b[L]
    head = min(out, 2 * a[L] + c) + c - 1
    r_layers = tuple(head + 2 * a[l] + (1 if l == 0 else 0) for l in range(L))  # noqa: E741
    r = min(r_layers)

    failed = []
    if abs(a[0] + b[0]) > _TOL:
        failed.append(
            f"a_1 + b_1 = {_fmt(a[0] + b[0])} != 0 (first-layer preactivations not Theta(1) at"
            f" init)"
        )
    for l in range(1, L):  # noqa: E741 (the paper's layer index)
        if abs(a[l] + b[l] - 0.5) > _TOL:
            failed.append(
                f"a_{l + 1} + b_{l + 1} = {_fmt(a[l] + b[l])} != 1/2 (hidden preactivations not"
                f" Theta(1) at init)"
            )
    if out < 0.5 - _TOL:
        failed.append(f"a_{L + 1} + b_{L + 1} = {_fmt(out)} < 1/2 (output blows up at init)")
    if r < -_TOL:
        failed.append(f"r = {_fmt(r)} < 0 (features blow up during training)")
    if 2 * a[L] + c < 1 - _TOL:
        failed.append(
            f"2a_{L + 1} + c = {_fmt(2 * a[L] + c)} < 1 (readout update makes the output blow up)"
        )
    if out + r < 1 - _TOL:
        failed.append(
            f"a_{L + 1} + b_{L + 1} + r = {_fmt(out + r)} < 1 (feature updates make the output"
            f" blow up)"
        )
    stable = not failed
    nontrivial = abs(out + r - 1) <= _TOL or abs(2 * a[L] + c - 1) <= _TOL
    if not stable:
        regime, reason = "unstable", "unstable: " + "; ".join(failed)
    elif not nontrivial:
        regime = "trivial"
        reason = (
            f"stable but trivial: a_{L + 1} + b_{L + 1} + r = {_fmt(out + r)} > 1 and "
            f"2a_{L + 1} + c = {_fmt(2 * a[L] + c)} > 1 (the function does not move in the limit)"
        )
    elif abs(r) <= _TOL:
        regime, reason = (
            "feature learning",
            "stable, nontrivial and r = 0: the features x^L move by Theta(1)",
        )
    else:
        regime = "kernel"
        reason = (
            f"stable, nontrivial and r = {_fmt(r)} > 0: features move by n^-{_fmt(r)}, "
            "kernel gradient descent"
        )
    return Classification(
        r=_clean(r),
        r_layers=tuple(_clean(x) for x in r_layers),
        stable=stable,
        nontrivial=stable and nontrivial,
        feature_learning=regime == "feature learning",
        kernel_regime=regime == "kernel",
        regime=regime,
        reason=reason,
    )


def _clean(x: float) -> float:
    """Round away float dust (1/3 + 2/3 - 1) so that exponents print as the fractions they are."""
    return round(x, 12) + 0.0


def _fmt(x: float) -> str:
    x = _clean(x)
    for q in (1, 2, 3, 4, 6):
        if abs(x * q - round(x * q)) <= _TOL:
            num = round(x * q)
            return str(num) if q == 1 else f"{num}/{q}"
    return f"{x:.4g}"


@dataclass(frozen=True)
class LayerScale:
    """Multipliers, init scales and learning-rate scale of one dense layer.

    The layer computes ``weight_mult * W a + bias_mult * b`` with ``W ~ N(0, weight_std^2)``,
    ``b ~ N(0, bias_std^2)``, trained at ``lr * lr_scale``.
    """

    weight_mult: float
    weight_std: float
    bias_mult: float
    bias_std: float
    lr_scale: float = 1.0


def layer_scales(
    parametrization: str | ABC,
    fan_ins: Sequence[int],
    fan_outs: Sequence[int],
    sigma_w: float,
    sigma_b: float,
    *,
    base_width: int = 1,
) -> list[LayerScale]:
    """Return the :class:`LayerScale` of each layer (first hidden ... readout).

    Layer ``l`` with width ratio ``n_l = width / base_width`` gets
    ``weight_mult = n_l^{-a_l}``, ``weight_std = n_l^{-b_l}``, ``lr_scale = n_l^{-c}``, times
    the width-independent constant ``kappa_l = sigma_w / sqrt(fan_in at base width)`` (``d``
    for the input layer, ``base_width`` for the others) placed in the multiplier or in the
    init as ``abc.constants_in`` says. ``n_l`` is the fan-out of the input layer and the
    fan-in of the others: the ``n`` of the width-only table when all widths are equal.
    With ``base_width = 1`` the exponents act on the width itself, as in the table; with
    a base width ``B`` every parametrization whose constants are in the init reduces to SP
    at width ``B``, training included (the ``mup`` package's base shapes; muP is SP bit for
    bit there). ``"ntk"`` (constants in the multiplier) is ``sigma_w / sqrt(fan_in) W``,
    ``W ~ N(0, 1)``, at every width and for every ``B``: the same function as SP, trained
    with per-layer rates ``sigma_w^2 / fan_in`` times SP's. ``"sp"``/``"standard"`` is
    ``W ~ N(0, sigma_w^2 / fan_in)`` at every width.

    Biases (the theorems are about bias-free networks): a hidden bias is the weight of a
    constant input coordinate and takes ``(a_1, b_1)``; the readout bias takes
    ``(-c/2, c/2)``, a width-independent scalar trained at rate ``eta`` in effect; both
    with the constant ``sigma_b``.
    """
    if isinstance(parametrization, ABC):
        abc = parametrization
    else:
        name = _checks.choice("parametrization", parametrization, NAMES)
        abc = preset("sp" if name == "standard" else name, len(fan_ins) - 1)
    if len(fan_ins) != len(abc.a):
        raise ValueError(
            f"the parametrization has L+1 = {len(abc.a)} layers but the network has {len(fan_ins)}"
            f" (depth {len(fan_ins) - 1}); build it for depth {len(fan_ins) - 1}"
        )
    base_width = _checks.positive_int("base_width", base_width)
    in_mult = abc.constants_in == "multiplier"
    last = len(fan_ins) - 1
    scales = []
    for l, (fan_in, fan_out) in enumerate(zip(fan_ins, fan_outs, strict=False)):  # noqa: E741
        n = (fan_out if l == 0 else fan_in) / base_width
        base_fan = fan_in if l == 0 else base_width
        bias_a, bias_b = (-abc.c / 2, abc.c / 2) if l == last else (abc.a[0], abc.b[0])
        w_mult = _factor(sigma_w if in_mult else 1.0, base_fan if in_mult else 1, n, abc.a[l])
        w_std = _factor(1.0 if in_mult else sigma_w, 1 if in_mult else base_fan, n, abc.b[l])
        b_mult = _factor(sigma_b if in_mult else 1.0, 1, n, bias_a)
        b_std = _factor(1.0 if in_mult else sigma_b, 1, n, bias_b)
        scales.append(LayerScale(w_mult, w_std, b_mult, b_std, _factor(1.0, 1, n, abc.c)))
    return scales


def _factor(const: float, base_fan: float, n: float, exponent: float) -> float:
    """Return ``const / sqrt(base_fan) * n^{-exponent}`` as ``const / sqrt(base_fan n^{2
    exponent})``.

    One square root, so the NTK and standard layers come out bit for bit as
    ``sigma_w / sqrt(fan_in)``.
    """
    return const / math.sqrt(base_fan * n ** (2 * exponent))
