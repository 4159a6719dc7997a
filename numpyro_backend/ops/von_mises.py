"""The von Mises CDF and the implicit gradient of a von Mises sample in κ (JAX).

For the centered von Mises density p(x; κ) = e^(κ cos x) / (2π I_0(κ)) on [-π, π), the
implicit reparameterization gradient ([1], eq. 7) is

    dx/dκ = -(∂F(x; κ)/∂κ) / p(x; κ) = -∫_{-π}^x (cos t - A(κ)) e^(κ(cos t - cos x)) dt,

with A = I_1/I_0 (differentiating F = ∫ p under the integral sign). Two regimes:

* **series** (κ < 2.5): Hill's expansion F = 1/2 + x/(2π) + (1/π) Σ_n (I_n/I_0) sin(nx)/n
  ([2], eq. 6) with the Bessel ratios from the backward recurrence
  r_n = 1/(2n/κ + r_(n+1)), differentiated in κ in forward mode, as in [1], appendix;
* **quadrature** (κ ≥ 2.5): the integral above by 32-point Gauss-Legendre over the window
  where e^(κ(cos t - cos x)) has not yet dropped by e^-45. [1] uses Hill's normal
  approximation ([2], eq. 14) here; it is accurate to ~1e-8 *absolute* in F, which leaves
  ∂F/∂κ with large relative errors near the mode, while the integral is exact up to the
  quadrature error at every κ (≤ 1e-12 relative up to κ = 1e5, tests/test_implicit.py).

Cancellation is avoided by symmetry (dx/dκ is odd in x) and by integrating, for x ≤ 0, over
the side of x on which cos t - A keeps one sign: [-π, x] when cos x ≤ A, else [x, 0] (where
∂F/∂κ(0) = 0). cos t - cos x = -2 sin((t+x)/2) sin((t-x)/2) keeps the exponent exact at
large κ. Both regimes are evaluated everywhere and picked with ``jnp.where`` (jit/vmap). The
same algorithm, constants and names as ``pyro_reparam_ext.ops.von_mises``.

References:
    [1] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients.
        NeurIPS.
    [2] G. W. Hill (1977). Algorithm 518: Incomplete Bessel function I_0. The von Mises
        distribution. ACM Transactions on Mathematical Software 3(3).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import i0e, i1e

__all__ = ["centered_von_mises_grad", "von_mises_cdf"]

#: below this concentration Hill's series is used
SERIES_CONCENTRATION = 2.5
#: terms of the series (enough for κ < SERIES_CONCENTRATION)
NUM_SERIES_TERMS = 28
#: log of the integrand's drop at the edge of the quadrature window
_WINDOW_LOG_DROP = 45.0
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(32)


def _bessel_ratio(kappa):
    """A(κ) = I_1(κ)/I_0(κ), and 1 - A(κ) without cancellation for small κ."""
    i0 = i0e(kappa)
    i1 = i1e(kappa)
    return i1 / i0, (i0 - i1) / i0


def _series(x, kappa):
    """Hill's series: (F(x; κ), ∂F/∂κ) for x ∈ [-π, π], with forward-mode derivatives."""

    def step(i, carry):
        ratio, dratio, v, dv = carry  # r_n = I_n / I_(n-1); v_n = r_n (sin(nx)/n + v_(n+1))
        n = NUM_SERIES_TERMS - i
        denominator = 2 * n / kappa + ratio
        ddenominator = -2 * n / (kappa * kappa) + dratio
        ratio = 1 / denominator
        dratio = -ddenominator * ratio * ratio
        multiplier = jnp.sin(n * x) / n + v
        return ratio, dratio, ratio * multiplier, dratio * multiplier + ratio * dv

    zero = jnp.zeros_like(x)
    # lax.fori_loop rather than a Python loop: the same arithmetic, a fraction of the
    # compile time
    _, _, v, dv = lax.fori_loop(0, NUM_SERIES_TERMS, step, (zero, zero, zero, zero))
    cdf = 0.5 + x / (2 * math.pi) + v / math.pi
    return cdf, dv / math.pi


def _log_density(x, kappa):
    # log p = κ(cos x - 1) - log(2π i0e(κ)), written with sin² to stay exact near x = 0
    return -2 * kappa * jnp.sin(x / 2) ** 2 - jnp.log(2 * math.pi * i0e(kappa))


