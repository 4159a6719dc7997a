"""Regularized incomplete gamma function P(α, x) and its derivative in α (PyTorch).

The implicit reparameterization gradient of a standard Gamma(α, 1) sample x is ([1], eq. 7)

    dx/dα = -(∂P(α, x)/∂α) / p(x; α),        p(x; α) = x^(α-1) e^(-x) / Γ(α).

:func:`standard_gamma_grad` computes this ratio directly, never forming ∂P/∂α and p
separately (both underflow long before their ratio does). Three regimes, chosen per element
and evaluated with a fixed amount of vectorized work (no Python loop over elements, no
data-dependent iteration counts):

* **series** (α < 4, x < α + 2): P = x^α e^(-x) / Γ(α+1) · S with S = Σ_n x^n / (α+1)_n
  ([2], eq. 6.5.29), differentiated term by term in forward mode;
* **continued fraction** (α < 4, x ≥ α + 2): Q = 1 - P = x^α e^(-x) / Γ(α) · C with the
  Legendre continued fraction C ([2], eq. 6.5.31; modified Lentz), differentiated in forward
  mode;
* **large α** (α ≥ 4): the exact integral ∂P/∂α = ∫_0^x p(t; α)(log t - ψ(α)) dt, taken in
  u = log(t/x) over a window that holds all but e^-45 of the integrand, by 32-point Gauss-Legendre
  quadrature. The integrand is a smooth bump of width ~1/√α there, so a fixed number of nodes
  gives full double accuracy uniformly up to α = 1e4 and beyond, where series and continued
  fraction need O(√α) terms. It plays the role of Temme's uniform asymptotic expansion
  ([3], §11) without its coefficient tables. The side of x that carries no sign change of
  log t - ψ(α) is integrated (the left tail for x < e^ψ(α), the right tail otherwise), so the
  sum never cancels.

Relative accuracy of dx/dα against mpmath is ≤ 1e-12 over α ∈ [1e-4, 1e4] and quantiles
[0.01, 0.99] in float64 (tests/test_implicit.py).

References:
    [1] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients.
        NeurIPS.
    [2] M. Abramowitz, I. A. Stegun (1972). Handbook of Mathematical Functions, ch. 6.5.
    [3] N. M. Temme (1996). Special Functions: An Introduction to the Classical Functions of
        Mathematical Physics, ch. 11.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["gammainc", "gammainc_grad_a", "standard_gamma_grad"]

#: below this concentration the series / continued fraction regimes are used
LARGE_CONCENTRATION = 4.0
#: terms of the series and of the continued fraction (enough for α < LARGE_CONCENTRATION:
#: measured truncation error ≤ 3e-13 (series) and ≤ 6e-12 (fraction, worst at x = α + 2)
#: relative, against 32/40 terms on 2e5 random points of each regime)
NUM_SERIES_TERMS = 28
NUM_FRACTION_TERMS = 28
#: log of the integrand's drop at the edge of the quadrature window
_WINDOW_LOG_DROP = 45.0
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(32)


def _series_ratio(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx/dα in the series regime: -(x/α)·(S·(log x - ψ(α+1)) + ∂S/∂α).

    With t_n = x^n/(α+1)_n, ∂t_n/∂α = t_n·r_n where r_n = -Σ_{k≤n} 1/(α+k), so
    ∂S/∂α = Σ t_n r_n: seven in-place passes per term (all terms and sums positive or all
    negative: no cancellation).
    """
    term = torch.ones_like(x)  # t_n
    relative = torch.zeros_like(x)  # r_n = (∂t_n/∂α)/t_n
    total = torch.ones_like(x)  # S
    dtotal = torch.zeros_like(x)  # ∂S/∂α
    for n in range(1, NUM_SERIES_TERMS + 1):
        inverse = torch.add(a, n).reciprocal_()
        term.mul_(x * inverse)
        relative.sub_(inverse)
        total.add_(term)
        dtotal.addcmul_(term, relative)
    log_x_minus_digamma = torch.log(x) - torch.digamma(a + 1)
    return -(x / a) * (total * log_x_minus_digamma + dtotal)


