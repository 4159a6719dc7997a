"""The same backend-agnostic model on both backends: mean gradients agree.

For each catalogue model (the Categorical mixture under ``plate`` subsampling included) and
estimator, the NumPyro mean gradient (``NUM_SAMPLES`` jit-compiled estimates, shared with the
unbiasedness test) and the Pyro mean gradient (``NUM_CALLS`` calls of ``NUM_DRAWS`` vectorized
draws) agree within 5 combined standard errors, and each lies within 5 of its own standard
errors of the exact value.
"""

import numpy as np
import pyroapi
import pytest

import pyro_reparam_ext.infer as pyro_infer
from tests.infer.models import EVENT_MODELS, UNBIASEDNESS_MODELS
from tests.infer.numpyro_helpers import (
    estimator_gradient_stats,
    fast_compile,  # noqa: F401  (fixture)
)
from tests.infer.pyro_helpers import gradient_batches

pytestmark = pytest.mark.usefixtures("fast_compile")

NUM_CALLS = 30
NUM_DRAWS = 64
Z_MAX = 5.0

# the same constructor line on both backends
PYRO_ESTIMATORS = {
    "optimal-K2": lambda n: pyro_infer.ScoreFunction_ELBO(num_particles=2, max_plate_nesting=n),
    "relax-K2": lambda n: pyro_infer.RELAX_ELBO(num_particles=2, max_plate_nesting=n),
}


CASES = [(entry, name) for entry in UNBIASEDNESS_MODELS for name in PYRO_ESTIMATORS] + [
    (entry, "relax-K2") for entry in EVENT_MODELS
]


@pytest.mark.parametrize(
    "entry, estimator", CASES, ids=[f"{entry.name}-{name}" for entry, name in CASES]
)
def test_backends_agree(entry, estimator):
    numpyro_stats = estimator_gradient_stats(entry.name, estimator)
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        pyro_batches = gradient_batches(PYRO_ESTIMATORS[estimator], entry, NUM_CALLS, NUM_DRAWS)
    n = numpyro_stats["num_samples"]
    for name, exact in entry.exact_grads.items():
        mean_np = numpyro_stats["params"][name]["mean"]
        se_np = np.sqrt(numpyro_stats["params"][name]["variance"] / n)
        mean_pyro = pyro_batches[name].mean(0)
        se_pyro = pyro_batches[name].std(0, ddof=1) / np.sqrt(NUM_CALLS)
        z_between = np.abs(mean_np - mean_pyro) / np.sqrt(se_np**2 + se_pyro**2)
        assert z_between.max() < Z_MAX, f"{name}: backends differ by {z_between.max():.2f} SE"
        assert (np.abs(mean_np - exact) / se_np).max() < Z_MAX, f"{name}: NumPyro vs exact"
        assert (np.abs(mean_pyro - exact) / se_pyro).max() < Z_MAX, f"{name}: Pyro vs exact"
