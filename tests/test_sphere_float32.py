"""Sphere samplers in float32: E[μᵀz] matches its exact value on both backends.

Regression test for a bias that appeared only in float32 and only when the NumPyro sampler is
jit-compiled: XLA's CPU YNNPACK fusion (jaxlib 0.10.2) miscompiled ``(u * y).sum(-1)``
broadcast back against ``u`` in the Householder rotation, so many samples landed at wrong
points (d = 3, κ = 2: mean μᵀz 0.469 instead of A_3(2) = 0.537, 18 standard errors off).
The test is statistical: the sample mean of μᵀz over N draws is within 5 standard errors
(estimated from the same draws) of the exact value computed in float64, for d ∈ {3, 5, 16}
and κ ∈ {2, 10, 50}. N is large enough for XLA to pick the fused kernel (≥ 10⁴ rows).

conftest.py switches both backends to float64, so every input here is built as float32
explicitly, and the test checks that the samples and the whole compiled NumPyro program are
float32 (no float64 array anywhere in its StableHLO).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.special import ive

import numpyro_backend as npb
import pyro_reparam_ext as prx

Z_SCORE = 5.0
NUM_SAMPLES = 20_000
DIMS = (3, 5, 16)
CONCENTRATIONS = (2.0, 10.0, 50.0)


def vmf_mean_resultant(dim: int, kappa: float) -> float:
    """A_d(κ) = I_{d/2}(κ)/I_{d/2−1}(κ) in float64 (scaled Bessel functions cancel e^κ)."""
    return float(ive(dim / 2, kappa) / ive(dim / 2 - 1, kappa))


def power_spherical_mean(dim: int, kappa: float) -> float:
    """E[μᵀz] = (α − β)/(α + β) = κ/(κ + d − 1), α = (d−1)/2 + κ, β = (d−1)/2.

    N. De Cao, W. Aziz (2020). The Power Spherical distribution. ICML INNF+ workshop.
    """
    return kappa / (kappa + dim - 1)


REFERENCES = {"VonMisesFisher": vmf_mean_resultant, "PowerSpherical": power_spherical_mean}


def unit_loc(dim: int) -> np.ndarray:
    """A fixed generic mean direction (no zero coordinates, loc₁ < 0 exercises the sign flip)."""
    loc = np.cos(np.arange(1, dim + 1) * 1.3)
    return loc / np.linalg.norm(loc)


def assert_mean_close(w: np.ndarray, exact: float) -> None:
    w = np.asarray(w, dtype=np.float64)
    stderr = w.std(ddof=1) / np.sqrt(w.size)
    assert abs(w.mean() - exact) <= Z_SCORE * stderr, (w.mean(), exact, stderr)


@pytest.mark.parametrize("family", sorted(REFERENCES))
@pytest.mark.parametrize("dim", DIMS)
def test_numpyro_float32_jit_mean(family, dim):
    loc = jnp.asarray(unit_loc(dim), dtype=jnp.float32)

    @jax.jit  # one compilation per dimension, κ is a traced float32 scalar
    def draw(key, loc, kappa):
        return getattr(npb, family)(loc, kappa).sample(key, (NUM_SAMPLES,)) @ loc

    key = jax.random.PRNGKey(0)
    for k in CONCENTRATIONS:
        kappa = jnp.asarray(k, dtype=jnp.float32)
        # no float64 array anywhere in the program (jax.random passes some bounds as f64 scalars)
        assert "xf64>" not in draw.lower(key, loc, kappa).as_text()
        w = draw(key, loc, kappa)
        assert w.dtype == jnp.float32 and w.shape == (NUM_SAMPLES,)
        assert_mean_close(w, REFERENCES[family](dim, k))


@pytest.mark.parametrize("family", sorted(REFERENCES))
@pytest.mark.parametrize("dim", DIMS)
def test_pyro_float32_mean(family, dim):
    loc = torch.tensor(unit_loc(dim), dtype=torch.float32)
    kappa = torch.tensor(CONCENTRATIONS, dtype=torch.float32)
    z = getattr(prx, family)(loc, kappa).rsample((NUM_SAMPLES,))
    assert z.dtype == torch.float32
    w = (z @ loc).detach().numpy()
    for i, k in enumerate(CONCENTRATIONS):
        assert_mean_close(w[:, i], REFERENCES[family](dim, k))
