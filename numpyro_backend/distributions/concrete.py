"""The Concrete family (Gumbel-Softmax) and its relaxation maths, NumPyro (JAX) backend.

Distributions: :class:`ExpConcrete` (log-space Concrete, exact log-density at any temperature),
:class:`Concrete` (relaxed one-hot categorical on the simplex), :class:`BinaryConcrete` (relaxed
Bernoulli on (0, 1)) and the straight-through variants :class:`ConcreteStraightThrough`,
:class:`BinaryConcreteStraightThrough`, :class:`ReinMaxStraightThrough`,
:class:`GumbelRaoStraightThrough`. Mirrors ``pyro_reparam_ext.distributions.concrete``.

The relaxation maths used by these classes and by the REBAR/RELAX estimators is exported as
functions. Every function takes its uniform noise as an argument, so the same draw can be reused
(REBAR evaluates the relaxation at z and at z̃ built from the same u and v). Bernoulli
functions work on logits of shape ``batch``; categorical ones on logits of shape
``batch + (K,)``.

References:
    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution.
    [2] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR:
        Low-variance, unbiased gradient estimates for discrete latent variable models,
        appendix "Conditional samples".
"""

import math

import jax
import jax.numpy as jnp
from jax import lax
from numpyro.distributions import constraints
from numpyro.distributions.batch_util import _default_vmap_over, vmap_over
from numpyro.distributions.distribution import Distribution
from numpyro.distributions.util import is_prng_key, lazy_property, promote_shapes, validate_sample

__all__ = [
    "BinaryConcrete",
    "BinaryConcreteStraightThrough",
    "Concrete",
    "ConcreteStraightThrough",
    "ExpConcrete",
    "GumbelRaoStraightThrough",
    "ReinMaxStraightThrough",
    "bernoulli_conditional_relaxed_logits",
    "bernoulli_hard",
    "bernoulli_relaxed_logits",
    "bernoulli_soft",
    "categorical_conditional_relaxed_logits",
    "categorical_hard",
    "categorical_relaxed_logits",
    "categorical_soft",
    "uniform_noise",
]


def uniform_noise(key, shape, dtype=None) -> jnp.ndarray:
    """Uniform(0, 1) noise strictly inside the open interval."""
    dtype = jnp.dtype(dtype if dtype is not None else jnp.result_type(float))
    tiny = jnp.finfo(dtype).tiny
    u = jax.random.uniform(key, shape, dtype=dtype)
    return jnp.clip(u, tiny, 1.0 - jnp.finfo(dtype).eps)


def bernoulli_relaxed_logits(logits, u):
    """z = logits + log(u) - log(1 - u): a Logistic(logits, 1) draw; H(z) ~ Bernoulli."""
    return logits + jnp.log(u) - jnp.log1p(-u)


def bernoulli_hard(z):
    """H(z) = 1[z > 0] in z's dtype."""
    return (z > 0).astype(z.dtype)


def bernoulli_soft(z, temperature):
    """σ(z / λ): the relaxed (BinaryConcrete) value of a relaxed logit z."""
    return jax.nn.sigmoid(z / temperature)


def bernoulli_conditional_relaxed_logits(logits, b, v):
    """A draw of z̃ ~ p(z | H(z) = b) for z = logits + Logistic noise ([2], appendix).

    With p = σ(logits), the conditional uniform is u' = v(1 - p) when b = 0 and
    u' = (1 - p) + v p when b = 1; z̃ = logits + logit(u'). Computed in log space so that the
    result keeps the sign of b at saturated logits.
    """
    log_p = jax.nn.log_sigmoid(logits)
    log_1mp = jax.nn.log_sigmoid(-logits)
    log_v = jnp.log(v)
    log_1mv = jnp.log1p(-v)
    # b = 1:  z̃ = logits + log(1 - p + p v) - log p - log(1 - v)
    z_one = jnp.logaddexp(log_1mp, log_p + log_v) - log_1mv + (logits - log_p)
    # b = 0:  z̃ = logits + log v + log(1 - p) - log(p + (1 - p)(1 - v))
    z_zero = logits + log_v + log_1mp - jnp.logaddexp(log_p, log_1mp + log_1mv)
    return jnp.where(b > 0.5, z_one, z_zero)


