"""Regularized incomplete gamma function P(α, x) and its derivative in α (PyTorch).

The implicit reparameterization gradient of a standard Gamma(α, 1) sample x is ([1], eq. 7)

    dx/dα = -(∂P(α, x)/∂α) / p(x; α),        p(x; α) = x^(α-1) e^(-x) / Γ(α).

:func:`standard_gamma_grad` computes this ratio directly, never forming ∂P/∂α and p
separately (both underflow long before their ratio does). Four regimes, chosen per element
and evaluated with a fixed amount of vectorized work (no Python loop over elements, no
data-dependent iteration counts):

* **series** (α < 20, x < α + 2): P = x^α e^(-x) / Γ(α+1) · S with S = Σ_n x^n / (α+1)_n
  ([2], eq. 6.5.29), summed by Horner's rule from its last term and differentiated alongside
  (with the number of terms its truncation bound needs, per group of elements on the CPU);
* **continued fraction** (α < 20, x ≥ α + 2): Q = 1 - P = x^α e^(-x) / Γ(α) · C with the
  Legendre continued fraction C ([2], eq. 6.5.31; modified Lentz), differentiated in forward
  mode;
* **uniform asymptotic expansion** (α ≥ 20, |η| ≤ 0.6 with λ = x/α and
  η = sign(λ - 1)√(2(λ - 1 - log λ))): differentiating Temme's expansion of Q(α, x)
  ([4] 8.12; [3] §11.2) in α at fixed x and dividing by p(x; α), every exponential cancels:
  dx/dα = λ Σ_j d_j(η) α^-j, with d_j power series in η whose exact coefficients
  tests/make_gamma_asymptotic.py derives; the table keeps the terms above 1e-16 at the regime
  edge (a ~100-term polynomial in η and 1/α: no transcendental function but one log1p and a
  square root per element; truncation ≤ 5e-14 relative);
* **quadrature** (α ≥ 20 in the tails |η| > 0.6): the exact integral
  ∂P/∂α = ∫_0^x p(t; α)(log t - ψ(α)) dt, taken in u = log(t/x) over a window that holds all
  but e^-45 of the integrand, by 32-point Gauss-Legendre quadrature. The integrand is a
  smooth bump of width ~1/√α there, so a fixed number of nodes gives full double accuracy
  uniformly in α, where series and continued fraction need O(√α) terms. The side of x that
  carries no sign change of log t - ψ(α) is integrated (the left tail for x < e^ψ(α), the
  right tail otherwise), so the sum never cancels.

On the CPU each element runs only its own regime, in groups (one stable argsort of a
per-element uint8 code): the series by ceil(4√x), the continued fraction by half octaves
of α and of x - α, each group with the fewest terms that its worst point needs (truncation
≤ 1e-14 relative in float64, tests/make_gamma_terms.py); large α by octaves of α, each with
the coefficient table cut at its smallest α (octaves [20·2^j, 20·2^(j+1))). The series and
the continued fraction are evaluated there in division-free forms (products over a common
denominator; five and eight fused passes per term), ψ(α+N+1) of the series by its
asymptotic expansion; x ≤ 1e-17 by the series' first term alone (products of tiny x would
be subnormal, ~100x slower); when all α are equal, the α-only factors are numbers (two
passes per series term, α not gathered) and the large-α table is one polynomial in η.
Host reads there: the range of α and the group sizes (``tolist``), the codes (numpy's
argsort), the quadrature's elements among α ≥ 20 (``nonzero``). They stay because any
schedule that does not read the data does the same work for every input, that of the
worst one: every element would need the costliest regime's most terms (the quadrature
alone costs ~4x torch's Gamma.rsample + backward per element, float64; every regime on
every element, as on accelerators, 7-15x). Accelerators run every regime on every element
with its most terms and pick with torch.where (no host synchronization).

Relative accuracy of dx/dα against mpmath is ≤ 1e-12 over α ∈ [1e-4, 1e4] and quantiles
[0.01, 0.99] in float64 (tests/test_implicit.py; measured ≤ 1e-14 on the CPU).

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

import numpy as np
import torch

__all__ = ["gammainc", "gammainc_grad_a", "standard_gamma_grad"]

#: below this concentration the accelerator path's series has NUM_SERIES_TERMS terms, above
#: it (up to ASYMPTOTIC_CONCENTRATION) NUM_LONG_SERIES_TERMS
LARGE_CONCENTRATION = 4.0
#: terms of the accelerator path (every element gets its regime's most): the largest
#: float64 entries of the CPU path's tables (_SERIES_TERMS for x ≤ 6.25 > α + 2 and for all
#: x < 22, _FRACTION_TERMS), whose truncation is ≤ 1e-14 relative at every group's worst
#: point (tests/make_gamma_terms.py)
NUM_SERIES_TERMS = 31
NUM_FRACTION_TERMS = 42
NUM_LONG_SERIES_TERMS = 49
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
def _asymptotic_rows(
    dtype: torch.dtype,
    eta: float = ASYMPTOTIC_ETA,
    min_concentration: float = ASYMPTOTIC_CONCENTRATION,
) -> tuple[tuple[float, ...], ...]:
    """The rows of _ASYMPTOTIC_COEFFICIENTS cut to the terms that matter at ``dtype``:
    |d_jn| η^n α^-j > 50 eps at the edge of the cell |η| ≤ ``eta``, α ≥ ``min_concentration``
    (by default the regime's edge η = 0.6, α = 20: float64 keeps 101 of the 139
    coefficients (truncation ≤ 5e-14 relative, measured), float32 12). Smaller cells
    (:data:`_ASYMPTOTIC_CELLS`) keep fewer terms under the same rule."""
    tolerance = 50 * torch.finfo(dtype).eps
    rows = []
    for j, row in enumerate(_ASYMPTOTIC_COEFFICIENTS):
        scale = min_concentration**-j
        kept = [n for n, c in enumerate(row) if abs(c) * eta**n * scale > tolerance]
        if not kept:
            break
        rows.append(row[: kept[-1] + 1])
    return tuple(rows)


def _series_ratio(
    a: torch.Tensor, x: torch.Tensor, num_terms: int = NUM_SERIES_TERMS
) -> torch.Tensor:
    """dx/dα in the series regime: -(x/α)·(S·(log x - ψ(α+1)) + ∂S/∂α), S = Σ_{n≤N} t_n.

    Horner from the last term: S = h_0 with h_N = 1, h_{k-1} = 1 + h_k/v_k, where
    v_k = (α+k)/x = α/x + k/x (one fused pass); ∂v_k/∂α = 1/x, so y_k = x·∂h_k/∂α obeys
    y_N = 0, y_{k-1} = (y_k - h_k/v_k)/v_k. Four passes per term, all fused (h > 0 and
    y ≤ 0 throughout: no cancellation); then dx/dα = (x·S·(ψ(α+1) - log x) - y_0)/α. Where
    1/x overflows (subnormal x), v_k = inf and the terms vanish, as they do in exact arithmetic.
    """
    inverse_x = torch.reciprocal(x)
    a_over_x = a * inverse_x
    one = torch.ones((), dtype=x.dtype, device=x.device)
    v = torch.empty_like(x)
    h = torch.ones_like(x)
    y = torch.zeros_like(x)
    for k in range(num_terms, 0, -1):
        torch.add(a_over_x, inverse_x, alpha=k, out=v)
        y.addcdiv_(h, v, value=-1).div_(v)
        torch.addcdiv(one, h, v, out=h)
    digamma_minus_log_x = torch.digamma(a + 1).sub_(torch.log(x))
    return h.mul_(digamma_minus_log_x).mul_(x).sub_(y).div_(a)


def _long_series_ratio(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The series with NUM_LONG_SERIES_TERMS terms, for LARGE_CONCENTRATION ≤ α <
    ASYMPTOTIC_CONCENTRATION."""
    return _series_ratio(a, x, NUM_LONG_SERIES_TERMS)


