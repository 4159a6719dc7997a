"""Sampling on the unit sphere S^{d−1} ⊂ R^d with pathwise gradients (JAX).

Building blocks of :class:`~numpyro_backend.distributions.VonMisesFisher` and
:class:`~numpyro_backend.distributions.PowerSpherical`; jit/vmap/grad compatible, explicit
PRNG keys:

* :func:`householder_rotate` maps a point given in the frame where the mean direction is the
  first basis vector e₁ to the frame of ``loc`` by one Householder reflection, in O(d) per
  point (no d×d matrix, no QR);
* :func:`uniform_tangent` draws directions uniformly on S^{d−2} (the tangent part);
* :func:`wood_sample_t` draws t = 1 − μᵀz of a von Mises–Fisher sample by Wood's rejection
  sampler [1], vectorized with masked resampling inside ``lax.while_loop``;
* :func:`vmf_marginal_sample_t` attaches the implicit reparameterization gradient [2]
  dt/dκ = (∂F/∂κ)/p(w) (w = 1 − t, F the CDF of w) to such a sample through
  ``jax.custom_jvp``; for d = 3 it is replaced by the exact inverse-CDF sampler.

The marginal of w = μᵀz has density ∝ exp(κw)(1 − w²)^{(d−3)/2} on [−1, 1] [1, eq. 3].
Working with t = 1 − w instead of w keeps full relative precision at large κ, where
t ≈ (d − 1)/(2κ) is tiny.

Example::

    >>> f = lambda k: (1 - vmf_marginal_sample_t(jax.random.PRNGKey(0), k, 5, (1000,))).mean()
    >>> jax.grad(f)(10.0)                     # unbiased estimate of dA_5/dκ

References:
    [1] A. T. A. Wood (1994). Simulation of the von Mises Fisher distribution.
        Communications in Statistics — Simulation and Computation 23(1), 157–164.
    [2] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients. NeurIPS.
    [3] T. R. Davidson, L. Falorsi, N. De Cao, T. Kipf, J. M. Tomczak (2018). Hyperspherical
        Variational Auto-Encoders. UAI (Householder reflection, Algorithm 1).
    [4] G. Ulrich (1984). Computer generation of distributions on the m-sphere. Journal of the
        Royal Statistical Society C (Applied Statistics) 33(2), 158–163.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from numpyro_backend.ops.bessel import bessel_iv_ratio

__all__ = [
    "householder_rotate",
    "uniform_tangent",
    "vmf_marginal_dt_dconcentration",
    "vmf_marginal_sample_t",
    "wood_sample_t",
]


def householder_rotate(loc: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Rotate points ``y`` given relative to e₁ into the frame where e₁ ↦ ``loc``.

    Uses the reflection H = I − 2uuᵀ/|u|² with u = e₁ + s·loc, s = sign(loc₁), followed by
    the sign flip −s: the map y ↦ −s·H y is orthogonal and sends e₁ to loc. Choosing the sign
    keeps |u|² = 2(1 + |loc₁|) ≥ 2, so it is stable for every loc (the textbook
    u = e₁ − loc [3] divides by zero at loc = e₁). ``loc`` is normalized first, so gradients
    with respect to it are tangent to the sphere.

    :param loc: mean directions, shape ``batch + (d,)``.
    :param y: points, shape ``sample + batch + (d,)``.
    """
    loc = loc / jnp.linalg.norm(loc, axis=-1, keepdims=True)
    one = jnp.ones((), dtype=loc.dtype)  # a float32 program stays free of float64 under x64
    sign = jnp.where(loc[..., :1] >= 0, one, -one)
    e1 = jnp.zeros(loc.shape[-1], dtype=loc.dtype).at[0].set(1)
    u = e1 + sign * loc
    # uᵀy as a contraction (dot_general), not (u * y).sum(-1): on CPU, jaxlib 0.10.2's XLA
    # miscompiles the float32 YNNPACK fusion of reduce(broadcast(u) * y) whose result is
    # broadcast back against u (wrong rows for d = 3, 5 and ≥ ~10⁴ samples; float64 is not fused)
    uy = jnp.einsum("...d,...d->...", y, u)[..., None]
    scale = 2 * uy / (u * u).sum(-1, keepdims=True)
    return -sign * (y - scale * u)