def categorical_relaxed_logits(logits, u):
    """z_k = log π_k + Gumbel noise, with π = softmax(logits); argmax z ~ Categorical(π)."""
    return jax.nn.log_softmax(logits, axis=-1) - jnp.log(-jnp.log(u))


def categorical_hard(z):
    """One-hot of argmax(z) along the last dimension, in z's dtype."""
    return jax.nn.one_hot(jnp.argmax(z, -1), z.shape[-1], dtype=z.dtype)


def categorical_soft(z, temperature):
    """softmax(z / λ): the relaxed (Concrete) value of relaxed logits z."""
    return jax.nn.softmax(z / temperature, axis=-1)


def categorical_conditional_relaxed_logits(logits, b, v):
    """A draw of z̃ ~ p(z | argmax z = b) for z = log π + Gumbel noise ([2], appendix).

    ``b`` is one-hot. With normalized log-probabilities ℓ = log π:
    z̃_b = -log(-log v_b) and z̃_k = -log(-log(v_k) / π_k - log v_b) for k ≠ b.
    """
    log_pi = jax.nn.log_softmax(logits, axis=-1)
    log_neg_log_v = jnp.log(-jnp.log(v))
    log_neg_log_vb = jnp.sum(log_neg_log_v * b, -1, keepdims=True)
    z_other = -jnp.logaddexp(log_neg_log_v - log_pi, log_neg_log_vb)
    z_top = jnp.broadcast_to(-log_neg_log_vb, z_other.shape)
    return jnp.where(b > 0.5, z_top, z_other)


# ---------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------


def _check_one_of(name: str, probs, logits) -> None:
    if (probs is None) == (logits is None):
        raise ValueError(
            f"{name}: pass exactly one of `probs` or `logits`, got "
            + ("both" if probs is not None else "neither")
        )


def _straight_through(hard, soft):
    """Forward value ``hard`` exactly; backward gradient of ``soft`` (identity Jacobian)."""
    return hard + (soft - lax.stop_gradient(soft))


def _clamp_value_keep_grad(x, low, high):
    """Clamp the value into [low, high] so log-densities stay finite; keep x's gradient."""
    return x + lax.stop_gradient(jnp.clip(x, low, high) - x)


class ExpConcrete(Distribution):
    r"""The logarithm of a Concrete (Gumbel-Softmax) sample, with its density in log space.

    A draw is :math:`y = \operatorname{log\_softmax}((\log\pi + g)/\lambda)` with
    :math:`g_k` i.i.d. Gumbel(0, 1), so :math:`\exp(y) \sim` :class:`Concrete`. Working in log
    space keeps the log-density finite and accurate at low temperature and many classes
    (τ = 0.01 with K = 1000), where a probability-space density underflows.

    Example::

        q = ExpConcrete(0.1, logits=jnp.zeros(1000))
        y = q.rsample(jax.random.PRNGKey(0))
        q.log_prob(y)                  # finite

    .. note:: The density ([1], appendix) is taken with respect to the symmetric measure
        :math:`\prod_{k<K} dx_k / \prod_k x_k` on the simplex (the convention of [1], TensorFlow
        Probability and :mod:`torch.distributions`). Relative to Lebesgue measure on
        :math:`y_{1:K-1}` it differs by :math:`-y_K`.

    References:

    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution: A Continuous
        Relaxation of Discrete Random Variables. ICLR.

    :param temperature: relaxation temperature λ > 0 (may be differentiated).
    :param probs: class probabilities (normalized over the last axis).
    :param logits: unnormalized log-probabilities.
    """

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }
    support = constraints.real_vector
    reparametrized_params = ["temperature", "probs", "logits"]
    pytree_data_fields = ("temperature", "probs", "logits")

    def __init__(self, temperature, probs=None, logits=None, *, validate_args=None):
        _check_one_of(type(self).__name__, probs, logits)
        if probs is not None:
            probs = jnp.asarray(probs)
            if jnp.ndim(probs) < 1:
                raise ValueError(f"{type(self).__name__}: `probs` needs a class dimension")
            self.probs = probs / jnp.sum(probs, -1, keepdims=True)
            param = self.probs
        else:
            logits = jnp.asarray(logits)
            if jnp.ndim(logits) < 1:
                raise ValueError(f"{type(self).__name__}: `logits` needs a class dimension")
            self.logits = logits - jax.nn.logsumexp(logits, -1, keepdims=True)
            param = self.logits
        batch_shape = lax.broadcast_shapes(jnp.shape(temperature), jnp.shape(param)[:-1])
        self.temperature = jnp.broadcast_to(
            jnp.asarray(temperature, dtype=jnp.result_type(param)), batch_shape
        )
        super().__init__(
            batch_shape=batch_shape,
            event_shape=jnp.shape(param)[-1:],
            validate_args=validate_args,
        )

    @classmethod
    def infer_shapes(cls, temperature=(), probs=None, logits=None):
        param = probs if probs is not None else logits
        batch_shape = lax.broadcast_shapes(tuple(temperature), tuple(param[:-1]))
        return batch_shape, tuple(param[-1:])

    @lazy_property
    def logits(self):
        return jnp.log(jnp.clip(self.probs, jnp.finfo(jnp.result_type(self.probs)).tiny))

    @lazy_property
    def probs(self):
        return jax.nn.softmax(self.logits, -1)

    def _relaxed_logits(self, key, sample_shape):
        """Gumbel-perturbed log-probabilities z = log π + g, shape sample + batch + event."""
        assert is_prng_key(key)
        shape = sample_shape + self.batch_shape + self.event_shape
        logits = jnp.broadcast_to(self.logits, shape)
        return categorical_relaxed_logits(logits, uniform_noise(key, shape, logits.dtype))

    def rsample(self, key, sample_shape=()):
        z = self._relaxed_logits(key, sample_shape)
        return jax.nn.log_softmax(z / self.temperature[..., None], -1)

    def sample(self, key, sample_shape=()):
        return self.rsample(key, sample_shape)

    def _exp_concrete_log_prob(self, value):
        num_classes = self.event_shape[-1]
        # [1] eq. 14 in log space: log((K-1)!) + (K-1) log λ + Σ_k (ℓ_k - λ y_k) - K lse(ℓ - λ y)
        score = self.logits - self.temperature[..., None] * value
        log_normalizer = math.lgamma(num_classes) + (num_classes - 1) * jnp.log(self.temperature)
        return log_normalizer + jnp.sum(score - jax.nn.logsumexp(score, -1, keepdims=True), -1)

    @validate_sample
    def log_prob(self, value):
        return self._exp_concrete_log_prob(value)