def _continued_fraction_ratio(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx/dα in the continued-fraction regime: x·(C·(log x - ψ(α)) + ∂C/∂α).

    1/C = t_0 with t_k = b_k + e_{k+1}/t_{k+1}, t_N = b_N, b_k = x + 2k + 1 - α and
    e_k = k(α - k) (the N-th convergent of the same fraction as the modified Lentz
    algorithm, evaluated from its tail: 8 fused passes per term), differentiated in forward
    mode: with q = e_{k+1}/t_{k+1}, ∂t_k/∂α = -1 - (q ∂t_{k+1}/∂α - k - 1)/t_{k+1}.
    """
    base = x + 1 - a  # b_0
    t = base + 2 * NUM_FRACTION_TERMS
    dt = torch.full_like(x, -1.0)
    minus_one = torch.full((), -1.0, dtype=x.dtype, device=x.device)
    q = torch.empty_like(x)
    for k in range(NUM_FRACTION_TERMS - 1, -1, -1):
        i = k + 1
        torch.add(a, -i, out=q).mul_(i).div_(t)  # e_i / t_i, e_i = i (α - i)
        dt.mul_(q).sub_(i)
        torch.addcdiv(minus_one, dt, t, value=-1, out=dt)
        q, t = t, q.add_(base).add_(2 * k)  # t_k; the old buffer holds the next q
    h = torch.reciprocal(t)
    dh = -dt * h * h
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


@functools.cache
def _asymptotic_row_tensors(dtype: torch.dtype, device: torch.device, cell: tuple = ()):
    """_asymptotic_rows(dtype, *cell) as 0-dim tensors, so that each Horner step is one fused
    addcmul."""
    return tuple(
        tuple(torch.tensor(c, dtype=dtype, device=device) for c in row)
        for row in _asymptotic_rows(dtype, *cell)
    )


def _asymptotic_ratio(a: torch.Tensor, x: torch.Tensor, cell: tuple = ()) -> torch.Tensor:
    """dx/dα for large α and |η| ≤ ASYMPTOTIC_ETA: λ Σ_j α^-j Σ_n d_jn η^n (Horner in η for
    each j, one fused pass per coefficient, then in 1/α), with λ = x/α and
    η = sign(λ - 1) √(2(λ - 1 - log λ)). ``cell`` = (η_max, α_min) cuts the table to a
    smaller cell (:func:`_asymptotic_rows`)."""
    return _asymptotic_values(a, x, _asymptotic_row_tensors(x.dtype, x.device, tuple(cell)))[0]


def _asymptotic_values(a: torch.Tensor, x: torch.Tensor, rows) -> tuple:
    """(_asymptotic_ratio with the 0-dim coefficient tensors ``rows``, mask |η| > ASYMPTOTIC_ETA
    (or x = 0), where the value is not used)."""
    w = x / a - 1  # λ - 1
    half_eta_sq = w - torch.log1p(w)
    tail = half_eta_sq > ASYMPTOTIC_ETA**2 / 2
    eta = torch.copysign(half_eta_sq.mul_(2).clamp_(min=0).sqrt_(), w)
    inverse_a = torch.reciprocal(a) if len(rows) > 1 else None
    total = None
    for row in reversed(rows):
        if len(row) == 1:
            value = row[0].expand_as(x).clone()
        else:
            value = torch.addcmul(row[-2], eta, row[-1])
        for coefficient in reversed(row[:-2]):
            torch.addcmul(coefficient, value, eta, out=value)
        total = value if total is None else value.addcmul_(total, inverse_a)
    return total.mul_(w.add_(1)), tail


#: elements per chunk on the CPU (16k float64 = 128 KiB per array: the working set of the
#: series, ~7 arrays, stays in the L2 cache; measured fastest of 8k-64k)
_CHUNK = 1 << 14
#: elements per chunk of the group codes (a dozen cheap passes each: larger chunks dispatch
#: fewer of them; 64k measured fastest of 16k-128k)
_CODE_CHUNK = 1 << 16

# ---------------------------------------------------------------------------------------
# CPU: term counts chosen per element group, division-free recurrences, float64 arithmetic
#
# Term counts (tests/make_gamma_terms.py derives them): the smallest N whose truncation
# error of dx/dα is ≤ 1e-14 (float64) / 4 eps (float32) relative at the worst point of each
# group, measured against 300 (series) / 500 (continued fraction) terms in 80-bit arithmetic.
#: series groups k = ceil(4√x), x ∈ ((k-1)²/16, k²/16] (k = 1..19 covers x < α + 2 < 22);
#: worst point of group k: x = k²/16 at the regime edge α = x - 2 (or α → 0)
_SERIES_BINS = 19
_SERIES_TERMS = {
    torch.float64: (8, 11, 14, 17, 20, 23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43, 45, 47, 49),
    torch.float32: (4, 6, 8, 10, 12, 14, 15, 17, 18, 19, 21, 22, 24, 25, 26, 28, 29, 30, 31),
}
#: continued-fraction groups (c, j): c = clamp(ceil(2 log2 α) + 6, 0, 14) (half octaves of
#: α, c = 0 for α ≤ 1/8, c = 14 for α > 2^3.5), j = clamp(ceil(2 log2((x - α)/2)), 0, 11)
#: (half octaves of x - α ≥ 2, j = 11 for x - α > 2^6.5); worst point: the smallest x - α of
#: the group, the maximum over 5 values of α spread over the group
# fmt: off
_FRACTION_TERMS = {
    torch.float64: (
        (42, 42, 31, 23, 18, 14, 11, 9, 7, 6, 5, 4), (39, 39, 29, 22, 17, 13, 10, 8, 7, 6, 5, 4),
        (38, 38, 28, 22, 17, 13, 10, 8, 7, 6, 5, 4), (36, 36, 27, 21, 16, 13, 10, 8, 7, 6, 5, 4),
        (33, 33, 26, 20, 15, 12, 10, 8, 7, 6, 5, 4), (29, 29, 23, 18, 14, 11, 9, 7, 6, 5, 5, 4),
        (29, 29, 23, 18, 14, 11, 9, 7, 6, 5, 4, 4), (27, 27, 22, 17, 14, 11, 9, 7, 6, 5, 4, 4),
        (23, 23, 19, 15, 12, 10, 8, 7, 6, 5, 4, 4), (20, 20, 17, 14, 12, 10, 8, 7, 6, 5, 4, 4),
        (17, 17, 15, 13, 11, 9, 8, 6, 6, 5, 4, 4), (15, 15, 13, 12, 10, 9, 8, 7, 6, 5, 5, 4),
        (13, 13, 12, 11, 10, 9, 8, 7, 7, 6, 6, 5), (13, 13, 12, 12, 11, 11, 10, 9, 8, 7, 6, 6),
        (17, 17, 17, 17, 16, 15, 14, 12, 11, 9, 8, 7),
    ),
    torch.float32: (
        (11, 11, 8, 6, 5, 4, 3, 3, 2, 2, 2, 1), (10, 10, 7, 6, 5, 4, 3, 2, 2, 2, 2, 1),
        (9, 9, 7, 6, 4, 4, 3, 2, 2, 2, 1, 1), (9, 9, 7, 5, 4, 3, 3, 2, 2, 2, 1, 1),
        (8, 8, 6, 5, 4, 3, 3, 2, 2, 2, 1, 1), (7, 7, 5, 4, 4, 3, 2, 2, 2, 2, 1, 1),
        (7, 7, 5, 4, 4, 3, 2, 2, 2, 1, 1, 1), (7, 7, 5, 4, 4, 3, 2, 2, 2, 1, 1, 1),
        (6, 6, 5, 4, 3, 3, 2, 2, 2, 1, 1, 1), (5, 5, 5, 4, 3, 3, 2, 2, 2, 2, 2, 1),
        (5, 5, 4, 4, 4, 3, 3, 3, 2, 2, 2, 2), (5, 5, 5, 5, 5, 4, 4, 3, 3, 2, 2, 2),
        (7, 7, 7, 6, 6, 5, 4, 4, 3, 3, 2, 2), (8, 8, 8, 7, 7, 6, 5, 4, 4, 3, 2, 2),
        (11, 11, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2),
    ),
}
# fmt: on
#: α ≥ 20 runs in groups by octave of α, [20·2^j, 20·2^(j+1)) (j = 0..6, the last open), each
#: with the coefficient table cut at its smallest α (rounded down to a
#: quarter octave from 20; :func:`_asymptotic_rows`); |η| > ASYMPTOTIC_ETA: the quadrature
_CONCENTRATION_OCTAVES = 7
#: group codes: 0 (x ≤ _TINY, x = 0 included), 1.._SERIES_BINS (series), _FRACTION_CODE (the
#: continued fraction, regrouped by :func:`_fraction_groups`), _LARGE_CODE + j (α ≥ 20)
_FRACTION_CODE = _SERIES_BINS + 1
_LARGE_CODE = _SERIES_BINS + 2
_NUM_CODES = _LARGE_CODE + _CONCENTRATION_OCTAVES
#: x ≤ _TINY (α < 20): the series' first term alone (:func:`_tiny_ratio`)
_TINY = 1e-17
_TINY_SHIFT = 4 * math.sqrt(_TINY)
#: scale of the branch-free continued-fraction test of :func:`_group_codes`
_HUGE = 1e30
#: the code of each value of :func:`_octaves` (0: α < 20, below every other code)
_LARGE_CODES = torch.tensor((0.0, *range(_LARGE_CODE, _NUM_CODES)), dtype=torch.float32)
#: the series' scale factor per term (see :func:`_series_product_ratio`)
_SERIES_SCALE = 1 / 16
#: a group smaller than this many element-terms below the next larger group runs with it
#: (one group costs ~1 µs of dispatch per pass, an element-term ~2-4 ns)
_MERGE_WORK = 1 << 14
#: ψ(z) - log z + 1/(2z) = -Σ_k B_2k / (2k z^2k), k = 1..8 (error < 1e-16 for z ≥ 9)
_DIGAMMA_ASYMPTOTIC = (
    -1 / 12,
    1 / 120,
    -1 / 252,
    1 / 240,
    -1 / 132,
    691 / 32760,
    -1 / 12,
    3617 / 8160,
)


@functools.cache
def _scalars(dtype: torch.dtype, values: tuple) -> tuple:
    """0-dim CPU tensors of ``values``: an op with a tensor operand dispatches ~2x faster
    than with a Python number, which torch wraps into a new tensor on every call."""
    return tuple(torch.tensor(v, dtype=dtype) for v in values)


def _digamma_large(z: torch.Tensor, min_z: float) -> torch.Tensor:
    """ψ(z) for z ≥ min_z ≥ 5 by its asymptotic series, cut after the last term above
    eps/8 at min_z (float64: 8 terms at z = 9, 5 from z = 29): one log, one reciprocal and a
    few fused passes instead of torch.digamma (~10x the cost)."""
    tolerance = torch.finfo(z.dtype).eps / 8
    kept = [
        c for k, c in enumerate(_DIGAMMA_ASYMPTOTIC, 1) if abs(c) * min_z ** (-2 * k) > tolerance
    ]
    coefficients = _scalars(z.dtype, tuple(kept) or (0.0,))
    inverse = torch.reciprocal(z)
    inverse_sq = inverse * inverse
    total = coefficients[-1].expand_as(z).clone()
    for coefficient in reversed(coefficients[:-1]):
        torch.addcmul(coefficient, total, inverse_sq, out=total)
    return total.mul_(inverse_sq).sub_(inverse, alpha=0.5).add_(torch.log(z))


def _digamma_number(z: float) -> float:
    """ψ(z) of a Python number z > 0 (no tensor, no host read): the recurrence
    ψ(z) = ψ(z + m) - Σ_{j<m} 1/(z + j) up to z + m ≥ 10, then the asymptotic series of
    :func:`_digamma_large` (all 8 terms: < 1e-17 at 10)."""
    shift = 0.0
    while z < 10:
        shift -= 1 / z
        z += 1
    inverse_sq = 1 / (z * z)
    total = 0.0
    for coefficient in reversed(_DIGAMMA_ASYMPTOTIC):
        total = total * inverse_sq + coefficient
    return math.log(z) - 0.5 / z + total * inverse_sq + shift


def _series_product_ratio(a: torch.Tensor, x: torch.Tensor, num_terms: int) -> torch.Tensor:
    """dx/dα in the series regime without a division per term (CPU).

    dx/dα = (x/α) Σ_n t_n (ψ(α+n+1) - log x) with t_n = x^n/(α+1)_n (the series of
    :func:`_series_ratio`, with ψ(α+1) + Σ_{j≤n} 1/(α+j) = ψ(α+n+1)). Over the common
    denominator B_0 = (α+1)_N: t_n = x^n B_n/B_0 with B_n = Π_{n<j≤N} (α+j), and
    ψ(α+n+1) = ψ(α+N+1) - B_n'/B_n (' = ∂/∂α), so with A = Σ x^n B_n, A' = Σ x^n B_n',

        dx/dα = x (A (ψ(α+N+1) - log x) - A') / (α B_0).

    Horner from the top: B_{k-1} = (α+k) B_k, B_{k-1}' = B_k + (α+k) B_k',
    A_{k-1} = B_{k-1} + x A_k, A_{k-1}' = B_{k-1}' + x A_k': five fused multiply-adds per
    term, no division (the division-bound Horner of :func:`_series_ratio` costs ~1.3x more
    per term); ψ(α+N+1) from its asymptotic series. Every step is scaled by s =
    _SERIES_SCALE (w = s(α+k), x̃ = s x; the derivatives carry one factor s less), which
    keeps B within float32's range: s^N (α+1)_N ∈ [4e-3, 5e13] for α < 20, N ≤ 33 (float64
    needs no scaling, s = 1: B_0 ≤ (21)_49 < 1e81).
    """
    scale = _SERIES_SCALE if x.dtype != torch.float64 else 1.0
    scaled_a = a * scale if scale != 1 else a
    scaled_x = x * scale if scale != 1 else x
    steps = _scalars(x.dtype, tuple(scale * k for k in range(num_terms, 0, -1)))
    b = scaled_a + steps[0]
    db = torch.ones_like(x)
    s = b + scaled_x
    ds = torch.ones_like(x)
    w = torch.empty_like(x)
    for step in steps[1:]:
        torch.add(scaled_a, step, out=w)
        torch.addcmul(b, w, db, out=db)
        b.mul_(w)
        torch.addcmul(b, scaled_x, s, out=s)
        torch.addcmul(db, scaled_x, ds, out=ds)
    z = a + _scalars(x.dtype, (num_terms + 1,))[0]
    shift = _digamma_large(z, num_terms + 1).sub_(torch.log(x))
    return s.mul_(shift).sub_(ds, alpha=scale).mul_(x).div_(b.mul_(a))


def _constant_series_ratio(alpha: float):
    """_series_product_ratio for elements that all have concentration ``alpha``: B_k, B_k'
    and ψ(α+N+1) are then numbers (the same float64 operations in Python; float32 carries
    the same scale factors), and each term costs two fused passes instead of five."""

    def ratio(a: None, x: torch.Tensor, num_terms: int) -> torch.Tensor:  # α: ``alpha``
        scale = _SERIES_SCALE if x.dtype != torch.float64 else 1.0
        b, db = scale * (alpha + num_terms), 1.0
        steps = []
        for k in range(num_terms - 1, 0, -1):
            w = scale * alpha + scale * k
            db = b + w * db
            b = w * b
            steps.append((b, db))
        coefficients = _scalars(x.dtype, tuple(v for step in steps for v in step))
        scaled_x = x * scale if scale != 1 else x
        s = scaled_x + scale * (alpha + num_terms)
        ds = torch.ones_like(x)
        for k in range(len(steps)):
            torch.addcmul(coefficients[2 * k], scaled_x, s, out=s)
            torch.addcmul(coefficients[2 * k + 1], scaled_x, ds, out=ds)
        psi = _digamma_number(alpha + num_terms + 1)
        shift = torch.log(x).neg_().add_(psi)
        return s.mul_(shift).sub_(ds, alpha=scale).mul_(x).div_(alpha * b)

    return ratio


def _tiny_ratio(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx/dα = (x/α)(ψ(α+1) - log x) for x ≤ _TINY: the series' first term, the next one is
    ≤ 2x relative; 0 at x = 0. A few passes instead of the series, whose products of tiny x
    would run into subnormal numbers (~100x slower arithmetic on x86)."""
    return torch.digamma(a + 1).mul_(x).sub_(torch.xlogy(x, x)).div_(a).add_(0.0)  # +0 at 0


