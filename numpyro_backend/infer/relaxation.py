"""One object per discrete family: its noise, threshold, relaxation and conditional sampler.

The estimators (REBAR / RELAX in :mod:`.relax`, DisARM in :mod:`.disarm`, the optimal
baseline in :mod:`.score_function`) ask a site's family — found by
:func:`~numpyro_backend.infer.sites.family_of` — for everything that depends on the
distribution, instead of branching on its type. The same classes, attributes and methods
exist on the Pyro backend (``pyro_reparam_ext/infer/relaxation.py``); the one documented
difference is that :meth:`noise` takes an explicit ``rng_key`` here (torch: the global RNG).

Shapes: ``logits`` are a site's full logits, one entry per scalar decision (Bernoulli:
``batch + event``), plus the categories (Categorical: ``batch + event + (K,)``;
OneHotCategorical: ``batch + event`` with the event ending in K). A *relaxed value* has the
logits' shape; its last :attr:`category_dims` dims index categories.

Noise, threshold, relaxation ([1] section 3 and appendix, [2] section 3.3): with u, v
uniform,

    Bernoulli:    z = ℓ + log u − log(1 − u),  H(z) = 1[z > 0],      σ_λ(z) = sigmoid(z / λ)
    Categorical:  z = log π + Gumbel(u),       H(z) = argmax z,      σ_λ(z) = softmax(z / λ)

and z̃ ~ p(z | H(z) = b) is drawn from v (:mod:`numpyro_backend.distributions.concrete`).
The continuous extension of a discrete log-density evaluates it at a relaxed value:
b·log p + (1 − b)·log(1 − p), or one-hot · log π.

DisARM's stick-breaking pieces ([3], section 4): a categorical is a sequence of binary
decisions taken in ``category_order``; a Bernoulli is its own single binary.

References:
    [1] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR:
        Low-variance, unbiased gradient estimates for discrete latent variable models.
    [2] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud (2018). Backpropagation through
        the void: Optimizing control variates for black-box gradient estimation.
    [3] Z. Dong, A. Mnih, G. Tucker (2021). Coupled Gradient Estimators for Discrete Latent
        Variables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax, random

from numpyro_backend.distributions.concrete import (
    bernoulli_conditional_relaxed_logits,
    bernoulli_hard,
    bernoulli_relaxed_logits,
    bernoulli_soft,
    categorical_conditional_relaxed_logits,
    categorical_hard,
    categorical_relaxed_logits,
    categorical_soft,
    uniform_noise,
)

__all__ = [
    "FAMILIES",
    "BernoulliRelaxation",
    "CategoricalRelaxation",
    "OneHotCategoricalRelaxation",
]


class BernoulliRelaxation:
    """Bernoulli: z = ℓ + Logistic noise, b = 1[z > 0], relaxed value σ(z/λ)."""

    name = "bernoulli"
    category_dims = 0  #: trailing dims of a relaxed value that index categories
    replayable = True  #: a relaxed value can stand in for the sample in user code

    @staticmethod
    def logits(fn, base) -> jnp.ndarray:
        """The site's logits broadcast to one entry per decision: ``batch + event``."""
        return jnp.broadcast_to(base.logits, tuple(fn.batch_shape) + tuple(fn.event_shape))

    @staticmethod
    def decision_shape(fn) -> tuple:
        """Shape of the decisions of one site element (its event dims without categories)."""
        return tuple(fn.event_shape)

    @staticmethod
    def score(logits, value) -> jnp.ndarray:
        """∇_logits log q(value | logits), per logit (same shape as ``logits``)."""
        return value - jax.nn.sigmoid(logits)

    @staticmethod
    def noise(rng_key, logits) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(u, v): the uniform noise of z and of z̃, shaped like ``logits``, from ``rng_key``."""
        key_u, key_v = random.split(rng_key)
        shape, dtype = logits.shape, logits.dtype
        return uniform_noise(key_u, shape, dtype), uniform_noise(key_v, shape, dtype)

    @staticmethod
    def relaxed_logits(logits, u) -> jnp.ndarray:
        """z = ℓ + log u − log(1 − u)."""
        return bernoulli_relaxed_logits(logits, u)

    @staticmethod
    def conditional_relaxed_logits(logits, hard, v) -> jnp.ndarray:
        """z̃ ~ p(z | H(z) = b) from v ([1], appendix)."""
        return bernoulli_conditional_relaxed_logits(logits, hard, v)

    @staticmethod
    def hard(z) -> jnp.ndarray:
        """The site's value b = H(z)."""
        return bernoulli_hard(z)

    @staticmethod
    def soft(z, temperature) -> jnp.ndarray:
        """σ_λ(z), the relaxed value."""
        return bernoulli_soft(z, temperature)

    @staticmethod
    def as_relaxed(value, logits) -> jnp.ndarray:
        """The sampled value as a float array shaped like a relaxed value."""
        return jnp.asarray(value, logits.dtype)

    @staticmethod
    def log_prob(logits, value) -> jnp.ndarray:
        """Continuous extension b·log p + (1 − b)·log(1 − p), per decision (no category dim)."""
        return value * jax.nn.log_sigmoid(logits) + (1 - value) * jax.nn.log_sigmoid(-logits)

    #: log q of each decision at a hard value (the continuous extension is exact there)
    decision_log_prob = log_prob

    # ---- DisARM's binary decisions ----------------------------------------------------------

    @staticmethod
    def category_order(logits) -> jnp.ndarray | None:
        """The stick-breaking order of the categories (None: a Bernoulli is one binary)."""
        return None

    @staticmethod
    def binary_logits(logits, order) -> jnp.ndarray:
        """α of the site's binary decisions: the logits themselves."""
        return logits

    @staticmethod
    def value_from_binaries(binaries, order) -> jnp.ndarray:
        """The site's value from its binary decisions: the binaries themselves."""
        return binaries

    @staticmethod
    def reached(binaries) -> jnp.ndarray:
        """Whether each binary decision is reached: always."""
        return jnp.ones(binaries.shape, bool)


