"""Implicit reparameterization gradient of a Beta sample through the Beta CDF (PyTorch).

For z ~ Beta(α, β) with CDF I_z(α, β) (the regularized incomplete beta function),
([1], eq. 7)

    dz/dα = -(∂I_z(α, β)/∂α) / p(z),      dz/dβ = -(∂I_z(α, β)/∂β) / p(z).

I_z = z^α (1-z)^β / (α B(α, β)) · C with the continued fraction C of [2], eq. 26.5.8
(evaluated by the modified Lentz algorithm), differentiated in α and β in forward mode; the
prefactor over the density is z(1-z)/α, so the ratio is formed without exponentials. The
fraction converges fast for z < (α+1)/(α+β+2); above, I_z(α, β) = 1 - I_(1-z)(β, α) is used.
A fixed number of terms (no data-dependent loops): 96 give ≤ 1e-10 relative error against
mpmath for α, β ∈ [0.01, 1000] (tests/test_implicit.py) and ~3e-11 at α, β ~ 3000; the number
needed grows like √max(α, β).

References:
    [1] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients.
    [2] M. Abramowitz, I. A. Stegun (1972). Handbook of Mathematical Functions, ch. 26.5.
"""

from __future__ import annotations

import torch

__all__ = ["beta_grad"]

#: terms of the continued fraction
NUM_FRACTION_TERMS = 96


def _fraction_ratio(a, b, x):
    """(dz/dα, dz/dβ) for z = x < (α+1)/(α+β+2) by the forward-mode Lentz recursion."""
    one = torch.ones_like(x)
    zero = torch.zeros_like(x)
    apb = a + b
    # first step: d = 1/(1 - (α+β) x / (α+1)), c = 1
    denominator = 1 - apb * x / (a + 1)
    ddenominator_a = -x / (a + 1) + apb * x / (a + 1) ** 2
    ddenominator_b = -x / (a + 1)
    d = 1 / denominator
    dd_a = -ddenominator_a * d * d
    dd_b = -ddenominator_b * d * d
    c, dc_a, dc_b = one, zero, zero
    h, dh_a, dh_b = d, dd_a, dd_b

    def lentz(coef, dcoef_a, dcoef_b, c, dc_a, dc_b, d, dd_a, dd_b):
        denominator = 1 + coef * d
        dden_a = dcoef_a * d + coef * dd_a
        dden_b = dcoef_b * d + coef * dd_b
        d_new = 1 / denominator
        dd_a = -dden_a * d_new * d_new
        dd_b = -dden_b * d_new * d_new
        c_new = 1 + coef / c
        dc_a = dcoef_a / c - coef * dc_a / (c * c)
        dc_b = dcoef_b / c - coef * dc_b / (c * c)
        return c_new, dc_a, dc_b, d_new, dd_a, dd_b

    for m in range(1, NUM_FRACTION_TERMS + 1):
        # even step: m(β-m)x / ((α+2m-1)(α+2m))
        p, q = a + 2 * m - 1, a + 2 * m
        coef = m * (b - m) * x / (p * q)
        dcoef_a = -coef * (1 / p + 1 / q)
        dcoef_b = m * x / (p * q)
        c, dc_a, dc_b, d, dd_a, dd_b = lentz(coef, dcoef_a, dcoef_b, c, dc_a, dc_b, d, dd_a, dd_b)
        delta = d * c
        dh_a = dh_a * delta + h * (dd_a * c + d * dc_a)
        dh_b = dh_b * delta + h * (dd_b * c + d * dc_b)
        h = h * delta
        # odd step: -(α+m)(α+β+m)x / ((α+2m)(α+2m+1))
        p, q = a + 2 * m, a + 2 * m + 1
        coef = -(a + m) * (apb + m) * x / (p * q)
        dcoef_a = -((apb + m) + (a + m)) * x / (p * q) - coef * (1 / p + 1 / q)
        dcoef_b = -(a + m) * x / (p * q)
        c, dc_a, dc_b, d, dd_a, dd_b = lentz(coef, dcoef_a, dcoef_b, c, dc_a, dc_b, d, dd_a, dd_b)
        delta = d * c
        dh_a = dh_a * delta + h * (dd_a * c + d * dc_a)
        dh_b = dh_b * delta + h * (dd_b * c + d * dc_b)
        h = h * delta
    digamma_apb = torch.digamma(apb)
    log_a = torch.log(x) - 1 / a - torch.digamma(a) + digamma_apb
    log_b = torch.log1p(-x) - torch.digamma(b) + digamma_apb
    scale = -x * (1 - x) / a
    return scale * (h * log_a + dh_a), scale * (h * log_b + dh_b)


def beta_grad(
    concentration1: torch.Tensor, concentration0: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Implicit reparameterization gradients (dz/dα, dz/dβ) of a Beta(α, β) sample z.

    Example::

        >>> dz_da, dz_db = beta_grad(torch.tensor(2.0), torch.tensor(3.0), torch.tensor(0.3))

    :param torch.Tensor concentration1: α > 0.
    :param torch.Tensor concentration0: β > 0.
    :param torch.Tensor value: z ∈ (0, 1).
    """
    a, b, x = torch.broadcast_tensors(concentration1, concentration0, value)
    flip = x > (a + 1) / (a + b + 2)
    # on the flipped side, w = 1 - z ~ Beta(β, α): dz/dα = -dw/d(second), dz/dβ = -dw/d(first)
    first, second = _fraction_ratio(
        torch.where(flip, b, a), torch.where(flip, a, b), torch.where(flip, 1 - x, x)
    )
    return torch.where(flip, -second, first), torch.where(flip, -first, second)
