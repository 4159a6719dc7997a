"""ReinMaxStraightThrough and GumbelRaoStraightThrough on both backends.

Forward: exact one-hot values with the Categorical(π) law (chi-square on counts). Backward:
ReinMax's vector-Jacobian product against Algorithm 2 of Liu et al. (2023) written out by hand
with explicit Jacobian matrices; Gumbel-Rao's gradient against an independent Monte Carlo
estimate of the conditional expectation E[∇ softmax((θ + G)/τ) | argmax(θ + G) = D] from
unconditional Gumbel draws grouped by their argmax (Paulus et al. 2021, eq. 7).

Tolerances: a chi-square test at p > 1e-6 (false failure 1e-6 per test); means at 5 standard
errors (false failure < 6e-7 per comparison); a variance decrease by the log-variance-ratio
test (the log of a sample variance has SE sqrt((κ − 1)/n), κ the sample kurtosis).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch

import numpyro_backend
import pyro_reparam_ext

BACKENDS = ["pyro", "numpyro"]
CLASSES = ["ReinMaxStraightThrough", "GumbelRaoStraightThrough"]
THETA = np.array([0.3, -1.2, 0.8, 0.0])  # logits
COTANGENT = np.array([1.0, -2.0, 0.5, 3.0])  # g in the vector-Jacobian product gᵀ ∂D̂/∂θ


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def samples_and_grads(backend, name, logits, num, seed=0, cotangent=COTANGENT, **kwargs):
    """``num`` samples (one per batch row of the logits) and gᵀ ∂sample/∂logits per row."""
    logits = np.broadcast_to(logits, (num, logits.shape[-1]))
    if backend == "pyro":
        torch.manual_seed(seed)
        cls = getattr(pyro_reparam_ext, name)
        theta = torch.tensor(logits, requires_grad=True)
        value = cls(torch.tensor(kwargs.pop("temperature")), logits=theta, **kwargs).rsample()
        (grad,) = torch.autograd.grad((value * torch.tensor(cotangent)).sum(), [theta])
        return value.detach().numpy(), grad.numpy()
    cls = getattr(numpyro_backend, name)
    temperature = kwargs.pop("temperature")

    def draw(theta):
        value = cls(temperature, logits=theta, **kwargs).rsample(jax.random.PRNGKey(seed))
        return jnp.sum(value * cotangent), value

    grad, value = jax.jit(jax.grad(draw, has_aux=True))(jnp.asarray(logits))
    return np.asarray(value), np.asarray(grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CLASSES)
def test_forward_exact_one_hot_categorical(backend, name):
    num = 20000
    kwargs = {"num_samples": 2} if name == "GumbelRaoStraightThrough" else {}
    values, _ = samples_and_grads(backend, name, THETA, num, temperature=1.5, **kwargs)
    assert set(np.unique(values)) <= {0.0, 1.0}
    np.testing.assert_array_equal(values.sum(-1), 1.0)
    counts = values.sum(0)
    assert scipy.stats.chisquare(counts, num * softmax(THETA)).pvalue > 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_reinmax_backward_is_algorithm_2(backend):
    """gᵀ ∂D̂/∂θ = (2 J(π₁) − ½ J(π₀)) g with J(π) = diag(π) − ππᵀ, π₀ = softmax(θ),
    π₁ = (D + softmax(θ/τ))/2 ([3], Algorithm 2; the reference code's final mean subtraction
    is a no-op because both terms sum to zero)."""
    temperature = 1.7
    values, grads = samples_and_grads(
        backend, "ReinMaxStraightThrough", THETA, 50, temperature=temperature
    )

    def jacobian(p):
        return np.diag(p) - np.outer(p, p)

    pi0 = softmax(THETA)
    for value, grad in zip(values, grads, strict=True):
        pi1 = 0.5 * (value + softmax(THETA / temperature))
        expected = (2 * jacobian(pi1) - 0.5 * jacobian(pi0)) @ COTANGENT
        expected -= expected.mean()  # as the reference implementation
        np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-12)


def conditional_reference(temperature, num=400_000, seed=7):
    """E[gᵀ ∂softmax((θ + G)/τ)/∂θ | argmax = c] and its per-draw sd, by grouping
    unconditional Gumbel draws by their argmax (numpy, independent of the library)."""
    rng = np.random.default_rng(seed)
    gumbel = -np.log(-np.log(rng.uniform(size=(num, THETA.size))))
    log_pi = THETA - np.log(np.exp(THETA).sum())
    soft = softmax((log_pi + gumbel) / temperature)
    inner = (soft * COTANGENT).sum(-1, keepdims=True)
    vjp = soft * (COTANGENT - inner) / temperature
    arg = np.argmax(log_pi + gumbel, -1)
    means = np.stack([vjp[arg == c].mean(0) for c in range(THETA.size)])
    sds = np.stack([vjp[arg == c].std(0) for c in range(THETA.size)])
    counts = np.bincount(arg, minlength=THETA.size)
    return means, sds, counts


@pytest.mark.parametrize("backend", BACKENDS)
def test_gumbel_rao_gradient_is_conditional_expectation(backend):
    """With S = 4000 conditional draws the Gumbel-Rao gradient of each sample equals the
    conditional expectation for its class within 5 SE: SE² = sd_c²/S + sd_c²/n_c."""
    temperature, num_samples = 0.5, 4000
    values, grads = samples_and_grads(
        backend,
        "GumbelRaoStraightThrough",
        THETA,
        40,
        temperature=temperature,
        num_samples=num_samples,
    )
    means, sds, counts = conditional_reference(temperature)
    classes = values.argmax(-1)
    se = np.sqrt(sds[classes] ** 2 / num_samples + sds[classes] ** 2 / counts[classes, None])
    z = (grads - means[classes]) / se
    assert np.all(np.abs(z) < 5), z


@pytest.mark.parametrize("backend", BACKENDS)
def test_gumbel_rao_variance_falls_with_num_samples(backend):
    def log_var_se(x):
        centred = x - x.mean(0)
        var = (centred**2).mean(0)
        return np.log(var), np.sqrt(((centred**4).mean(0) / var**2 - 1) / x.shape[0])

    num = 4000
    stats = {}
    for s in (1, 16):
        _, grads = samples_and_grads(
            backend, "GumbelRaoStraightThrough", THETA, num, temperature=0.5, num_samples=s
        )
        stats[s] = log_var_se(grads)
    log_ratio = stats[1][0] - stats[16][0]
    se = np.sqrt(stats[1][1] ** 2 + stats[16][1] ** 2)
    assert np.all(log_ratio > 5 * se), (np.exp(log_ratio), se)


@pytest.mark.parametrize("backend", BACKENDS)
def test_validation_and_shapes(backend):
    package = pyro_reparam_ext if backend == "pyro" else numpyro_backend
    asarray = torch.tensor if backend == "pyro" else jnp.asarray
    with pytest.raises(ValueError, match="num_samples"):
        package.GumbelRaoStraightThrough(asarray(0.5), logits=asarray(THETA), num_samples=0)
    with pytest.raises(ValueError, match="temperature"):
        package.ReinMaxStraightThrough(asarray(-1.0), logits=asarray(THETA), validate_args=True)
    with pytest.raises(ValueError, match="exactly one of"):
        package.ReinMaxStraightThrough(asarray(1.0))
    for name in CLASSES:
        kwargs = {"num_samples": 3} if name == "GumbelRaoStraightThrough" else {}
        d = getattr(package, name)(asarray(1.0), probs=asarray(softmax(THETA)), **kwargs)
        expanded = d.expand((2, 5))
        assert tuple(expanded.batch_shape) == (2, 5)
        assert tuple(expanded.event_shape) == (4,)
        if name == "GumbelRaoStraightThrough":  # NumPyro's expand wraps the distribution
            inner = expanded if backend == "pyro" else expanded.base_dist
            assert inner.num_samples == 3
        value = expanded.rsample() if backend == "pyro" else expanded.rsample(jax.random.PRNGKey(0))
        assert tuple(value.shape) == (2, 5, 4)
        np.testing.assert_array_equal(np.asarray(value).sum(-1), 1.0)
        assert getattr(package, name).infer_shapes(temperature=(), probs=(2, 4)) == ((2,), (4,))
        log_p = expanded.log_prob(asarray(np.eye(4)[[1]]))
        np.testing.assert_allclose(np.asarray(log_p), math.log(softmax(THETA)[1]), rtol=1e-12)


def test_numpyro_vmap_and_jit():
    """Both classes are pytrees: usable under jax.vmap (vmap_over) and jit."""
    for name in CLASSES:
        cls = getattr(numpyro_backend, name)

        def draw(logits, key, cls=cls):
            return cls(1.0, logits=logits).rsample(key)

        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        values = jax.jit(jax.vmap(draw))(jnp.tile(THETA, (3, 1)), keys)
        assert values.shape == (3, 4)
        np.testing.assert_array_equal(values.sum(-1), 1.0)
        d = cls(1.0, logits=jnp.tile(THETA, (3, 1)))
        axes = numpyro_backend.distributions.concrete.vmap_over(d, logits=0)
        out = jax.vmap(lambda d: d.log_prob(jnp.eye(4)[0]), in_axes=(axes,))(d)
        assert out.shape == (3,)
