"""``pyroapi.infer`` under the ``"numpyro_backend"`` backend: stock NumPyro inference with
Pyro's signatures, plus this package's estimators.

- ``SVI(model, guide, optim, loss).step(*args)`` as in Pyro: jit-compiled NumPyro updates, the
  param store (``pyroapi.pyro.get_param_store()``) refreshed with constrained values after
  every step and read back when a new SVI starts (so training resumes like Pyro's). Arrays
  and floats among the arguments are traced; ints, strings and other objects (sizes, names)
  are compiled in as constants.
- ELBOs accept Pyro's constructor arguments (``max_plate_nesting``, ``ignore_jit_warnings``,
  ...) and reject unknown ones with ``TypeError``; ``Jit*`` names are aliases (NumPyro
  always compiles). ``TraceMeanField_ELBO`` is included (NumPyro's compat layer has none).
  ``Trace_ELBO`` and ``TraceGraph_ELBO`` have Pyro's semantics for non-reparameterized guide
  sites (score-function terms, unbiased under subsampling), unlike NumPyro's classes of the
  same names.
- ``ScoreFunction_ELBO``, ``REBAR_ELBO``, ``RELAX_ELBO``, ``DisARM_ELBO``, ``IWAE_ELBO`` are
  this package's classes, with the same arguments as on the Pyro backend.
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
from numpyro_backend.infer import score_function as _score_function
from numpyro_backend.infer import svi as _svi
from numpyro_backend.infer.particles import PREFIX


def _pyro_elbo_options(
    num_particles=1,
    max_plate_nesting=float("inf"),
    max_iarange_nesting=None,
    vectorize_particles=True,
    strict_enumeration_warning=True,
    ignore_jit_warnings=False,
    jit_options=None,
    retain_graph=None,
    tail_adaptive_beta=-1.0,
) -> dict:
    """Pyro's ``ELBO`` constructor arguments, in Pyro's order (a misspelled keyword raises
    ``TypeError`` here); returns the ones NumPyro's ELBOs use. The others have no effect:
    NumPyro always vmaps and compiles and keeps no graph. ``vectorize_particles`` defaults
    to True (NumPyro's default) rather than Pyro's False."""
    return {
        "num_particles": num_particles,
        "max_plate_nesting": max_plate_nesting,
        "vectorize_particles": vectorize_particles,
    }


class _PyroScoreFunction_ELBO(_score_function.ScoreFunction_ELBO):
    """Pyro's ELBO semantics at non-reparameterized guide sites: score-function terms with
    plate-aware credit and no baseline (our ``ScoreFunction_ELBO(baseline="none")``).
    Takes Pyro's ELBO constructor arguments (see :func:`_pyro_elbo_options`)."""

    def __init__(self, *args, **kwargs):
        options = _pyro_elbo_options(*args, **kwargs)
        super().__init__(
            options["num_particles"],
            max_plate_nesting=options["max_plate_nesting"],
            vectorize_particles=options["vectorize_particles"],
            baseline="none",
        )


class Trace_ELBO(_PyroScoreFunction_ELBO):
    """Pyro's ``Trace_ELBO``: pathwise gradients, and score-function terms (no baseline) at
    non-reparameterized guide sites. NumPyro's own Trace_ELBO gives those sites no gradient
    at all, so a discrete guide would silently not learn."""


class TraceGraph_ELBO(_PyroScoreFunction_ELBO):
    """Pyro's ``TraceGraph_ELBO`` (no baseline): plate-aware score-function terms.

    NumPyro's own TraceGraph_ELBO is biased under ``plate`` subsampling (its score term
    multiplies two N/M-scaled factors: 3× the exact gradient for 12 points subsampled to 4);
    this one is unbiased there. Pyro's ``infer={"baseline": ...}`` options are not supported
    (use ``ScoreFunction_ELBO``).
    """


class TraceMeanField_ELBO(_elbo.TraceMeanField_ELBO):
    """NumPyro's ``TraceMeanField_ELBO`` with Pyro's constructor arguments."""

    def __init__(self, *args, **kwargs):
        options = _pyro_elbo_options(*args, **kwargs)
        super().__init__(
            num_particles=options["num_particles"],
            vectorize_particles=options["vectorize_particles"],
        )


class TraceEnum_ELBO(_elbo.TraceEnum_ELBO):
    """NumPyro's ``TraceEnum_ELBO`` with Pyro's constructor arguments."""

    def __init__(self, *args, **kwargs):
        options = _pyro_elbo_options(*args, **kwargs)
        super().__init__(
            num_particles=options["num_particles"],
            max_plate_nesting=options["max_plate_nesting"],
        )


JitTrace_ELBO = Trace_ELBO
JitTraceMeanField_ELBO = TraceMeanField_ELBO
JitTraceGraph_ELBO = TraceGraph_ELBO
JitTraceEnum_ELBO = TraceEnum_ELBO

# ScoreFunction_ELBO, REBAR_ELBO, RELAX_ELBO, DisARM_ELBO, IWAE_ELBO: this package's classes
# (imported above); they take Pyro's retain_graph / strict_enumeration_warning /
# ignore_jit_warnings.


class SVI(_svi.SVI):
    """Pyro-style SVI: ``step(*args, **kwargs)`` returns the loss as a float."""

    def __init__(self, model, guide, optim, loss, loss_and_grads=None, num_samples=0, **kwargs):
        super().__init__(model, guide, optim, loss)
        self.svi_state = None
        self._compiled = {}
        self._constrained_params = jax.jit(super().get_params)

    def _call(self, method, *args, **kwargs):
        # constants (sizes, names) compiled in, arrays and floats traced: one rule with
        # gradient_variance (numpyro_backend.infer.svi.is_static_argument)
        key, traced, rebuild = _svi.split_arguments(args, kwargs)
        key = (method, key)
        if key not in self._compiled:

            def run(svi_state, traced):
                call_args, call_kwargs = rebuild(traced)
                return getattr(super(SVI, self), method)(svi_state, *call_args, **call_kwargs)

            self._compiled[key] = jax.jit(run)
        return self._compiled[key](self.svi_state, traced)

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
    "DisARM_ELBO",
    "IWAE_ELBO",
    "gradient_variance",
]