def _quadrature(y, kappa, integrand_kind: str):
    """Integrals over t on the side of y ≤ 0 chosen as in the module docstring.

    ``integrand_kind="grad"``: dx/dκ at y; ``"cdf"``: F(y) / p(y) (the CDF scaled by the
    density, integrated over [-π, y] only).
    """
    ratio, one_minus_ratio = _bessel_ratio(kappa)
    sin_half_y = jnp.sin(y / 2)
    # cos y ≤ A  <=>  2 sin²(y/2) ≥ 1 - A: the integrand keeps its sign on [-π, y]
    left = (2 * sin_half_y**2 >= one_minus_ratio) | (integrand_kind == "cdf")
    # window: cos t ≥ cos y - drop/κ on [t_low, y]
    cos_low = (1 - 2 * sin_half_y**2) - _WINDOW_LOG_DROP / kappa
    t_low = -jnp.arccos(jnp.clip(cos_low, -1.0, 1.0))
    low = jnp.where(left, jnp.minimum(t_low, y), y)
    high = jnp.where(left, y, jnp.zeros_like(y))
    half = (high - low) / 2
    middle = (high + low) / 2
    nodes = jnp.asarray(_GAUSS_NODES, dtype=y.dtype)
    weights = jnp.asarray(_GAUSS_WEIGHTS, dtype=y.dtype)

    def step(k, total):
        t = middle + half * nodes[k]
        integrand = jnp.exp(-2 * kappa * jnp.sin((t + y) / 2) * jnp.sin((t - y) / 2))
        if integrand_kind != "cdf":
            integrand = integrand * (one_minus_ratio - 2 * jnp.sin(t / 2) ** 2)
        return total + weights[k] * integrand

    total = lax.fori_loop(0, len(_GAUSS_NODES), step, jnp.zeros_like(y))
    integral = half * total
    if integrand_kind == "cdf":
        return integral
    # left: -∫_{low}^{y}; right: +∫_{y}^{0}
    return jnp.where(left, -integral, integral)


def _wrap(value):
    """value = x + 2π·periods with x ∈ [-π, π]."""
    periods = jnp.round(value / (2 * math.pi))
    return value - 2 * math.pi * periods, periods


def centered_von_mises_grad(concentration: jax.Array, value: jax.Array) -> jax.Array:
    """Implicit reparameterization gradient dx/dκ of a centered von Mises sample x.

    Example::

        >>> kappa = jnp.array([0.5, 100.0])
        >>> x = numpyro.distributions.VonMises(0.0, kappa).sample(jax.random.PRNGKey(0))
        >>> dx_dkappa = centered_von_mises_grad(kappa, x)

    :param jax.Array concentration: κ > 0.
    :param jax.Array value: x (taken modulo 2π into [-π, π]).
    :returns: -(∂F(x; κ)/∂κ) / p(x; κ) (module docstring).
    """
    kappa, value = jnp.broadcast_arrays(concentration, value)
    x, _ = _wrap(value)
    use_series = kappa < SERIES_CONCENTRATION
    kappa_series = jnp.where(use_series, kappa, jnp.ones_like(kappa))
    _, dcdf = _series(x, kappa_series)
    series = -dcdf * jnp.exp(-_log_density(x, kappa_series))
    # dx/dκ is odd in x: integrate at y = -|x| ≤ 0 and restore the sign
    kappa_quadrature = jnp.where(use_series, jnp.full_like(kappa, 10.0), kappa)
    quadrature = _quadrature(-jnp.abs(x), kappa_quadrature, "grad")
    quadrature = jnp.where(x > 0, -quadrature, quadrature)
    return jnp.where(use_series, series, quadrature)


def _cdf_value(x, kappa):
    use_series = kappa < SERIES_CONCENTRATION
    series, _ = _series(x, jnp.where(use_series, kappa, jnp.ones_like(kappa)))
    kappa_quadrature = jnp.where(use_series, jnp.full_like(kappa, 10.0), kappa)
    y = -jnp.abs(x)
    lower = _quadrature(y, kappa_quadrature, "cdf") * jnp.exp(_log_density(y, kappa_quadrature))
    quadrature = jnp.where(x > 0, 1 - lower, lower)
    return jnp.where(use_series, jnp.clip(series, 0.0, 1.0), quadrature)


@jax.custom_jvp
def von_mises_cdf(value: jax.Array, concentration: jax.Array) -> jax.Array:
    """CDF of the centered von Mises distribution, differentiable in value and κ.

    F is taken from -π, so F(π) = 1, and continued by F(x + 2π) = F(x) + 1.

    Example::

        >>> von_mises_cdf(0.3, 2.0)

    :param jax.Array value: x.
    :param jax.Array concentration: κ > 0.
    """
    value, concentration = jnp.broadcast_arrays(value, concentration)
    x, periods = _wrap(value)
    return _cdf_value(x, concentration) + periods


@von_mises_cdf.defjvp
def _von_mises_cdf_jvp(primals, tangents):
    value, kappa = primals
    value_dot, kappa_dot = tangents
    cdf = von_mises_cdf(value, kappa)
    x, _ = _wrap(value)
    density = jnp.exp(_log_density(x, kappa))
    dcdf_dkappa = -centered_von_mises_grad(kappa, x) * density
    return cdf, density * value_dot + dcdf_dkappa * kappa_dot
