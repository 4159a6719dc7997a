"""The von Mises CDF, a sampler, and the implicit gradient of a sample in κ (PyTorch).

:func:`von_mises_sample` draws centered von Mises samples by Best & Fisher's rejection
sampler [3] from a fixed pool of proposals (no loop, no host synchronization).

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
large κ.

References:
    [1] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients.
        NeurIPS.
    [2] G. W. Hill (1977). Algorithm 518: Incomplete Bessel function I_0. The von Mises
        distribution. ACM Transactions on Mathematical Software 3(3).
    [3] D. J. Best, N. I. Fisher (1979). Efficient simulation of the von Mises
        distribution. Journal of the Royal Statistical Society C (Applied Statistics) 28(2),
        152–157.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# the fixed-pool machinery of Wood's vMF sampler: the pool size for an acceptance rate
# ≥ _MIN_ACCEPTANCE = 0.6, and the stable partition that takes the first accepted proposals
from pyro_reparam_ext.ops.sphere import (
    _MIN_ACCEPTANCE,
    _num_failures_bound,
    _num_proposals,
    _stable_partition_positions,
)

__all__ = ["centered_von_mises_grad", "von_mises_cdf", "von_mises_sample"]

#: below this concentration Hill's series is used
SERIES_CONCENTRATION = 2.5
#: terms of the series (enough for κ < SERIES_CONCENTRATION)
NUM_SERIES_TERMS = 28
#: log of the integrand's drop at the edge of the quadrature window
_WINDOW_LOG_DROP = 45.0
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(32)


def _bessel_ratio(kappa: torch.Tensor) -> torch.Tensor:
    """A(κ) = I_1(κ)/I_0(κ), and 1 - A(κ) without cancellation for small κ."""
    i0e = torch.special.i0e(kappa)
    i1e = torch.special.i1e(kappa)
    return i1e / i0e, (i0e - i1e) / i0e


def _series(x: torch.Tensor, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hill's series: (F(x; κ), ∂F/∂κ) for x ∈ [-π, π], with forward-mode derivatives."""
    ratio = torch.zeros_like(x)  # r_n = I_n / I_(n-1)
    dratio = torch.zeros_like(x)
    v = torch.zeros_like(x)  # v_n = r_n (sin(nx)/n + v_(n+1))
    dv = torch.zeros_like(x)
    for n in range(NUM_SERIES_TERMS, 0, -1):
        denominator = 2 * n / kappa + ratio
        ddenominator = -2 * n / (kappa * kappa) + dratio
        ratio = 1 / denominator
        dratio = -ddenominator * ratio * ratio
        multiplier = torch.sin(n * x) / n + v
        dv = dratio * multiplier + ratio * dv
        v = ratio * multiplier
    cdf = 0.5 + x / (2 * math.pi) + v / math.pi
    return cdf, dv / math.pi


