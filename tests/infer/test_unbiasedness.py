"""Every estimator on every catalogue model, both backends: the exact mean gradient.

One table (``tests/infer/estimator_cases.py``: every estimator and baseline × every catalogue
model with an ELBO reference) drives three tests per row:

- Pyro's mean gradient matches the exact one (``tests/data/estimator_reference.json``,
  computed by enumeration in ``make_reference.py``);
- NumPyro's mean gradient matches the exact one;
- the two backends' mean gradients match each other.

Estimates. Pyro: ``NUM_CALLS`` independent calls, each the mean of ``NUM_DRAWS`` draws run
side by side in an outer plate (``pyro_helpers.with_draws``); the standard error comes from
the spread of the calls (ν = NUM_CALLS − 1 degrees of freedom; each call averages 256 draws,
so its estimate is close to Gaussian). NumPyro: ``NUM_SAMPLES`` single-draw estimates in one
jit-compiled call (ν = NUM_SAMPLES − 1; the z of their mean is Gaussian by the CLT, an
approximation in the far tail the thresholds reach). Both at perturbed estimator
parameters (REBAR/RELAX η, temperature and network), since unbiasedness must hold for every
value. Running-average baselines update between estimates, as in
training; each estimate is unbiased given the past, so the deviations are martingale
differences and the sample standard error stays valid.

Threshold. ``tests/stats.py`` derives it: with T = 3 × (rows of the table) tests, test i over
m_i gradient coordinates fails when some |z| exceeds c_i = t⁻¹_ν(1 − α / (2 T m_i)), α = 1e-3;
by the union bound a table of unbiased estimators raises a false alarm with probability
≤ 1e-3. For the backend comparison ν = the smaller of the two (conservative against
Welch–Satterthwaite). Here T = 240 (80 rows), m_i = 5 … 45 coordinates, and ν = 29 (Pyro,
and the backend comparison) gives c = 6.24 … 7.05; ν = 7999 (NumPyro) gives c = 4.93 … 5.35.

Sample sizes. NumPyro's cost is compiling (samples are nearly free), so NUM_SAMPLES is
large; Pyro's is per call, so NUM_DRAWS is large and NUM_CALLS small. Both give about 8000
draws, so the two backends' standard errors are alike; a bias of c + 1 standard errors in
one coordinate fails its test with probability ≈ 0.84.
"""

from __future__ import annotations

import functools

import numpy as np
import pyroapi
import pytest

from tests.infer import numpyro_helpers, pyro_helpers
from tests.infer.estimator_cases import ESTIMATOR_CASES, TABLE, TABLE_IDS
from tests.infer.models import MASKED_LIKELIHOOD, MODELS
from tests.infer.numpyro_helpers import fast_compile  # noqa: F401  (fixture)
from tests.stats import max_abs_z, num_coordinates, z_threshold

pytestmark = pytest.mark.usefixtures("fast_compile")

NUM_CALLS = 30
NUM_DRAWS = 256
NUM_SAMPLES = 8000
#: the pyro / numpyro / between-backends checks of every row form one family of tests
NUM_TESTS = 3 * len(TABLE)

_CASES = {case.name: case for case in ESTIMATOR_CASES}


@functools.cache
def _pyro_estimates(entry_name: str, case_name: str) -> dict:
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        return pyro_helpers.case_estimates(
            _CASES[case_name], MODELS[entry_name], NUM_CALLS, NUM_DRAWS
        )


@functools.cache
def _numpyro_estimates(entry_name: str, case_name: str) -> dict:
    return numpyro_helpers.case_estimates(_CASES[case_name], MODELS[entry_name], NUM_SAMPLES)


def _assert_matches(estimates: dict, reference: dict, what: str) -> None:
    assert set(estimates) == set(reference)
    dof = min(e.dof for e in estimates.values())
    threshold = z_threshold(num_coordinates(estimates), dof, NUM_TESTS)
    z, where = max_abs_z(estimates, reference)
    assert z < threshold, f"{what}: |z| = {z:.2f} at {where} (threshold {threshold:.2f})"