class Concrete(ExpConcrete):
    r"""Relaxed one-hot categorical (Concrete / Gumbel-Softmax) on the probability simplex.

    A draw is :math:`x = \operatorname{softmax}((\log\pi + g)/\lambda)` with Gumbel noise
    :math:`g`; as λ → 0 it approaches a one-hot Categorical(π) sample ([1], [2]). The density is
    taken with respect to Lebesgue measure on the first K − 1 coordinates ([1], eq. 14).

    Example::

        q = Concrete(0.5, probs=jnp.array([0.2, 0.3, 0.5]))
        x = q.rsample(jax.random.PRNGKey(0))
        q.log_prob(x)

    .. note:: At low temperature softmax outputs underflow to 0 in floating point; samples are
        clamped to at least the dtype's smallest normal number so log_prob stays finite (the
        gradient passes through the clamp unchanged). For exact log-densities at low temperature
        use :class:`ExpConcrete`, which works in log space.

    :param temperature: relaxation temperature λ > 0 (may be differentiated).
    :param probs: class probabilities (normalized over the last axis).
    :param logits: unnormalized log-probabilities.

    References:

    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution. ICLR.
    [2] E. Jang, S. Gu, B. Poole (2017). Categorical Reparameterization with Gumbel-Softmax.
    """

    support = constraints.simplex

    def rsample(self, key, sample_shape=()):
        x = jnp.exp(super().rsample(key, sample_shape))
        return _clamp_value_keep_grad(x, jnp.finfo(x.dtype).tiny, 1.0)

    @validate_sample
    def log_prob(self, value):
        log_value = jnp.log(value)
        # change of variables y = log x: the symmetric measure of ExpConcrete is dx / Π_k x_k
        return self._exp_concrete_log_prob(log_value) - jnp.sum(log_value, -1)