def uniform_tangent(key, shape, dim: int, dtype=None) -> jnp.ndarray:
    """Directions uniform on S^{dim−1}, shape ``shape + (dim,)``."""
    dtype = dtype if dtype is not None else jnp.result_type(float)
    v = jax.random.normal(key, tuple(shape) + (dim,), dtype=dtype)
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


def _wood_envelope(concentration, dim: int):
    """b = (d−1)/(2κ + sqrt(4κ² + (d−1)²)), Wood's envelope parameter in its stable form."""
    m = dim - 1
    return m / (2 * concentration + jnp.sqrt(4 * concentration**2 + m * m))


def _symmetric_beta(a: float, u, v):
    """A Beta(a, a) draw from two uniforms by Ulrich's polar method [4] (a ≥ 1/2):
    with r = sqrt(1 − u^{2/(2a−1)}), x = (1 + r cos 2πv)/2, written as
    x = (u^{2/(2a−1)}/(1 + r) + 2r cos²πv)/2 so that x keeps its relative precision near 0.
    Exact, loop-free and cheap to compile (unlike a Gamma-based Beta sampler).
    """
    if a == 0.5:  # the arcsine law: r = 1
        return jnp.cos(math.pi * v) ** 2
    log_uc = 2 / (2 * a - 1) * jnp.log(u)
    r = jnp.sqrt(-jnp.expm1(log_uc))
    return (jnp.exp(log_uc) / (1 + r) + 2 * r * jnp.cos(math.pi * v) ** 2) / 2


@partial(jax.jit, static_argnames=("dim", "sample_shape"))
def wood_sample_t(key, concentration, dim: int, sample_shape=()) -> jnp.ndarray:
    """t = 1 − w for w ~ exp(κw)(1 − w²)^{(d−3)/2} on [−1, 1], by Wood's algorithm [1].

    Proposal: x ~ Beta((d−1)/2, (d−1)/2) (by Ulrich's method, :func:`_symmetric_beta`),
    w = (1 − (1+b)x)/(1 − (1−b)x), i.e.
    t = 2bx/(1 − (1−b)x); accepted when
    κw + (d−1) log(1 − x₀w) − c ≥ log u (x₀ = (1−b)/(1+b), c = κx₀ + (d−1) log(1 − x₀²)),
    rewritten in t without cancellation. All elements propose at once; rejected ones propose
    again in the next ``lax.while_loop`` round (measured acceptance ≥ 0.65 for
    d ∈ [2, 4096], κ ∈ [1e-4, 1e5]). Gradients come from :func:`vmf_marginal_sample_t`.

    :param key: PRNG key.
    :param concentration: κ ≥ 0, shape ``batch``.
    :param int dim: ambient dimension d ≥ 2.
    :returns: t with shape ``sample_shape + batch``, gradient-stopped.
    """
    kappa = lax.stop_gradient(jnp.asarray(concentration))
    shape = tuple(sample_shape) + jnp.shape(kappa)
    kappa = jnp.broadcast_to(kappa, shape)
    dtype = kappa.dtype
    b = _wood_envelope(kappa, dim)
    log_shift = jnp.log((1 + b) / 2)
    tiny = jnp.finfo(dtype).tiny

    def body(state):
        key, t, done = state
        key, key_beta, key_u = jax.random.split(key, 3)
        uniforms = jax.random.uniform(key_beta, (2,) + shape, dtype=dtype, minval=tiny)
        x = _symmetric_beta((dim - 1) / 2, uniforms[0], uniforms[1])
        u = jax.random.uniform(key_u, shape, dtype=dtype, minval=tiny)
        t_prop = 2 * b * x / (1 - (1 - b) * x)
        # (d−1)·log((2b + (1−b)t)(1+b)/(4b)) = (d−1)·log((1+b)/2 + (1−b²)t/(4b))
        log_ratio = 2 * kappa * b / (1 + b) - kappa * t_prop
        log_ratio = log_ratio + (dim - 1) * (log_shift + jnp.log1p((1 - b) * t_prop / (2 * b)))
        accept = (log_ratio >= jnp.log(u)) & ~done
        return key, jnp.where(accept, t_prop, t), done | accept

    init = (key, jnp.zeros(shape, dtype), jnp.zeros(shape, dtype=bool))
    _, t, _ = lax.while_loop(lambda state: ~jnp.all(state[2]), body, init)
    return t


