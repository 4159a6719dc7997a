"""NumPyro estimators: the mean gradient matches the exact one within 5 standard errors.

Every estimator and baseline, on the catalogue's three models (several Bernoulli latents
with a nonlinear likelihood; a Categorical mixture in a plate of 12 subsampled to 4; a
Bernoulli + Normal guide), through ``gradient_variance``: ``NUM_SAMPLES`` estimates in one
jit-compiled ``lax.scan``, at arbitrary (perturbed) control-variate parameters. Running-average
baselines update between estimates as in training; each estimate is unbiased given the past,
so the deviations are martingale differences and the sample standard error of the mean is
valid. With ~40 coordinates per model a true-unbiased estimator exceeds 5 SE somewhere with
probability < 1e-4; a bias of 5 SE (about 3% of the gradient scale here) fails.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from numpyro_backend.backend.distributions import OneHotCategorical
from numpyro_backend.infer import REBAR_ELBO, gradient_variance
from tests.infer.models import EVENT_MODELS, UNBIASEDNESS_MODELS
from tests.infer.numpyro_helpers import (
    ESTIMATORS,
    NUM_SAMPLES,
    estimator_gradient_stats,
    fast_compile,  # noqa: F401  (fixture)
    z_scores,
)

pytestmark = pytest.mark.usefixtures("fast_compile")

Z_MAX = 5.0


# every estimator on the three models; REBAR/RELAX also on the models with several
# decisions per site element (coordinate-wise control variates, and joint ones)
CASES = [(entry, name) for entry in UNBIASEDNESS_MODELS for name in ESTIMATORS] + [
    (entry, name) for entry in EVENT_MODELS for name in ESTIMATORS if name.startswith("re")
]


@pytest.mark.parametrize(
    "entry, estimator", CASES, ids=[f"{entry.name}-{name}" for entry, name in CASES]
)
def test_mean_gradient_matches_exact(entry, estimator):
    stats = estimator_gradient_stats(entry.name, estimator)
    assert set(stats["params"]) == set(entry.exact_grads)
    z, where = z_scores(stats, entry.exact_grads)
    assert z < Z_MAX, f"{entry.name} / {estimator}: |z| = {z:.2f} at {where}"


def _dependent_categorical_model():
    c = numpyro.sample("c", dist.Bernoulli(0.3))
    y = numpyro.sample("y", dist.Categorical(logits=jnp.array([0.2, -0.1, 0.4])))
    numpyro.sample("x", dist.Normal(jnp.array([-1.0, 0.5, 2.0])[y] + c, 1.0), obs=1.2)


def _dependent_categorical_guide():
    a = numpyro.param("a", 0.4)
    table = numpyro.param("table", jnp.array([[0.1, 0.3, -0.2], [0.5, -0.4, 0.2]]))
    c = numpyro.sample("c", dist.Bernoulli(logits=a))
    numpyro.sample("y", dist.Categorical(logits=table[c.astype(int)]))


def _dependent_categorical_exact_loss(params):
    """−ELBO by explicit enumeration of the 2 × 3 joint configurations."""
    prior_y = dist.Categorical(logits=jnp.array([0.2, -0.1, 0.4]))
    log_q_c = jax.nn.log_sigmoid(jnp.array([-1.0, 1.0]) * params["a"])
    total = 0.0
    for c in (0, 1):
        log_q_y = jax.nn.log_softmax(params["table"][c])
        for y in range(3):
            log_p = (
                dist.Bernoulli(0.3).log_prob(c)
                + prior_y.log_prob(y)
                + dist.Normal(jnp.array([-1.0, 0.5, 2.0])[y] + c, 1.0).log_prob(1.2)
            )
            log_q = log_q_c[c] + log_q_y[y]
            total = total + jnp.exp(log_q) * (log_p - log_q)
    return -total


def test_rebar_with_a_categorical_site_depending_on_a_bernoulli_one():
    # the Bernoulli's control variate falls back to its own terms (particles.py): unbiased
    params = {"a": jnp.array(0.4), "table": jnp.array([[0.1, 0.3, -0.2], [0.5, -0.4, 0.2]])}
    exact = jax.grad(_dependent_categorical_exact_loss)(params)
    stats = gradient_variance(
        REBAR_ELBO(num_particles=1),
        _dependent_categorical_model,
        _dependent_categorical_guide,
        num_samples=NUM_SAMPLES,
        rng_key=jax.random.PRNGKey(3),
        params=params,
    )
    z, where = z_scores(stats, {k: np.asarray(v) for k, v in exact.items()})
    assert z < Z_MAX, f"|z| = {z:.2f} at {where}"


_LOCS = jnp.array([-1.0, 0.5, 2.0])
_DATA = jnp.array([1.2, -0.3])


def _one_hot_model():
    with numpyro.plate("data", 2):
        z = numpyro.sample("z", OneHotCategorical(logits=jnp.array([0.2, -0.1, 0.4])))
        numpyro.sample("x", dist.Normal(z @ _LOCS, 1.0), obs=_DATA)


def _one_hot_guide():
    logits = numpyro.param("logits", jnp.array([[0.1, 0.3, -0.2], [0.5, -0.4, 0.2]]))
    with numpyro.plate("data", 2):
        numpyro.sample("z", OneHotCategorical(logits=logits))


def _one_hot_exact_loss(params):
    """−ELBO by explicit enumeration (the two plate elements are independent)."""
    log_prior = jax.nn.log_softmax(jnp.array([0.2, -0.1, 0.4]))
    log_q = jax.nn.log_softmax(params["logits"], -1)
    log_lik = dist.Normal(_LOCS[None, :], 1.0).log_prob(_DATA[:, None])
    return -jnp.sum(jnp.exp(log_q) * (log_prior + log_lik - log_q))


@pytest.mark.parametrize("estimator", ["optimal-K1", "relax-K2"])
def test_one_hot_categorical_sites(estimator):
    # the pyroapi alias's OneHotCategorical (NumPyro has none); RELAX relaxes it in place
    params = {"logits": jnp.array([[0.1, 0.3, -0.2], [0.5, -0.4, 0.2]])}
    exact = jax.grad(_one_hot_exact_loss)(params)
    stats = gradient_variance(
        ESTIMATORS[estimator](),
        _one_hot_model,
        _one_hot_guide,
        num_samples=NUM_SAMPLES,
        rng_key=jax.random.PRNGKey(4),
        params=params,
    )
    z, where = z_scores(stats, {k: np.asarray(v) for k, v in exact.items()})
    assert z < Z_MAX, f"|z| = {z:.2f} at {where}"
