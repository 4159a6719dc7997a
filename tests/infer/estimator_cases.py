"""The estimator case table: one list of (estimator, options, num_particles) for both backends.

Every entry is built by the same constructor line on Pyro (``pyro_reparam_ext.infer``) and
NumPyro (``numpyro_backend.infer``); ``tests/infer/test_unbiasedness.py`` runs each entry on
each model of :data:`TABLE_MODELS` and checks both backends' mean gradients against the exact
gradient and against each other.

Not in the table: ``IWAE_ELBO``. It estimates the gradient of the K-sample importance-weighted
bound, not of the ELBO, so the ELBO references of the catalogue do not apply; its gradient is
checked against the exact IWAE bound's gradient in ``tests/infer/test_iwae.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.infer.models import (
    BERNOULLI_NONLINEAR,
    BERNOULLI_NORMAL,
    BINARY_VAE,
    CATEGORICAL_MIXTURE,
    DEPENDENT_CATEGORICAL,
    EVENT_SITES,
    MASKED_BERNOULLI,
    ONE_HOT,
)


@dataclass(frozen=True)
class EstimatorCase:
    """One estimator configuration; ``name`` is the test id."""

    name: str
    estimator: str
    num_particles: int
    options: dict = field(default_factory=dict)

    def make(self, infer_module, max_plate_nesting: int):
        """The estimator from ``infer_module`` (either backend's ``infer`` package)."""
        cls = getattr(infer_module, self.estimator)
        return cls(self.num_particles, max_plate_nesting=max_plate_nesting, **self.options)


# Particle counts: the smallest each option allows or exercises — K = 2 where particles
# matter (leave-one-out baselines, DisARM's coupled pair, REBAR/RELAX's vectorized
# particles), K = 1 for the running-average ("optimal" at K = 1 uses running moments) and
# plain baselines.
ESTIMATOR_CASES = [
    EstimatorCase("optimal-K1", "ScoreFunction_ELBO", 1, {"baseline": "optimal"}),
    EstimatorCase("optimal-K2", "ScoreFunction_ELBO", 2, {"baseline": "optimal"}),
    EstimatorCase("loo-K2", "ScoreFunction_ELBO", 2, {"baseline": "loo"}),
    EstimatorCase("decaying_avg-K1", "ScoreFunction_ELBO", 1, {"baseline": "decaying_avg"}),
    EstimatorCase("none-K1", "ScoreFunction_ELBO", 1, {"baseline": "none"}),
    EstimatorCase("rebar-K2", "REBAR_ELBO", 2, {"coordinatewise": True}),
    EstimatorCase("rebar-joint-K2", "REBAR_ELBO", 2, {"coordinatewise": False}),
    EstimatorCase("relax-K2", "RELAX_ELBO", 2, {"coordinatewise": True}),
    EstimatorCase("relax-joint-K2", "RELAX_ELBO", 2, {"coordinatewise": False}),
    EstimatorCase("disarm-K2", "DisARM_ELBO", 2),
]

#: Every catalogue model with an ELBO reference (the RELAX toy's 0.002 signal is a training
#: test, not an unbiasedness one): Bernoulli chains, a subsampled Categorical mixture, a
#: Bernoulli + Normal guide, to_event Bernoulli and one-hot decisions, a masked site, a
#: Categorical depending on a Bernoulli, plain OneHotCategorical sites.
TABLE_MODELS = [
    BERNOULLI_NONLINEAR,
    CATEGORICAL_MIXTURE,
    BERNOULLI_NORMAL,
    BINARY_VAE,
    EVENT_SITES,
    MASKED_BERNOULLI,
    DEPENDENT_CATEGORICAL,
    ONE_HOT,
]

#: (model, estimator case) pairs, the table every backend runs.
TABLE = [(entry, case) for entry in TABLE_MODELS for case in ESTIMATOR_CASES]
TABLE_IDS = [f"{entry.name}-{case.name}" for entry, case in TABLE]
