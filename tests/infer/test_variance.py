"""Gradient variance on the small binary VAE, measured with ``gradient_variance``.

All estimators at the same parameters and the same number of particles (one); variance is the
total variance of the encoder (guide) gradient, the part the estimators differ in. A claim
"X has lower variance than TraceGraph_ELBO" is tested on the log-ratio of the two total
variances, whose standard error comes from the samples (``total_variance_se``, delta method):
it must exceed 5 standard errors.

Measured ratios (TraceGraph variance / estimator variance) are printed (``pytest -s``) and
recorded in the issue notes. The issue's target of ≥ 10× for RELAX is NOT reached on this
model (about 2–3×, see the notes): this test checks the claims that hold.
"""

import math

import pyroapi
import pytest
from pyro import poutine
from pyro.infer import TraceGraph_ELBO

from pyro_reparam_ext.infer import RELAX_ELBO, ScoreFunction_ELBO, gradient_variance
from tests.infer.models import BINARY_VAE
from tests.infer.pyro_helpers import torch_inputs, warm_up_control_variates

ENCODER = ["enc_w", "enc_b"]
Z_MIN = 5.0


def _decaying_avg_guide(guide):
    return poutine.infer_config(
        guide,
        lambda site: (
            {} if site["is_observed"] else {"baseline": {"use_decaying_avg_baseline": True}}
        ),
    )


def _measure(elbo, guide, num_samples, warm_calls=0, warm_steps=0):
    data, init = torch_inputs(BINARY_VAE)
    if warm_calls:  # let running-average baselines settle (no parameter moves)
        gradient_variance(elbo, BINARY_VAE.model, guide, data, init, num_samples=warm_calls)
    if warm_steps:  # train only the control variate's parameters
        warm_up_control_variates(elbo, BINARY_VAE.model, guide, (data, init), warm_steps, 0.02)
    return gradient_variance(
        elbo, BINARY_VAE.model, guide, data, init, num_samples=num_samples, param_names=ENCODER
    )


def _log_ratio_z(reference, other):
    log_ratio = math.log(reference["total_variance"] / other["total_variance"])
    se = math.hypot(
        reference["total_variance_se"] / reference["total_variance"],
        other["total_variance_se"] / other["total_variance"],
    )
    return math.exp(log_ratio), log_ratio / se


@pytest.fixture(scope="module")
def tracegraph_variance():
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        elbo = TraceGraph_ELBO(max_plate_nesting=1)
        return _measure(elbo, _decaying_avg_guide(BINARY_VAE.guide), 1000, warm_calls=50)


def test_optimal_baseline_below_tracegraph(tracegraph_variance):
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        elbo = ScoreFunction_ELBO(max_plate_nesting=1, baseline="optimal")
        stats = _measure(elbo, BINARY_VAE.guide, 1000, warm_calls=50)
    ratio, z = _log_ratio_z(tracegraph_variance, stats)
    print(f"\nvariance ratio TraceGraph/optimal (K=1): {ratio:.3f}  (z = {z:.1f})")
    assert z > Z_MIN, f"ratio {ratio:.3f}, z = {z:.2f}"


def test_relax_after_warm_up_below_tracegraph(tracegraph_variance):
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        elbo = RELAX_ELBO(max_plate_nesting=1)
        stats = _measure(elbo, BINARY_VAE.guide, 400, warm_steps=150)
    ratio, z = _log_ratio_z(tracegraph_variance, stats)
    print(f"\nvariance ratio TraceGraph/RELAX (K=1, 150 warm-up steps): {ratio:.3f}  (z = {z:.1f})")
    assert z > Z_MIN, f"ratio {ratio:.3f}, z = {z:.2f}"
