"""Compute the mpmath reference values for the implicit-gradient tests (run once, ~1 min).

    .venv/bin/python tests/make_implicit_reference.py

writes ``tests/data/implicit_reference.json``: for each family a list of points with the
implicit reparameterization gradient dz/dθ = -(∂F(z; θ)/∂θ) / p(z; θ) ([1], eq. 7)
evaluated at 40 significant digits and rounded to float64. The sample points z are float64
quantiles (scipy) of each distribution; the reference is exact at the stored z, whatever
quantile it approximates.

References:
    [1] M. Figurnov, S. Mohamed, A. Mnih (2018). Implicit Reparameterization Gradients.
"""

from __future__ import annotations

import json
from pathlib import Path

import mpmath as mp
import numpy as np
from scipy import special, stats

mp.mp.dps = 40

OUT = Path(__file__).resolve().parent / "data" / "implicit_reference.json"
QUANTILES = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]
#: α ∈ [1e-4, 1e4], every quarter decade
GAMMA_CONCENTRATIONS = [float(10.0**k) for k in np.arange(-4, 4.01, 0.25)]
#: κ ∈ [1e-2, 1e5], every half decade
VON_MISES_CONCENTRATIONS = [float(10.0**k) for k in np.arange(-2, 5.01, 0.5)]
#: (α, β) pairs for the Beta CDF
BETA_CONCENTRATIONS = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
SMALLEST = 1e-300  # smaller quantiles underflow float64 (tiny α); they are left out


def gamma_dz_dalpha(a: float, x: float) -> float:
    """-(∂P(α, x)/∂α) / p(x; α) by mpmath's high-precision numerical derivative."""
    a, x = mp.mpf(a), mp.mpf(x)
    if x < a:
        dp_da = mp.diff(lambda s: mp.gammainc(s, 0, x, regularized=True), a)
    else:  # differentiate Q = 1 - P: P rounds to 1 at 40 digits far in the right tail
        dp_da = -mp.diff(lambda s: mp.gammainc(s, x, mp.inf, regularized=True), a)
    log_density = (a - 1) * mp.log(x) - x - mp.loggamma(a)
    return float(-dp_da / mp.exp(log_density))


def gamma_points() -> list[dict]:
    points = []
    for a in GAMMA_CONCENTRATIONS:
        for q in QUANTILES:
            x = float(special.gammaincinv(a, q))
            if not x > SMALLEST:
                continue
            points.append({"concentration": a, "quantile": q, "value": x})
    for point in points:
        point["dz_dconcentration"] = gamma_dz_dalpha(point["concentration"], point["value"])
    return points


def von_mises_dz_dkappa(kappa: float, x: float) -> float:
    """-(∂F(x; κ)/∂κ) / p(x; κ) = -∫_{-π}^x (cos t - A(κ)) e^{κ(cos t - cos x)} dt.

    A = I_1/I_0; F is the CDF on [-π, π) of the von Mises with location 0.
    """
    kappa, x = mp.mpf(kappa), mp.mpf(x)
    ratio = mp.besseli(1, kappa) / mp.besseli(0, kappa)

    def integrand(t):
        return (mp.cos(t) - ratio) * mp.exp(kappa * (mp.cos(t) - mp.cos(x)))

    # break points on the scale of the bump at x so that quad resolves it at any κ
    scale = 1 / (kappa * abs(mp.sin(x)) + mp.sqrt(kappa) + 1)
    nodes = sorted(
        {-mp.pi, x} | {x - k * scale for k in (1, 3, 10, 30, 100) if x - k * scale > -mp.pi}
    )
    return float(-mp.quad(integrand, nodes))


def von_mises_points() -> list[dict]:
    points = []
    for kappa in VON_MISES_CONCENTRATIONS:
        for q in QUANTILES:
            if kappa <= 100:
                x = float(stats.vonmises.ppf(q, kappa))
            else:  # scipy's ppf is slow here; the wrapped-normal quantile is as good a point
                sigma = np.sqrt(-2 * np.log(special.i1e(kappa) / special.i0e(kappa)))
                x = float(stats.norm.ppf(q) * sigma)
            points.append({"concentration": kappa, "quantile": q, "value": x})
    for point in points:
        point["dz_dconcentration"] = von_mises_dz_dkappa(point["concentration"], point["value"])
    return points


def beta_dz_dconcentrations(a: float, b: float, z: float) -> tuple[float, float]:
    """-(∂I_z(α, β)/∂α) / p(z) and the same for β, by mpmath derivatives."""
    a, b, z = mp.mpf(a), mp.mpf(b), mp.mpf(z)
    log_density = (a - 1) * mp.log(z) + (b - 1) * mp.log1p(-z) - mp.log(mp.beta(a, b))
    density = mp.exp(log_density)
    if z < a / (a + b):
        da = mp.diff(lambda s: mp.betainc(s, b, 0, z, regularized=True), a)
        db = mp.diff(lambda s: mp.betainc(a, s, 0, z, regularized=True), b)
    else:  # through 1 - I_z, which keeps its digits in the right tail
        da = -mp.diff(lambda s: mp.betainc(s, b, z, 1, regularized=True), a)
        db = -mp.diff(lambda s: mp.betainc(a, s, z, 1, regularized=True), b)
    return float(-da / density), float(-db / density)


def beta_points() -> list[dict]:
    points = []
    for a in BETA_CONCENTRATIONS:
        for b in BETA_CONCENTRATIONS:
            for q in QUANTILES:
                z = float(special.betaincinv(a, b, q))
                if not (SMALLEST < z < 1.0):
                    continue
                points.append({"concentration1": a, "concentration0": b, "quantile": q, "value": z})
    for point in points:
        da, db = beta_dz_dconcentrations(
            point["concentration1"], point["concentration0"], point["value"]
        )
        point["dz_dconcentration1"] = da
        point["dz_dconcentration0"] = db
    return points


def main() -> None:
    data = {
        "description": "implicit reparameterization gradients -(dF/dtheta)/p at float64 "
        "sample points, mpmath 40 digits (tests/make_implicit_reference.py)",
        "gamma": gamma_points(),
        "von_mises": von_mises_points(),
        "beta": beta_points(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(
        f"wrote {OUT}: "
        + ", ".join(f"{k}: {len(v)}" for k, v in data.items() if k != "description")
    )


if __name__ == "__main__":
    main()
