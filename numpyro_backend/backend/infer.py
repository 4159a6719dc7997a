"""``pyroapi.infer`` under the ``"numpyro_backend"`` backend: stock NumPyro inference with
Pyro's signatures, plus this package's estimators.

- ``SVI(model, guide, optim, loss).step(*args)`` as in Pyro: jit-compiled NumPyro updates, the
  param store (``pyroapi.pyro.get_param_store()``) refreshed with constrained values after
  every step and read back when a new SVI starts (so training resumes like Pyro's). Python
  ints and strings among the arguments (sizes, names) are compiled in as constants.
- ELBOs accept Pyro's constructor arguments (``max_plate_nesting``, ``ignore_jit_warnings``,
  ...); ``Jit*`` names are aliases (NumPyro always compiles). ``TraceMeanField_ELBO`` is
  included (NumPyro's compat layer has none). ``Trace_ELBO`` and ``TraceGraph_ELBO`` have
  Pyro's semantics for non-reparameterized guide sites (score-function terms, unbiased under
  subsampling), unlike NumPyro's classes of the same names.
- ``ScoreFunction_ELBO``, ``REBAR_ELBO``, ``RELAX_ELBO`` take the same arguments as on the
  Pyro backend.
"""

from __future__ import annotations

import jax
import numpy as np
from jax import random
from numpyro.compat.infer import HMC, MCMC, NUTS
from numpyro.infer import *  # stock names
from numpyro.infer import elbo as _elbo

from numpyro_backend.backend.pyro import get_param_store
from numpyro_backend.infer import *  # ours
from numpyro_backend.infer import relax as _relax
from numpyro_backend.infer import score_function as _score_function
from numpyro_backend.infer import svi as _svi
from numpyro_backend.infer.particles import PREFIX

# Pyro ELBO arguments that have no meaning here (NumPyro always vmaps and compiles).
_PYRO_ONLY = (
    "max_iarange_nesting",
    "strict_enumeration_warning",
    "ignore_jit_warnings",
    "jit_options",
    "retain_graph",
    "tail_adaptive_beta",
)


def _drop_pyro_only(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in _PYRO_ONLY}


class Trace_ELBO(_score_function.ScoreFunction_ELBO):
    """Pyro's ``Trace_ELBO``: pathwise gradients, and plain score-function terms (no
    baseline) at non-reparameterized guide sites. NumPyro's own Trace_ELBO gives those sites
    no gradient at all, so a discrete guide would silently not learn."""

    def __init__(
        self, num_particles=1, max_plate_nesting=float("inf"), vectorize_particles=True, **kwargs
    ):
        _drop_pyro_only(kwargs)
        super().__init__(num_particles, max_plate_nesting, vectorize_particles, baseline="none")


class TraceMeanField_ELBO(_elbo.TraceMeanField_ELBO):
    def __init__(self, num_particles=1, max_plate_nesting=float("inf"), **kwargs):
        kwargs = _drop_pyro_only(kwargs)
        super().__init__(num_particles=num_particles, **kwargs)


class TraceGraph_ELBO(_score_function.ScoreFunction_ELBO):
    """Pyro's ``TraceGraph_ELBO`` (no baseline): plate-aware score-function terms.

    NumPyro's own TraceGraph_ELBO is biased under ``plate`` subsampling (its score term
    multiplies two N/M-scaled factors: 3× the exact gradient for 12 points subsampled to 4);
    this one is our ``ScoreFunction_ELBO(baseline="none")``, unbiased there. Pyro's
    ``infer={"baseline": ...}`` options are not supported (use ``ScoreFunction_ELBO``).
    """

    def __init__(
        self, num_particles=1, max_plate_nesting=float("inf"), vectorize_particles=True, **kwargs
    ):
        _drop_pyro_only(kwargs)
        super().__init__(num_particles, max_plate_nesting, vectorize_particles, baseline="none")


