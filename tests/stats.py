"""Statistics for the tests: means with standard errors, z-scores, and derived thresholds.

A statistical test here compares the mean of ``n`` independent estimates with a reference
value (or with another backend's mean), coordinate by coordinate, through

    z = (mean − reference) / SE,    SE = s / √n,

with s the sample standard deviation. Under the null hypothesis (the estimator is unbiased)
and Gaussian estimates, every coordinate's z follows Student's t with ν = n − 1 degrees of
freedom; the estimates the tests average are means of many draws (batch means), so the
Gaussian assumption holds by the central limit theorem. The difference of two independent
means has SE = √(SE₁² + SE₂²) and Welch–Satterthwaite degrees of freedom, which lie between
min(ν₁, ν₂) and ν₁ + ν₂; since the t tail shrinks as ν grows, ν = min(ν₁, ν₂) gives a
threshold at least as large as Welch's (conservative).

**Threshold** (:func:`z_threshold`). A family of T tests, test i looking at m_i coordinates,
raises a false alarm when any coordinate of any test has |z| > c_i. By the union bound
(Bonferroni), choosing for test i

    c_i = t⁻¹_ν(1 − α / (2 T m_i))

makes each coordinate exceed its threshold with probability α / (T m_i), each test with
probability ≤ α / T and the whole family with probability ≤ α. Example: at α = 1e-3, one test
over 50 coordinates on ν = 29 gives c = 5.5 — the 5 SE stated before this module existed had a
family-wise rate of 1.3e-3 for that single test; a table of T tests needs a larger c.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

#: The family-wise false-alarm rate every statistical table of the test suite is held to.
FAMILY_FALSE_ALARM_RATE = 1e-3


@dataclass(frozen=True)
class MeanEstimate:
    """The mean of independent estimates, its standard error and degrees of freedom."""

    mean: np.ndarray
    se: np.ndarray
    dof: float

    @classmethod
    def from_samples(cls, samples) -> MeanEstimate:
        """Mean over axis 0 of independent samples (SE from their spread, ν = n − 1)."""
        samples = np.asarray(samples, dtype=np.float64)
        n = samples.shape[0]
        return cls(samples.mean(0), samples.std(0, ddof=1) / np.sqrt(n), n - 1)

    @classmethod
    def from_moments(cls, mean, variance, n: int) -> MeanEstimate:
        """From the sample mean and unbiased sample variance of ``n`` independent samples."""
        return cls(np.asarray(mean), np.sqrt(np.asarray(variance) / n), n - 1)

    def minus(self, other: MeanEstimate) -> MeanEstimate:
        """The difference of two independent means (conservative ν, see the module doc)."""
        se = np.sqrt(self.se**2 + other.se**2)
        return MeanEstimate(self.mean - other.mean, se, min(self.dof, other.dof))


def z_threshold(
    num_coordinates: int, dof: float, num_tests: int = 1, rate: float = FAMILY_FALSE_ALARM_RATE
) -> float:
    """The |z| one test may reach: c = t⁻¹_ν(1 − rate / (2 · num_tests · num_coordinates)).

    With this threshold for each of ``num_tests`` tests the family-wise false-alarm rate is
    at most ``rate`` (Bonferroni over coordinates and tests; derivation in the module doc).
    """
    if num_coordinates < 1 or num_tests < 1:
        raise ValueError(
            f"num_coordinates and num_tests must be >= 1, got {num_coordinates}, {num_tests}"
        )
    return float(stats.t.isf(rate / (2 * num_tests * num_coordinates), dof))


def num_coordinates(estimates: dict[str, MeanEstimate]) -> int:
    return sum(int(np.size(e.mean)) for e in estimates.values())


def max_abs_z(
    estimates: dict[str, MeanEstimate], reference: dict[str, np.ndarray]
) -> tuple[float, str]:
    """Largest |mean − reference| / SE over every coordinate of every name, and where.

    A coordinate whose estimates are all equal (SE = 0, e.g. the logits of a masked site)
    scores 0 when it equals the reference to 1e-12 and ∞ otherwise.
    """
    worst, where = 0.0, ""
    for name, estimate in estimates.items():
        diff = np.abs(np.asarray(estimate.mean) - np.asarray(reference[name]))
        se = np.asarray(estimate.se)
        safe_se = np.where(se > 0, se, 1.0)
        z = np.where(se > 0, diff / safe_se, np.where(diff < 1e-12, 0.0, np.inf))
        z = np.atleast_1d(z)
        if z.max() > worst or not where:
            idx = np.unravel_index(np.argmax(z), z.shape) if np.ndim(estimate.mean) else ()
            worst, where = float(z.max()), f"{name}{list(idx)}"
    return worst, where
