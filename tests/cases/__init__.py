"""The shared case table: every distribution test runs over ``ALL_CASES`` on both backends.

Each family contributes a list of :class:`DistCase` from its own module (``concrete``,
``implicit``, ``sphere``). Behaviour differences are flags on the case, never checks of the
class name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class DistCase:
    #: readable test id, e.g. "Concrete-K3-tau0.5"
    id: str
    #: public name, looked up in both ``pyro_reparam_ext`` and ``numpyro_backend``
    dist_name: str
    #: constructor arguments; arrays/floats become backend tensors, Python ints stay ints
    params: dict
    #: independent numpy/scipy implementation of the density: ``f(value, **params)``
    reference_log_prob: Callable[..., np.ndarray]
    #: run the goodness-of-fit test on samples
    gof: bool = True
    #: dimension of the manifold the samples live on (None: the flattened event size)
    gof_dim: int | None = None
    #: ``f(samples) -> array``: added to log_prob before the gof test when log_prob is a
    #: density w.r.t. another measure than the volume of the points the test sees
    #: (e.g. ExpConcrete's symmetric measure vs Lebesgue on the first K-1 coordinates)
    gof_log_density_correction: Callable[[np.ndarray], np.ndarray] | None = None
    #: map samples to the points the gof test sees (e.g. drop a redundant coordinate)
    gof_points: Callable[[np.ndarray], np.ndarray] | None = None
    #: samples for the gof test (nearest-neighbour tests are O(N^2) in memory above 1-D)
    gof_num_samples: int = 5000
    #: (override params, argument name) pairs that must raise ValueError naming the argument
    invalid_params: list = field(default_factory=list)
    #: the distribution has rsample
    has_rsample: bool = True
    #: infer_shapes takes the structural Python-int parameters as they are (e.g. the
    #: ambient dimension of HypersphericalUniform), besides the shapes of the others
    infer_shapes_takes_ints: bool = False


# One import per family module; each module defines ``CASES: list[DistCase]``.
from tests.cases import concrete, implicit, sphere  # noqa: E402  (more families join here)

ALL_CASES: list[DistCase] = [*concrete.CASES, *implicit.CASES, *sphere.CASES]
