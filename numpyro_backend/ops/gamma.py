"""Regularized incomplete gamma function P(α, x) and its derivative in α (JAX).

The implicit reparameterization gradient of a standard Gamma(α, 1) sample x is ([1], eq. 7)

    dx/dα = -(∂P(α, x)/∂α) / p(x; α),        p(x; α) = x^(α-1) e^(-x) / Γ(α).

:func:`standard_gamma_grad` computes this ratio directly, never forming ∂P/∂α and p
separately (both underflow long before their ratio does). Four regimes, chosen per element
with ``jnp.where`` and evaluated with a fixed amount of work (jit/vmap-compatible, no Python
control flow on traced values):

* **series** (α < 4, x < α + 2): P = x^α e^(-x) / Γ(α+1) · S with S = Σ_n x^n / (α+1)_n
  ([2], eq. 6.5.29), differentiated term by term in forward mode;
* **continued fraction** (α < 4, x ≥ α + 2): Q = 1 - P = x^α e^(-x) / Γ(α) · C with the
  Legendre continued fraction C ([2], eq. 6.5.31; modified Lentz), differentiated in forward
  mode;
* **uniform asymptotic expansion** (α ≥ 20, |η| ≤ 0.6 with λ = x/α and
  η = sign(λ - 1)√(2(λ - 1 - log λ))): differentiating Temme's expansion of Q(α, x)
  ([4] 8.12; [3] §11.2) in α at fixed x and dividing by p(x; α), every exponential cancels:
  dx/dα = λ Σ_j d_j(η) α^-j, with d_j power series in η whose exact coefficients
  tests/make_gamma_asymptotic.py derives; the table keeps the terms above 1e-16 at the regime
  edge (a ~100-term polynomial in η and 1/α: no transcendental function but one log1p and a
  square root per element; truncation ≤ 5e-14 relative);
* **quadrature** (α ≥ 4 elsewhere): the exact integral ∂P/∂α = ∫_0^x p(t; α)(log t - ψ(α)) dt,
  taken in u = log(t/x) over a window that holds all but e^-45 of the integrand, by 32-point
  Gauss-Legendre quadrature. The integrand is a smooth bump of width ~1/√α there, so a fixed
  number of nodes gives full double accuracy uniformly in α, where series and continued
  fraction need O(√α) terms. The side of x that carries no sign change of log t - ψ(α) is
  integrated (the left tail for x < e^ψ(α), the right tail otherwise), so the sum never
  cancels.

Relative accuracy of dx/dα against mpmath is ≤ 1e-12 over α ∈ [1e-4, 1e4] and quantiles
[0.01, 0.99] in float64 (tests/test_implicit.py). The same algorithm, constants and names as
``pyro_reparam_ext.ops.gamma``.

References:
    [1] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients.
        NeurIPS.
    [2] M. Abramowitz, I. A. Stegun (1972). Handbook of Mathematical Functions, ch. 6.5.
    [3] N. M. Temme (1996). Special Functions: An Introduction to the Classical Functions of
        Mathematical Physics, ch. 11.
    [4] NIST Digital Library of Mathematical Functions, §8.12.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import digamma, gammaln, xlogy
from jax.scipy.special import gammainc as _gammainc_value

__all__ = ["gammainc", "gammainc_grad_a", "standard_gamma_grad"]

#: below this concentration the series / continued fraction regimes are used
LARGE_CONCENTRATION = 4.0
#: terms of the series and of the continued fraction (enough for α < LARGE_CONCENTRATION)
NUM_SERIES_TERMS = 32
NUM_FRACTION_TERMS = 40
#: log of the integrand's drop at the edge of the quadrature window
_WINDOW_LOG_DROP = 45.0
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(32)
#: from this concentration on, elements with |η| ≤ ASYMPTOTIC_ETA use the uniform asymptotic
#: expansion instead of the quadrature
ASYMPTOTIC_CONCENTRATION = 20.0
ASYMPTOTIC_ETA = 0.6
#: d_jn of dx/dα = λ Σ_j Σ_n d_jn η^n α^-j (module docstring), exact rationals rounded to
#: float64, derived by tests/make_gamma_asymptotic.py; each row j cut after its last
#: coefficient with |d_jn| ASYMPTOTIC_ETA^n ASYMPTOTIC_CONCENTRATION^-j > 1e-16
# fmt: off
_ASYMPTOTIC_COEFFICIENTS = (
    (1.0, -0.5, 0.16666666666666666, -0.041666666666666664, 0.007407407407407408,
     -0.0005787037037037037, -0.0001763668430335097, 8.93775720164609e-05, -1.959631589261219e-05,
     1.092724255339996e-06, 9.2703110535758e-07, -4.148355670476543e-07, 8.832976368413039e-08,
     -3.353926771700749e-09, -5.130904892120154e-09, 2.1910180092266765e-09,
     -4.573849791118395e-10, 1.2757096997473124e-11, 2.915386066275213e-11,
     -1.2180974010333708e-11,),
    (0.16666666666666666, -0.08333333333333333, 0.022222222222222223, -0.0023148148148148147,
     -0.0008818342151675485, 0.0005362654320987655, -0.00013717421124828533,
     8.741794042719968e-06, 8.34327994821822e-06, -4.148355670476543e-06, 9.716274005254345e-07,
     -4.024712126040899e-08, -6.6701763597562e-08, 3.067425212917347e-08, -6.860774686677592e-09,
     2.0411355195956999e-10, 4.956156312667861e-10, -2.1925753218600676e-10,
     4.776285816108467e-11,),
    (0.016666666666666666, 0.0, -0.004761904761904762, 0.002777777777777778,
     -0.0007936507936507937, 4.6296296296296294e-05, 7.001229223451445e-05,
     -3.751732174351222e-05, 9.56176882102808e-06, -3.7357907268988987e-07,
     -8.151427904514324e-07, 3.993242654745386e-07, -9.519569479813294e-08,
     2.6965336111891037e-09, 8.006080930120551e-09, -3.729504229995027e-09, 8.548724701223986e-10,),
    (-0.009523809523809525, 0.008333333333333333, -0.0031746031746031746, 0.0002314814814814815,
     0.00042007375340708675, -0.00026262125220458555, 7.649415056822464e-05,
     -3.3622116542090087e-06, -8.151427904514324e-06, 4.392566920219925e-06,
     -1.1423483375775953e-06, 3.505493694545835e-08, 1.1208513302168772e-07,
     -5.59425634499254e-08, 1.3677959521958378e-08,),
    (-0.0035714285714285713, 0.0, 0.0018037518037518038, -0.0013227513227513227,
     0.00045602545602545604, -2.2045855379188714e-05, -6.553802850099147e-05,
     3.9551314352901655e-05, -1.1408032857353326e-05, 3.7869038028258095e-07,
     1.3464937589883214e-06, -7.273092236285586e-07, 1.9140591822588196e-07,
     -4.77741957722312e-09, -2.05207113567091e-08,),
    (0.0036075036075036075, -0.003968253968253968, 0.0018241018241018242, -0.00011022927689594356,
     -0.0003932281710059488, 0.0002768592004703116, -9.126426285882661e-05,
     3.4082134225432285e-06, 1.3464937589883214e-05, -8.000401459914145e-06,
     2.2968710187105837e-06, -6.210645450390055e-08, -2.8728995899392734e-07,),
    (0.0023254523254523257, 0.0, -0.0016317016317016317, 0.001388888888888889,
     -0.0005461858403034874, 2.3148148148148147e-05, 0.00010787502703567376,
     -7.201228555395222e-05, 2.2961352797380776e-05, -6.798786537726866e-07,
     -3.4481805377976373e-06, 2.0265065171012944e-06,),
    (-0.0032634032634032634, 0.004166666666666667, -0.0021847433612139497, 0.00011574074074074075,
     0.0006472501622140425, -0.0005040859988776655, 0.0001836908223790462, -6.11890788395418e-06,
     -3.448180537797637e-05, 2.229157168811424e-05,),
    (-0.00298059783353901, 0.0, 0.0026507290439178985, -0.0025252525252525255,
     0.0011006752105823313, -4.208754208754209e-05, -0.0002760177456562494,
     0.00020063325122848932,),
    (0.005301458087835797, -0.007575757575757576, 0.004402700842329325, -0.00021043771043771043,
     -0.0016561064739374965, 0.0014044327585994252,),
    (0.006280149159406125, 0.0, -0.006736659341316765, 0.0070309320309320305,),
)
# fmt: on


def _lambda_bounds(eta: float) -> tuple[float, float]:
    """The two roots λ < 1 < λ' of λ - 1 - log λ = η²/2 (Newton, from the safe sides)."""
    target = 0.5 * eta * eta
    roots = []
    for lam in (1e-3, 1e3):
        for _ in range(60):
            lam -= (lam - 1 - math.log(lam) - target) / (1 - 1 / lam)
        roots.append(lam)
    return roots[0], roots[1]


