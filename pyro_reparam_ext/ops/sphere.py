"""Sampling on the unit sphere S^{d−1} ⊂ R^d with pathwise gradients (PyTorch).

Building blocks of :class:`~pyro_reparam_ext.distributions.VonMisesFisher` and
:class:`~pyro_reparam_ext.distributions.PowerSpherical`:

* :func:`householder_rotate` maps a point given in the frame where the mean direction is the
  first basis vector e₁ to the frame of ``loc`` by one Householder reflection, in O(d) per
  point (no d×d matrix, no QR);
* :func:`uniform_tangent` draws directions uniformly on S^{d−2} (the tangent part);
* :func:`wood_sample_t` draws t = 1 − μᵀz of a von Mises–Fisher sample by Wood's rejection
  sampler [1], vectorized with masked resampling of the rejected elements;
* :func:`vmf_marginal_sample_t` attaches the implicit reparameterization gradient [2]
  dt/dκ = (∂F/∂κ)/p(w) (w = 1 − t, F the CDF of w) to such a sample; for d = 3 it is
  replaced by the exact inverse-CDF sampler, differentiated directly.

The marginal of w = μᵀz has density ∝ exp(κw)(1 − w²)^{(d−3)/2} on [−1, 1] [1, eq. 3].
Working with t = 1 − w instead of w keeps full relative precision at large κ, where
t ≈ (d − 1)/(2κ) is tiny.

Example::

    >>> kappa = torch.tensor(10.0, requires_grad=True)
    >>> t = vmf_marginal_sample_t(kappa, dim=5, sample_shape=(1000,))
    >>> (1 - t).mean().backward()            # unbiased estimate of dA_5/dκ

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

import numpy as np
import torch

from pyro_reparam_ext.ops.bessel import _sum_to_shape, bessel_iv_ratio

__all__ = [
    "householder_rotate",
    "uniform_tangent",
    "vmf_marginal_dt_dconcentration",
    "vmf_marginal_sample_t",
    "wood_sample_t",
]


def householder_rotate(loc: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rotate points ``y`` given relative to e₁ into the frame where e₁ ↦ ``loc``.

    Uses the reflection H = I − 2uuᵀ/|u|² with u = e₁ + s·loc, s = sign(loc₁), followed by
    the sign flip −s: the map y ↦ −s·H y is orthogonal and sends e₁ to loc. Choosing the sign
    keeps |u|² = 2(1 + |loc₁|) ≥ 2, so it is stable for every loc (the textbook
    u = e₁ − loc [3] divides by zero at loc = e₁). ``loc`` is normalized first, so gradients
    with respect to it are tangent to the sphere.

    :param torch.Tensor loc: mean directions, shape ``batch + (d,)``.
    :param torch.Tensor y: points, shape ``sample + batch + (d,)``.
    """
    loc = loc / torch.linalg.vector_norm(loc, dim=-1, keepdim=True)
    sign = torch.where(loc[..., :1] >= 0, 1.0, -1.0).to(loc.dtype)
    e1 = torch.zeros_like(loc)
    e1[..., 0] = 1
    u = e1 + sign * loc
    scale = 2 * (u * y).sum(-1, keepdim=True) / (u * u).sum(-1, keepdim=True)
    return -sign * (y - scale * u)


def uniform_tangent(shape, dim: int, *, like: torch.Tensor) -> torch.Tensor:
    """Directions uniform on S^{dim−1}, shape ``shape + (dim,)``, with ``like``'s dtype/device."""
    v = torch.randn(tuple(shape) + (dim,), dtype=like.dtype, device=like.device)
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _wood_envelope(concentration: torch.Tensor, dim: int) -> torch.Tensor:
    """b = (d−1)/(2κ + sqrt(4κ² + (d−1)²)), Wood's envelope parameter in its stable form."""
    m = dim - 1
    return m / (2 * concentration + torch.sqrt(4 * concentration**2 + m * m))


