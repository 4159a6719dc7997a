"""NumPyro-side helpers for the estimator tests: backend arrays and gradient statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyroapi
import pytest

import numpyro_backend.infer as numpyro_infer
from numpyro_backend.backend.pyro import clear_param_store
from numpyro_backend.infer import gradient_variance
from tests.infer.estimator_cases import EstimatorCase
from tests.infer.models import EstimatorModel
from tests.stats import MeanEstimate

#: Independent gradient estimates per NumPyro statistic (one jit-compiled call).
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


def estimates_from_stats(stats: dict) -> dict[str, MeanEstimate]:
    """Mean and standard error of each parameter's gradient from ``gradient_variance``."""
    n = stats["num_samples"]
    return {
        name: MeanEstimate.from_moments(s["mean"], s["variance"], n)
        for name, s in stats["params"].items()
    }


def perturbed(state: dict, seed: int) -> dict:
    """Arbitrary control-variate parameters: unbiasedness must hold for every φ."""
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    leaves = [
        x + 0.5 * jax.random.normal(k, jnp.shape(x))
        for x, k in zip(leaves, list(keys), strict=True)
    ]
    return jax.tree.unflatten(treedef, leaves)


def case_estimates(
    case: EstimatorCase, entry: EstimatorModel, num_samples: int, seed: int = 0
) -> dict[str, MeanEstimate]:
    """Mean gradient of −ELBO (with SE) for one row of the estimator case table.

    ``num_samples`` single-draw estimates in one jit-compiled call, at perturbed estimator
    parameters (as on the Pyro side); running baselines update between estimates.
    """
    elbo = case.make(numpyro_infer, entry.max_plate_nesting)
    state = perturbed(estimator_state(elbo, entry), seed=seed + 1)
    return estimates_from_stats(
        gradient_stats(elbo, entry, num_samples, seed=seed + 2, extra_params=state)
    )