def _log_density(x: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    # log p = κ(cos x - 1) - log(2π i0e(κ)), written with sin² to stay exact near x = 0
    return -2 * kappa * torch.sin(x / 2) ** 2 - torch.log(2 * math.pi * torch.special.i0e(kappa))


def _quadrature(y: torch.Tensor, kappa: torch.Tensor, integrand_kind: str) -> torch.Tensor:
    """Integrals over t on the side of y ≤ 0 chosen as in the module docstring.

    ``integrand_kind="grad"``: dx/dκ at y; ``"cdf"``: F(y) / p(y) (the CDF scaled by the
    density, integrated over [-π, y] only).
    """
    ratio, one_minus_ratio = _bessel_ratio(kappa)
    sin_half_y = torch.sin(y / 2)
    # cos y ≤ A  <=>  2 sin²(y/2) ≥ 1 - A: the integrand keeps its sign on [-π, y]
    left = (2 * sin_half_y**2 >= one_minus_ratio) | (integrand_kind == "cdf")
    # window: cos t ≥ cos y - drop/κ on [t_low, y]
    cos_low = (1 - 2 * sin_half_y**2) - _WINDOW_LOG_DROP / kappa
    t_low = -torch.arccos(cos_low.clamp(min=-1.0, max=1.0))
    low = torch.where(left, torch.minimum(t_low, y), y)
    high = torch.where(left, y, torch.zeros_like(y))
    half = (high - low) / 2
    middle = (high + low) / 2
    total = torch.zeros_like(y)
    for node, weight in zip(_GAUSS_NODES.tolist(), _GAUSS_WEIGHTS.tolist(), strict=True):
        t = middle + half * node
        exponent = -2 * kappa * torch.sin((t + y) / 2) * torch.sin((t - y) / 2)
        if integrand_kind == "cdf":
            total = total + weight * torch.exp(exponent)
        else:
            cos_minus_ratio = one_minus_ratio - 2 * torch.sin(t / 2) ** 2
            total = total + weight * torch.exp(exponent) * cos_minus_ratio
    integral = half * total
    if integrand_kind == "cdf":
        return integral
    # left: -∫_{low}^{y}; right: +∫_{y}^{0}
    return torch.where(left, -integral, integral)


def _wrap(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """value = x + 2π·periods with x ∈ [-π, π]."""
    periods = torch.round(value / (2 * math.pi))
    return value - 2 * math.pi * periods, periods


def centered_von_mises_grad(concentration: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Implicit reparameterization gradient dx/dκ of a centered von Mises sample x.

    Example::

        >>> kappa = torch.tensor([0.5, 100.0])
        >>> x = torch.distributions.VonMises(0.0, kappa).sample()
        >>> dx_dkappa = centered_von_mises_grad(kappa, x)

    :param torch.Tensor concentration: κ > 0.
    :param torch.Tensor value: x (taken modulo 2π into [-π, π]).
    :returns: -(∂F(x; κ)/∂κ) / p(x; κ) (module docstring).
    """
    kappa, value = torch.broadcast_tensors(concentration, value)
    x, _ = _wrap(value)
    use_series = kappa < SERIES_CONCENTRATION
    kappa_series = torch.where(use_series, kappa, torch.ones_like(kappa))
    _, dcdf = _series(x, kappa_series)
    series = -dcdf * torch.exp(-_log_density(x, kappa_series))
    # dx/dκ is odd in x: integrate at y = -|x| ≤ 0 and restore the sign
    kappa_quadrature = torch.where(use_series, torch.full_like(kappa, 10.0), kappa)
    quadrature = _quadrature(-x.abs(), kappa_quadrature, "grad")
    quadrature = torch.where(x > 0, -quadrature, quadrature)
    return torch.where(use_series, series, quadrature)


def _cdf_value(x: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    use_series = kappa < SERIES_CONCENTRATION
    series, _ = _series(x, torch.where(use_series, kappa, torch.ones_like(kappa)))
    kappa_quadrature = torch.where(use_series, torch.full_like(kappa, 10.0), kappa)
    y = -x.abs()
    lower = _quadrature(y, kappa_quadrature, "cdf") * torch.exp(_log_density(y, kappa_quadrature))
    quadrature = torch.where(x > 0, 1 - lower, lower)
    return torch.where(use_series, series.clamp(0.0, 1.0), quadrature)


class _VonMisesCdf(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value, kappa):
        x, periods = _wrap(value)
        ctx.save_for_backward(x, kappa)
        return _cdf_value(x, kappa) + periods

    @staticmethod
    def backward(ctx, grad_output):
        x, kappa = ctx.saved_tensors
        density = torch.exp(_log_density(x, kappa))
        grad_value = grad_kappa = None
        if ctx.needs_input_grad[0]:
            grad_value = grad_output * density
        if ctx.needs_input_grad[1]:
            grad_kappa = -grad_output * centered_von_mises_grad(kappa, x) * density
        return grad_value, grad_kappa


def von_mises_cdf(value: torch.Tensor, concentration: torch.Tensor) -> torch.Tensor:
    """CDF of the centered von Mises distribution, differentiable in value and κ.

    F is taken from -π, so F(π) = 1, and continued by F(x + 2π) = F(x) + 1.

    Example::

        >>> von_mises_cdf(torch.tensor(0.3), torch.tensor(2.0))

    :param torch.Tensor value: x.
    :param torch.Tensor concentration: κ > 0.
    """
    value, concentration = torch.broadcast_tensors(value, concentration)
    return _VonMisesCdf.apply(value, concentration)


#: Best & Fisher's acceptance rate is P(κ) = κ I_0(κ) sqrt(r² − 1) e^{1 − κr} ([3], with r
#: their envelope parameter): 1 at κ = 0, decreasing to its infimum sqrt(e/(2π)) ≈ 0.6577 as
#: κ → ∞ (computed in float64 over κ ∈ [1e-6, 1e8]: min 0.65774). The pool size of
#: :func:`~pyro_reparam_ext.ops.sphere._num_proposals` assumes ≥ _MIN_ACCEPTANCE = 0.6.
BEST_FISHER_MIN_ACCEPTANCE = math.sqrt(math.e / (2 * math.pi))
assert BEST_FISHER_MIN_ACCEPTANCE >= _MIN_ACCEPTANCE


def _best_fisher_envelope(kappa: torch.Tensor):
    """(q, d²h) for Best & Fisher's wrapped-Cauchy envelope of parameter ρ [3]:
    q = (1 − ρ)/(1 + ρ) and (1 − ρ)²·κ/(2ρ), without cancellation at any κ ≥ 0.

    With s = sqrt(1 + 4κ²) and τ = 1 + s, ρ = (τ − sqrt(2τ))/(2κ) [3]. Since
    τ − 2 = 4κ²/(s + 1), ρ = 2κ sqrt(τ)/((s + 1)(sqrt(τ) + sqrt(2))), exact as κ → 0
    (ρ ≈ κ/2), and h = κ/(2ρ) = (s + 1)(1 + sqrt(2/τ))/4 is finite at κ = 0.
    For κ ≥ 1, 1 − ρ is taken from 2κ − τ = −1 − 1/(2κ + s):
    1 − ρ = (sqrt(2τ) − 1 − 1/(2κ + s))/(2κ), so that it keeps its relative precision as
    ρ → 1 (1 − ρ ≈ 1/sqrt(2κ)). s = hypot(1, 2κ) does not overflow."""
    s = torch.hypot(torch.ones_like(kappa), 2 * kappa)
    tau = 1 + s
    # h = (s + 1)(1 + sqrt(2/τ))/4 and ρ = κ/(2h), in this order of operations so that
    # nothing overflows up to κ ≈ finfo.max/2
    h = (s + 1) * (1 + torch.sqrt(2 / tau)) / 4
    rho = kappa / (2 * h)
    large = (torch.sqrt(2 * tau) - 1 - 1 / (2 * kappa + s)) / (2 * kappa.clamp(min=1))
    one_minus_rho = torch.where(kappa >= 1, large, 1 - rho)
    q = one_minus_rho / (2 - one_minus_rho)
    return q, one_minus_rho.square() * h


def von_mises_sample(concentration: torch.Tensor, sample_shape=()) -> torch.Tensor:
    """Centered von Mises samples x ~ e^{κ cos x}/(2π I_0(κ)) on [−π, π], by Best & Fisher's
    algorithm [3], without a loop or host synchronization.

    Proposal: the wrapped Cauchy of parameter ρ, drawn by its inverse CDF in half-angle form,
    tan(x/2) = q·tan(π(u₁ − 1/2)) with q = (1 − ρ)/(1 + ρ) (the same proposal as [3]'s
    z = cos πu₁, f = (1 + rz)/(r + z), x = ±acos f, written without acos near f = 1).
    Accepted when log u₂ ≤ log c + 1 − c, c = κ(r − cos x) = (1 − ρ)²κ/(2ρ) + 2κ sin²(x/2)
    ([3]'s exact test; the ratio of target to envelope is ∝ c e^{−c}, at most e^{−1}), every
    term positive (no cancellation), so float32 and float64 are both accurate at every
    κ ≥ 0 (κ = 0 gives c ≡ 1: every proposal accepted, uniform). As in
    :func:`~pyro_reparam_ext.ops.sphere.wood_sample_t`, the n samples of each parameter
    element are the first n accepted of a fixed pool of M proposals (M from the acceptance
    rate ≥ :data:`BEST_FISHER_MIN_ACCEPTANCE`: ≈ 1.7n for large n, 58 for n = 1; a pool with
    fewer than n accepted, probability ≤ 1e-23 per element, fills the slot with a rejected
    proposal). Each accepted proposal is an exact draw and the first n of an i.i.d. stream
    stay i.i.d.

    torch.distributions.VonMises uses the same algorithm with a `while not done.all()` loop
    (in float64), and the NumPyro backend a ``lax.while_loop``: the three draw different
    streams from the same distribution. Not differentiable (see
    :func:`centered_von_mises_grad`).

    :param torch.Tensor concentration: κ ≥ 0, shape ``batch``.
    :returns: samples with shape ``sample_shape + batch``, detached.
    """
    kappa = concentration.detach()
    sample_shape = torch.Size(sample_shape)
    num_samples, num_elements = sample_shape.numel(), kappa.numel()
    full = _num_proposals(num_samples)
    first = _num_proposals(num_samples, _FIRST_LOG_SHORTFALL)
    redone = _num_failures_bound(num_elements, _FIRST_LOG_SHORTFALL)
    half_tan = torch.empty((num_samples,) + kappa.shape, dtype=kappa.dtype, device=kappa.device)
    # no autograd bookkeeping; the result is written into the ordinary tensor above
    with torch.inference_mode():
        if first * num_elements + full * redone < full * num_elements:
            # two rounds: a small pool for every element, then a full pool for the first
            # `redone` elements whose small pool fell short (more fall short with probability
            # ≤ 1e-23). Elements redone without need get a fresh exact draw: still exact.
            flat = kappa.reshape(-1)
            draws, short = _first_accepted(flat, num_samples, first)
            redo = _short_first(short)[:redone]
            again, _ = _first_accepted(flat[redo], num_samples, full)
            draws.index_copy_(1, redo, again)
            half_tan.copy_(draws.reshape(half_tan.shape))
        else:
            half_tan.copy_(_first_accepted(kappa, num_samples, full)[0])
    # the angle of the selected proposals only
    return 2 * torch.atan(half_tan.reshape(sample_shape + kappa.shape))


#: first-round pool of :func:`von_mises_sample`: short of n accepted with probability ≤ e^{-7}
#: per element (8 proposals for n = 1 instead of 58)
_FIRST_LOG_SHORTFALL = -7.0


def _first_accepted(kappa: torch.Tensor, num_samples: int, pool_size: int):
    """tan(x/2) of the first n accepted of ``pool_size`` Best–Fisher proposals per element,
    (n, *batch), and whether fewer than n were accepted, (*batch) (then rejected proposals
    fill the last slots)."""
    pool = (pool_size,) + kappa.shape
    like = dict(dtype=kappa.dtype, device=kappa.device)
    q, c0 = _best_fisher_envelope(kappa)
    # tan(x/2) = q·tan(φ/2), φ/2 uniform on (−π/2, π/2)
    half_tan = torch.empty(pool, **like).uniform_(-math.pi / 2, math.pi / 2).tan_().mul_(q)
    sin_sq = half_tan.square()
    sin_sq.div_(sin_sq + 1)  # sin²(x/2) = t²/(1 + t²), no cancellation
    c = sin_sq.mul_(2 * kappa).add_(c0)
    # accepted when log u ≤ log c + 1 − c, with E = −log u ~ Exp(1)
    exponential = torch.empty(pool, **like).exponential_()
    rejected = torch.log(c).add_(exponential).sub_(c) < -1
    samples = torch.empty_like(half_tan)
    samples.scatter_(0, _stable_partition_positions(rejected), half_tan)
    short = rejected.sum(0) > pool_size - num_samples
    return samples[:num_samples], short


def _short_first(short: torch.Tensor) -> torch.Tensor:
    """Indices of the elements, those with ``short`` first (each group in index order)."""
    positions = _stable_partition_positions(~short)
    index = torch.arange(short.shape[0], device=short.device)
    return torch.empty_like(index).scatter_(0, positions, index)