_ASYMPTOTIC_LAMBDA_LOW, _ASYMPTOTIC_LAMBDA_HIGH = _lambda_bounds(ASYMPTOTIC_ETA)


@functools.cache
def _asymptotic_rows(dtype) -> tuple[tuple[float, ...], ...]:
    """The rows of _ASYMPTOTIC_COEFFICIENTS cut to the terms that matter at ``dtype``:
    |d_jn| η^n α^-j > 50 eps at the regime's edge (η = 0.6, α = 20); float64 keeps 101 of
    the 139 coefficients (truncation ≤ 5e-14 relative, measured), float32 12."""
    tolerance = 50 * float(jnp.finfo(dtype).eps)
    rows = []
    for j, row in enumerate(_ASYMPTOTIC_COEFFICIENTS):
        scale = ASYMPTOTIC_CONCENTRATION**-j
        kept = [n for n, c in enumerate(row) if abs(c) * ASYMPTOTIC_ETA**n * scale > tolerance]
        if not kept:
            break
        rows.append(row[: kept[-1] + 1])
    return tuple(rows)


def _series_ratio(a, x):
    """dx/dα in the series regime: -(x/α)·(S·(log x - ψ(α+1)) + ∂S/∂α)."""

    def step(n, carry):
        term, dterm, total, dtotal = carry  # t_n = x^n / (α+1)_n and ∂t_n/∂α
        denominator = a + n
        ratio = x / denominator
        # ∂/∂α [t_{n-1} x/(α+n)] = (∂t_{n-1}/∂α - t_{n-1}/(α+n)) · x/(α+n)
        dterm = (dterm - term / denominator) * ratio
        term = term * ratio
        return term, dterm, total + term, dtotal + dterm

    one, zero = jnp.ones_like(x), jnp.zeros_like(x)
    # lax.fori_loop rather than a Python loop: the same arithmetic, a fraction of the
    # compile time
    _, _, total, dtotal = lax.fori_loop(1, NUM_SERIES_TERMS + 1, step, (one, zero, one, zero))
    log_x_minus_digamma = jnp.log(x) - digamma(a + 1)
    return -(x / a) * (total * log_x_minus_digamma + dtotal)


