"""``pyroapi.pyro`` under the ``"numpyro_backend"`` backend: NumPyro primitives, Pyro semantics.

NumPyro's compat layer warns (``UnsupportedAPIWarning``) on every param-store access and
cannot initialize a parameter outside SVI from the store. Here ``param`` follows Pyro: a
value in the param store wins over ``init_value``; inside SVI (a ``substitute`` handler) the
optimizer's value wins; the store holds constrained values and is filled by
:class:`numpyro_backend.backend.infer.SVI` after every step.
"""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints
from numpyro.primitives import (  # noqa: F401  (re-exported primitives)
    deterministic,
    factor,
    module,
    plate,
    prng_key,
    sample,
    subsample,
)
from numpyro.primitives import param as _param
from numpyro.util import set_rng_seed  # noqa: F401


class ParamStore(dict):
    """Name -> constrained value, with the parts of Pyro's ``ParamStoreDict`` models use."""

    def get_param(self, name):
        return self[name]

    def get_all_param_names(self):
        return list(self.keys())

    def get_state(self) -> dict:
        return {"params": dict(self)}

    def set_state(self, state: dict) -> None:
        self.clear()
        self.update(state["params"])

    def save(self, filename) -> None:
        """Pickle the store (values as numpy arrays; pytrees such as RELAX's network kept)."""
        with open(filename, "wb") as f:
            pickle.dump(jax.tree.map(np.asarray, dict(self)), f)

    def load(self, filename) -> None:
        with open(filename, "rb") as f:
            self.update(jax.tree.map(jnp.asarray, pickle.load(f)))


_PARAM_STORE = ParamStore()


def get_param_store() -> ParamStore:
    return _PARAM_STORE


def clear_param_store() -> None:
    _PARAM_STORE.clear()


def param(name, init_value=None, constraint=constraints.real, event_dim=None):
    """A parameter site: the SVI value inside SVI, else the stored value, else ``init_value``."""
    if name in _PARAM_STORE:
        init_value = _PARAM_STORE[name]
    elif init_value is not None and constraint is constraints.simplex:
        # Pyro maps an initial value onto the simplex (softmax of its log); do the same.
        init_value = init_value / init_value.sum(-1, keepdims=True)
    kwargs = {"constraint": constraint}
    if event_dim is not None:
        kwargs["event_dim"] = event_dim
    value = _param(name, init_value, **kwargs)
    if value is None:
        raise KeyError(f"param '{name}' has no value: give init_value or run SVI first")
    return value
