"""``pyroapi.distributions`` under the ``"numpyro_backend"`` backend: every stock NumPyro
distribution, this package's, and Pyro's conventions where NumPyro's differ."""

from numpyro.compat.distributions import *  # stock names
from numpyro.distributions import Distribution, constraints, kl_divergence, transforms
from numpyro.distributions import discrete as _discrete

from numpyro_backend.distributions import *  # ours
from numpyro_backend.distributions.discrete import (  # Pyro's, missing or different in NumPyro
    BernoulliLogits,
    OneHotCategorical,
    one_hot,
)


def Categorical(probs=None, logits=None, *, validate_args=None):
    """NumPyro's Categorical, with ``probs`` normalized along the last axis as torch does.

    A Pyro model may pass probabilities that sum to 1 only up to optimizer round-off (a
    ``pyro.param`` after a few steps); torch normalizes them, NumPyro's validation rejects
    them.
    """
    if probs is not None:
        probs = probs / probs.sum(-1, keepdims=True)
    return _discrete.Categorical(probs=probs, logits=logits, validate_args=validate_args)


def Bernoulli(probs=None, logits=None, *, validate_args=None):
    """NumPyro's Bernoulli; with ``logits``, :class:`BernoulliLogits` (right gradient at
    logits = 0, see ``numpyro_backend/distributions/discrete.py``)."""
    if logits is not None and probs is None:
        return BernoulliLogits(logits, validate_args=validate_args)
    return _discrete.Bernoulli(probs=probs, logits=logits, validate_args=validate_args)