def _continued_fraction_ratio(a, x):
    """dx/dα in the continued-fraction regime: x·(C·(log x - ψ(α)) + ∂C/∂α).

    C = 1/(b_0 - a_1/(b_1 - a_2/(b_2 - ...))) with b_i = x + 2i + 1 - α, a_i = i(i - α),
    evaluated by the modified Lentz algorithm with forward-mode derivatives in α.
    """

    def step(i, carry):
        b, c, dc, d, dd, h, dh = carry
        an = -i * (i - a)  # ∂an/∂α = i
        b = b + 2
        denominator = an * d + b
        ddenominator = i * d + an * dd - 1
        d = 1 / denominator
        dd = -ddenominator * d * d
        # c = b + an/c (Lentz's C_i; C_0 = ∞ so C_1 = b_1)
        dc = jnp.where(i == 1, -1.0, -1 + i / c - an * dc / (c * c))
        c = jnp.where(i == 1, b, b + an / c)
        delta = d * c
        ddelta = dd * c + d * dc
        return b, c, dc, d, dd, h * delta, dh * delta + h * ddelta

    b = x + 1 - a
    d = 1 / b  # Lentz's D_i
    dd = d * d  # ∂D/∂α = -∂b/∂α / b² with ∂b/∂α = -1
    one = jnp.ones_like(x)
    carry = (b, one, -one, d, dd, d, dd)
    _, _, _, _, _, h, dh = lax.fori_loop(1, NUM_FRACTION_TERMS + 1, step, carry)
    return x * (h * (jnp.log(x) - digamma(a)) + dh)