def _symmetric_beta(a: float, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A Beta(a, a) draw from two uniforms by Ulrich's polar method [4] (a ≥ 1/2):
    with r = sqrt(1 − u^{2/(2a−1)}), x = (1 + r cos 2πv)/2, written as
    x = (u^{2/(2a−1)}/(1 + r) + 2r cos²πv)/2 so that x keeps its relative precision near 0.
    Exact, loop-free and cheaper than a Gamma-based Beta sampler.
    """
    if a == 0.5:  # the arcsine law: r = 1
        return torch.cos(math.pi * v) ** 2
    log_uc = 2 / (2 * a - 1) * torch.log(u)
    r = torch.sqrt(-torch.expm1(log_uc))
    return (torch.exp(log_uc) / (1 + r) + 2 * r * torch.cos(math.pi * v) ** 2) / 2


def wood_sample_t(concentration: torch.Tensor, dim: int, sample_shape=()) -> torch.Tensor:
    """t = 1 − w for w ~ exp(κw)(1 − w²)^{(d−3)/2} on [−1, 1], by Wood's algorithm [1].

    Proposal: x ~ Beta((d−1)/2, (d−1)/2) (by Ulrich's method, :func:`_symmetric_beta`),
    w = (1 − (1+b)x)/(1 − (1−b)x), i.e.
    t = 2bx/(1 − (1−b)x); accepted when
    κw + (d−1) log(1 − x₀w) − c ≥ log u (x₀ = (1−b)/(1+b), c = κx₀ + (d−1) log(1 − x₀²)),
    rewritten in t without cancellation. All elements propose at once; rejected ones propose
    again (one host synchronisation per round to test whether any is left; the measured
    acceptance is ≥ 0.65 for d ∈ [2, 4096], κ ∈ [1e-4, 1e5], so a few rounds suffice). Not
    differentiable: gradients come from :func:`vmf_marginal_sample_t`.

    :param torch.Tensor concentration: κ ≥ 0, shape ``batch``.
    :param int dim: ambient dimension d ≥ 2.
    :returns: t with shape ``sample_shape + batch``, detached.
    """
    concentration = concentration.detach()
    shape = torch.Size(sample_shape) + concentration.shape
    kappa = concentration.expand(shape)
    b = _wood_envelope(kappa, dim)
    log_shift = torch.log((1 + b) / 2)
    tiny = torch.finfo(kappa.dtype).tiny
    t = torch.zeros_like(kappa)
    done = torch.zeros(shape, dtype=torch.bool, device=kappa.device)
    while True:
        uniforms = torch.rand((3,) + shape, dtype=kappa.dtype, device=kappa.device).clamp(min=tiny)
        x = _symmetric_beta((dim - 1) / 2, uniforms[0], uniforms[1])
        u = uniforms[2]
        t_prop = 2 * b * x / (1 - (1 - b) * x)
        # (d−1)·log((2b + (1−b)t)(1+b)/(4b)) = (d−1)·log((1+b)/2 + (1−b²)t/(4b))
        log_ratio = 2 * kappa * b / (1 + b) - kappa * t_prop
        log_ratio = log_ratio + (dim - 1) * (log_shift + torch.log1p((1 - b) * t_prop / (2 * b)))
        accept = (log_ratio >= torch.log(u)) & ~done
        t = torch.where(accept, t_prop, t)
        done = done | accept
        if bool(done.all()):
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


def vmf_marginal_dt_dconcentration(
    t: torch.Tensor, concentration: torch.Tensor, dim: int
) -> torch.Tensor:
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

    :param torch.Tensor t: 1 − w, in [0, 2], any shape.
    :param torch.Tensor concentration: κ ≥ 0, broadcastable to ``t``.
    :param int dim: ambient dimension d ≥ 2.
    """
    # A_d(κ) on the parameters' own shape (not once per sample)
    one_minus_a = 1 - bessel_iv_ratio(dim / 2 - 1, concentration.detach())
    t, kappa, one_minus_a = torch.broadcast_tensors(t.detach(), concentration.detach(), one_minus_a)
    nodes = torch.tensor(_RULE[0], dtype=t.dtype, device=t.device)
    weights = torch.tensor(_RULE[1], dtype=t.dtype, device=t.device)
    tiny = torch.finfo(t.dtype).tiny
    theta = 2 * torch.asin(torch.sqrt(t / 2).clamp(max=1.0))
    sin_theta = torch.sqrt((t * (2 - t)).clamp(min=0.0))
    # cos of the mode of L: κ sin²θ = (d−2) cos θ
    cos_mode = 2 * kappa / ((dim - 2) + torch.sqrt((dim - 2) ** 2 + 4 * kappa**2))
    cos_mode = torch.where(kappa > 0, cos_mode, torch.zeros_like(kappa))
    if dim == 2:
        cos_mode = torch.ones_like(kappa)  # L = κ cos θ is decreasing: always go towards π
    sigma = torch.where(1 - t > cos_mode, -1.0, 1.0).to(t.dtype)
    span = torch.where(sigma < 0, theta, math.pi - theta)
    u = span.unsqueeze(-1) * nodes
    sigma_, theta_ = sigma.unsqueeze(-1), theta.unsqueeze(-1)
    phi = theta_ + sigma_ * u
    # cos φ − cos θ = −2σ sin(θ + σu/2) sin(u/2), free of cancellation near u = 0
    delta = -2 * sigma_ * kappa.unsqueeze(-1) * torch.sin(theta_ + sigma_ * u / 2)
    delta = delta * torch.sin(u / 2)
    if dim > 2:
        log_sin_theta = torch.log(sin_theta.clamp(min=tiny)).unsqueeze(-1)
        delta = delta + (dim - 2) * (torch.log(torch.sin(phi).clamp(min=tiny)) - log_sin_theta)
    # cos φ − A = (1 − A) − 2 sin²(φ/2), precise when both are close to 1
    score = one_minus_a.unsqueeze(-1) - 2 * torch.sin(phi / 2) ** 2
    integral = (score * torch.exp(delta.clamp(max=0.0)) * weights).sum(-1)
    result = sin_theta * sigma * span * integral
    return torch.where(sin_theta > 0, result, torch.zeros_like(result))


class _ImplicitVMFMarginal(torch.autograd.Function):
    """Identity on a sample t whose backward in κ is the implicit gradient dt/dκ."""

    @staticmethod
    def forward(ctx, t, concentration, dim):
        ctx.save_for_backward(t, concentration)
        ctx.dim = dim
        return t.clone()

    @staticmethod
    def backward(ctx, grad):
        t, concentration = ctx.saved_tensors
        dt = vmf_marginal_dt_dconcentration(t, concentration, ctx.dim)
        return None, _sum_to_shape(grad * dt, concentration.shape), None


def _inverse_cdf_t_dim3(concentration: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Exact sampler for d = 3, where F(w) = (e^{κw} − e^{−κ})/(e^{κ} − e^{−κ}):
    t = −log(1 − (1−u)(1 − e^{−2κ}))/κ, written with log1p/expm1 (accurate for all κ > 0);
    below κ = 1e-6 its expansion 2(1−u)(1 − uκ) + O(κ²) avoids the 0/0 at κ = 0.
    """
    a = 1 - u
    small = concentration < 1e-6
    kappa = torch.where(small, torch.ones_like(concentration), concentration)
    exact = -torch.log1p(a * torch.expm1(-2 * kappa)) / kappa
    series = 2 * a * (1 - u * concentration)
    return torch.where(small, series, exact)


def vmf_marginal_sample_t(concentration: torch.Tensor, dim: int, sample_shape=()) -> torch.Tensor:
    """t = 1 − μᵀz for z ~ vMF(μ, κ) on S^{dim−1}, with unbiased pathwise gradient in κ.

    d = 3: the exact inverse CDF, differentiated by autograd. Otherwise: Wood's sampler
    (:func:`wood_sample_t`) with the implicit gradient
    (:func:`vmf_marginal_dt_dconcentration`) attached, computed only on the backward pass.

    :param torch.Tensor concentration: κ ≥ 0, shape ``batch``.
    :param int dim: ambient dimension d ≥ 2.
    :returns: t with shape ``sample_shape + batch``.
    """
    shape = torch.Size(sample_shape) + concentration.shape
    if dim == 3:
        u = torch.rand(shape, dtype=concentration.dtype, device=concentration.device)
        return _inverse_cdf_t_dim3(concentration, u.clamp(min=torch.finfo(u.dtype).tiny))
    t = wood_sample_t(concentration, dim, sample_shape)
    if not concentration.requires_grad:
        return t
    return _ImplicitVMFMarginal.apply(t, concentration, dim)
