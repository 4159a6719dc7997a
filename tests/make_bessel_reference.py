"""Write ``tests/data/bessel_reference.json``: mpmath log I_v(x), R_v = I_{v+1}/I_v and dR_v/dx.

Run from the repository root: ``python tests/make_bessel_reference.py`` (about 15 seconds).
The grid covers order v ∈ [0, 2048] and argument x ∈ [1e-6, 1e5], with extra points on both
sides of the regime switches of ``log_bessel_iv`` (order 10, argument 50) so that every
branch is checked. Values are computed with 40 significant digits and stored as decimal
strings rounded to 20 digits.
"""

import json
from pathlib import Path

import mpmath
import numpy as np

ORDERS = [
    0.0,
    0.25,
    0.5,
    1.0,
    1.5,
    2.0,
    3.7,
    5.0,
    8.5,
    9.5,
    9.99,
    10.0,
    10.01,
    10.5,
    11.0,
    20.0,
    31.5,
    50.0,
    63.0,
    100.0,
    255.5,
    511.0,
    1000.0,
    1023.0,
    2047.0,
    2048.0,
]
ARGUMENTS = sorted(
    set(np.round(np.logspace(-6, 5, 45), 12).tolist())
    | {0.5, 1.0, 9.99, 10.0, 10.01, 49.9, 50.0, 50.1, 73.6, 200.0, 1000.0, 2048.0, 5000.0}
)


def main() -> None:
    mpmath.mp.dps = 40
    rows = []
    for v in ORDERS:
        for x in ARGUMENTS:
            i_v = mpmath.besseli(mpmath.mpf(v), mpmath.mpf(x), maxterms=10**7)
            i_v1 = mpmath.besseli(mpmath.mpf(v) + 1, mpmath.mpf(x), maxterms=10**7)
            rows.append(
                {
                    "v": v,
                    "x": x,
                    "log_iv": mpmath.nstr(mpmath.log(i_v), 20),
                    "ratio": mpmath.nstr(i_v1 / i_v, 20),
                    # d/dx (I_{v+1}/I_v) = 1 − R² − (2v+1)R/x, evaluated at 40 digits
                    "dratio": mpmath.nstr(
                        1 - (i_v1 / i_v) ** 2 - (2 * mpmath.mpf(v) + 1) * (i_v1 / i_v) / x, 20
                    ),
                }
            )
    path = Path(__file__).resolve().parent / "data" / "bessel_reference.json"
    path.write_text(json.dumps({"mpmath_dps": 40, "rows": rows}, indent=0) + "\n")
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
