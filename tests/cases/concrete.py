"""Concrete-family entries of the shared case table, with independent numpy densities.

The reference densities are written straight from Maddison et al. (2017), eqs. 14 and 16, as
products/sums in probability space (no logsumexp tricks), so they share no code with the
library's log-space implementations.
"""

import math

import numpy as np

from tests.cases import DistCase


def _log_pi(probs=None, logits=None):
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        return np.log(probs / probs.sum(-1, keepdims=True))
    logits = np.asarray(logits, dtype=np.float64)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def concrete_log_prob(value, temperature, probs=None, logits=None):
    """Maddison et al. eq. 14: (K-1)! λ^{K-1} Π_k π_k x_k^{-λ-1} / (Σ_i π_i x_i^{-λ})^K."""
    pi = np.exp(_log_pi(probs, logits))
    lam = np.asarray(temperature, dtype=np.float64)
    num_classes = value.shape[-1]
    density = (
        math.factorial(num_classes - 1)
        * lam ** (num_classes - 1)
        * np.prod(pi * value ** (-lam[..., None] - 1), -1)
        / np.sum(pi * value ** (-lam[..., None]), -1) ** num_classes
    )
    return np.log(density)


def exp_concrete_log_prob(value, temperature, probs=None, logits=None):
    """Maddison et al. appendix: (K-1)! λ^{K-1} Π_k π_k e^{-λ y_k} / (Σ_i π_i e^{-λ y_i})^K."""
    pi = np.exp(_log_pi(probs, logits))
    lam = np.asarray(temperature, dtype=np.float64)
    num_classes = value.shape[-1]
    density = (
        math.factorial(num_classes - 1)
        * lam ** (num_classes - 1)
        * np.prod(pi * np.exp(-lam[..., None] * value), -1)
        / np.sum(pi * np.exp(-lam[..., None] * value), -1) ** num_classes
    )
    return np.log(density)


def _bernoulli_alpha(probs=None, logits=None):
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        return probs / (1 - probs)
    return np.exp(np.asarray(logits, dtype=np.float64))


def binary_concrete_log_prob(value, temperature, probs=None, logits=None):
    """Maddison et al. eq. 16: λ α x^{-λ-1}(1-x)^{-λ-1} / (α x^{-λ} + (1-x)^{-λ})^2."""
    alpha = _bernoulli_alpha(probs, logits)
    lam = np.asarray(temperature, dtype=np.float64)
    density = (
        lam
        * alpha
        * value ** (-lam - 1)
        * (1 - value) ** (-lam - 1)
        / (alpha * value ** (-lam) + (1 - value) ** (-lam)) ** 2
    )
    return np.log(density)


def categorical_one_hot_log_prob(value, temperature, probs=None, logits=None):
    return np.sum(value * _log_pi(probs, logits), -1) + 0 * np.asarray(temperature)


def bernoulli_log_prob(value, temperature, probs=None, logits=None):
    alpha = _bernoulli_alpha(probs, logits)
    p = alpha / (1 + alpha)
    return value * np.log(p) + (1 - value) * np.log1p(-p) + 0 * np.asarray(temperature)


# The nearest-neighbour gof test assumes a density that is smooth where the samples are; on the
# simplex the Concrete density is singular at the faces. In log-ratio coordinates
# r_k = log x_k - log x_K (k < K) the density is smooth on R^{K-1} and equals the ExpConcrete
# density exactly (the Jacobian of y -> r cancels the symmetric measure), so the test runs there.


def _log_ratio_of_log(samples):
    return samples[..., :-1] - samples[..., -1:]


def _log_ratio_of_simplex(samples):
    return _log_ratio_of_log(np.log(samples))


def _simplex_to_log_ratio_density(samples):
    # Concrete density = ExpConcrete density · Π_k 1/x_k, so add back Σ_k log x_k
    return np.sum(np.log(samples), -1)


def _categorical_invalid(valid):
    return [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"logits": np.array([0.0, np.nan, 1.0]), "probs": None}, "logits"),
        ({"logits": np.zeros(3), "probs": valid}, "probs"),
        ({"probs": None, "logits": None}, "probs"),
    ]


def _binary_invalid(valid):
    return [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -0.5}, "temperature"),
        ({"logits": np.nan, "probs": None}, "logits"),
        ({"logits": 0.0, "probs": valid}, "probs"),
        ({"probs": None, "logits": None}, "probs"),
    ]


_P3 = np.array([0.2, 0.3, 0.5])

CASES = [
    DistCase(
        id="Concrete-K3-tau0.6-probs",
        dist_name="Concrete",
        params={"temperature": 0.6, "probs": _P3},
        reference_log_prob=concrete_log_prob,
        gof_points=_log_ratio_of_simplex,
        gof_log_density_correction=_simplex_to_log_ratio_density,
        invalid_params=_categorical_invalid(_P3),
    ),
    DistCase(
        id="Concrete-K4-batched-logits",
        dist_name="Concrete",
        params={
            "temperature": np.array([0.5, 1.5]),
            "logits": np.array([[0.1, -0.4, 1.2, 0.0], [2.0, 0.3, -1.0, 0.5]]),
        },
        reference_log_prob=concrete_log_prob,
        gof=False,  # the gof test takes unbatched distributions; Concrete-K3 covers sampling
    ),
    DistCase(
        id="ExpConcrete-K3-tau0.8-logits",
        dist_name="ExpConcrete",
        params={"temperature": 0.8, "logits": np.array([0.5, -1.0, 0.2])},
        reference_log_prob=exp_concrete_log_prob,
        gof_points=_log_ratio_of_log,
        invalid_params=_categorical_invalid(_P3),
    ),
    DistCase(
        id="ExpConcrete-K5-batched-probs",
        dist_name="ExpConcrete",
        params={
            "temperature": np.array([[0.3], [2.0]]),
            "probs": np.array([0.1, 0.2, 0.3, 0.25, 0.15]),
        },
        reference_log_prob=exp_concrete_log_prob,
        gof=False,
    ),
    DistCase(
        id="BinaryConcrete-tau0.7-probs",
        dist_name="BinaryConcrete",
        params={"temperature": 0.7, "probs": 0.3},
        reference_log_prob=binary_concrete_log_prob,
        gof_num_samples=20000,
        invalid_params=_binary_invalid(0.3),
    ),
    DistCase(
        id="BinaryConcrete-batched-logits",
        dist_name="BinaryConcrete",
        params={"temperature": np.array([0.4, 1.0, 2.5]), "logits": np.array([-1.0, 0.0, 2.0])},
        reference_log_prob=binary_concrete_log_prob,
        gof=False,
    ),
    # Straight-through variants: samples follow the discrete law, which their log_prob is;
    # their sampler is checked by a multinomial test in tests/test_concrete.py.
    DistCase(
        id="ConcreteStraightThrough-K3",
        dist_name="ConcreteStraightThrough",
        params={"temperature": 0.5, "probs": _P3},
        reference_log_prob=categorical_one_hot_log_prob,
        gof=False,
        invalid_params=_categorical_invalid(_P3),
    ),
    DistCase(
        id="BinaryConcreteStraightThrough",
        dist_name="BinaryConcreteStraightThrough",
        params={"temperature": np.array([0.5, 2.0]), "logits": np.array([0.3, -1.2])},
        reference_log_prob=bernoulli_log_prob,
        gof=False,
        invalid_params=_binary_invalid(0.3),
    ),
]
