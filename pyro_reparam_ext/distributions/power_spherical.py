"""Power Spherical distribution on the sphere S^{d−1} ⊂ R^d (De Cao & Aziz 2020), PyTorch."""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from pyro_reparam_ext.distributions.von_mises_fisher import SphereLocConcentration
from pyro_reparam_ext.ops.sphere import (
    _rotation_matrix,
    _single_direction_backward,
    embed_rotate,
)

__all__ = ["PowerSpherical"]

#: ambient dimension up to which one mean direction is sampled by :class:`_PowerSphericalByMatrix`
#: (as :func:`~pyro_reparam_ext.ops.sphere.embed_rotate`'s d×d matrix path)
_FUSED_MAX_DIM = 16


def _marginal(gamma_alpha, norm_sq):
    """(first, radius) of z relative to e₁ from G_α and |v|² (G_β = |v|²/2):
    (1 − 2s, 2 sqrt(s(1 − s))/|v|) = (G_α − G_β, sqrt(2G_α))/(G_α + G_β), written in G_α, G_β
    directly so that 1 − first stays precise when κ is large."""
    gamma_beta = norm_sq / 2
    total = gamma_beta + gamma_alpha
    return (gamma_alpha - gamma_beta) / total, torch.sqrt(2 * gamma_alpha) / total


def _marginal_dim3(concentration, norm_sq, tangent=False):
    """(first, radius) for d = 3, where β = 1: G_β = |v|²/2 ~ Exp(1), so e^{−G_β} is
    uniform, and inverting the Beta(1, α) CDF 1 − (1 − s)^α gives the exact draw
    s = 1 − e^{−G_β/α} = −expm1(−|v|²/(2α)), still independent of v/|v|: no Gamma draw, and
    ds/dκ is the derivative of an explicit map. With q = −|v|²/(2α) and m = expm1(q) = −s:
    first = 1 + 2m, radius = 2 sqrt(s(1 − s))/|v| = sqrt(−4m(1 + m)/|v|²) (|v|² > 0).
    ``tangent``: also the scale b = q/(2αm) of the κ tangent (:func:`_tangent_scale`)."""
    alpha = concentration + 1
    q = norm_sq / (-2 * alpha)
    m = torch.expm1(q)
    one_plus_m = m + 1
    first = one_plus_m + m
    radius = torch.sqrt(torch.addcmul(m, m, m) / (-0.25 * norm_sq))
    if not tangent:
        return first, radius
    return first, radius, (q / m).div_(2 * alpha)


def _tangent_scale(alpha, gamma_alpha):
    """b = (dG_α/dα)/(2G_α), the scale of the κ tangent for d ≠ 3 (dG_α/dα by torch's own
    ``_standard_gamma_grad``, the derivative autograd would use).

    Why one scale per sample suffices: v is fixed, so y′ = ∂/∂κ (first, radius·v) lies in the
    plane of y and e₁, y′ = a·y + b·e₁, and |y| = 1 makes y′ ⊥ y: a + b·first = 0, so
    b = first′/(1 − first²) and dz/dκ = y′R = b·(l − first·z) with l = e₁R = loc/|loc|.
    From :func:`_marginal` (T = G_α + G_β): first′ = 2G_β·G_α′/T² and
    1 − first² = 4G_αG_β/T², so b = G_α′/(2G_α). From :func:`_marginal_dim3`
    (m′ = (1 + m)q′, q′ = −q/α): first′ = 2m′ and 1 − first² = −4m(1 + m), so
    b = q/(2αm)."""
    return torch._standard_gamma_grad(alpha, gamma_alpha).div_(2 * gamma_alpha)


_ONES: dict = {}


