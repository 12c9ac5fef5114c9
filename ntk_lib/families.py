"""Families of networks indexed by width: what every width sweep of the course takes.

A *family* is a mapping ``{width: factory}`` where ``factory(generator)`` builds the
network of that width with its random initialisation drawn from the ``torch.Generator``
(the ``mup`` package's ``get_coord_data`` takes the same ``{width: constructor}`` mapping;
Yang et al. 2022). Every sweep over widths — :func:`~ntk_lib.coordcheck.coord_check`,
:func:`~ntk_lib.coordcheck.max_stable_lr`, :func:`~ntk_lib.transfer.lr_sweep`,
:func:`~ntk_lib.transfer.pretrain`, :func:`~ntk_lib.lazy.sweep` — takes a family first,
then the data ``x, y``, then keyword options; seeds are turned into generators by
:func:`~ntk_lib.device.generator` (the same network on every device), and the data is
moved to the device and dtype of the networks, which the factories decide
(``device=None`` means :func:`~ntk_lib.device.default_device` everywhere).

:func:`mlp_family` builds the family of :class:`~ntk_lib.models.MLP` (any
parametrization); any other model (a ``ConvNet``, a user's own) is a dictionary away.
See ARCHITECTURE.md for where this sits in the package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from . import _checks
from .device import generator
from .models import MLP
from .parametrizations import ABC

Factory = Callable[[torch.Generator | None], torch.nn.Module]
"""Builds one network, drawing its initialisation from the generator it is given."""

Family = Mapping[int, Factory]
"""``{width: factory}``: one network per width."""

SEEDS: tuple[int, ...] = (0, 1, 2)
"""The seeds of every width sweep unless told otherwise."""


def mlp_family(
    d_in: int,
    widths: Sequence[int],
    depth: int,
    *,
    d_out: int = 1,
    activation: str = "relu",
    parametrization: str | ABC = "ntk",
    base_width: int = 1,
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    bias: bool = False,
    zero_readout: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> dict[int, Factory]:
    """Return ``{width: factory}`` of :class:`~ntk_lib.models.MLP` networks, one per width.

    The arguments are :class:`~ntk_lib.models.MLP`'s (same names, same defaults, except
    ``bias=False``: the theory of lessons 07-08 is about bias-free networks), with
    ``widths`` in place of ``width``. ``zero_readout`` starts the readout weights (and
    bias) at zero, as muP practice does (Yang et al. 2022); the random draws are the same
    as without it.
    """
    widths = check_widths("widths", widths, minimum=1)
    # Validate every option now (one small network), not at the first width of a sweep.
    MLP(d_in, 1, depth, d_out=d_out, activation=activation, parametrization=parametrization,
        base_width=base_width, sigma_w=sigma_w, sigma_b=sigma_b, bias=bias, device=device,
        dtype=dtype)

    def factory(width: int) -> Factory:
        def build(gen: torch.Generator | None) -> MLP:
            model = MLP(d_in, width, depth, d_out=d_out, activation=activation,
                        parametrization=parametrization, base_width=base_width, sigma_w=sigma_w,
                        sigma_b=sigma_b, bias=bias, seed=gen, device=device, dtype=dtype)
            if zero_readout:
                with torch.no_grad():
                    for p in model.layers[-1].parameters():
                        p.zero_()
            return model

        return build

    return {w: factory(w) for w in widths}


def check_widths(name: str, widths: Sequence[int], *, minimum: int) -> tuple[int, ...]:
    """Return ``widths`` as a tuple of distinct positive ints, at least ``minimum`` of them."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, (Sequence, range)):
        raise TypeError(f"{name} must be a sequence of widths; got {type(widths).__name__}")
    out = tuple(_checks.positive_int(f"{name}[{i}]", w) for i, w in enumerate(widths))
    if len(out) < minimum or len(set(out)) != len(out):
        what = "one width" if minimum == 1 else f"{minimum} distinct widths"
        raise ValueError(f"{name} must hold at least {what}; got {list(out)}")
    return out


def check_family(name: str, family: Family, *, minimum: int = 1) -> tuple[int, ...]:
    """Return the widths of ``family`` (a ``{width: factory}`` mapping), checked.

    Raises:
        TypeError: if ``family`` is not a mapping of widths to callables (e.g. the old
            ``(parametrization, widths)`` pair: build it with :func:`mlp_family`).
        ValueError: if it holds fewer than ``minimum`` widths.
    """
    if not isinstance(family, Mapping):
        raise TypeError(
            f"{name} must be a {{width: factory}} mapping (e.g. ntk_lib.families.mlp_family(...)); "
            f"got {type(family).__name__} {family!r:.60}"
        )
    widths = check_widths(f"{name} widths", list(family), minimum=minimum)
    for w in widths:
        if not callable(family[w]):
            raise TypeError(
                f"{name}[{w}] must be a callable factory(generator); got {family[w]!r:.60}"
            )
    return widths


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """Return ``seeds`` as a non-empty tuple of non-negative ints."""
    seeds = tuple(_checks.nonnegative_int(f"seeds[{i}]", s) for i, s in enumerate(seeds))
    if not seeds:
        raise ValueError("seeds must hold at least one seed; got none")
    return seeds


def build(family: Family, width: int, seed: int) -> torch.nn.Module:
    """Return the network of ``family`` at ``width`` drawn with ``generator(seed)``.

    Raises:
        TypeError: if the factory does not return a ``torch.nn.Module`` with a trainable
            parameter.
    """
    model = family[width](generator(seed))
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"the factory of width {width} must return a torch.nn.Module; "
            f"got {type(model).__name__}"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"the network of width {width} has no trainable parameter")
    return model


def networks(family: Family, seeds: Sequence[int]) -> Iterator[tuple[int, int, torch.nn.Module]]:
    """Yield ``(i, width, model)`` for every width of ``family`` (in order) and every seed."""
    for i, width in enumerate(family):
        for seed in seeds:
            yield i, width, build(family, width, seed)


def like_model(model: torch.nn.Module, **tensors: torch.Tensor) -> list[torch.Tensor]:
    """Return the ``tensors`` moved to the device and dtype of ``model``'s first parameter."""
    ref = next(model.parameters())
    return [t.to(device=ref.device, dtype=ref.dtype) for t in tensors.values()]