class OneHotCategoricalRelaxation:
    """OneHotCategorical: z = log π + Gumbel noise, b = one-hot of argmax z, softmax(z/λ)."""

    name = "one_hot_categorical"
    category_dims = 1
    replayable = True

    @staticmethod
    def logits(fn, base) -> jnp.ndarray:
        """``batch + event`` (the event ending in the K categories)."""
        return jnp.broadcast_to(base.logits, tuple(fn.batch_shape) + tuple(fn.event_shape))

    @staticmethod
    def decision_shape(fn) -> tuple:
        return tuple(fn.event_shape[:-1])

    @staticmethod
    def score(logits, value) -> jnp.ndarray:
        return value - jax.nn.softmax(logits, -1)

    noise = staticmethod(BernoulliRelaxation.noise)

    @staticmethod
    def relaxed_logits(logits, u) -> jnp.ndarray:
        """z = log π + Gumbel noise −log(−log u)."""
        return categorical_relaxed_logits(logits, u)

    @staticmethod
    def conditional_relaxed_logits(logits, hard, v) -> jnp.ndarray:
        """z̃ ~ p(z | argmax z = b) from v, b one-hot ([1], appendix)."""
        return categorical_conditional_relaxed_logits(logits, hard, v)

    @staticmethod
    def hard(z) -> jnp.ndarray:
        return categorical_hard(z)

    @staticmethod
    def soft(z, temperature) -> jnp.ndarray:
        return categorical_soft(z, temperature)

    @staticmethod
    def as_relaxed(value, logits) -> jnp.ndarray:
        return jnp.asarray(value, logits.dtype)

    @staticmethod
    def log_prob(logits, value) -> jnp.ndarray:
        """Continuous extension one-hot · log π, per decision (the category dim summed)."""
        return jnp.sum(value * jax.nn.log_softmax(logits, -1), -1)

    decision_log_prob = log_prob

    # ---- DisARM's binary decisions ----------------------------------------------------------

    @staticmethod
    def category_order(logits) -> jnp.ndarray:
        """The stick-breaking order: categories by increasing probability."""
        return jnp.argsort(lax.stop_gradient(logits), -1)

    @staticmethod
    def binary_logits(logits, order) -> jnp.ndarray:
        """With ℓ the logits in ``order``, α_k = ℓ_k − logsumexp(ℓ_{k+1:}) = logit of
        π_k / Σ_{j≥k} π_j, k < K − 1 (last dim K − 1)."""
        ordered = jnp.take_along_axis(logits, order, -1)
        tail = lax.cumlogsumexp(ordered, axis=ordered.ndim - 1, reverse=True)  # logsumexp(ℓ_{k:})
        return ordered[..., :-1] - tail[..., 1:]

    @classmethod
    def value_from_binaries(cls, binaries, order) -> jnp.ndarray:
        """The one-hot of category ``order[k]``, k the first binary with b_k = 1 (else the
        last category)."""
        index = cls._index_from_binaries(binaries, order)
        return jax.nn.one_hot(index, binaries.shape[-1] + 1, dtype=binaries.dtype)

    @staticmethod
    def _index_from_binaries(binaries, order) -> jnp.ndarray:
        first = jnp.argmax(jnp.concatenate([binaries, jnp.ones_like(binaries[..., :1])], -1), -1)
        return jnp.take_along_axis(order, first[..., None], -1)[..., 0]

    @staticmethod
    def reached(binaries) -> jnp.ndarray:
        """Whether each binary decision is reached (no earlier b_j = 1)."""
        return (jnp.cumsum(binaries, -1) - binaries) == 0


class CategoricalRelaxation(OneHotCategoricalRelaxation):
    """Integer Categorical: as one-hot, but the value is an index user code may index with,
    so a relaxed (one-hot) value cannot be replayed through the program."""

    name = "categorical"
    replayable = False

    @staticmethod
    def logits(fn, base) -> jnp.ndarray:
        """``batch + event + (K,)``."""
        shape = tuple(fn.batch_shape) + tuple(fn.event_shape) + base.logits.shape[-1:]
        return jnp.broadcast_to(base.logits, shape)

    @staticmethod
    def decision_shape(fn) -> tuple:
        return tuple(fn.event_shape)

    @staticmethod
    def score(logits, value) -> jnp.ndarray:
        one_hot = jax.nn.one_hot(value, logits.shape[-1], dtype=logits.dtype)
        return one_hot - jax.nn.softmax(logits, -1)

    @staticmethod
    def hard(z) -> jnp.ndarray:
        return jnp.argmax(z, -1)

    @staticmethod
    def as_relaxed(value, logits) -> jnp.ndarray:
        return jax.nn.one_hot(value, logits.shape[-1], dtype=logits.dtype)

    @classmethod
    def value_from_binaries(cls, binaries, order) -> jnp.ndarray:
        """The category ``order[k]``, k the first binary with b_k = 1 (else the last)."""
        return cls._index_from_binaries(binaries, order)


#: The three families, in the order :func:`~numpyro_backend.infer.sites.family_of` tries them.
FAMILIES = (BernoulliRelaxation(), OneHotCategoricalRelaxation(), CategoricalRelaxation())