def _continued_fraction_ratio(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx/dα in the continued-fraction regime: x·(C·(log x - ψ(α)) + ∂C/∂α).

    C = 1/(b_0 - a_1/(b_1 - a_2/(b_2 - ...))) with b_i = x + 2i + 1 - α, a_i = i(i - α),
    evaluated by the modified Lentz algorithm with forward-mode derivatives in α.
    """
    b = x + 1 - a
    d = 1 / b  # Lentz's D_i
    dd = d * d  # ∂D/∂α = -∂b/∂α / b² with ∂b/∂α = -1
    h, dh = d, dd
    c = None  # Lentz's C_i (infinite before the first step)
    dc = None
    # fused forms (addcmul, one reciprocal per quotient): the same recurrences in ~20 instead
    # of ~29 passes over the array, and no divisions
    for i in range(1, NUM_FRACTION_TERMS + 1):
        an = (a - i) * i  # ∂an/∂α = i
        b = b + 2
        ddenominator = an * dd + (i * d - 1)  # ∂/∂α (an·d + b)
        d = torch.reciprocal(torch.addcmul(b, an, d))
        dd = -ddenominator * d * d
        if c is None:
            c, dc = b, torch.full_like(x, -1.0)
        else:
            # c = b + an/c
            inverse_c = torch.reciprocal(c)
            dc = (i - an * dc * inverse_c) * inverse_c - 1
            c = torch.addcmul(b, an, inverse_c)
        delta = d * c
        dh = torch.addcmul(dh * delta, h, torch.addcmul(dd * c, d, dc))
        h = h * delta
    return x * (h * (torch.log(x) - torch.digamma(a)) + dh)


def _quadrature_ratio(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx/dα for large α by Gauss-Legendre quadrature of the exact integral.

    With u = log(t/x), p(t)/p(x) dt = x·exp(g(u)) du, g(u) = αu - x·expm1(u), so
        x < e^ψ(α):  dx/dα = -x ∫_{-∞}^0 e^{g(u)} (u + log x - ψ(α)) du   (integrand < 0)
        x ≥ e^ψ(α):  dx/dα = +x ∫_0^∞  e^{g(u)} (u + log x - ψ(α)) du    (integrand > 0)
    truncated where g has dropped by _WINDOW_LOG_DROP below its maximum.
    """
    log_x = torch.log(x)
    shift = log_x - torch.digamma(a)
    left = shift < 0
    drop = _WINDOW_LOG_DROP
    # Window length: the root of the quadratic lower/upper bound of g on each side.
    # Right: x(e^U - 1) - αU ≥ (x-α)U + xU²/2 = drop  -> this U is already wide enough.
    # Left: αL - x(1 - e^-L) ≤ (α-x)L + xL²/2; one Newton step from its root (convex,
    # increasing function) lands at or beyond the true root.
    gap = torch.where(left, a - x, x - a)
    width = 2 * drop / (gap + torch.sqrt(gap * gap + 2 * drop * x))
    residual = a * width + x * torch.expm1(-width) - drop
    newton = width - residual / (a - x * torch.exp(-width))
    width = torch.where(left, torch.maximum(width, newton), width)
    half = torch.where(left, -0.5 * width, 0.5 * width)  # u runs over [0, ±width]
    total = torch.zeros_like(x)
    a_half = a * half
    # fused: g = αu − x·expm1(u) with u = half·(1 + node), one addcmul per node for the sum
    for node, weight in zip(_GAUSS_NODES.tolist(), _GAUSS_WEIGHTS.tolist(), strict=True):
        u = half * (1 + node)
        g = torch.addcmul(a_half * (1 + node), x, torch.expm1(u), value=-1)
        total.addcmul_(g.exp_(), u.add_(shift), value=weight)
    return x * half * total


#: elements per chunk on the CPU (64k float64 = 512 KiB per array: the regimes' working set
#: stays in the cache; measured 4.5x faster for the series at 1e6 draws than one pass)
_CHUNK = 1 << 16


def _in_chunks(regime, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``regime(a, x)`` on 1-d inputs, evaluated chunk by chunk (the same values)."""
    if a.numel() <= _CHUNK:
        return regime(a, x)
    parts = [
        regime(a_part, x_part)
        for a_part, x_part in zip(a.split(_CHUNK), x.split(_CHUNK), strict=True)
    ]
    return torch.cat(parts)


def standard_gamma_grad(concentration: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Implicit reparameterization gradient dx/dα of a standard Gamma(α, 1) sample x.

    Example::

        >>> alpha = torch.tensor([0.5, 3.0])
        >>> x = torch._standard_gamma(alpha)
        >>> dx_dalpha = standard_gamma_grad(alpha, x)

    :param torch.Tensor concentration: α > 0.
    :param torch.Tensor value: x ≥ 0 (broadcast against ``concentration``).
    :returns: -(∂P(α, x)/∂α) / p(x; α) (module docstring), 0 where x = 0.
    """
    a, x = torch.broadcast_tensors(concentration, value)
    regimes = _regimes(a, x)
    if x.device.type == "cpu":
        return _gather_regimes(a, x, regimes)
    return _select_regimes(a, x, regimes)


def _regimes(a: torch.Tensor, x: torch.Tensor):
    """(mask, function) of each regime; x = 0 is in none of them (its gradient is 0)."""
    positive = x > 0
    large = a >= LARGE_CONCENTRATION
    use_series = ~large & (x < a + 2)
    return (
        (positive & use_series, _series_ratio),
        (positive & ~use_series & ~large, _continued_fraction_ratio),
        (positive & large, _quadrature_ratio),
    )


def _gather_regimes(a: torch.Tensor, x: torch.Tensor, regimes) -> torch.Tensor:
    """CPU: each regime on its own elements only (2-3x faster than all regimes on all
    elements; boolean indexing costs no device-to-host synchronization on the CPU), in
    chunks that stay in the cache (another 1.5-4.5x for the ~200 elementwise passes)."""
    result = torch.zeros_like(x)
    for mask, regime in regimes:
        result[mask] = _in_chunks(regime, a[mask], x[mask])
    return result


def _select_regimes(a: torch.Tensor, x: torch.Tensor, regimes) -> torch.Tensor:
    """Accelerators: every regime on every element, each fed safe dummy inputs where it is
    not used, and torch.where picks; no data-dependent shapes, no host round-trip."""
    result = torch.zeros_like(x)
    dummy_a = torch.full_like(a, LARGE_CONCENTRATION / 2)
    dummy_x = torch.full_like(x, LARGE_CONCENTRATION / 2)
    for mask, regime in regimes:
        value = regime(torch.where(mask, a, dummy_a), torch.where(mask, x, dummy_x))
        result = torch.where(mask, value, result)
    return result


def _log_gamma_density(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.xlogy(a - 1, x) - x - torch.lgamma(a)


def gammainc_grad_a(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """∂P(α, x)/∂α of the regularized lower incomplete gamma function.

    Example::

        >>> gammainc_grad_a(torch.tensor(2.0), torch.tensor(1.5))  # ≈ -0.3135

    :param torch.Tensor a: α > 0.
    :param torch.Tensor x: x ≥ 0.
    """
    a, x = torch.broadcast_tensors(a, x)
    density = torch.exp(_log_gamma_density(a, x))
    return torch.where(x > 0, -standard_gamma_grad(a, x) * density, torch.zeros_like(x))


class _GammaInc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, x):
        ctx.save_for_backward(a, x)
        return torch.special.gammainc(a, x)

    @staticmethod
    def backward(ctx, grad_output):
        a, x = ctx.saved_tensors
        grad_a = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_a = grad_output * gammainc_grad_a(a, x)
        if ctx.needs_input_grad[1]:
            grad_x = grad_output * torch.exp(_log_gamma_density(a, x))
        return grad_a, grad_x


def gammainc(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Regularized lower incomplete gamma function P(α, x), differentiable in α and in x.

    ``torch.special.gammainc`` has no derivative in α; this one has ∂P/∂α from
    :func:`gammainc_grad_a` (first derivatives only).

    Example::

        >>> a = torch.tensor(2.0, requires_grad=True)
        >>> gammainc(a, torch.tensor(1.5)).backward()  # a.grad ≈ -0.3135

    :param torch.Tensor a: α > 0.
    :param torch.Tensor x: x ≥ 0.
    """
    a, x = torch.broadcast_tensors(a, x)
    return _GammaInc.apply(a, x)
