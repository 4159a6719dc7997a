"""Power Spherical distribution on the sphere S^{d−1} ⊂ R^d (De Cao & Aziz 2020), PyTorch."""

from __future__ import annotations

import math

import torch

from pyro_reparam_ext.distributions.von_mises_fisher import SphereLocConcentration
from pyro_reparam_ext.ops.sphere import embed_rotate

__all__ = ["PowerSpherical"]


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
    G_α, G_β directly, t = 1 − μᵀz stays precise when κ is large).

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
        alpha, _ = self._alpha_beta()
        # s = (1 − μᵀz)/2 ~ Beta(β, α) as G_β/(G_β + G_α): with v ~ N(0, I_{d−1}), |v|²/2 is
        # the Gamma(β = (d−1)/2) draw and v/|v| the uniform tangent, independent of each
        # other, so one Gaussian vector gives both; only G_α depends on κ (reparameterized).
        v = torch.randn(shape[:-1] + (self.dim - 1,), dtype=self.loc.dtype, device=self.loc.device)
        norm_sq = torch.linalg.vecdot(v, v)
        gamma_beta = norm_sq / 2
        gamma_alpha = torch._standard_gamma(alpha.expand(shape[:-1]))
        total = gamma_beta + gamma_alpha
        # z relative to e₁: (1 − 2s, 2 sqrt(s(1 − s))·v/|v|) = (G_α − G_β, sqrt(2G_α)·v)/(G_α + G_β)
        first = (gamma_alpha - gamma_beta) / total
        return embed_rotate(self.loc, first, torch.sqrt(2 * gamma_alpha) / total, v)

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