# Composite Gauss–Legendre rule on [0, 1] with geometrically shrinking panels
# [2^-k−1, 2^-k] (k < 20) plus [0, 2^-20], 8 nodes each: integrands that decay from s = 0 on
# any scale between 1e-6 and 1 are integrated to ~1e-8 relative error (168 nodes).
_PANEL_RATIO, _PANEL_NODES, _PANEL_COUNT = 0.5, 8, 20


def _composite_rule() -> tuple[list[float], list[float]]:
    x, w = np.polynomial.legendre.leggauss(_PANEL_NODES)
    x, w = (x + 1) / 2, w / 2
    edges = [_PANEL_RATIO**k for k in range(_PANEL_COUNT + 1)] + [0.0]
    nodes, weights = [], []
    for hi, lo in zip(edges[:-1], edges[1:], strict=True):
        nodes += (lo + (hi - lo) * x).tolist()
        weights += ((hi - lo) * w).tolist()
    return nodes, weights


_RULE = _composite_rule()


@partial(jax.jit, static_argnames=("dim",))
def vmf_marginal_dt_dconcentration(t, concentration, dim: int) -> jnp.ndarray:
    """dt/dκ at fixed CDF value, for t = 1 − w and w ~ exp(κw)(1 − w²)^{(d−3)/2}.

    Implicit differentiation of F(w; κ) = const [2, eq. 3] gives
    dw/dκ = −(∂F/∂κ)/p(w), and ∂/∂κ log p(w; κ) = w − A_d(κ) makes
    ∂F/∂κ(w) = ∫_{−1}^{w} (s − A_d(κ)) p(s) ds (the score integrated over the lower tail,
    which is also −∫_w^1 of the same integrand since the score has mean zero).

    In the angle θ = arccos w the density is ∝ exp(L(θ)), L = κ cos θ + (d−2) log sin θ,
    smooth on [0, π] for every d ≥ 2, and
    dθ/dκ = σ ∫_0^U (cos φ − A) exp(L(φ) − L(θ)) du, φ = θ + σu,
    where σ points away from the mode of L (σ = −1, U = θ towards 0 if θ is below the mode,
    else σ = +1, U = π − θ). On that side exp(L(φ) − L(θ)) ≤ 1 decreases monotonically from
    u = 0, so nothing overflows and a fixed composite Gauss–Legendre rule with geometrically
    refined panels near u = 0 resolves the integrand on every scale (measured relative error
    < 1e-7 against mpmath for d ∈ [2, 4096], κ ∈ [1e-4, 1e5] and samples from 1e-3 to 20
    times the mean of t). Finally dt/dκ = sin θ · dθ/dκ. The result is ≤ 0.

    :param t: 1 − w, in [0, 2], any shape.
    :param concentration: κ ≥ 0, broadcastable to ``t``.
    :param int dim: ambient dimension d ≥ 2.
    """
    # A_d(κ) on the parameters' own shape (not once per sample)
    concentration = lax.stop_gradient(concentration)
    one_minus_a = 1 - bessel_iv_ratio(dim / 2 - 1, concentration)
    t, kappa, one_minus_a = jnp.broadcast_arrays(lax.stop_gradient(t), concentration, one_minus_a)
    dtype = t.dtype
    nodes = jnp.asarray(_RULE[0], dtype=dtype)
    weights = jnp.asarray(_RULE[1], dtype=dtype)
    tiny = jnp.finfo(dtype).tiny
    theta = 2 * jnp.arcsin(jnp.minimum(jnp.sqrt(t / 2), 1.0))
    sin_theta = jnp.sqrt(jnp.maximum(t * (2 - t), 0.0))
    if dim == 2:
        cos_mode = jnp.ones_like(kappa)  # L = κ cos θ is decreasing: always go towards π
    else:
        # cos of the mode of L: κ sin²θ = (d−2) cos θ
        cos_mode = 2 * kappa / ((dim - 2) + jnp.sqrt((dim - 2) ** 2 + 4 * kappa**2))
    sigma = jnp.where(1 - t > cos_mode, -1.0, 1.0).astype(dtype)
    span = jnp.where(sigma < 0, theta, math.pi - theta)
    u = span[..., None] * nodes
    sigma_, theta_ = sigma[..., None], theta[..., None]
    phi = theta_ + sigma_ * u
    # cos φ − cos θ = −2σ sin(θ + σu/2) sin(u/2), free of cancellation near u = 0
    delta = -2 * sigma_ * kappa[..., None] * jnp.sin(theta_ + sigma_ * u / 2) * jnp.sin(u / 2)
    if dim > 2:
        log_sin_theta = jnp.log(jnp.maximum(sin_theta, tiny))[..., None]
        delta = delta + (dim - 2) * (jnp.log(jnp.maximum(jnp.sin(phi), tiny)) - log_sin_theta)
    # cos φ − A = (1 − A) − 2 sin²(φ/2), precise when both are close to 1
    score = one_minus_a[..., None] - 2 * jnp.sin(phi / 2) ** 2
    integral = (score * jnp.exp(jnp.minimum(delta, 0.0)) * weights).sum(-1)
    result = sin_theta * sigma * span * integral
    return jnp.where(sin_theta > 0, result, 0.0)


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _implicit_vmf_marginal(t, concentration, dim):
    return t


