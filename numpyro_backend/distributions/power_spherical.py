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

from numpyro_backend.distributions.implicit import _implicit_standard_gamma
from numpyro_backend.distributions.von_mises_fisher import SphereLocConcentration
from numpyro_backend.ops.sphere import embed_rotate

__all__ = ["PowerSpherical"]


@partial(jax.jit, static_argnames=("sample_shape",))
def _sample_power_spherical(key, loc, concentration, sample_shape):
    """s = (1 − μᵀz)/2 ~ Beta(β, α) as G_β/(G_β + G_α): with v ~ N(0, I_{d−1}), |v|²/2 is the
    Gamma(β = (d−1)/2) draw and v/|v| the uniform tangent, independent of each other, so one
    Gaussian vector gives both; only G_α depends on κ (implicitly reparameterized)."""
    key_gamma, key_normal = random.split(key)
    dim = loc.shape[-1]
    shape = sample_shape + jnp.shape(concentration)
    alpha = concentration + (dim - 1) / 2
    v = random.normal(key_normal, shape + (dim - 1,), dtype=loc.dtype)
    gamma_beta = (v * v).sum(-1) / 2
    # jax.random.gamma's draw with this library's implicit gradient (faster than XLA's
    # random_gamma_grad, and exact)
    gamma_alpha = _implicit_standard_gamma(key_gamma, jnp.broadcast_to(alpha, shape))
    total = gamma_beta + gamma_alpha
    # z relative to e₁: (1 − 2s, 2 sqrt(s(1 − s))·v/|v|) = (G_α − G_β, sqrt(2G_α)·v)/(G_α + G_β)
    first = (gamma_alpha - gamma_beta) / total
    return embed_rotate(loc, first, jnp.sqrt(2 * gamma_alpha) / total, v)


class PowerSpherical(SphereLocConcentration):
    r"""Power Spherical distribution on the unit sphere S^{d−1}, any d ≥ 2.

    .. math:: p(z) = C(κ, d)\, (1 + μ^⊤ z)^κ, \quad
        C(κ, d)^{-1} = 2^{α+β} π^{β} \frac{Γ(α)}{Γ(α+β)}, \;
        α = \frac{d-1}{2} + κ, \; β = \frac{d-1}{2}      \quad [1, eq. 5–6]

    A vMF-like family without Bessel functions and without rejection: (1 + μᵀz)/2 ~ Beta(α, β)
    [1, §3.2], the tangent direction is uniform, and a Householder reflection maps e₁ to μ.
    ``sample`` is fully reparameterized: ``s = (1 − μᵀz)/2 ~ Beta(β, α)`` is G_β/(G_β + G_α)
    with G_β = |v|²/2 from the same Gaussian vector v whose direction is the tangent part, and
    G_α drawn by ``jax.random.gamma`` with the implicit gradient of
    :class:`~numpyro_backend.distributions.ImplicitGamma` (one Gamma per sample instead of a
    Beta's two).

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
