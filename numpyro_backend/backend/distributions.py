"""``pyroapi.distributions`` under the ``"numpyro_backend"`` backend: every stock NumPyro
distribution, this package's, and Pyro's conventions where NumPyro's differ."""

import jax
import jax.numpy as jnp
from jax import random
from numpyro.compat.distributions import *  # stock names
from numpyro.distributions import Distribution, constraints, kl_divergence, transforms
from numpyro.distributions import discrete as _discrete
from numpyro.distributions.util import validate_sample

from numpyro_backend.distributions import *  # ours


def Categorical(probs=None, logits=None, *, validate_args=None):
    """NumPyro's Categorical, with ``probs`` normalized along the last axis as torch does.

    A Pyro model may pass probabilities that sum to 1 only up to optimizer round-off (a
    ``pyro.param`` after a few steps); torch normalizes them, NumPyro's validation rejects
    them.
    """
    if probs is not None:
        probs = probs / probs.sum(-1, keepdims=True)
    return _discrete.Categorical(probs=probs, logits=logits, validate_args=validate_args)


class BernoulliLogits(_discrete.BernoulliLogits):
    """NumPyro's ``BernoulliLogits`` with a log-density whose gradient is right at logits = 0.

    NumPyro 0.22's (``binary_cross_entropy_with_logits``, built on ``clip`` and ``abs``) gives
    the logit-gradients 0 and 1 at logits = 0 for the values 0 and 1, instead of −½ and ½ —
    the point where zero-initialized biases start. Here log σ(±ℓ), selected by the value.
    """

    @validate_sample
    def log_prob(self, value):
        return jnp.where(
            value > 0, jax.nn.log_sigmoid(self.logits), jax.nn.log_sigmoid(-self.logits)
        )


def Bernoulli(probs=None, logits=None, *, validate_args=None):
    """NumPyro's Bernoulli; with ``logits``, the :class:`BernoulliLogits` above."""
    if logits is not None and probs is None:
        return BernoulliLogits(logits, validate_args=validate_args)
    return _discrete.Bernoulli(probs=probs, logits=logits, validate_args=validate_args)


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

        z = pyro.sample("z", dist.OneHotCategorical(logits=ops.zeros(3)))  # e.g. [0., 1., 0.]
    """

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    support = one_hot
    has_enumerate_support = True
    pytree_data_fields = ("logits",)

    def __init__(self, probs=None, logits=None, *, validate_args=None):
        if (probs is None) == (logits is None):
            raise ValueError("OneHotCategorical: give exactly one of `probs` or `logits`")
        if probs is not None:
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