def _quadrature_ratio(a, x):
    """dx/dα for large α by Gauss-Legendre quadrature of the exact integral.

    With u = log(t/x), p(t)/p(x) dt = x·exp(g(u)) du, g(u) = αu - x·expm1(u), so
        x < e^ψ(α):  dx/dα = -x ∫_{-∞}^0 e^{g(u)} (u + log x - ψ(α)) du   (integrand < 0)
        x ≥ e^ψ(α):  dx/dα = +x ∫_0^∞  e^{g(u)} (u + log x - ψ(α)) du    (integrand > 0)
    truncated where g has dropped by _WINDOW_LOG_DROP below its maximum.
    """
    shift = jnp.log(x) - digamma(a)
    left = shift < 0
    drop = _WINDOW_LOG_DROP
    # Window length: the root of the quadratic lower/upper bound of g on each side.
    # Right: x(e^U - 1) - αU ≥ (x-α)U + xU²/2 = drop  -> this U is already wide enough.
    # Left: αL - x(1 - e^-L) ≤ (α-x)L + xL²/2; one Newton step from its root (convex,
    # increasing function) lands at or beyond the true root.
    gap = jnp.where(left, a - x, x - a)
    width = 2 * drop / (gap + jnp.sqrt(gap * gap + 2 * drop * x))
    residual = a * width + x * jnp.expm1(-width) - drop
    newton = width - residual / (a - x * jnp.exp(-width))
    width = jnp.where(left, jnp.maximum(width, newton), width)
    half = jnp.where(left, -0.5 * width, 0.5 * width)  # u runs over [0, ±width]
    nodes = jnp.asarray(_GAUSS_NODES, dtype=x.dtype)
    weights = jnp.asarray(_GAUSS_WEIGHTS, dtype=x.dtype)

    def step(k, total):
        u = half * (1 + nodes[k])
        g = a * u - x * jnp.expm1(u)
        return total + weights[k] * jnp.exp(g) * (u + shift)

    total = lax.fori_loop(0, len(_GAUSS_NODES), step, jnp.zeros_like(x))
    return x * half * total


def _asymptotic_ratio(a, x):
    """dx/dα for large α and |η| ≤ ASYMPTOTIC_ETA: λ Σ_j α^-j Σ_n d_jn η^n (Horner in η for
    each j, then in 1/α), with λ = x/α and η = sign(λ - 1) √(2(λ - 1 - log λ))."""
    w = x / a - 1  # λ - 1
    eta = jnp.copysign(jnp.sqrt(jnp.maximum(2 * (w - jnp.log1p(w)), 0)), w)
    inverse_a = 1 / a
    total = None
    for row in reversed(_asymptotic_rows(jnp.dtype(x.dtype))):
        value = jnp.full_like(x, row[-1])
        for coefficient in reversed(row[:-1]):
            value = value * eta + coefficient
        total = value if total is None else value + total * inverse_a
    return total * (w + 1)


