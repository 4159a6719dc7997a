"""NumPyro's BernoulliLogits gradient at logits = 0, and this package's fix of it.

NumPyro 0.22 computes ``BernoulliLogits.log_prob`` with ``binary_cross_entropy_with_logits``
(``clip`` and ``abs``), whose logit-gradient at exactly logits = 0 is 0 / 1 for the values
0 / 1 instead of −½ / ½ — the point where zero-initialized biases start (it biased every
estimator's decoder gradient on the binary VAE by ≈ 0.32 per pixel, 40 standard errors).
The pyroapi alias's ``Bernoulli`` and the estimators' own log-densities use log σ(±ℓ).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pyroapi
import pytest

from numpyro_backend.infer import RELAX_ELBO, ScoreFunction_ELBO
from numpyro_backend.infer.particles import bernoulli_log_prob


def _alias_log_prob(logits, value):
    with pyroapi.pyro_backend("numpyro_backend"):
        return pyroapi.distributions.Bernoulli(logits=logits).log_prob(value)


@pytest.mark.parametrize("value, expected", [(0.0, -0.5), (1.0, 0.5)])
def test_gradient_at_zero_logits(value, expected):
    assert jax.grad(_alias_log_prob)(0.0, value) == expected
    stock = dist.Bernoulli(logits=jnp.zeros(()))
    assert jax.grad(lambda x: bernoulli_log_prob(dist.Bernoulli(logits=x), value))(0.0) == expected
    # the stock one is what is worked around (if this fails, NumPyro fixed it upstream)
    assert jax.grad(lambda x: dist.Bernoulli(logits=x).log_prob(value))(0.0) != expected
    assert stock.log_prob(value) == _alias_log_prob(0.0, value)


def test_values_match_stock_including_extreme_logits():
    logits = jnp.array([-700.0, -30.0, -2.5, -1e-8, 0.0, 0.7, 40.0, 700.0])
    for value in (0.0, 1.0):
        ours = _alias_log_prob(logits, value)
        stock = dist.Bernoulli(logits=logits).log_prob(value)
        # atol: log σ(40) = −4.2e-18 here, where the stock formula rounds to −0.0
        np.testing.assert_allclose(ours, stock, rtol=1e-12, atol=1e-15)
        wrapped = dist.Bernoulli(logits=logits).to_event(1)
        np.testing.assert_allclose(
            bernoulli_log_prob(wrapped, jnp.full(8, value)), jnp.sum(stock), rtol=1e-12, atol=1e-15
        )


def _model():
    numpyro.sample("x", dist.Bernoulli(logits=numpyro.param("a", 0.0)), obs=0.0)


def _guide():
    """No latent variables: the ELBO is log p(x) itself."""


@pytest.mark.parametrize("make", [ScoreFunction_ELBO, RELAX_ELBO])
def test_estimators_use_the_right_gradient_with_stock_distributions(make):
    # −ELBO = −log(1 − σ(a)); its gradient at a = 0 is σ(0) = ½ exactly (no latent variables)
    grad = jax.grad(lambda p: make().loss(jax.random.PRNGKey(0), p, _model, _guide))({"a": 0.0})
    assert grad["a"] == 0.5
