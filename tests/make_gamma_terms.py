"""Derive the term counts of the CPU path of the Gamma implicit gradient (~1 s).

    .venv/bin/python tests/make_gamma_terms.py

prints ``_SERIES_TERMS`` and ``_FRACTION_TERMS`` of ``pyro_reparam_ext/ops/gamma.py``.

Each entry is the smallest number of terms N whose truncation error of dx/dα is at most EPS
relative (1e-14 for float64, 4 eps for float32: far below the rounding of the result, which
is several eps), at the worst point of its group of elements, measured in 80-bit
arithmetic (numpy.longdouble) against the sum of many more terms (300 for the series, 500 for
the continued fraction), so that the rounding of the reference does not decide N.

Series (α < 20, x < α + 2): dx/dα = (x/α) Σ_n t_n (ψ(α+n+1) - log x), t_n = x^n/(α+1)_n;
the error after terms n = 0..N is |Σ_{n>N} t_n w_n| / |Σ_n t_n w_n|. The group of
k = ceil(4√x) holds x ∈ ((k-1)²/16, k²/16]; the error grows with x and falls with α, so its
worst point is x = k²/16 on the regime's edge α = x - 2 (α → 0 for x ≤ 2); two larger α
are checked too.

Continued fraction (α < 20, x ≥ α + 2): the N-th convergent of the Legendre fraction,
differentiated in α (the recurrence of _continued_fraction_ratio). Group (c, j): α in the
half octave c, x - α in the half octave j (see _FRACTION_TERMS); the error falls with x - α,
so the group's smallest x - α is its worst; over α it is not monotone, so the maximum over
five α spread over the half octave is taken.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma

L = np.longdouble
EPS = {"float64": 1e-14, "float32": 4 * float(np.finfo(np.float32).eps)}
SERIES_BINS = 19
FRACTION_ROWS, FRACTION_COLUMNS = 15, 12


def series_errors(a: float, x: float, reference_terms: int = 300) -> np.ndarray:
    """[N]: relative truncation error of dx/dα after the series terms n = 0..N."""
    a, x = L(a), L(x)
    n = np.arange(1, reference_terms + 1, dtype=L)
    terms = np.concatenate([[L(1)], np.cumprod(x / (a + n))])
    harmonic = np.concatenate([[L(0)], np.cumsum(1 / (a + n))])
    weighted = terms * (L(digamma(float(a) + 1)) + harmonic - np.log(x))
    tails = np.abs(np.cumsum(weighted[::-1])[::-1])
    return tails[1:] / abs(weighted.sum())


def series_terms(eps: float) -> tuple[int, ...]:
    counts = []
    for k in range(1, SERIES_BINS + 1):
        edge = min(max(1e-4, k**2 / 16 - 2), 19.999)
        x = min(k**2 / 16, edge + 2)
        counts.append(
            max(int(np.argmax(series_errors(a, x) <= eps)) for a in (edge, edge + 0.5, edge + 2))
        )
    return tuple(counts)


def fraction(a: float, x: float, num_terms: int):
    a, x = L(a), L(x)
    base = x + 1 - a
    t, dt = base + 2 * num_terms, L(-1)
    for k in range(num_terms - 1, -1, -1):
        i = k + 1
        q = i * (a - i) / t
        dt = -1 - (q * dt - i) / t
        t = base + 2 * k + q
    h = 1 / t
    return x * (h * (np.log(x) - L(digamma(float(a)))) - dt * h * h)


def fraction_count(a: float, x: float, eps: float) -> int:
    reference = fraction(a, x, 500)
    return next(n for n in range(1, 400) if abs(fraction(a, x, n) / reference - 1) <= eps)


def fraction_terms(eps: float) -> tuple[tuple[int, ...], ...]:
    table = []
    for c in range(FRACTION_ROWS):
        low = 1e-8 if c == 0 else 2 ** ((c - 7) / 2)
        high = 20.0 if c == FRACTION_ROWS - 1 else 2 ** ((c - 6) / 2)
        row = []
        for j in range(FRACTION_COLUMNS):
            gap = 2.0 if j == 0 else 2 * 2 ** ((j - 1) / 2)
            alphas = [1e-4, 1e-8] if c == 0 else []
            alphas += list(np.linspace(low, high, 5))
            row.append(max(fraction_count(a, a + gap, eps) for a in alphas))
        table.append(tuple(row))
    return tuple(table)


def main() -> None:
    for name, eps in EPS.items():
        print(f"torch.{name}: series {series_terms(eps)}")
        print(f"torch.{name}: fraction {fraction_terms(eps)}")


if __name__ == "__main__":
    main()