def standard_gamma_grad(concentration: jax.Array, value: jax.Array) -> jax.Array:
    """Implicit reparameterization gradient dx/dα of a standard Gamma(α, 1) sample x.

    Example::

        >>> alpha = jnp.array([0.5, 3.0])
        >>> x = jax.random.gamma(jax.random.PRNGKey(0), alpha)
        >>> dx_dalpha = standard_gamma_grad(alpha, x)

    :param jax.Array concentration: α > 0.
    :param jax.Array value: x ≥ 0 (broadcast against ``concentration``).
    :returns: -(∂P(α, x)/∂α) / p(x; α) (module docstring), 0 where x = 0.
    """
    a, x = jnp.broadcast_arrays(concentration, value)
    positive = x > 0
    large = a >= LARGE_CONCENTRATION
    use_series = ~large & (x < a + 2)
    # |η| ≤ ASYMPTOTIC_ETA ⇔ λ_low ≤ x/α ≤ λ_high (no logarithm needed for the mask)
    asymptotic = (
        (a >= ASYMPTOTIC_CONCENTRATION)
        & (x >= a * _ASYMPTOTIC_LAMBDA_LOW)
        & (x <= a * _ASYMPTOTIC_LAMBDA_HIGH)
    )
    regimes = (
        (positive & use_series, _series_ratio),
        (positive & ~use_series & ~large, _continued_fraction_ratio),
        (positive & large & ~asymptotic, _quadrature_ratio),
        (asymptotic, _asymptotic_ratio),
    )
    # Every regime on every element, each fed safe dummy inputs where it is not used (so the
    # unused branches stay finite and their gradients are not NaN), and jnp.where picks.
    result = jnp.zeros_like(x)
    dummy = jnp.full_like(x, LARGE_CONCENTRATION / 2)
    for mask, regime in regimes:
        value = regime(jnp.where(mask, a, dummy), jnp.where(mask, x, dummy))
        result = jnp.where(mask, value, result)
    return result


def _log_gamma_density(a, x):
    return xlogy(a - 1, x) - x - gammaln(a)


def gammainc_grad_a(a: jax.Array, x: jax.Array) -> jax.Array:
    """∂P(α, x)/∂α of the regularized lower incomplete gamma function.

    Example::

        >>> gammainc_grad_a(2.0, 1.5)  # ≈ -0.3135

    :param jax.Array a: α > 0.
    :param jax.Array x: x ≥ 0.
    """
    a, x = jnp.broadcast_arrays(jnp.asarray(a), jnp.asarray(x))
    density = jnp.exp(_log_gamma_density(a, x))
    return jnp.where(x > 0, -standard_gamma_grad(a, x) * density, 0.0)


@jax.custom_jvp
def gammainc(a: jax.Array, x: jax.Array) -> jax.Array:
    """Regularized lower incomplete gamma function P(α, x), differentiable in α and in x.

    The α-derivative comes from :func:`gammainc_grad_a` (instead of XLA's ``igamma_grad_a``,
    so both backends share one algorithm and its accuracy).

    Example::

        >>> jax.grad(gammainc)(2.0, 1.5)  # ≈ -0.3135

    :param jax.Array a: α > 0.
    :param jax.Array x: x ≥ 0.
    """
    return _gammainc_value(a, x)


@gammainc.defjvp
def _gammainc_jvp(primals, tangents):
    a, x = primals
    a_dot, x_dot = tangents
    value = gammainc(a, x)
    density = jnp.exp(_log_gamma_density(a, x))
    tangent = gammainc_grad_a(a, x) * a_dot + density * x_dot
    return value, tangent