def _ones_column(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A (size, 1) column of ones, built once per (size, dtype, device): row sums of a
    (samples, size) matrix as one matrix product, about half the CPU time of ``sum(-1)``'s
    reduction kernel at these sizes."""
    key = (size, dtype, device)
    if key not in _ONES:
        _ONES[key] = torch.ones((size, 1), dtype=dtype, device=device)
    return _ONES[key]


class _PowerSphericalByMatrix(torch.autograd.Function):
    """z for one mean direction (``loc`` has d ≤ _FUSED_MAX_DIM elements) in one step, with a
    hand-written backward. Forward: (first, radius) from :func:`_marginal_dim3` (d = 3) or
    from :func:`_marginal` with G_α ~ Gamma(κ + β) drawn here (after v, as the batched path
    draws them), y = (first, radius·v) and z = yR with the matrix R of
    :func:`~pyro_reparam_ext.ops.sphere._rotation_matrix`; when κ needs a gradient also the
    tangent dz/dκ = b·(l − first·z) (forward mode; b per sample, :func:`_tangent_scale`), two
    ops from z. Its rounding error is eps·|b| per coordinate, the same relative precision as
    z's own tangent part (|dz/dκ| = b·sqrt(1 − first²)). Backward: dκ = ⟨g, dz/dκ⟩, one
    inner product, and d loc from dR = yᵀg. At these sizes each op costs a few µs whatever
    it computes, so the count is what matters."""

    @staticmethod
    def forward(ctx, loc, concentration, v, grad_enabled):
        dim = loc.shape[-1]
        out_shape = v.shape[:-1] + (dim,)
        ctx.shapes = loc.shape, concentration.shape
        if v.dim() != 2:
            v = v.reshape(-1, dim - 1)
        # columns (samples, 1): they scale v and join y = (first, radius·v) without unsqueezes
        norm_sq = torch.mm(v * v, _ones_column(dim - 1, v.dtype, v.device))
        tangent = grad_enabled and ctx.needs_input_grad[1]  # (not under no_grad: sample())
        if dim == 3:
            norm_sq.clamp_(min=torch.finfo(v.dtype).tiny)  # v = 0 (probability 0): finite
            first, radius, *scale = _marginal_dim3(concentration, norm_sq, tangent)
        else:
            alpha = (concentration + (dim - 1) / 2).reshape(1).expand(norm_sq.shape)
            gamma_alpha = torch._standard_gamma(alpha)
            first, radius = _marginal(gamma_alpha, norm_sq)
            scale = [_tangent_scale(alpha, gamma_alpha)] if tangent else []
        rotation, norm, unit, u = _rotation_matrix(loc)
        y = torch.cat([first, radius * v], dim=1)
        z = torch.mm(y, rotation)  # (not matmul: one dispatch less)
        d_z = torch.addcmul(unit, first, z, value=-1).mul_(scale[0]) if tangent else None
        ctx.save_for_backward(norm, unit, u, y, d_z)
        return z if z.shape == out_shape else z.reshape(out_shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return *_single_direction_backward(ctx, grad), None, None


class PowerSpherical(SphereLocConcentration):
    r"""Power Spherical distribution on the unit sphere S^{d−1}, any d ≥ 2.

    .. math:: p(z) = C(κ, d)\, (1 + μ^⊤ z)^κ, \quad
        C(κ, d)^{-1} = 2^{α+β} π^{β} \frac{Γ(α)}{Γ(α+β)}, \;
        α = \frac{d-1}{2} + κ, \; β = \frac{d-1}{2}      \quad [1, eq. 5–6]

    A vMF-like family without Bessel functions and without rejection: (1 + μᵀz)/2 ~ Beta(α, β)
    [1, §3.2], the tangent direction is uniform, and a Householder reflection maps e₁ to μ.
    ``rsample`` is fully reparameterized: ``s = (1 − μᵀz)/2 ~ Beta(β, α)`` is G_β/(G_β + G_α)
    with G_β = |v|²/2 from the same Gaussian vector v whose direction is the tangent part, and
    G_α a reparameterized Gamma draw (one Gamma per sample instead of a Beta's two; written in
    G_α, G_β directly, t = 1 − μᵀz stays precise when κ is large). For d = 3 no Gamma draw
    is needed: s = −expm1(−|v|²/(2α)) exactly (:func:`_marginal_dim3`). One mean direction
    with d ≤ 16 is sampled by a single autograd Function with a hand-written backward
    (:class:`_PowerSphericalByMatrix`).

    Example::

        >>> loc = torch.tensor([0.0, 0.0, 1.0])
        >>> kappa = torch.tensor(20.0, requires_grad=True)
        >>> z = PowerSpherical(loc, kappa).rsample((100,))

    :param torch.Tensor loc: mean direction, unit norm, shape ``batch + (d,)`` with d ≥ 2.
    :param torch.Tensor concentration: κ ≥ 0, shape broadcastable with ``loc.shape[:-1]``.

    References:
        [1] N. De Cao, W. Aziz (2020). The Power Spherical distribution. ICML workshop on INNF+,
            arXiv:2006.04437.
    """

    def _alpha_beta(self):
        beta = (self.dim - 1) / 2
        return self.concentration + beta, beta

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        # s = (1 − μᵀz)/2 ~ Beta(β, α) as G_β/(G_β + G_α): with v ~ N(0, I_{d−1}), |v|²/2 is
        # the Gamma(β = (d−1)/2) draw and v/|v| the uniform tangent, independent of each
        # other, so one Gaussian vector gives both; only G_α depends on κ (reparameterized).
        # d = 3 (β = 1) needs no G_α at all (_marginal_dim3).
        v = torch.randn(shape[:-1] + (self.dim - 1,), dtype=self.loc.dtype, device=self.loc.device)
        single = self.dim <= _FUSED_MAX_DIM and self.loc.numel() == self.dim
        if single:
            return _PowerSphericalByMatrix.apply(
                self.loc, self.concentration, v, torch.is_grad_enabled()
            )
        if self.dim == 3:
            norm_sq = torch.linalg.vecdot(v, v).clamp(min=torch.finfo(v.dtype).tiny)
            first, radius = _marginal_dim3(self.concentration, norm_sq)
            return embed_rotate(self.loc, first, radius, v)
        alpha, _ = self._alpha_beta()
        gamma_alpha = torch._standard_gamma(alpha.expand(shape[:-1]))
        first, radius = _marginal(gamma_alpha, torch.linalg.vecdot(v, v))
        return embed_rotate(self.loc, first, radius, v)

    def log_normalizer(self) -> torch.Tensor:
        """log C(κ, d) = −[(α+β) log 2 + β log π + log Γ(α) − log Γ(α+β)]  ([1, eq. 6])."""
        alpha, beta = self._alpha_beta()
        return -(
            (alpha + beta) * math.log(2)
            + beta * math.log(math.pi)
            + torch.lgamma(alpha)
            - torch.lgamma(alpha + beta)
        )

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        dot = (self.loc * value).sum(-1)
        return self.log_normalizer() + self.concentration * torch.log1p(dot)

    @property
    def mean(self):
        """E[z] = (α − β)/(α + β)·μ = κ/(κ + d − 1)·μ."""
        alpha, beta = self._alpha_beta()
        return ((alpha - beta) / (alpha + beta)).unsqueeze(-1) * self.loc

    @property
    def mode(self):
        return self.loc

    def entropy(self):
        """H = −log C − κ (log 2 + ψ(α) − ψ(α+β))  ([1, eq. 8])."""
        alpha, beta = self._alpha_beta()
        expected_log = math.log(2) + torch.digamma(alpha) - torch.digamma(alpha + beta)
        return -self.log_normalizer() - self.concentration * expected_log
