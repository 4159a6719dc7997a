"""Write ``tests/data/vmf_marginal_reference.json``: mpmath values of dt/dκ for the vMF marginal.

For t = 1 − w with w ~ exp(κw)(1 − w²)^{(d−3)/2} on [−1, 1], the implicit reparameterization
derivative at fixed CDF value is dt/dκ = (∂F/∂κ)(w)/p(w) with ∂F/∂κ(w) = ∫_{−1}^{w}(s − A)p(s)ds.
In the angle θ = arccos w (density ∝ e^{L(θ)}, L = κ cos θ + (d−2) log sin θ) this is
dt/dκ = −sin θ ∫_0^θ (cos φ − A) e^{L(φ)−L(θ)} dφ = sin θ ∫_θ^π (cos φ − A) e^{L(φ)−L(θ)} dφ.
The integral is taken over the side of θ away from the mode of L (where the integrand has no
interior peak and no cancellation), by mpmath's tanh-sinh quadrature at 20 digits, with
breakpoints at geometrically shrinking distances from θ. Samples t range from 1e-3 to 20
times the mean 1 − A_d(κ), over d ∈ {2, …, 4096} and κ ∈ {1e-4, …, 1e5}.

Run from the repository root: ``python tests/make_sphere_reference.py`` (a few minutes).
"""

import json
from pathlib import Path

import mpmath

DIMS = [2, 3, 5, 10, 64, 512, 4096]
CONCENTRATIONS = [1e-4, 0.1, 1.0, 10.0, 1e3, 1e5]
QUANTILES = [1e-3, 0.1, 0.5, 1.0, 2.0, 5.0, 20.0]


def dt_dkappa(t, kappa, d):
    t, kappa = mpmath.mpf(t), mpmath.mpf(kappa)
    v = mpmath.mpf(d) / 2 - 1
    a = mpmath.besseli(v + 1, kappa, maxterms=10**7) / mpmath.besseli(v, kappa, maxterms=10**7)
    theta = 2 * mpmath.asin(mpmath.sqrt(t / 2))

    def log_density(phi):
        value = kappa * mpmath.cos(phi)
        if d > 2:
            value += (d - 2) * mpmath.log(abs(mpmath.sin(phi)))
        return value

    log_at_theta = log_density(theta)
    cos_mode = 2 * kappa / ((d - 2) + mpmath.sqrt((d - 2) ** 2 + 4 * kappa**2))
    if d > 2 and mpmath.cos(theta) > cos_mode:
        span, sign = theta, -1
    else:
        span, sign = mpmath.pi - theta, 1

    def integrand(u):
        phi = theta + sign * u
        return (mpmath.cos(phi) - a) * mpmath.exp(log_density(phi) - log_at_theta)

    points = sorted({mpmath.mpf(0)} | {span * mpmath.mpf(2) ** -k for k in range(50)})
    return mpmath.sin(theta) * sign * mpmath.quad(integrand, points), a


def main() -> None:
    mpmath.mp.dps = 20
    rows = []
    for d in DIMS:
        for kappa in CONCENTRATIONS:
            _, a = dt_dkappa(0.5, kappa, d)
            for q in QUANTILES:
                t = float(min(max((1 - a) * q, 1e-12), 1.999))
                value, _ = dt_dkappa(t, kappa, d)
                rows.append({"d": d, "kappa": kappa, "t": t, "dt_dkappa": mpmath.nstr(value, 17)})
    path = Path(__file__).resolve().parent / "data" / "vmf_marginal_reference.json"
    path.write_text(json.dumps({"mpmath_dps": 20, "rows": rows}, indent=0) + "\n")
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