class TraceEnum_ELBO(_elbo.TraceEnum_ELBO):
    def __init__(self, num_particles=1, max_plate_nesting=float("inf"), **kwargs):
        kwargs = _drop_pyro_only(kwargs)
        kwargs.pop("vectorize_particles", None)
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)


JitTrace_ELBO = Trace_ELBO
JitTraceMeanField_ELBO = TraceMeanField_ELBO
JitTraceGraph_ELBO = TraceGraph_ELBO
JitTraceEnum_ELBO = TraceEnum_ELBO


class ScoreFunction_ELBO(_score_function.ScoreFunction_ELBO):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **_drop_pyro_only(kwargs))


class REBAR_ELBO(_relax.REBAR_ELBO):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **_drop_pyro_only(kwargs))


class RELAX_ELBO(_relax.RELAX_ELBO):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **_drop_pyro_only(kwargs))


def _is_static(leaf) -> bool:
    return isinstance(leaf, (bool, int, str, type(None))) and not isinstance(leaf, np.ndarray)


class SVI(_svi.SVI):
    """Pyro-style SVI: ``step(*args, **kwargs)`` returns the loss as a float."""

    def __init__(self, model, guide, optim, loss, loss_and_grads=None, num_samples=0, **kwargs):
        super().__init__(model, guide, optim, loss)
        self.svi_state = None
        self._compiled = {}
        self._constrained_params = jax.jit(super().get_params)

    def _call(self, method, *args, **kwargs):
        # Python scalars (sizes, names) become compile-time constants; arrays stay traced.
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs), is_leaf=lambda x: x is None)
        static = tuple((i, x) for i, x in enumerate(leaves) if _is_static(x))
        dynamic = [x for x in leaves if not _is_static(x)]
        key = (method, treedef, static)
        if key not in self._compiled:

            def run(svi_state, dynamic):
                it = iter(dynamic)
                full = dict(static)
                values = [full[i] if i in full else next(it) for i in range(len(leaves))]
                call_args, call_kwargs = jax.tree_util.tree_unflatten(treedef, values)
                return getattr(super(SVI, self), method)(svi_state, *call_args, **call_kwargs)

            self._compiled[key] = jax.jit(run)
        return self._compiled[key](self.svi_state, dynamic)

    def _ensure_state(self, args, kwargs, rng_key=None):
        if self.svi_state is not None:
            return
        if rng_key is None:
            rng_key = _prng_key()
        store = get_param_store()
        # estimator state saved in the store resumes too (model/guide params are read
        # from the store by pyroapi's ``param``)
        init_params = {k: v for k, v in store.items() if k.startswith(PREFIX)} or None
        self.svi_state = self.init(rng_key, *args, init_params=init_params, **kwargs)

    def step(self, *args, rng_key=None, **kwargs) -> float:
        self._ensure_state(args, kwargs, rng_key)
        self.svi_state, loss = self._call("update", *args, **kwargs)
        get_param_store().update(self._constrained_params(self.svi_state))
        return float(loss)

    def evaluate_loss(self, *args, **kwargs) -> float:
        self._ensure_state(args, kwargs)
        return float(self._call("evaluate", *args, **kwargs))

    def get_params(self, svi_state=None) -> dict:
        return super().get_params(self.svi_state if svi_state is None else svi_state)


def _prng_key():
    from numpyro.primitives import prng_key

    key = prng_key()  # from pyroapi's seed handler when inside ``pyro_backend(...)``
    return random.PRNGKey(0) if key is None else key


__all__ = [
    "HMC",
    "MCMC",
    "NUTS",
    "SVI",
    "Trace_ELBO",
    "TraceMeanField_ELBO",
    "TraceGraph_ELBO",
    "TraceEnum_ELBO",
    "JitTrace_ELBO",
    "JitTraceMeanField_ELBO",
    "JitTraceGraph_ELBO",
    "JitTraceEnum_ELBO",
    "ScoreFunction_ELBO",
    "REBAR_ELBO",
    "RELAX_ELBO",
    "gradient_variance",
]
