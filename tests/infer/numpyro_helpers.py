"""NumPyro-side helpers for the estimator tests: backend arrays and gradient statistics."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pyroapi
import pytest

from numpyro_backend.backend.pyro import clear_param_store
from numpyro_backend.infer import REBAR_ELBO, RELAX_ELBO, ScoreFunction_ELBO, gradient_variance
from tests.infer.models import MODELS, EstimatorModel

#: Every estimator and baseline, by test id.
ESTIMATORS = {
    "optimal-K1": lambda: ScoreFunction_ELBO(num_particles=1),
    "optimal-K2": lambda: ScoreFunction_ELBO(num_particles=2),
    "loo-K2": lambda: ScoreFunction_ELBO(num_particles=2, baseline="loo"),
    "decaying_avg-K1": lambda: ScoreFunction_ELBO(num_particles=1, baseline="decaying_avg"),
    "none-K1": lambda: ScoreFunction_ELBO(num_particles=1, baseline="none"),
    "rebar-K1": lambda: REBAR_ELBO(num_particles=1),
    "relax-K2": lambda: RELAX_ELBO(num_particles=2, max_plate_nesting=1),
    "rebar-joint-K1": lambda: REBAR_ELBO(num_particles=1, coordinatewise=False),
}
NUM_SAMPLES = 2000


@pytest.fixture(scope="module")
def fast_compile():
    """XLA with most optimizations off for one test module.

    These tests are compile-bound (2000 draws of a tiny model run in well under a second,
    compiling takes 2-15 s), and XLA's optimization passes roughly double compile time.
    """
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def jax_inputs(entry: EstimatorModel) -> tuple[dict, dict]:
    """(data, init) of an entry as float64 JAX arrays (Python ints and None left as they are)."""
    data = {
        k: jnp.asarray(v, dtype=jnp.float64) if isinstance(v, np.ndarray) else v
        for k, v in entry.make_data().items()
    }
    init = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in entry.init_params.items()}
    return data, init


def estimator_state(elbo, entry: EstimatorModel, seed: int = 0) -> dict:
    """The estimator's initial learned parameters for an entry (empty for score functions)."""
    data, init = jax_inputs(entry)
    with pyroapi.pyro_backend("numpyro_backend"):
        learned, _ = elbo.init_state(
            jax.random.PRNGKey(seed), init, entry.model, entry.guide, data, init
        )
    return learned


def gradient_stats(
    elbo, entry: EstimatorModel, num_samples: int, seed: int = 0, extra_params=None
) -> dict:
    """``gradient_variance`` of −ELBO at the entry's initial parameters (jit-compiled scan).

    ``extra_params``: estimator state to use instead of its initial values.
    """
    clear_param_store()  # pyroapi's ``param`` prefers stored values; start from ``init``
    data, init = jax_inputs(entry)
    params = {**init, **(extra_params or {})}
    with pyroapi.pyro_backend("numpyro_backend"):
        return gradient_variance(
            elbo,
            entry.model,
            entry.guide,
            data,
            init,
            num_samples=num_samples,
            rng_key=jax.random.PRNGKey(seed),
            params=params,
        )


def z_scores(stats: dict, exact: dict[str, np.ndarray]) -> tuple[float, str]:
    """Largest |mean − exact| / standard error over all coordinates, and where it occurs."""
    worst, where = 0.0, ""
    n = stats["num_samples"]
    for name, s in stats["params"].items():
        se = np.sqrt(s["variance"] / n)
        z = np.abs(s["mean"] - exact[name]) / se
        if z.max() > worst:
            idx = np.unravel_index(np.argmax(z), z.shape) if z.ndim else ()
            worst, where = float(z.max()), f"{name}{list(idx)}"
    return worst, where


def perturbed(state: dict, seed: int) -> dict:
    """Arbitrary control-variate parameters: unbiasedness must hold for every φ."""
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [
        x + 0.5 * jax.random.normal(k, jnp.shape(x))
        for x, k in zip(leaves, list(keys), strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


@functools.cache
def estimator_gradient_stats(entry_name: str, estimator: str) -> dict:
    """``NUM_SAMPLES`` NumPyro gradient estimates of a catalogue entry, cached per session
    (the unbiasedness and cross-backend tests share them; compiling dominates their cost)."""
    entry = MODELS[entry_name]
    elbo = ESTIMATORS[estimator]()
    state = perturbed(estimator_state(elbo, entry), seed=1)
    return gradient_stats(elbo, entry, NUM_SAMPLES, seed=2, extra_params=state)