def _fraction_product_ratio(a: torch.Tensor, x: torch.Tensor, num_terms: int) -> torch.Tensor:
    """dx/dα in the continued-fraction regime without a division per term (CPU, float64).

    The convergent of :func:`_continued_fraction_ratio` as a ratio of solutions of the
    three-term recurrence P_k = b_k P_{k+1} + e_{k+1} P_{k+2} (t_k = P_k/P_{k+1},
    P_{N+1} = 1, P_N = b_N), scaled by x^(N+1-k) so that it cannot overflow for large x
    (p_k = P_k/x^(N+1-k): p_k/p_{k+1} ≤ 1 + (2N+1)/x, so p_0 < 52^51 < 1e88), and
    differentiated in α (∂b_k/∂α = -1, ∂e_i/∂α = i): eight fused passes per term
    (float32: p_0 < 13^12, no overflow either). With
    C = p_1/(x p_0):  dx/dα = (p_1 (log x - ψ(α) - p_0'/p_0) + p_1') / p_0.
    """
    inverse = torch.reciprocal(x)
    minus_inverse = -inverse
    inverse_sq = inverse * inverse
    a_inverse_sq = a * inverse_sq
    offset = torch.addcmul(torch.ones_like(x), 1 - a, inverse)  # b_k/x = offset + 2k/x
    far = torch.ones_like(x)  # p_{k+2}
    near = torch.add(offset, inverse, alpha=2 * num_terms)  # p_{k+1}
    dfar = torch.zeros_like(x)
    dnear = minus_inverse.clone()
    scaled_b = torch.empty_like(x)
    scaled_e = torch.empty_like(x)
    new = torch.empty_like(x)
    dnew = torch.empty_like(x)
    for k in range(num_terms - 1, -1, -1):
        i = k + 1
        torch.add(offset, inverse, alpha=2 * k, out=scaled_b)
        torch.sub(a_inverse_sq, inverse_sq, alpha=i, out=scaled_e)  # e_i / (i x²)
        torch.mul(near, minus_inverse, out=dnew)
        dnew.addcmul_(inverse_sq, far, value=i).addcmul_(scaled_b, dnear)
        dnew.addcmul_(scaled_e, dfar, value=i)
        torch.mul(scaled_b, near, out=new).addcmul_(scaled_e, far, value=i)
        far, near, new = near, new, far
        dfar, dnear, dnew = dnear, dnew, dfar
    ratio = dnear / near  # p_0'/p_0
    shift = torch.log(x).sub_(torch.digamma(a)).sub_(ratio)
    return shift.mul_(far).add_(dfar).div_(near)


