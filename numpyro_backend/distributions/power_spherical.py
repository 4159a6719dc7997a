"""Power Spherical distribution on the sphere S^{d−1} ⊂ R^d (De Cao & Aziz 2020), NumPyro / JAX."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import jax.random as random
from jax.scipy.special import digamma, gammaln
from numpyro.distributions.batch_util import _default_vmap_over, vmap_over
from numpyro.distributions.util import is_prng_key, validate_sample

from numpyro_backend.distributions.von_mises_fisher import SphereLocConcentration, _embed
from numpyro_backend.ops.sphere import householder_rotate, uniform_tangent

__all__ = ["PowerSpherical"]


@partial(jax.jit, static_argnames=("sample_shape",))
def _sample_power_spherical(key, loc, concentration, sample_shape):
    key_s, key_tangent = random.split(key)
    dim = loc.shape[-1]
    shape = sample_shape + jnp.shape(concentration)
    beta = (dim - 1) / 2
    s = random.beta(
        key_s, jnp.full_like(concentration, beta), concentration + beta, shape, dtype=loc.dtype
    )
    tangent = uniform_tangent(key_tangent, shape, dim - 1, dtype=loc.dtype)
    z = householder_rotate(loc, _embed(2 * s, tangent))
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


class PowerSpherical(SphereLocConcentration):
    r"""Power Spherical distribution on the unit sphere S^{d−1}, any d ≥ 2.

    .. math:: p(z) = C(κ, d)\, (1 + μ^⊤ z)^κ, \quad
        C(κ, d)^{-1} = 2^{α+β} π^{β} \frac{Γ(α)}{Γ(α+β)}, \;
        α = \frac{d-1}{2} + κ, \; β = \frac{d-1}{2}      \quad [1, eq. 5–6]

    A vMF-like family without Bessel functions and without rejection: (1 + μᵀz)/2 ~ Beta(α, β)
    [1, §3.2], the tangent direction is uniform, and a Householder reflection maps e₁ to μ.
    ``sample`` is fully reparameterized: ``s = (1 − μᵀz)/2 ~ Beta(β, α)`` is drawn with
    ``jax.random.beta`` (differentiable in its parameters through JAX's implicit Gamma
    gradients); drawing s rather than 1 − s keeps t = 1 − μᵀz = 2s precise when κ is large.

    Example::

        >>> loc = jnp.array([0.0, 0.0, 1.0])
        >>> z = PowerSpherical(loc, 20.0).sample(random.PRNGKey(0), (100,))

    :param loc: mean direction, unit norm, shape ``batch + (d,)`` with d ≥ 2.
    :param concentration: κ ≥ 0, shape broadcastable with ``loc.shape[:-1]``.

    References:
        [1] N. De Cao, W. Aziz (2020). The Power Spherical distribution. ICML workshop on INNF+,
            arXiv:2006.04437.
    """

    def _alpha_beta(self):
        beta = (self.dim - 1) / 2
        return self.concentration + beta, beta

    def sample(self, key, sample_shape=()):
        assert is_prng_key(key)
        return _sample_power_spherical(key, self.loc, self.concentration, tuple(sample_shape))

    def log_normalizer(self):
        """log C(κ, d) = −[(α+β) log 2 + β log π + log Γ(α) − log Γ(α+β)]  ([1, eq. 6])."""
        alpha, beta = self._alpha_beta()
        return -(
            (alpha + beta) * math.log(2)
            + beta * math.log(math.pi)
            + gammaln(alpha)
            - gammaln(alpha + beta)
        )

    @validate_sample
    def log_prob(self, value):
        dot = (self.loc * value).sum(-1)
        return self.log_normalizer() + self.concentration * jnp.log1p(dot)

    @property
    def mean(self):
        """E[z] = (α − β)/(α + β)·μ = κ/(κ + d − 1)·μ."""
        alpha, beta = self._alpha_beta()
        return ((alpha - beta) / (alpha + beta))[..., None] * self.loc

    @property
    def mode(self):
        return self.loc

    def entropy(self):
        """H = −log C − κ (log 2 + ψ(α) − ψ(α+β))  ([1, eq. 8])."""
        alpha, beta = self._alpha_beta()
        expected_log = math.log(2) + digamma(alpha) - digamma(alpha + beta)
        return -self.log_normalizer() - self.concentration * expected_log


@vmap_over.register
def _vmap_over_power_spherical(dist: PowerSpherical, loc=None, concentration=None):
    return _default_vmap_over(dist, loc=loc, concentration=concentration)
