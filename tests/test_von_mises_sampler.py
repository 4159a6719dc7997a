"""The fixed-pool Best–Fisher sampler of ops/von_mises.py (issue 15: no host read).

Each case draws N samples per concentration in one call (a batch of κ: every column has its
own pool, so the per-element partition is exercised) and compares each column's empirical
CDF with the exact one by a Kolmogorov–Smirnov test.

Threshold: under the null hypothesis (the samples are i.i.d. from the target), the KS
statistic D_N follows scipy.stats.kstwo(N) exactly (continuous target). The table has
2 dtypes × 6 concentrations = 12 KS tests; holding the family to the suite's false-alarm
rate α = FAMILY_FALSE_ALARM_RATE (1e-3) by Bonferroni gives each test the threshold
kstwo(N).isf(α / 12) ≈ 0.0079 for N = 80000. Power: the KS distance between the von Mises
laws of κ and 1.1κ is 0.0115–0.0123 for κ ∈ {5, 100, 1e4} (0.0074 at κ = 0.5), so an error
of 10% in the effective concentration fails the test; a constant-c acceptance test (a
mis-scaled envelope) gave D = 0.018–0.039.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special
from scipy import stats as scipy_stats

import pyro_reparam_ext.ops.von_mises as von_mises_ops
from pyro_reparam_ext.ops.von_mises import (
    _MIN_ACCEPTANCE,
    BEST_FISHER_MIN_ACCEPTANCE,
    von_mises_sample,
)
from tests.stats import FAMILY_FALSE_ALARM_RATE

NUM_SAMPLES = 80_000
#: κ = 0 is the uniform law (every proposal accepted), 1e-4 and 1e4 the two asymptotic regimes
CONCENTRATIONS = (0.0, 1e-4, 0.5, 5.0, 100.0, 1e4)
DTYPES = (torch.float32, torch.float64)
KS_THRESHOLD = float(
    scipy_stats.kstwo(NUM_SAMPLES).isf(
        FAMILY_FALSE_ALARM_RATE / (len(DTYPES) * len(CONCENTRATIONS))
    )
)


def _cdf(kappa: float):
    if kappa == 0:
        return lambda x: (x + math.pi) / (2 * math.pi)
    return scipy_stats.vonmises(kappa).cdf


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_best_fisher_pool_matches_the_von_mises_law(dtype):
    torch.manual_seed(20261203)
    kappa = torch.tensor(CONCENTRATIONS, dtype=dtype)
    x = von_mises_sample(kappa, (NUM_SAMPLES,))
    assert x.shape == (NUM_SAMPLES, len(CONCENTRATIONS)) and x.dtype == dtype
    assert not x.requires_grad
    assert bool(torch.isfinite(x).all()) and float(x.abs().max()) <= math.pi
    samples = x.double().numpy()
    for j, k in enumerate(CONCENTRATIONS):
        d = scipy_stats.kstest(samples[:, j], _cdf(k)).statistic
        assert d < KS_THRESHOLD, (dtype, k, d, KS_THRESHOLD)


def test_extreme_concentration_is_finite_and_concentrated():
    """κ = 1e30 (float32 and float64): finite samples with the normal limit's spread
    1/sqrt(κ) (std within 10%: 1000 samples give a relative SE of 2.2% of the std, so 10%
    is 4.5 SE)."""
    torch.manual_seed(0)
    for dtype in DTYPES:
        x = von_mises_sample(torch.tensor(1e30, dtype=dtype), (1000,))
        assert bool(torch.isfinite(x).all()), dtype
        ratio = float(x.double().std()) * 1e15
        assert abs(ratio - 1) < 0.1, (dtype, ratio)


def test_pool_size_covers_the_worst_acceptance_rate():
    """Best & Fisher's acceptance rate κ I_0(κ) sqrt(r² − 1) e^{1 − κr} (r = (1 + ρ²)/(2ρ),
    sqrt(r² − 1) = (1 − ρ²)/(2ρ)) stays above the pool's design rate over κ ∈ [1e-6, 1e8],
    its infimum being sqrt(e/(2π)) (κ → ∞)."""
    kappa = np.logspace(-6, 8, 2001)
    tau = 1 + np.hypot(1, 2 * kappa)
    rho = (tau - np.sqrt(2 * tau)) / (2 * kappa)
    r = (1 + rho**2) / (2 * rho)
    log_rate = np.log(kappa * special.i0e(kappa) * (1 - rho**2) / (2 * rho)) + kappa + 1 - kappa * r
    assert np.exp(log_rate).min() >= BEST_FISHER_MIN_ACCEPTANCE - 1e-6
    assert BEST_FISHER_MIN_ACCEPTANCE >= _MIN_ACCEPTANCE


#: one sample per element over a batch of N equal κ: the two-round path (a small first pool,
#: then a full pool for the elements it left short); 2 κ × 2 first-round sizes = 4 KS tests
#: at α / 4 (kstwo(N).isf(α/4) ≈ 0.0073 for N = 80000)
BATCH_CONCENTRATIONS = (0.5, 100.0)
BATCH_KS_THRESHOLD = float(scipy_stats.kstwo(NUM_SAMPLES).isf(FAMILY_FALSE_ALARM_RATE / 4))


@pytest.mark.parametrize("first_log_shortfall", [None, -0.5], ids=["default", "many-short"])
def test_one_sample_per_element_matches_the_von_mises_law(monkeypatch, first_log_shortfall):
    """The default first pool (8 proposals) leaves ~1e-3 of the elements short; with
    e^{-0.5} (one proposal) 10–35% are, so the second round carries the law: without it those
    elements would hold rejected wrapped-Cauchy proposals: with the second round skipped, D =
    0.013 (κ = 0.5) and 0.125 (κ = 100) against the threshold 0.0073."""
    if first_log_shortfall is not None:
        monkeypatch.setattr(von_mises_ops, "_FIRST_LOG_SHORTFALL", first_log_shortfall)
    torch.manual_seed(20261203)
    for k in BATCH_CONCENTRATIONS:
        x = von_mises_sample(torch.full((NUM_SAMPLES,), k, dtype=torch.float64), ())
        assert x.shape == (NUM_SAMPLES,) and bool(torch.isfinite(x).all())
        d = scipy_stats.kstest(x.numpy(), _cdf(k)).statistic
        assert d < BATCH_KS_THRESHOLD, (k, first_log_shortfall, d, BATCH_KS_THRESHOLD)
