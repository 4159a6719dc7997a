"""Backend adapters: one interface over the Pyro and NumPyro packages for generic tests.

A test written against :class:`Backend` runs unchanged on both packages; values cross the
boundary as float64 numpy arrays so that the same reference values check both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

import numpyro_backend
import pyro_reparam_ext


class Backend:
    name: str
    package: object

    def make(self, dist_name: str, params: dict, **kwargs):
        cls = getattr(self.package, dist_name)
        return cls(**{k: self.asarray(v) for k, v in params.items()}, **kwargs)

    def asarray(self, value):
        raise NotImplementedError("abstract: implemented by each backend adapter")

    def sample(self, dist, num_samples: int, seed: int = 0) -> np.ndarray:
        raise NotImplementedError("abstract: implemented by each backend adapter")

    def log_prob(self, dist, value: np.ndarray) -> np.ndarray:
        raise NotImplementedError("abstract: implemented by each backend adapter")


class PyroBackend(Backend):
    name = "pyro"
    package = pyro_reparam_ext

    def asarray(self, value):
        if isinstance(value, (int, bool)) or value is None:
            return value  # structural arguments (e.g. a dimension) stay Python ints
        return torch.as_tensor(np.asarray(value, dtype=np.float64))

    def sample(self, dist, num_samples, seed=0):
        torch.manual_seed(seed)
        return dist.sample((num_samples,)).detach().numpy()

    def log_prob(self, dist, value):
        return dist.log_prob(torch.as_tensor(value)).detach().numpy()


class NumPyroBackend(Backend):
    name = "numpyro"
    package = numpyro_backend

    def asarray(self, value):
        if isinstance(value, (int, bool)) or value is None:
            return value
        return jnp.asarray(np.asarray(value, dtype=np.float64))

    def sample(self, dist, num_samples, seed=0):
        return np.asarray(dist.sample(jax.random.PRNGKey(seed), (num_samples,)))

    def log_prob(self, dist, value):
        return np.asarray(dist.log_prob(jnp.asarray(value)))


BACKENDS = [PyroBackend(), NumPyroBackend()]
