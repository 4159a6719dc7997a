"""Implicitly reparameterized distributions in the shared case table, with scipy densities.

The implicit gradient changes only ``rsample``; these cases check that sampling, log_prob,
shapes and validation of the subclasses stay those of the distributions they extend (and
ImplicitVonMises' own log_prob). Gradients are tested in tests/test_implicit.py.
"""

import numpy as np
from scipy import special, stats

from tests.cases import DistCase


def gamma_log_prob(value, concentration, rate):
    return stats.gamma.logpdf(value, a=concentration, scale=1 / np.asarray(rate))


def beta_log_prob(value, concentration1, concentration0):
    return stats.beta.logpdf(value, concentration1, concentration0)


def dirichlet_log_prob(value, concentration):
    # scipy.stats.dirichlet takes one point at a time; this is its formula, vectorized
    concentration = np.asarray(concentration, dtype=np.float64)
    return (
        np.sum(special.xlogy(concentration - 1, value), -1)
        + special.gammaln(concentration.sum(-1))
        - special.gammaln(concentration).sum(-1)
    )


def student_t_log_prob(value, df, loc=0.0, scale=1.0):
    return stats.t.logpdf(value, df, loc=loc, scale=scale)


def von_mises_log_prob(value, loc, concentration):
    return stats.vonmises.logpdf(value, concentration, loc=loc)


def _drop_last(samples):
    return samples[..., :-1]


def _positive(name, valid):
    """Overrides that must raise ValueError naming ``name`` (≤ 0 and NaN)."""
    bad = [0.0, -1.0, np.nan]
    if np.ndim(valid):
        bad = [np.where(np.arange(np.size(valid)) == 0, b, valid) for b in bad]
    return [({name: b}, name) for b in bad]


CASES = [
    DistCase(
        id="ImplicitGamma-a2.5-r1.5",
        dist_name="ImplicitGamma",
        params={"concentration": 2.5, "rate": 1.5},
        reference_log_prob=gamma_log_prob,
        invalid_params=_positive("concentration", 2.5) + _positive("rate", 1.5),
    ),
    DistCase(
        id="ImplicitGamma-batched-extreme",
        dist_name="ImplicitGamma",
        params={"concentration": np.array([1e-3, 0.3, 40.0, 1e4]), "rate": np.array([2.0])},
        reference_log_prob=gamma_log_prob,
        gof=False,  # the gof test takes unbatched distributions; the case above covers it
    ),
    DistCase(
        id="ImplicitBeta-a2-b3.5",
        dist_name="ImplicitBeta",
        params={"concentration1": 2.0, "concentration0": 3.5},
        reference_log_prob=beta_log_prob,
        invalid_params=_positive("concentration1", 2.0) + _positive("concentration0", 3.5),
    ),
    DistCase(
        id="ImplicitDirichlet-K3",
        dist_name="ImplicitDirichlet",
        params={"concentration": np.array([1.5, 2.5, 3.0])},
        reference_log_prob=dirichlet_log_prob,
        # log_prob is a density w.r.t. Lebesgue measure on the first K-1 coordinates
        gof_points=_drop_last,
        gof_dim=2,
        invalid_params=_positive("concentration", np.array([1.5, 2.5, 3.0])),
    ),
    DistCase(
        id="ImplicitDirichlet-batched-K4",
        dist_name="ImplicitDirichlet",
        params={"concentration": np.array([[0.3, 1.0, 2.0, 5.0], [4.0, 4.0, 0.7, 1.2]])},
        reference_log_prob=dirichlet_log_prob,
        gof=False,
    ),
    DistCase(
        id="ImplicitStudentT-df3.5",
        dist_name="ImplicitStudentT",
        params={"df": 3.5, "loc": 0.5, "scale": 2.0},
        reference_log_prob=student_t_log_prob,
        invalid_params=_positive("df", 3.5) + _positive("scale", 2.0),
    ),
    DistCase(
        id="ImplicitVonMises-k3",
        dist_name="ImplicitVonMises",
        params={"loc": 1.0, "concentration": 3.0},
        reference_log_prob=von_mises_log_prob,
        invalid_params=_positive("concentration", 3.0) + [({"loc": np.nan}, "loc")],
    ),
    DistCase(
        id="ImplicitVonMises-batched",
        dist_name="ImplicitVonMises",
        params={"loc": np.array([-3.0, 0.0, 2.5]), "concentration": np.array([0.01, 1.0, 80.0])},
        reference_log_prob=von_mises_log_prob,
        gof=False,
    ),
]
