"""ntk_lib: the science of the Wide Networks course book.

One module per concept (see ARCHITECTURE.md at the top of the repository):
:mod:`~ntk_lib.device`, :mod:`~ntk_lib.data`,
:mod:`~ntk_lib.activations`, :mod:`~ntk_lib.parametrizations`, :mod:`~ntk_lib.models`,
:mod:`~ntk_lib.kernels`, :mod:`~ntk_lib.dynamics`, :mod:`~ntk_lib.lazy`,
:mod:`~ntk_lib.coordcheck`, :mod:`~ntk_lib.transfer`, :mod:`~ntk_lib.convnet`,
:mod:`~ntk_lib.iterative`, :mod:`~ntk_lib.linearize`, :mod:`~ntk_lib.catapult`,
:mod:`~ntk_lib.spectral`, :mod:`~ntk_lib.tensor_programs`, :mod:`~ntk_lib.plotting`,
:mod:`~ntk_lib.grading`.
"""

from . import (
    activations,
    catapult,
    convnet,
    coordcheck,
    data,
    deep_linear,
    device,
    dynamics,
    families,
    grading,
    infinite_width,
    iterative,
    kernel_flow,
    kernels,
    lazy,
    linearize,
    measure,
    models,
    nonlinear_limit,
    parametrizations,
    plotting,
    spectral,
    tensor_programs,
    training,
    transfer,
    two_scalar,
)
from .device import default_device, seed_everything
from .kernels import empirical_nngp, empirical_ntk, nngp_ntk
from .models import MLP

__all__ = [
    "MLP",
    "activations",
    "catapult",
    "convnet",
    "coordcheck",
    "data",
    "deep_linear",
    "default_device",
    "device",
    "dynamics",
    "families",
    "grading",
    "infinite_width",
    "iterative",
    "empirical_nngp",
    "empirical_ntk",
    "kernel_flow",
    "kernels",
    "lazy",
    "linearize",
    "measure",
    "models",
    "nngp_ntk",
    "nonlinear_limit",
    "parametrizations",
    "plotting",
    "seed_everything",
    "spectral",
    "tensor_programs",
    "training",
    "transfer",
    "two_scalar",
]
__version__ = "0.1.0"
