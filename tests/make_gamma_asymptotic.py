"""Derive the coefficients of the large-α expansion of the Gamma implicit gradient (~2 s).

    .venv/bin/python tests/make_gamma_asymptotic.py

prints ``_ASYMPTOTIC_COEFFICIENTS`` of ``pyro_reparam_ext/ops/gamma.py`` and
``numpyro_backend/ops/gamma.py`` (exact rational arithmetic, rounded to float64 at the end).

Derivation. Temme's uniform expansion ([1] 8.12.3-8.12.10; [2] §11.2) is, with λ = x/α and
η = sign(λ - 1) √(2(λ - 1 - log λ)),

    Q(α, x) = ½ erfc(η √(α/2)) + e^{-αη²/2} / √(2πα) · Σ_k c_k(η) α^-k,
    c_0 = 1/(λ - 1) - 1/η,     c_k = (1/η) c'_{k-1} + (-1)^k g_k / (λ - 1),

g_k the coefficients of Γ*(α) = Γ(α) / (√(2π/α) α^α e^-α) ~ Σ_k g_k α^-k ([1] 5.11.3).
Differentiating in α at fixed x (∂η/∂α = -(λ - 1)/(αη), ∂(log λ)/∂α = -1/α) and dividing
by the density p(x; α) = e^{-αη²/2} √(α/2π) / (Γ*(α) x), every exponential cancels:

    dx/dα = ∂Q/∂α / p = Γ*(α) λ Σ_j b_j(η) α^-j,
    b_0 = (λ - 1)/η - η/2 + c_0 log λ,
    b_j = c_j log λ - (j - ½) c_{j-1} - c'_{j-1} (λ - 1)/η        (j ≥ 1),

and folding in Γ*: dx/dα = λ Σ_j d_j(η) α^-j with d_j = Σ_i g_i b_{j-i}. Every c_k, b_j and
d_j is analytic at η = 0 (radius 2√π); they are computed here as power series in η, from
λ - 1 = η + η²/3 + η³/36 - ... (the series reversion of λ - 1 - log λ = η²/2). Checks:
c_0 = -1/3 + η/12 - 2η²/135 + ..., c_1 = -1/540 - η/288 + ... as in [1] 8.12.11, and
d_0(0) = 1, d_1(0) = 1/6 (dx/dα → 1 + 1/(6α) at the median).

The table keeps, for each j, the powers of η up to the last one with
|d_jn| η^n α^-j > 1e-16 at the edge of the regime (η = ASYMPTOTIC_ETA, α =
ASYMPTOTIC_CONCENTRATION); the modules cut it further per dtype.

References:
    [1] NIST Digital Library of Mathematical Functions, §8.12 and §5.11.
    [2] N. M. Temme (1996). Special Functions: An Introduction to the Classical Functions of
        Mathematical Physics, ch. 11.
"""

from __future__ import annotations

from fractions import Fraction

from sympy import bernoulli

ASYMPTOTIC_CONCENTRATION = 20.0
ASYMPTOTIC_ETA = 0.6
NUM_ORDERS = 12  # powers of 1/α derived (the cut keeps fewer)
ORDER = 56  # powers of η carried through the derivation
#: each c_k = (1/η) c'_{k-1} + ... loses the top two powers of η (and b_j uses c'_{j-1}):
#: the powers of η below this are exact in every d_j
EXACT_ORDER = ORDER - 2 * (NUM_ORDERS + 1) - 2


def multiply(p: list, q: list) -> list:
    out = [Fraction(0)] * ORDER
    for i, pi in enumerate(p):
        if pi:
            for j in range(ORDER - i):
                out[i + j] += pi * q[j]
    return out


def inverse(p: list) -> list:
    out = [Fraction(0)] * ORDER
    out[0] = 1 / p[0]
    for k in range(1, ORDER):
        out[k] = -sum(p[i] * out[k - i] for i in range(1, k + 1)) / p[0]
    return out


def divide_by_eta(p: list) -> list:
    assert p[0] == 0, "pole at η = 0"
    return p[1:] + [Fraction(0)]


def derivative(p: list) -> list:
    return [p[i] * i for i in range(1, ORDER)] + [Fraction(0)]