class ConcreteStraightThrough(Concrete):
    r"""Straight-through Gumbel-Softmax: a one-hot Categorical sample forward, the
    :class:`Concrete` sample's gradient backward ([2], section 2.2).

    ``rsample`` returns exact one-hot vectors whose law is Categorical(π); differentiation flows
    through the underlying relaxed sample. ``log_prob``, ``mean``, ``mode`` and ``entropy`` are
    those of the one-hot Categorical(π) that the samples follow; ``log_prob`` is linear in the
    value, so it also accepts relaxed values.

    :param temperature: relaxation temperature λ > 0 of the backward relaxation.
    :param probs: class probabilities (normalized over the last axis).
    :param logits: unnormalized log-probabilities.
    """

    support = constraints.simplex  # one-hot vectors; NumPyro has no one_hot constraint

    def rsample(self, key, sample_shape=()):
        soft = super().rsample(key, sample_shape)
        return _straight_through(categorical_hard(soft), soft)

    @validate_sample
    def log_prob(self, value):
        return jnp.sum(value * jax.nn.log_softmax(self.logits, -1), -1)

    @property
    def mean(self):
        return jnp.broadcast_to(self.probs, self.batch_shape + self.event_shape)

    @property
    def mode(self):
        return jnp.broadcast_to(categorical_hard(self.logits), self.batch_shape + self.event_shape)

    def entropy(self):
        log_probs = jax.nn.log_softmax(self.logits, -1)
        return jnp.broadcast_to(-jnp.sum(jnp.exp(log_probs) * log_probs, -1), self.batch_shape)


class BinaryConcrete(Distribution):
    r"""Relaxed Bernoulli (binary Concrete) on the unit interval.

    A draw is :math:`x = \sigma((\ell + \log u - \log(1-u))/\lambda)`, u ~ Uniform(0, 1), with
    logits ℓ; as λ → 0 it approaches a Bernoulli(σ(ℓ)) sample. Density ([1], eq. 16):
    :math:`p(x) = \lambda \alpha x^{-\lambda-1}(1-x)^{-\lambda-1} /
    (\alpha x^{-\lambda} + (1-x)^{-\lambda})^2` with α = exp(ℓ).

    Example::

        q = BinaryConcrete(0.5, probs=jnp.array([0.1, 0.9]))
        x = q.rsample(jax.random.PRNGKey(0))
        q.log_prob(x)

    .. note:: Samples are clamped into [tiny, 1 − eps] of the dtype so that log_prob stays
        finite at low temperature; the gradient passes through the clamp unchanged.

    :param temperature: relaxation temperature λ > 0 (may be differentiated).
    :param probs: probability of 1.
    :param logits: log-odds of 1.

    References:

    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution. ICLR.
    """

    arg_constraints = {
        "temperature": constraints.positive,
        "probs": constraints.unit_interval,
        "logits": constraints.real,
    }
    support = constraints.unit_interval
    reparametrized_params = ["temperature", "probs", "logits"]
    pytree_data_fields = ("temperature", "probs", "logits")

    def __init__(self, temperature, probs=None, logits=None, *, validate_args=None):
        _check_one_of(type(self).__name__, probs, logits)
        if probs is not None:
            self.temperature, self.probs = promote_shapes(temperature, probs)
            param = self.probs
        else:
            self.temperature, self.logits = promote_shapes(temperature, logits)
            param = self.logits
        batch_shape = lax.broadcast_shapes(jnp.shape(temperature), jnp.shape(param))
        self.temperature = jnp.broadcast_to(
            jnp.asarray(self.temperature, dtype=jnp.result_type(param, float)), batch_shape
        )
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @classmethod
    def infer_shapes(cls, temperature=(), probs=None, logits=None):
        param = probs if probs is not None else logits
        return lax.broadcast_shapes(tuple(temperature), tuple(param)), ()

    @lazy_property
    def logits(self):
        tiny = jnp.finfo(jnp.result_type(self.probs, float)).tiny
        return jnp.log(jnp.clip(self.probs, tiny)) - jnp.log(jnp.clip(1 - self.probs, tiny))

    @lazy_property
    def probs(self):
        return jax.nn.sigmoid(self.logits)

    def _relaxed_logits(self, key, sample_shape):
        assert is_prng_key(key)
        shape = sample_shape + self.batch_shape
        logits = jnp.broadcast_to(self.logits, shape)
        return bernoulli_relaxed_logits(logits, uniform_noise(key, shape, logits.dtype))

    def rsample(self, key, sample_shape=()):
        x = bernoulli_soft(self._relaxed_logits(key, sample_shape), self.temperature)
        finfo = jnp.finfo(x.dtype)
        return _clamp_value_keep_grad(x, finfo.tiny, 1.0 - finfo.eps)

    def sample(self, key, sample_shape=()):
        return self.rsample(key, sample_shape)

    @validate_sample
    def log_prob(self, value):
        temperature = self.temperature
        log_x = jnp.log(value)
        log_1mx = jnp.log1p(-value)
        # [1] eq. 16 in log space; the denominator's log via logaddexp for stability
        return (
            jnp.log(temperature)
            + self.logits
            - (temperature + 1) * (log_x + log_1mx)
            - 2 * jnp.logaddexp(self.logits - temperature * log_x, -temperature * log_1mx)
        )