def _constant_fraction_ratio(alpha: float):
    """_fraction_product_ratio for elements that all have concentration ``alpha``: e_i and
    ψ(α) are numbers, seven fused passes per term instead of eight."""
    digamma_alpha = _digamma_number(alpha)

    def ratio(a: None, x: torch.Tensor, num_terms: int) -> torch.Tensor:  # α: ``alpha``
        inverse = torch.reciprocal(x)
        minus_inverse = -inverse
        inverse_sq = inverse * inverse
        offset = torch.mul(inverse, 1 - alpha).add_(1)  # b_k/x = offset + 2k/x
        far = torch.ones_like(x)  # p_{k+2}
        near = torch.add(offset, inverse, alpha=2 * num_terms)  # p_{k+1}
        dfar = torch.zeros_like(x)
        dnear = minus_inverse.clone()
        scaled_b = torch.empty_like(x)
        new = torch.empty_like(x)
        dnew = torch.empty_like(x)
        for k in range(num_terms - 1, -1, -1):
            i = k + 1
            e = i * (alpha - i)
            torch.add(offset, inverse, alpha=2 * k, out=scaled_b)
            torch.mul(near, minus_inverse, out=dnew)
            dnew.addcmul_(inverse_sq, far, value=i).addcmul_(scaled_b, dnear)
            dnew.addcmul_(inverse_sq, dfar, value=e)
            torch.mul(scaled_b, near, out=new).addcmul_(inverse_sq, far, value=e)
            far, near, new = near, new, far
            dfar, dnear, dnew = dnear, dnew, dfar
        ratio = dnear / near  # p_0'/p_0
        shift = torch.log(x).sub_(digamma_alpha).sub_(ratio)
        return shift.mul_(far).add_(dfar).div_(near)

    return ratio


