"""Relaxation maths shared by the Concrete family and the REBAR/RELAX estimators (JAX).

Every function takes its uniform noise as an argument, so the same draw can be reused
(REBAR evaluates the relaxation at z and at z̃ built from the same u and v). Bernoulli
functions work on logits of shape ``batch``; categorical ones on logits of shape
``batch + (K,)``.

References:
    [1] C. J. Maddison, A. Mnih, Y. W. Teh (2017). The Concrete Distribution.
    [2] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR:
        Low-variance, unbiased gradient estimates for discrete latent variable models,
        appendix "Conditional samples".
"""

import jax
import jax.numpy as jnp

__all__ = [
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