class BinaryConcreteStraightThrough(BinaryConcrete):
    r"""Straight-through relaxed Bernoulli: a {0, 1} sample forward, the
    :class:`BinaryConcrete` sample's gradient backward.

    ``rsample`` returns exact 0/1 values distributed as Bernoulli(σ(logits)); gradients flow
    through the relaxed sample. ``log_prob``, ``mean``, ``mode`` and ``entropy`` are those of
    that Bernoulli; ``log_prob`` is linear in the value, so it also accepts relaxed values.

    :param temperature: relaxation temperature λ > 0 of the backward relaxation.
    :param probs: probability of 1.
    :param logits: log-odds of 1.

    References:

    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution. ICLR.
    [2] E. Jang, S. Gu, B. Poole (2017). Categorical Reparameterization with Gumbel-Softmax.
    """

    support = constraints.boolean

    def rsample(self, key, sample_shape=()):
        soft = super().rsample(key, sample_shape)
        return _straight_through((soft > 0.5).astype(soft.dtype), soft)

    @validate_sample
    def log_prob(self, value):
        return value * jax.nn.log_sigmoid(self.logits) + (1 - value) * jax.nn.log_sigmoid(
            -self.logits
        )

    @property
    def mean(self):
        return jnp.broadcast_to(self.probs, self.batch_shape)

    @property
    def mode(self):
        return jnp.broadcast_to((self.logits > 0).astype(self.temperature.dtype), self.batch_shape)

    def entropy(self):
        logits = jnp.broadcast_to(self.logits, self.batch_shape)
        probs = jax.nn.sigmoid(logits)
        return -(probs * jax.nn.log_sigmoid(logits) + (1 - probs) * jax.nn.log_sigmoid(-logits))


def softmax_linearization(probs, logits):
    """π ⊙ (θ − ⟨π, θ⟩) with π held constant: its Jacobian in θ is the softmax Jacobian
    diag(π) − ππᵀ evaluated at π (a surrogate whose gradient, not value, matters)."""
    probs = lax.stop_gradient(probs)
    return probs * (logits - jnp.sum(probs * logits, -1, keepdims=True))


def reinmax_surrogate(logits, hard, temperature):
    r"""A function of ``logits`` whose Jacobian is ReinMax's ([3], Algorithm 2):
    :math:`2 J(\pi_1) - \tfrac12 J(\pi_0)` with :math:`J(\pi) = \operatorname{diag}(\pi) -
    \pi\pi^\top`, :math:`\pi_0 = \operatorname{softmax}(\theta)` and
    :math:`\pi_1 = (D + \operatorname{softmax}(\theta/\tau)) / 2` for the one-hot sample D."""
    probs = jax.nn.softmax(logits, -1)
    shifted = 0.5 * (hard + jax.nn.softmax(logits / temperature, -1))
    return 2.0 * softmax_linearization(shifted, logits) - 0.5 * softmax_linearization(probs, logits)