def _group_codes(
    a: torch.Tensor, x: torch.Tensor, large: bool, constant: float | None = None
) -> torch.Tensor:
    """One uint8 code per element (1-D inputs), _CODE_CHUNK elements at a time: 0 for
    x ≤ _TINY (:func:`_tiny_ratio`), k = ceil(4√x - 4√_TINY) ≤ _SERIES_BINS for the series
    (α < 20, x < α + 2; in float32, whose square root costs 4x less than float64's: the
    group edges move by < 2e-7 relative, the truncation at a group's worst point by a factor
    1 + O(1e-5)), _FRACTION_CODE for the continued fraction (α < 20, x ≥ α + 2),
    _LARGE_CODE + j for α ≥ 20 in octave j (``large``: some α may be ≥ 20; ``constant``:
    every α, if all equal). Branch-free: the larger code wins (series < fraction < large),
    by maxima, no masks (a boolean pass and a select cost ~5x a fused arithmetic pass)."""
    codes = torch.empty(x.shape, dtype=torch.uint8)
    scale, shift = _scalars(torch.float32, (4.0, -_TINY_SHIFT))
    dtype = torch.promote_types(x.dtype, torch.float32)
    fraction_code, huge = _scalars(dtype, (_FRACTION_CODE, _HUGE))
    for start in range(0, x.numel(), _CODE_CHUNK):
        a_part, x_part = a[start : start + _CODE_CHUNK], x[start : start + _CODE_CHUNK]
        # x < α + 2 < 22 gives ≤ _SERIES_BINS; the clamp keeps x = inf within uint8
        code = torch.sqrt(x_part.float())
        torch.addcmul(shift, code, scale, out=code).ceil_().clamp_(max=_FRACTION_CODE)
        # _FRACTION_CODE where x - α ≥ 2, else 0: (x - α - 2)·_HUGE + _FRACTION_CODE clamped
        # (x - α - 2 is exact near 0, and ≤ -ulp(2) below it)
        gap = x_part.to(dtype) - (a_part if constant is None else constant)
        gap.sub_(2)
        torch.addcmul(fraction_code, gap, huge, out=gap).clamp_(0, _FRACTION_CODE)
        code = torch.maximum(code, gap.float())
        if large:
            code = torch.maximum(code, _LARGE_CODES.take(_octaves(a_part)))
        codes[start : start + _CODE_CHUNK] = code
    return codes


