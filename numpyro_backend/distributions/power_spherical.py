"""Power Spherical distribution on the sphere S^{d−1} ⊂ R^d (De Cao & Aziz 2020), NumPyro / JAX."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import jax.random as random
import numpy as np
from jax import lax
from jax.scipy.special import digamma, gammaln
from numpyro.distributions.batch_util import _default_vmap_over, vmap_over
from numpyro.distributions.util import is_prng_key, validate_sample

from numpyro_backend.distributions.implicit import _implicit_standard_gamma
from numpyro_backend.distributions.von_mises_fisher import SphereLocConcentration
from numpyro_backend.ops.sphere import embed_rotate

__all__ = ["PowerSpherical"]


#: largest ambient dimension sampled from uniforms (:func:`_log_beta_from_uniforms`, about
#: d/2 uniforms and logarithms per sample); above it one Gamma draw per sample is cheaper
_UNIFORM_MAX_DIM = 130


def _log_beta_from_uniforms(key, a, dim: int, shape, dtype):
    """log t for t ~ Beta(a, b), b = (d − 1)/2, 3 ≤ d ≤ _UNIFORM_MAX_DIM, from uniforms only,
    with an explicit pathwise derivative in a (no rejection, no implicit gradient).

    Derivation. (i) If B₁ ~ Beta(a, b) and B₂ ~ Beta(a + b, c) are independent, B₁B₂ ~
    Beta(a, b + c): with G_a, G_b, G_c independent Gammas, B₁ = G_a/(G_a + G_b) and
    B₂ = (G_a + G_b)/(G_a + G_b + G_c) are independent (Lukacs) and their product is
    G_a/(G_a + G_b + G_c). (ii) Beta(x, 1) has CDF t^x, so U^{1/x} ~ Beta(x, 1), i.e.
    exp(−E/x) with E = −log U ~ Exp(1). By (i) repeatedly, Π_{j<n} U_j^{1/(a+j)} ~ Beta(a, n).
    (iii) Beta(α, ½) for α > ½ (Ulrich's polar construction): a point of the unit disk with
    uniform angle Θ and radial density ∝ r(1 − r²)^{α−3/2} has first coordinate X = R cos Θ
    with density ∝ ∫(1 − x² − y²)^{α−3/2} dy ∝ (1 − x²)^{α−1}, so (1 + X)/2 ~ Beta(α, α) and
    X² ~ Beta(½, α), i.e. 1 − X² ~ Beta(α, ½); here 1 − R² ~ Beta(α − ½, 1) = U^{1/(α−½)} by
    (ii), so 1 − X² = 1 − cos²Θ·(1 − U^{1/(α−½)}).
    Odd d: b = n = (d − 1)/2 is an integer and t = Π_{j<n} U_j^{1/(a+j)} (ii).
    Even d: b = n + ½ with n = (d − 2)/2 ≥ 1; t = B₁B₂ with B₁ ~ Beta(a, n) from (ii) and
    B₂ ~ Beta(a + n, ½) from (iii) (α − ½ = a + n − ½ ≥ d − 2 > 0), Beta(a, b) by (i).
    log t = −Σ_j E_j/(a + j) [+ log1p(−cos²(πV)·q), q = −expm1(−E_n/(a + n − ½))] keeps
    1 − t = −expm1(log t) precise when t → 1 (large κ). Every factor is a smooth function of
    a at fixed uniforms, so autodiff gives the exact pathwise dt/da.
    """
    n = (dim - 1) // 2 if dim % 2 else (dim - 2) // 2
    key_exp, key_angle = random.split(key)
    even = dim % 2 == 0
    exp_draws = random.exponential(key_exp, shape + (n + even,), dtype=dtype)
    offsets = np.arange(n + even, dtype=np.float64)
    offsets[n:] -= 0.5  # the Beta(a + n, ½) factor's 1 − R² ~ Beta(a + n − ½, 1)
    offsets = jnp.asarray(offsets, dtype=dtype)
    rates = 1 / (a[..., None] + offsets)  # 1/(a + j), j < n, and 1/(a + n − ½) last if even
    scaled = exp_draws * rates
    log_t = -scaled[..., :n].sum(-1)
    if even:
        q = -jnp.expm1(-scaled[..., n])
        cos_sq = jnp.cos(math.pi * random.uniform(key_angle, shape, dtype=dtype)) ** 2
        log_t = log_t + jnp.log1p(-cos_sq * q)
    return log_t


@partial(jax.jit, static_argnames=("sample_shape",))
def _sample_power_spherical(key, loc, concentration, sample_shape):
    dim = loc.shape[-1]
    if 3 <= dim <= _UNIFORM_MAX_DIM:
        return _sample_power_spherical_uniforms(key, loc, concentration, sample_shape)
    return _sample_power_spherical_gamma(key, loc, concentration, sample_shape)


def _sample_power_spherical_uniforms(key, loc, concentration, sample_shape):
    """t = (1 + μᵀz)/2 ~ Beta(α, β) from uniforms (:func:`_log_beta_from_uniforms`) and the
    tangent direction v/|v| of a Gaussian vector v ~ N(0, I_{d−1}) (independent of t)."""
    key_beta, key_normal = random.split(key)
    dim = loc.shape[-1]
    shape = sample_shape + jnp.shape(concentration)
    alpha = jnp.broadcast_to(concentration + (dim - 1) / 2, jnp.shape(concentration))
    log_t = _log_beta_from_uniforms(key_beta, alpha, dim, shape, loc.dtype)
    t = jnp.exp(log_t)
    s = -jnp.expm1(log_t)  # 1 − t, precise when t → 1
    v = random.normal(key_normal, shape + (dim - 1,), dtype=loc.dtype)
    # z relative to e₁: (t − s, 2 sqrt(t s)·v/|v|)
    radius = 2 * jnp.sqrt(t * s) * lax.rsqrt(jnp.einsum("...d,...d->...", v, v))
    return embed_rotate(loc, t - s, radius, v)


def _sample_power_spherical_gamma(key, loc, concentration, sample_shape):
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