class ReinMaxStraightThrough(ConcreteStraightThrough):
    r"""One-hot Categorical(π) samples forward, ReinMax's second-order gradient backward ([3]).

    ``rsample`` returns an exact one-hot sample D ~ Categorical(softmax(logits)). Its gradient
    with respect to the logits θ is that of :math:`2\pi_1 - \tfrac12\pi_0` ([3], Algorithm
    2): with :math:`\pi_0 = \operatorname{softmax}(\theta)` and
    :math:`\pi_1 = (D + \operatorname{softmax}(\theta/\tau))/2`, the vector-Jacobian product
    is :math:`g \mapsto 2\,\pi_1 \odot (g - \langle g, \pi_1\rangle) - \tfrac12\,\pi_0
    \odot (g - \langle g, \pi_0 \rangle)`. ``log_prob``, ``mean``, ``mode``, ``entropy`` are
    those of the one-hot Categorical(π).

    Example::

        q = ReinMaxStraightThrough(1.0, logits=logits)
        b = q.rsample(jax.random.PRNGKey(0))

    .. note:: Biased (a second-order approximation of the gradient of E[f(D)]). The
        temperature gets no gradient (π₁ is held constant, as in [3]); [3] recommends τ ≥ 1
        (its reference code refuses τ < 1; here any τ > 0 is valid).

    :param temperature: τ > 0 of the softmax(θ/τ) in π₁.
    :param probs: class probabilities.
    :param logits: unnormalized log-probabilities.

    References:

    [3] L. Liu, C. Dong, X. Liu, B. Yu, J. Gao (2023). Bridging Discrete and Backpropagation:
        Straight-Through and Beyond. NeurIPS.
    """

    def rsample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape + self.event_shape
        logits = jnp.broadcast_to(self.logits, shape)
        noise = uniform_noise(key, shape, logits.dtype)
        hard = categorical_hard(categorical_relaxed_logits(lax.stop_gradient(logits), noise))
        temperature = self.temperature[..., None]
        return _straight_through(hard, reinmax_surrogate(logits, hard, temperature))


def _check_num_samples(name: str, num_samples) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"{name}: `num_samples` must be an integer >= 1, got {num_samples!r}")
    return num_samples


class GumbelRaoStraightThrough(ConcreteStraightThrough):
    r"""One-hot Categorical(π) samples forward, the Rao-Blackwellized straight-through
    Gumbel-softmax gradient backward ([4], "GR-MCK").

    ``rsample`` draws D = one_hot(argmax(log π + G)), then ``num_samples`` Gumbel vectors
    :math:`G^{(s)} \sim G \mid \arg\max(\log\pi + G) = D`
    (``categorical_conditional_relaxed_logits``), and differentiates
    :math:`\frac1S \sum_s \operatorname{softmax}((\log\pi + G^{(s)})/\tau)`: a Monte Carlo
    estimate of :math:`\mathbb{E}[\nabla \operatorname{softmax}((\log\pi + G)/\tau) \mid D]`
    ([4], eq. 7). The noise :math:`G^{(s)}` is held constant (stop-gradient): differentiating
    through the conditional sampler's dependence on π would add terms that are not part of
    [4]'s estimator.

    Example::

        q = GumbelRaoStraightThrough(0.5, logits=logits, num_samples=10)
        b = q.rsample(jax.random.PRNGKey(0))

    .. note:: Biased (as straight-through Gumbel-softmax) with a variance that falls as
        ``num_samples`` grows. Gradients flow to the logits and the temperature.

    References:

    [4] M. B. Paulus, C. J. Maddison, A. Krause (2021). Rao-Blackwellizing the
        Straight-Through Gumbel-Softmax Gradient Estimator. ICLR.

    :param int num_samples: conditional Gumbel draws averaged in the backward pass (≥ 1).
    """

    pytree_aux_fields = ("num_samples",)

    def __init__(
        self, temperature, probs=None, logits=None, num_samples: int = 10, *, validate_args=None
    ):
        self.num_samples = _check_num_samples(type(self).__name__, num_samples)
        super().__init__(temperature, probs=probs, logits=logits, validate_args=validate_args)

    def rsample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape + self.event_shape
        logits = jnp.broadcast_to(self.logits, shape)
        fixed = lax.stop_gradient(logits)
        key_hard, key_soft = jax.random.split(key)
        hard = categorical_hard(
            categorical_relaxed_logits(fixed, uniform_noise(key_hard, shape, fixed.dtype))
        )
        v = uniform_noise(key_soft, (self.num_samples,) + shape, fixed.dtype)
        noise = categorical_conditional_relaxed_logits(fixed, hard, v) - fixed
        temperature = self.temperature[..., None]
        soft = jnp.mean(jax.nn.softmax((logits + noise) / temperature, -1), 0)
        return _straight_through(hard, soft)


@vmap_over.register
def _vmap_over_exp_concrete(dist: ExpConcrete, temperature=None, probs=None, logits=None):
    return _default_vmap_over(dist, temperature=temperature, probs=probs, logits=logits)


@vmap_over.register
def _vmap_over_binary_concrete(dist: BinaryConcrete, temperature=None, probs=None, logits=None):
    return _default_vmap_over(dist, temperature=temperature, probs=probs, logits=logits)