def _octaves(a: torch.Tensor) -> torch.Tensor:
    """0 for α < 20, 1 + j for α in octave j ∈ [20·2^j, 20·2^(j+1)) (the last one open):
    the exponent bits of 0.8α (one shift, ~8x cheaper than frexp; float32 for lower
    precisions), clamped (0.8·20 = 16 exactly; below 20, 0.8α < 16)."""
    if a.dtype == torch.float64:
        bits, width, bias = (a * 0.8).view(torch.int64), 52, 1023
    else:
        bits, width, bias = (a.float() * 0.8).view(torch.int32), 23, 127
    exponent = torch.bitwise_right_shift(bits, width).long()
    return exponent.clamp_(bias + 3, bias + 3 + _CONCENTRATION_OCTAVES).sub_(bias + 3)


def _octave_concentration(octave: int) -> float:
    return ASYMPTOTIC_CONCENTRATION * 2.0**octave


def _table_concentration(low: float) -> float:
    """``low`` rounded down to 20·2^(k/4) (a finite set of tables)."""
    return ASYMPTOTIC_CONCENTRATION * 2 ** (
        math.floor(4 * math.log2(low / ASYMPTOTIC_CONCENTRATION)) / 4
    )


def _sorted_groups(codes: torch.Tensor, num_codes: int):
    """[code, indices] of each code present, indices in increasing order: one stable argsort
    of the codes (one pass for all groups, cheaper than one ``nonzero`` per group; numpy's
    radix sort of 8-bit keys, ~1.5x faster than torch.argsort, the same order) and one
    host read of the group sizes."""
    order = torch.from_numpy(np.argsort(codes.numpy(), kind="stable"))
    counts = torch.bincount(codes, minlength=num_codes).tolist()
    parts = order.split(counts)
    return [[code, part] for code, part in enumerate(parts) if counts[code]]