def lambda_minus_one() -> list:
    """λ - 1 = Σ w_n η^n with λ - 1 - log λ = η²/2, by Newton iteration on the series."""
    w = [Fraction(0)] * ORDER
    w[1] = Fraction(1)
    target = [Fraction(0)] * ORDER
    target[2] = Fraction(1, 2)
    for _ in range(8):  # quadratic convergence: 2^8 > ORDER correct terms
        power, f = [Fraction(1)] + [Fraction(0)] * (ORDER - 1), [Fraction(0)] * ORDER
        for n in range(1, ORDER):  # f = w - log(1 + w) = Σ_{n≥2} (-1)^n w^n / n
            power = multiply(power, w)
            if n >= 2:
                f = [fi + Fraction((-1) ** n, n) * pi for fi, pi in zip(f, power, strict=True)]
        residual = [t - fi for t, fi in zip(target, f, strict=True)]
        # f'(w) = w/(1 + w): correction residual (1 + w)/w
        one_plus_w = [w[0] + 1] + w[1:]
        step = multiply(multiply(divide_by_eta(residual), inverse(divide_by_eta(w))), one_plus_w)
        w = [wi + si for wi, si in zip(w, step, strict=True)]
    return w


def stirling_coefficients(count: int) -> list:
    """g_0..g_{count-1} of Γ*(α) = exp(Σ_k B_2k / (2k(2k-1)) α^(1-2k)) ~ Σ g_k α^-k."""
    log_series = [Fraction(0)] * count
    for k in range(1, count):
        if 2 * k - 1 < count:
            b = bernoulli(2 * k)
            log_series[2 * k - 1] = Fraction(int(b.p), int(b.q)) / (2 * k * (2 * k - 1))
    g, term = [Fraction(0)] * count, [Fraction(1)] + [Fraction(0)] * (count - 1)
    for n in range(count):  # exp by its Taylor series (log_series has no constant term)
        g = [gi + ti for gi, ti in zip(g, term, strict=True)]
        product = [Fraction(0)] * count
        for i, ti in enumerate(term):
            for j in range(count - i):
                product[i + j] += ti * log_series[j]
        term = [p / (n + 1) for p in product]
    return g


def coefficients() -> list[list[float]]:
    w = lambda_minus_one()
    w_over_eta = divide_by_eta(w)
    inverse_w_times_eta = inverse(w_over_eta)  # η/(λ - 1)
    g = stirling_coefficients(NUM_ORDERS + 1)
    c = [divide_by_eta([inverse_w_times_eta[0] - 1] + inverse_w_times_eta[1:])]
    for k in range(1, NUM_ORDERS + 1):
        numerator = [
            d + (-1) ** k * g[k] * i
            for d, i in zip(derivative(c[-1]), inverse_w_times_eta, strict=True)
        ]
        c.append(divide_by_eta(numerator))
    log_lambda = w[:]
    log_lambda[2] -= Fraction(1, 2)  # log λ = (λ - 1) - η²/2
    b = [w_over_eta[:1] + [w_over_eta[1] - Fraction(1, 2)] + w_over_eta[2:]]
    b[0] = [x + y for x, y in zip(b[0], multiply(c[0], log_lambda), strict=True)]
    for j in range(1, NUM_ORDERS + 1):
        previous = c[j - 1]
        term = multiply(c[j], log_lambda)
        term = [t - (j - Fraction(1, 2)) * p for t, p in zip(term, previous, strict=True)]
        term = [
            t - s for t, s in zip(term, multiply(derivative(previous), w_over_eta), strict=True)
        ]
        b.append(term)
    d = []
    for j in range(NUM_ORDERS + 1):
        row = [Fraction(0)] * ORDER
        for i in range(j + 1):
            row = [r + g[i] * x for r, x in zip(row, b[j - i], strict=True)]
        d.append(row)
    table = []
    for j, row in enumerate(d):
        row = row[:EXACT_ORDER]
        scale = ASYMPTOTIC_CONCENTRATION**-j
        kept = [n for n, value in enumerate(row) if abs(value) * ASYMPTOTIC_ETA**n * scale > 1e-16]
        if not kept:
            break
        assert kept[-1] < EXACT_ORDER - 1, "raise ORDER"
        table.append([float(value) for value in row[: kept[-1] + 1]])
    return table


def main() -> None:
    lines = ["# fmt: off", "_ASYMPTOTIC_COEFFICIENTS = ("]
    for row in coefficients():
        line = "    ("
        for value in row:
            item = repr(value) + ", "
            if len(line) + len(item) > 99:
                lines.append(line.rstrip())
                line = "     "
            line += item
        lines.append(line.rstrip() + "),")
    lines += [")", "# fmt: on"]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
