"""Masked guide sites on both backends (issue 11): which decisions the masks keep
(``sites.unmasked_decisions``) and the score the estimators use (``particles.score_log_prob``).

A masked site is still sampled from q, and its cost may depend on it through unmasked terms,
so every estimator takes the true log q there, wherever the mask sits: ``poutine.mask`` /
``handlers.mask``, ``.mask(...)`` outside or inside ``to_event``, a tensor or a Python bool.
Pyro's own ``score_parts`` mask the score inside ``to_event`` and for a bool mask; those are
the cases ``score_log_prob`` must undo. The estimators built on them are checked against the
exact gradient in test_unbiasedness.py (``MASKED_LIKELIHOOD``). Deterministic checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pyro.poutine as poutine
import pytest
import torch
from numpyro import handlers

from numpyro_backend.infer import particles as numpyro_particles
from numpyro_backend.infer import sites as numpyro_sites
from numpyro_backend.infer.relaxation import FAMILIES as NUMPYRO_FAMILIES
from pyro_reparam_ext.infer import particles as pyro_particles
from pyro_reparam_ext.infer import sites as pyro_sites
from pyro_reparam_ext.infer.relaxation import FAMILIES as PYRO_FAMILIES

LOGITS = np.array([[0.4, -0.2], [0.1, 0.3], [-0.5, 0.6], [0.2, 0.0]])
POINTS = np.array([True, False, True, True])  # a mask per point (site element)
DECISIONS = np.array([[True, False], [True, True], [False, True], [True, True]])  # per decision

#: name -> (mask handler, .mask outside to_event, .mask inside it, the decisions kept)
PLACEMENTS = {
    "none": (None, None, None, None),
    "handler": (POINTS, None, None, POINTS[:, None]),
    "outer": (None, POINTS, None, POINTS[:, None]),
    "inner": (None, None, DECISIONS, DECISIONS),
    "all": (
        POINTS,
        POINTS[::-1].copy(),
        DECISIONS,
        POINTS[:, None] & POINTS[::-1, None] & DECISIONS,
    ),
    "bool-handler": (False, None, None, np.array(False)),
    "bool-outer": (None, False, None, np.array(False)),
    "bool-inner": (None, None, False, np.array(False)),
}


def _guide(backend, handler, outer, inner):
    """A guide with one Bernoulli site (4 points × 2 decisions) masked as given."""
    if backend == "pyro":
        sample, plate, as_array, mask_handler = (
            pyro.sample,
            pyro.plate,
            torch.as_tensor,
            poutine.mask,
        )
        base = pdist.Bernoulli(logits=torch.as_tensor(LOGITS))
    else:
        sample, plate, as_array, mask_handler = (
            numpyro.sample,
            numpyro.plate,
            jnp.asarray,
            handlers.mask,
        )
        base = ndist.BernoulliLogits(jnp.asarray(LOGITS))

    def mask_of(m):
        return m if isinstance(m, bool) else as_array(m)

    def guide():
        fn = base if inner is None else base.mask(mask_of(inner))
        fn = fn.to_event(1)
        fn = fn if outer is None else fn.mask(mask_of(outer))
        with plate("data", 4):
            if handler is None:
                return sample("z", fn)
            with mask_handler(mask=mask_of(handler)):
                return sample("z", fn)

    return guide


def _pyro_site(placement):
    pyro.set_rng_seed(0)
    trace = poutine.trace(_guide("pyro", *PLACEMENTS[placement][:3])).get_trace()
    trace.compute_score_parts()
    return trace.nodes["z"]


def _numpyro_site(placement):
    guide = handlers.seed(_guide("numpyro", *PLACEMENTS[placement][:3]), jax.random.PRNGKey(0))
    return handlers.trace(guide).get_trace()["z"]


def _unmasked_log_q(value) -> np.ndarray:
    logits = torch.as_tensor(LOGITS)
    value = torch.tensor(np.asarray(value).astype(np.float64))
    return pdist.Bernoulli(logits=logits).log_prob(value).sum(-1)


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_unmasked_decisions_agree_on_both_backends(placement):
    expected = PLACEMENTS[placement][3]
    kept = {
        "pyro": pyro_sites.unmasked_decisions(_pyro_site(placement), PYRO_FAMILIES[0]),
        "numpyro": numpyro_sites.unmasked_decisions(_numpyro_site(placement), NUMPYRO_FAMILIES[0]),
    }
    for backend, keep in kept.items():
        if expected is None:
            assert keep is None, backend
        else:
            keep = np.broadcast_to(np.asarray(keep), (4, 2))
            np.testing.assert_array_equal(keep, np.broadcast_to(expected, (4, 2)), backend)


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_score_is_the_unmasked_log_q_on_both_backends(placement):
    pyro_site = _pyro_site(placement)
    pyro_score = pyro_particles.score_log_prob(pyro_site)
    if placement == "none":  # an unmasked site's score function itself
        assert pyro_score is pyro_site["score_parts"].score_function
    expected = _unmasked_log_q(pyro_site["value"].detach())
    torch.testing.assert_close(pyro_score, expected, rtol=1e-12, atol=0)
    numpyro_site = _numpyro_site(placement)
    numpyro_score = numpyro_particles.score_log_prob(numpyro_site["fn"], numpyro_site["value"])
    expected = _unmasked_log_q(numpyro_site["value"])
    np.testing.assert_allclose(np.asarray(numpyro_score), expected.numpy(), rtol=1e-12)