@pytest.mark.parametrize("entry, case", TABLE, ids=TABLE_IDS)
def test_pyro_mean_gradient_matches_exact(entry, case):
    estimates = _pyro_estimates(entry.name, case.name)
    _assert_matches(estimates, entry.exact_grads, f"Pyro {entry.name} / {case.name}")


@pytest.mark.parametrize("entry, case", TABLE, ids=TABLE_IDS)
def test_numpyro_mean_gradient_matches_exact(entry, case):
    estimates = _numpyro_estimates(entry.name, case.name)
    _assert_matches(estimates, entry.exact_grads, f"NumPyro {entry.name} / {case.name}")


@pytest.mark.parametrize("entry, case", TABLE, ids=TABLE_IDS)
def test_backends_agree(entry, case):
    pyro_estimates = _pyro_estimates(entry.name, case.name)
    numpyro_estimates = _numpyro_estimates(entry.name, case.name)
    differences = {n: pyro_estimates[n].minus(numpyro_estimates[n]) for n in pyro_estimates}
    zeros = {n: np.zeros(np.shape(d.mean)) for n, d in differences.items()}
    _assert_matches(differences, zeros, f"Pyro − NumPyro {entry.name} / {case.name}")


# ---- masked decisions whose cost depends on them --------------------------------------------
# On MASKED_LIKELIHOOD point 1's z is masked in p (``.mask``) and q (``handlers.mask``) but its
# x is not: its logits' exact gradient is nonzero (0.69 / −0.42), so a masked decision must
# keep its true score term; REBAR/RELAX give it no control variate (c = 0). Dropping the
# score term, as masking log q did on NumPyro before, gives exactly 0 there (|z| = ∞). Cases:
# the score function's log q path (loo; the "optimal" baseline's score ignores masks on both
# backends), REBAR's joint form and RELAX's coordinate-wise form (REBAR coordinate-wise and
# RELAX joint share their code paths; NumPyro's compile dominates the cost). Their own family
# of 3 × 3 checks, each threshold derived as above: 10 coordinates, ν = 29 (Pyro and the
# backend comparison) or 7999 (NumPyro), T = 9.
MASKED_CASES = [_CASES[name] for name in ("loo-K2", "rebar-joint-K2", "relax-K2")]
NUM_MASKED_TESTS = 3 * len(MASKED_CASES)


@functools.cache
def _masked_estimates(case_name: str) -> tuple[dict, dict]:
    case = _CASES[case_name]
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        pyro_estimates = pyro_helpers.case_estimates(case, MASKED_LIKELIHOOD, NUM_CALLS, NUM_DRAWS)
    return pyro_estimates, numpyro_helpers.case_estimates(case, MASKED_LIKELIHOOD, NUM_SAMPLES)


@pytest.mark.parametrize("case", MASKED_CASES, ids=[c.name for c in MASKED_CASES])
def test_masked_decisions_keep_their_score_term(case):
    pyro_estimates, numpyro_estimates = _masked_estimates(case.name)
    exact = MASKED_LIKELIHOOD.exact_grads
    differences = {n: pyro_estimates[n].minus(numpyro_estimates[n]) for n in pyro_estimates}
    zeros = {n: np.zeros(np.shape(d.mean)) for n, d in differences.items()}
    for estimates, reference, what in (
        (pyro_estimates, exact, "Pyro"),
        (numpyro_estimates, exact, "NumPyro"),
        (differences, zeros, "Pyro − NumPyro"),
    ):
        dof = min(e.dof for e in estimates.values())
        threshold = z_threshold(num_coordinates(estimates), dof, NUM_MASKED_TESTS)
        z, where = max_abs_z(estimates, reference)
        assert z < threshold, f"{what} masked_likelihood / {case.name}: |z| = {z:.2f} at {where}"
