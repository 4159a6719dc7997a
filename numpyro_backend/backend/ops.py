"""``pyroapi.ops`` under the ``"numpyro_backend"`` backend: ``jax.numpy`` with torch-style
constructors (``ones(2, 3)``, ``zeros(2, 3)``, ``tensor``, ``randn``)."""

from __future__ import annotations

import builtins

import jax.numpy as jnp
import numpy as np
from jax.numpy import *  # noqa: F403

tensor = jnp.array
randn = np.random.randn


def _sizes(sizes) -> tuple:
    if builtins.len(sizes) == 0:
        raise ValueError("ones/zeros need a size, e.g. ones(2, 3) or ones((2, 3))")
    if builtins.len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if not builtins.all(isinstance(s, (int, np.integer)) for s in sizes):
        raise ValueError(f"sizes must be integers, got {sizes!r}")
    return tuple(sizes)


def ones(*sizes, **kwargs):
    return jnp.ones(_sizes(sizes), **kwargs)


def zeros(*sizes, **kwargs):
    # numpyro.compat.ops.zeros returns ones (numpyro 0.22); this one returns zeros.
    return jnp.zeros(_sizes(sizes), **kwargs)
