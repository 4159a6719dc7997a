"""NumPyro-only pieces of the discrete families: ``OneHotCategorical`` and a Bernoulli-logits
log-density with the right gradient at logits = 0.

Pyro (torch) has both; NumPyro 0.22 has no ``OneHotCategorical`` and its
``BernoulliLogits.log_prob`` has a wrong logit-gradient at 0. The estimators
(``numpyro_backend.infer``) and the pyroapi alias (``numpyro_backend.backend``) use these, so
each lives here once. Not part of the public name set (DESIGN.md): import them from this
module; under the alias they are ``pyroapi.distributions.OneHotCategorical`` /
``Bernoulli(logits=...)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import random
from numpyro.distributions import Distribution, constraints
from numpyro.distributions import discrete as _discrete
from numpyro.distributions.util import validate_sample

__all__ = ["BernoulliLogits", "OneHotCategorical", "bernoulli_logits_log_prob", "one_hot"]


def bernoulli_logits_log_prob(logits, value) -> jnp.ndarray:
    """log q(value | logits) of a Bernoulli: log σ(±ℓ), selected by the value.

    NumPyro 0.22's ``BernoulliLogits.log_prob`` (``binary_cross_entropy_with_logits``, built
    on ``clip`` and ``abs``) has the logit-gradients 0 and 1 at logits = 0 for the values 0
    and 1, instead of −½ and ½ — the point where zero-initialized biases start. This one is
    exact for 0/1 values, also at infinite logits.
    """
    return jnp.where(value > 0, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))


class BernoulliLogits(_discrete.BernoulliLogits):
    """NumPyro's ``BernoulliLogits`` with :func:`bernoulli_logits_log_prob` as log-density."""

    @validate_sample
    def log_prob(self, value):
        return bernoulli_logits_log_prob(self.logits, value)


class _OneHot(constraints._SingletonConstraint):
    """One-hot vectors along the last axis (torch's ``constraints.one_hot``)."""

    event_dim = 1

    def __call__(self, x):
        is_binary = (x == 0) | (x == 1)
        return is_binary.all(-1) & (x.sum(-1) == 1)

    def feasible_like(self, prototype):
        return jnp.zeros_like(prototype).at[..., 0].set(1)


one_hot = _OneHot()


class OneHotCategorical(Distribution):
    """Pyro's ``OneHotCategorical`` for NumPyro: a Categorical whose value is a one-hot vector.

    NumPyro has none; models written for Pyro (and REBAR/RELAX, which relax the one-hot
    value in place) use it. ``event_shape`` is ``(K,)``.

    Example::

        z = numpyro.sample("z", OneHotCategorical(logits=jnp.zeros(3)))  # e.g. [0., 1., 0.]
    """

    # as torch validates only the parameter it was given: ``probs`` derived from large float32
    # logits (|logits| ~ 1e3: the normalizer's rounding is 6e-5) fails the simplex's 1e-6 sum
    # test, which would reject a valid distribution (a peaked encoder late in training)
    arg_constraints = {"logits": constraints.real_vector}
    support = one_hot
    has_enumerate_support = True
    pytree_data_fields = ("logits",)

    def __init__(self, probs=None, logits=None, *, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("OneHotCategorical: give exactly one of `probs` or `logits`")
        if probs is not None:
            self.arg_constraints = {"probs": constraints.simplex}  # the given parameter
            probs = probs / probs.sum(-1, keepdims=True)
            logits = jnp.log(probs)
        self.logits = logits - jax.scipy.special.logsumexp(logits, -1, keepdims=True)
        shape = jnp.shape(self.logits)
        super().__init__(
            batch_shape=shape[:-1], event_shape=shape[-1:], validate_args=validate_args
        )

    @property
    def probs(self):
        return jnp.exp(self.logits)

    def sample(self, key, sample_shape=()):
        index = random.categorical(key, self.logits, shape=sample_shape + self.batch_shape)
        return jax.nn.one_hot(index, self.event_shape[-1], dtype=self.logits.dtype)

    @validate_sample
    def log_prob(self, value):
        return jnp.sum(value * self.logits, -1)

    @property
    def mean(self):
        return self.probs

    @property
    def variance(self):
        return self.probs * (1 - self.probs)

    def enumerate_support(self, expand=True):
        k = self.event_shape[-1]
        values = jnp.eye(k, dtype=self.logits.dtype).reshape(
            (k,) + (1,) * len(self.batch_shape) + (k,)
        )
        if expand:
            values = jnp.broadcast_to(values, (k,) + self.batch_shape + (k,))
        return values