def _merge_groups(groups: list, work) -> list:
    """Groups [param, indices] in increasing order of cost, each one runnable with the next
    one's parameter: a group that ``work(param)`` makes less than _MERGE_WORK element-terms
    cheaper runs with the next larger group (fewer, larger groups dispatch fewer passes)."""
    merged = []
    for param, index in reversed(groups):
        if merged and len(index) * (work(merged[-1][0]) - work(param)) < _MERGE_WORK:
            merged[-1][1].append(index)
        else:
            merged.append([param, [index]])
    return [(param, parts[0] if len(parts) == 1 else torch.cat(parts)) for param, parts in merged]


def _gather_groups(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """CPU: each element group on its own elements only, with the fewest terms that its
    worst point needs (_SERIES_TERMS, _FRACTION_TERMS, the asymptotic cells), in float64 or
    float32 (lower precisions in float32), _CHUNK elements at a time so that the elementwise
    passes stay in the cache; index_select / index_copy_ per chunk (``a[mask]`` /
    ``result[mask] = ...`` cost ~10x more on the CPU, measured)."""
    a, x = a.reshape(-1), x.reshape(-1)
    dtype = x.dtype if x.dtype in _SERIES_TERMS else torch.float32
    result = torch.zeros_like(x)
    target = _Scatter(result, None, dtype)
    low, high = torch.stack(torch.aminmax(a)).tolist() if a.numel() else (0.0, 0.0)
    if low >= ASYMPTOTIC_CONCENTRATION:  # α ≥ 20 only: no codes of α < 20 needed
        octave_low, octave_high = (_octaves(torch.tensor([low, high]))).tolist()
        if octave_low == octave_high:
            constant = low if low == high else None
            _large_group(a, x, None, _table_concentration(low), target, constant)
            return result
        codes = torch.empty(x.shape, dtype=torch.uint8)
        for start in range(0, x.numel(), _CODE_CHUNK):
            codes[start : start + _CODE_CHUNK] = _octaves(a[start : start + _CODE_CHUNK])
        for octave, index in _sorted_groups(codes, 1 + _CONCENTRATION_OCTAVES):
            _large_group(a, x, index, _octave_concentration(octave - 1), target)
        return result
    series = []
    constant = low if low == high else None
    codes = _group_codes(a, x, not high < ASYMPTOTIC_CONCENTRATION, constant)
    for code, index in _sorted_groups(codes, _NUM_CODES):
        if code == 0:
            _apply(_tiny_ratio, a, x, index, target)
        elif code <= _SERIES_BINS:
            series.append([_SERIES_TERMS[dtype][code - 1], index])
        elif code == _FRACTION_CODE:
            _fraction_groups(a, x, index, dtype, target, constant)
        else:
            _large_group(a, x, index, _octave_concentration(code - _LARGE_CODE), target)
    # one α for all elements (a scalar concentration expanded, or equal values): the
    # α-only products of the series are scalars
    if constant is None:
        series_ratio, series_a = _series_product_ratio, a
    else:
        series_ratio, series_a = _constant_series_ratio(low), None
    for terms, index in _merge_groups(series, lambda terms: terms):
        _apply(series_ratio, series_a, x, index, target, terms)
    return result


def _large_group(
    a, x, index, min_concentration: float, target: _Scatter, alpha: float | None = None
) -> None:
    """α ≥ min_concentration (the elements ``index``, or all): the asymptotic expansion with
    the table cut for α ≥ min_concentration on every element, by chunks, then the quadrature
    on the elements with |η| > ASYMPTOTIC_ETA (and x = 0), found chunk by chunk. ``alpha``:
    the concentration of every element, if they all have the same (:func:`_collapsed_row`)."""
    dtype = target.dtype
    if alpha is None:
        rows = _asymptotic_row_tensors(dtype, x.device, (ASYMPTOTIC_ETA, min_concentration))
    else:
        rows = _collapsed_row(dtype, min_concentration, alpha)
    n = x.numel() if index is None else index.numel()
    tails = []
    for start in range(0, n, _CHUNK):
        if index is None:
            part = slice(start, start + _CHUNK)
            a_part, x_part = a[part].to(dtype), x[part].to(dtype)
        else:
            part = index[start : start + _CHUNK]
            a_part = a.index_select(0, part).to(dtype)
            x_part = x.index_select(0, part).to(dtype)
        value, tail = _asymptotic_values(a_part, x_part, rows)
        if index is None:
            target.result[part] = value
        else:
            target.write(part, value)
        tail = torch.nonzero(tail).squeeze(1)
        if tail.numel():
            tails.append(tail.add_(start) if index is None else part.index_select(0, tail))
    if tails:
        _apply(_positive_quadrature_ratio, a, x, torch.cat(tails), target)


def _collapsed_row(dtype: torch.dtype, min_concentration: float, alpha: float) -> tuple:
    """The table of :func:`_asymptotic_rows` for one concentration α: the single row
    c_n = Σ_j d_jn α^-j (summed in float64), a polynomial in η alone (~20 fused passes per
    element instead of ~100)."""
    rows = _asymptotic_rows(dtype, ASYMPTOTIC_ETA, min_concentration)
    width = max(map(len, rows))
    row = [
        math.fsum(r[n] * alpha**-j for j, r in enumerate(rows) if n < len(r)) for n in range(width)
    ]
    return (tuple(torch.tensor(c, dtype=dtype) for c in row),)


def _positive_quadrature_ratio(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The quadrature, 0 at x = 0 (which _large_group sends to the quadrature)."""
    positive = x > 0
    value = _quadrature_ratio(a, torch.where(positive, x, a))
    return torch.where(positive, value, torch.zeros_like(x))


class _Scatter:
    """Where _apply writes: result[index[part]] (or result[part] without ``index``) =
    values, computed in ``dtype``."""

    def __init__(self, result, index, dtype):
        self.result, self.index, self.dtype = result, index, dtype

    def write(self, part, values):
        if self.index is not None:
            part = self.index.index_select(0, part)
        self.result.index_copy_(0, part, values.to(self.result.dtype))


def _apply(function, a, x, index, target: _Scatter, *args) -> None:
    """target[index] = function(a[index], x[index], *args) in target.dtype, by chunks;
    ``a`` = None: ``function`` does not read α (one concentration for all elements), which
    is then not gathered (a gather costs ~7 ns per element, as much as ~20 fused passes)."""
    for part in index.split(_CHUNK):
        a_part = None if a is None else a.index_select(0, part).to(target.dtype)
        x_part = x.index_select(0, part).to(target.dtype)
        target.write(part, function(a_part, x_part, *args))


def _fraction_groups(a, x, index, dtype, target: _Scatter, alpha: float | None) -> None:
    """The continued-fraction elements, regrouped by term count (_FRACTION_TERMS); ``alpha``:
    the concentration of every element, if they all have the same."""
    x_group = x.index_select(0, index).to(dtype)
    table = _FRACTION_TERMS[dtype]
    if alpha is None:
        function = _fraction_product_ratio
        a_group = a.index_select(0, index).to(dtype)
        row = torch.log2(a_group).mul_(2).ceil_().add_(6).clamp_(0, len(table) - 1)
        column = torch.log2((x_group - a_group).mul_(0.5)).mul_(2).ceil_().clamp_(0, 11)
    else:  # the same rounding of the same numbers as the tensor formulas
        function, a_group = _constant_fraction_ratio(alpha), None
        row = min(max(math.ceil(2 * math.log2(alpha)) + 6, 0), len(table) - 1)
        column = torch.log2((x_group - alpha).mul_(0.5)).mul_(2).ceil_().clamp_(0, 11)
    terms = torch.tensor(table, dtype=torch.uint8).reshape(-1)
    terms = terms.take(column.add_(row * 12).long())
    sub_target = _Scatter(target.result, index, dtype)
    groups = _sorted_groups(terms, max(map(max, table)) + 1)
    for count, sub in _merge_groups(groups, lambda count: count):
        _apply(function, a_group, x_group, sub, sub_target, count)


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
    if _groups_on_host(x):
        return _gather_groups(a, x).reshape(x.shape)
    return _select_regimes(a, x, _regimes(a, x))


def _groups_on_host(x: torch.Tensor) -> bool:
    """Whether :func:`standard_gamma_grad` takes the grouped CPU schedule, which reads α's
    range and the group sizes from the tensors' memory: CPU tensors only (there the data is
    on the host already); on an accelerator such reads would stall, so it never does."""
    return x.device.type == "cpu"


def _regimes(a: torch.Tensor, x: torch.Tensor):
    """(mask, function) of each regime; x = 0 is in none of them (its gradient is 0)."""
    positive = x > 0
    small = a < LARGE_CONCENTRATION
    below_asymptotic = a < ASYMPTOTIC_CONCENTRATION
    left = x < a + 2
    # |η| ≤ ASYMPTOTIC_ETA ⇔ λ_low ≤ x/α ≤ λ_high (no logarithm needed for the mask)
    asymptotic = (
        ~below_asymptotic & (x >= a * _ASYMPTOTIC_LAMBDA_LOW) & (x <= a * _ASYMPTOTIC_LAMBDA_HIGH)
    )
    return (
        (positive & small & left, _series_ratio),
        (~small & below_asymptotic & left, _long_series_ratio),
        (positive & below_asymptotic & ~left, _continued_fraction_ratio),
        (positive & ~below_asymptotic & ~asymptotic, _quadrature_ratio),
        (asymptotic, _asymptotic_ratio),
    )


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