@_implicit_vmf_marginal.defjvp
def _implicit_vmf_marginal_jvp(dim, primals, tangents):
    t, concentration = primals
    t_dot, concentration_dot = tangents
    dt = vmf_marginal_dt_dconcentration(t, concentration, dim)
    return t, t_dot + dt * concentration_dot


def _inverse_cdf_t_dim3(concentration, u):
    """Exact sampler for d = 3, where F(w) = (e^{κw} − e^{−κ})/(e^{κ} − e^{−κ}):
    t = −log(1 − (1−u)(1 − e^{−2κ}))/κ, written with log1p/expm1 (accurate for all κ > 0);
    below κ = 1e-6 its expansion 2(1−u)(1 − uκ) + O(κ²) avoids the 0/0 at κ = 0.
    """
    a = 1 - u
    small = concentration < 1e-6
    kappa = jnp.where(small, 1.0, concentration)
    exact = -jnp.log1p(a * jnp.expm1(-2 * kappa)) / kappa
    series = 2 * a * (1 - u * concentration)
    return jnp.where(small, series, exact)


def vmf_marginal_sample_t(key, concentration, dim: int, sample_shape=()) -> jnp.ndarray:
    """t = 1 − μᵀz for z ~ vMF(μ, κ) on S^{dim−1}, with unbiased pathwise gradient in κ.

    d = 3: the exact inverse CDF, differentiated by JAX. Otherwise: Wood's sampler
    (:func:`wood_sample_t`) with the implicit gradient
    (:func:`vmf_marginal_dt_dconcentration`) as its JVP, evaluated only when differentiated.

    :param key: PRNG key.
    :param concentration: κ ≥ 0, shape ``batch``.
    :param int dim: ambient dimension d ≥ 2.
    :returns: t with shape ``sample_shape + batch``.
    """
    concentration = jnp.asarray(concentration)
    sample_shape = tuple(sample_shape)
    shape = sample_shape + jnp.shape(concentration)
    if dim == 3:
        dtype = concentration.dtype
        u = jax.random.uniform(key, shape, dtype=dtype, minval=jnp.finfo(dtype).tiny)
        return _inverse_cdf_t_dim3(concentration, u)
    t = wood_sample_t(key, concentration, dim, sample_shape)
    return _implicit_vmf_marginal(t, concentration, dim)
