"""NumPyro estimators: the mean gradient matches the exact one within 5 standard errors.

Every estimator and baseline, on the catalogue's three models (several Bernoulli latents
with a nonlinear likelihood; a Categorical mixture in a plate of 12 subsampled to 4; a
Bernoulli + Normal guide), through ``gradient_variance``: ``NUM_SAMPLES`` estimates in one
jit-compiled ``lax.scan``, at arbitrary (perturbed) control-variate parameters. Running-average
baselines update between estimates as in training; each estimate is unbiased given the past,
so the deviations are martingale differences and the sample standard error of the mean is
valid. With ~40 coordinates per model a true-unbiased estimator exceeds 5 SE somewhere with
probability < 1e-4; a bias of 5 SE (about 3% of the gradient scale here) fails.
"""

import pytest

from tests.infer.models import UNBIASEDNESS_MODELS
from tests.infer.numpyro_helpers import ESTIMATORS, estimator_gradient_stats, z_scores

Z_MAX = 5.0


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
@pytest.mark.parametrize("entry", UNBIASEDNESS_MODELS, ids=lambda e: e.name)
def test_mean_gradient_matches_exact(entry, estimator):
    stats = estimator_gradient_stats(entry.name, estimator)
    assert set(stats["params"]) == set(entry.exact_grads)
    z, where = z_scores(stats, entry.exact_grads)
    assert z < Z_MAX, f"{entry.name} / {estimator}: |z| = {z:.2f} at {where}"
