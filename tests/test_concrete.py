"""Concrete family: pathwise gradients, straight-through behaviour, relaxation maths and
numerics at low temperature, on both backends.

Log-densities, gof, shapes and argument validation are checked for every entry of the case
table by tests/test_distributions.py.
"""

from math import lgamma, log

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch
from numpyro.distributions import gof as numpyro_gof
from pyro.distributions.testing import gof as pyro_gof

import numpyro_backend as npb
import pyro_reparam_ext as pre
from numpyro_backend.distributions import concrete as jax_relax
from pyro_reparam_ext.distributions import concrete as torch_relax

# Unbiasedness tolerance: |MC mean - exact| < Z_TOL standard errors (two-sided normal
# probability of a false failure ≈ 6e-7 per comparison).
Z_TOL = 5.0
NUM_SAMPLES = 40_000
GOF_ALPHA = 1e-3

# ---------------------------------------------------------------------------------------------
# Exact expectations by Gauss–Legendre quadrature over the noise, for finite differences
# ---------------------------------------------------------------------------------------------

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(400)


def _gauss_legendre(a, b, nodes=_NODES, weights=_WEIGHTS):
    return 0.5 * (b - a) * nodes + 0.5 * (b + a), 0.5 * (b - a) * weights


def exact_binary_concrete_expectation(g, temperature, logit):
    """E[g(x)], x = σ((ℓ + L)/λ), L ~ Logistic(0, 1): quadrature over L on [-40, 40]."""
    l, w = _gauss_legendre(-40.0, 40.0)
    density = np.exp(-np.abs(l)) / (1 + np.exp(-np.abs(l))) ** 2
    x = 1 / (1 + np.exp(-(logit + l) / temperature))
    return np.sum(w * density * g(x))


def exact_concrete_expectation(g, temperature, logits, transform=np.exp):
    """E[g(transform(y))], y = log_softmax((ℓ + G)/λ), G_k i.i.d. Gumbel: 3-D tensor quadrature."""
    nodes, weights = np.polynomial.legendre.leggauss(90)
    grid, w = _gauss_legendre(-4.0, 30.0, nodes, weights)
    density = w * np.exp(-grid - np.exp(-grid))
    g1, g2, g3 = np.meshgrid(grid, grid, grid, indexing="ij")
    gumbel = np.stack([g1, g2, g3], -1)
    z = (logits + gumbel) / temperature
    y = (
        z
        - np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1, keepdims=True))
        - z.max(-1, keepdims=True)
    )
    weight = density[:, None, None] * density[None, :, None] * density[None, None, :]
    return np.sum(weight * g(transform(y)))


def finite_difference(f, theta, h=1e-5):
    theta = np.asarray(theta, dtype=np.float64)
    grad = np.zeros_like(theta)
    for i in np.ndindex(theta.shape):
        step = np.zeros_like(theta)
        step[i] = h
        grad[i] = (f(theta + step) - f(theta - step)) / (2 * h)
    return grad


# ---------------------------------------------------------------------------------------------
# Per-sample pathwise gradients on each backend (parameters replicated once per sample)
# ---------------------------------------------------------------------------------------------


def torch_per_sample_grads(dist_name, temperature, logits, g, num_samples, seed=0):
    torch.manual_seed(seed)
    logits = torch.tensor(logits).expand((num_samples,) + np.shape(logits)).clone()
    temperature = torch.full((num_samples,), float(temperature), requires_grad=True)
    logits.requires_grad_(True)
    dist = getattr(pre, dist_name)(temperature, logits=logits)
    value = g(dist.rsample())
    value.sum().backward()
    return logits.grad.numpy(), temperature.grad.numpy()


def jax_per_sample_grads(dist_name, temperature, logits, g, num_samples, seed=0):
    logits = jnp.broadcast_to(jnp.asarray(logits), (num_samples,) + np.shape(logits))
    temperature = jnp.full((num_samples,), float(temperature))

    def total(logits, temperature):
        dist = getattr(npb, dist_name)(temperature, logits=logits)
        return jnp.sum(g(dist.rsample(jax.random.PRNGKey(seed))))

    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(logits, temperature)
    return np.asarray(grads[0]), np.asarray(grads[1])


PER_SAMPLE_GRADS = {"pyro": torch_per_sample_grads, "numpyro": jax_per_sample_grads}
backends = pytest.mark.parametrize("backend", ["pyro", "numpyro"])


def assert_unbiased(per_sample, exact):
    mean = per_sample.mean(0)
    standard_error = per_sample.std(0, ddof=1) / np.sqrt(per_sample.shape[0])
    z = np.abs(mean - exact) / standard_error
    assert np.all(z < Z_TOL), f"mean {mean}, exact {exact}, se {standard_error}, z {z}"


@backends
@pytest.mark.parametrize("temperature,logit", [(0.7, 0.4), (2.0, -1.3)])
def test_binary_concrete_pathwise_gradient(backend, temperature, logit):
    g_np = lambda x: (x - 0.4) ** 2 + x**3
    grad_logits, grad_temperature = PER_SAMPLE_GRADS[backend](
        "BinaryConcrete", temperature, logit, g_np, NUM_SAMPLES
    )
    exact_logit = finite_difference(
        lambda t: exact_binary_concrete_expectation(g_np, temperature, t), logit
    )
    exact_temperature = finite_difference(
        lambda t: exact_binary_concrete_expectation(g_np, t, logit), temperature
    )
    assert_unbiased(grad_logits, exact_logit)
    assert_unbiased(grad_temperature, exact_temperature)


CONCRETE_LOGITS = np.array([0.3, -0.8, 1.1])
COEFFS = (1.0, -2.0, 0.5)


def _weighted_sum(x):
    """Σ_k c_k x_k, written with Python floats so it runs on numpy, torch and JAX arrays."""
    return sum(c * x[..., k] for k, c in enumerate(COEFFS))


@backends
@pytest.mark.parametrize(
    "dist_name,transform,g",
    [
        ("Concrete", np.exp, lambda x: _weighted_sum(x**2)),
        ("ExpConcrete", lambda y: y, lambda y: _weighted_sum(y) + 0.1 * (y**2).sum(-1)),
    ],
    ids=["Concrete", "ExpConcrete"],
)
def test_concrete_pathwise_gradient(backend, dist_name, transform, g):
    temperature = 0.6
    grad_logits, grad_temperature = PER_SAMPLE_GRADS[backend](
        dist_name, temperature, CONCRETE_LOGITS, g, NUM_SAMPLES
    )
    exact_logits = finite_difference(
        lambda t: exact_concrete_expectation(g, temperature, t, transform), CONCRETE_LOGITS
    )
    exact_temperature = finite_difference(
        lambda t: exact_concrete_expectation(g, t, CONCRETE_LOGITS, transform), temperature
    )
    assert_unbiased(grad_logits, exact_logits)
    assert_unbiased(grad_temperature, exact_temperature)


def test_quadrature_reference_is_converged():
    """The exact expectations used above are accurate far below the Monte-Carlo error."""
    g = lambda x: _weighted_sum(x**2)
    # an independent check: plain Monte Carlo with 2e6 Gumbel draws
    rng = np.random.default_rng(0)
    gumbel = rng.gumbel(size=(2_000_000, 3))
    z = (CONCRETE_LOGITS + gumbel) / 0.6
    x = np.exp(z - z.max(-1, keepdims=True))
    x /= x.sum(-1, keepdims=True)
    values = g(x)
    se = values.std() / np.sqrt(values.size)
    assert abs(values.mean() - exact_concrete_expectation(g, 0.6, CONCRETE_LOGITS)) < Z_TOL * se
    # Binary: the Logistic-noise quadrature integrates the density to one
    assert exact_binary_concrete_expectation(lambda x: 1.0 + 0 * x, 0.7, 0.4) == pytest.approx(
        1.0, abs=1e-12
    )


# ---------------------------------------------------------------------------------------------
# Straight-through variants
# ---------------------------------------------------------------------------------------------


def _sample_torch(dist, n, seed):
    torch.manual_seed(seed)
    return dist.rsample((n,))


def _sample_jax(dist, n, seed):
    return dist.rsample(jax.random.PRNGKey(seed), (n,))


@backends
def test_straight_through_forward_is_exact_and_backward_is_relaxed(backend):
    logits = np.array([0.2, -0.5, 1.0])
    weights = np.array([1.0, 3.0, -2.0])
    temperature = 0.5
    n = 64
    if backend == "pyro":

        def grads(cls_name):
            logits_t = torch.tensor(logits, requires_grad=True)
            value = _sample_torch(getattr(pre, cls_name)(temperature, logits=logits_t), n, 7)
            (value * torch.tensor(weights)).sum().backward()
            return value.detach().numpy(), logits_t.grad.numpy()
    else:

        def grads(cls_name):
            def f(logits_j):
                value = _sample_jax(getattr(npb, cls_name)(temperature, logits=logits_j), n, 7)
                return jnp.sum(value * weights), value

            (_, value), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logits))
            return np.asarray(value), np.asarray(grad)

    hard, hard_grad = grads("ConcreteStraightThrough")
    soft, soft_grad = grads("Concrete")
    # forward: exactly one-hot, equal to the argmax of the relaxed sample from the same noise
    assert set(np.unique(hard)) <= {0.0, 1.0}
    np.testing.assert_array_equal(hard.sum(-1), 1.0)
    np.testing.assert_array_equal(hard.argmax(-1), soft.argmax(-1))
    # backward: the relaxed sample's gradient
    np.testing.assert_allclose(hard_grad, soft_grad, rtol=1e-12, atol=1e-12)


@backends
def test_binary_straight_through_forward_is_exact_and_backward_is_relaxed(backend):
    logits = np.array([0.2, -0.5, 1.0])
    temperature = 0.5
    n = 64
    if backend == "pyro":

        def grads(cls_name):
            logits_t = torch.tensor(logits, requires_grad=True)
            value = _sample_torch(getattr(pre, cls_name)(temperature, logits=logits_t), n, 3)
            value.pow(1).sum().backward()
            return value.detach().numpy(), logits_t.grad.numpy()
    else:

        def grads(cls_name):
            def f(logits_j):
                value = _sample_jax(getattr(npb, cls_name)(temperature, logits=logits_j), n, 3)
                return jnp.sum(value), value

            (_, value), grad = jax.value_and_grad(f, has_aux=True)(jnp.asarray(logits))
            return np.asarray(value), np.asarray(grad)

    hard, hard_grad = grads("BinaryConcreteStraightThrough")
    soft, soft_grad = grads("BinaryConcrete")
    assert set(np.unique(hard)) <= {0.0, 1.0}
    np.testing.assert_array_equal(hard, (soft > 0.5).astype(float))
    np.testing.assert_allclose(hard_grad, soft_grad, rtol=1e-12, atol=1e-12)


@backends
def test_straight_through_samples_follow_the_discrete_law(backend):
    probs = np.array([0.15, 0.25, 0.6])
    n = 20_000
    if backend == "pyro":
        dist = pre.ConcreteStraightThrough(0.8, probs=torch.tensor(probs))
        counts = _sample_torch(dist, n, 11).detach().sum(0)
        p_value = pyro_gof.multinomial_goodness_of_fit(torch.tensor(probs), counts)
        binary = pre.BinaryConcreteStraightThrough(0.8, probs=torch.tensor(0.3))
        ones = _sample_torch(binary, n, 12).detach().sum()
        binary_counts = torch.stack([n - ones, ones])
        binary_p = pyro_gof.multinomial_goodness_of_fit(torch.tensor([0.7, 0.3]), binary_counts)
    else:
        dist = npb.ConcreteStraightThrough(0.8, probs=jnp.asarray(probs))
        counts = np.asarray(_sample_jax(dist, n, 11).sum(0))
        p_value = numpyro_gof.multinomial_goodness_of_fit(probs, counts)
        binary = npb.BinaryConcreteStraightThrough(0.8, probs=jnp.asarray(0.3))
        ones = float(_sample_jax(binary, n, 12).sum())
        binary_p = numpyro_gof.multinomial_goodness_of_fit(
            np.array([0.7, 0.3]), np.array([n - ones, ones])
        )
    assert p_value > GOF_ALPHA
    assert binary_p > GOF_ALPHA


def test_straight_through_moments_match_discrete_law():
    logits = np.array([[0.2, -0.5, 1.0], [2.0, 0.0, -1.0]])
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    entropy = -(probs * np.log(probs)).sum(-1)
    for dist in (
        pre.ConcreteStraightThrough(0.5, logits=torch.tensor(logits)),
        npb.ConcreteStraightThrough(0.5, logits=jnp.asarray(logits)),
    ):
        np.testing.assert_allclose(np.asarray(dist.mean), probs, rtol=1e-12)
        np.testing.assert_array_equal(np.asarray(dist.mode), np.eye(3)[logits.argmax(-1)])
        np.testing.assert_allclose(np.asarray(dist.entropy()), entropy, rtol=1e-12)
    p = np.array([0.1, 0.6])
    binary_entropy = -(p * np.log(p) + (1 - p) * np.log1p(-p))
    for dist in (
        pre.BinaryConcreteStraightThrough(0.5, probs=torch.tensor(p)),
        npb.BinaryConcreteStraightThrough(0.5, probs=jnp.asarray(p)),
    ):
        np.testing.assert_allclose(np.asarray(dist.mean), p, rtol=1e-12)
        np.testing.assert_array_equal(np.asarray(dist.mode), [0.0, 1.0])
        np.testing.assert_allclose(np.asarray(dist.entropy()), binary_entropy, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Relaxation maths: the conditional sampler of REBAR (Tucker et al. 2017, appendix)
# ---------------------------------------------------------------------------------------------

RELAX = {"pyro": torch_relax, "numpyro": jax_relax}


def _uniform(backend, shape, seed):
    if backend == "pyro":
        torch.manual_seed(seed)
        return torch_relax.uniform_noise(shape, like=torch.zeros(()))
    return jax_relax.uniform_noise(jax.random.PRNGKey(seed), shape, jnp.float64)


@backends
@pytest.mark.parametrize("logit", [-2.0, 0.7, 9.0])
def test_bernoulli_conditional_sampler(backend, logit):
    """z̃ ~ p(z | b) with b = H(z): consistent with b, and mixing over b recovers z's law."""
    relax = RELAX[backend]
    n = 50_000
    u, v = _uniform(backend, (n,), 1), _uniform(backend, (n,), 2)
    logits = u * 0 + logit
    b = relax.bernoulli_hard(relax.bernoulli_relaxed_logits(logits, u))
    z_tilde = np.asarray(relax.bernoulli_conditional_relaxed_logits(logits, b, v))
    np.testing.assert_array_equal(z_tilde > 0, np.asarray(b) > 0.5)
    # b ~ Bernoulli(σ(ℓ)) and z̃ | b together must be Logistic(ℓ, 1): exact-CDF KS test
    p_value = scipy.stats.kstest(z_tilde, scipy.stats.logistic(loc=logit).cdf).pvalue
    assert p_value > GOF_ALPHA


@backends
def test_categorical_conditional_sampler(backend):
    relax = RELAX[backend]
    n = 50_000
    logits_np = np.array([0.4, -1.5, 1.0, 0.0])
    log_pi = logits_np - np.log(np.exp(logits_np).sum())
    u, v = _uniform(backend, (n, 4), 3), _uniform(backend, (n, 4), 4)
    logits = u * 0 + (torch.tensor(logits_np) if backend == "pyro" else jnp.asarray(logits_np))
    b = relax.categorical_hard(relax.categorical_relaxed_logits(logits, u))
    z_tilde = np.asarray(relax.categorical_conditional_relaxed_logits(logits, b, v))
    np.testing.assert_array_equal(z_tilde.argmax(-1), np.asarray(b).argmax(-1))
    # marginally each z̃_k must be Gumbel(log π_k, 1); Bonferroni over the K coordinates
    for k in range(4):
        p_value = scipy.stats.kstest(z_tilde[:, k], scipy.stats.gumbel_r(loc=log_pi[k]).cdf).pvalue
        assert p_value > GOF_ALPHA / 4


# ---------------------------------------------------------------------------------------------
# Low temperature, many classes, float32
# ---------------------------------------------------------------------------------------------

DTYPES = ["float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_low_temperature_finite_pyro(dtype):
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    logits = torch.randn(1000, dtype=torch_dtype, requires_grad=True)
    temperature = torch.tensor(0.01, dtype=torch_dtype, requires_grad=True)
    dist = pre.ExpConcrete(temperature, logits=logits)
    y = dist.rsample((8,))
    log_prob = dist.log_prob(y)
    assert y.dtype == torch_dtype and torch.isfinite(y).all() and torch.isfinite(log_prob).all()
    log_prob.sum().backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(temperature.grad).all()

    binary_logits = torch.linspace(-5, 5, 11, dtype=torch_dtype, requires_grad=True)
    binary_temperature = torch.tensor(0.01, dtype=torch_dtype, requires_grad=True)
    binary = pre.BinaryConcrete(binary_temperature, logits=binary_logits)
    x = binary.rsample((64,))
    log_prob = binary.log_prob(x)
    assert torch.isfinite(log_prob).all()
    (log_prob.sum() + x.sum()).backward()
    assert torch.isfinite(binary_logits.grad).all()
    assert torch.isfinite(binary_temperature.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_low_temperature_finite_numpyro(dtype):
    key_logits, key_sample = jax.random.split(jax.random.PRNGKey(0))
    logits = jax.random.normal(key_logits, (1000,), dtype=dtype)
    temperature = jnp.asarray(0.01, dtype=dtype)

    def exp_concrete_objective(logits, temperature):
        dist = npb.ExpConcrete(temperature, logits=logits)
        y = dist.rsample(key_sample, (8,))
        return jnp.sum(dist.log_prob(y)), y

    (value, y), grads = jax.jit(jax.value_and_grad(exp_concrete_objective, (0, 1), has_aux=True))(
        logits, temperature
    )
    assert y.dtype == jnp.dtype(dtype)
    assert np.isfinite(value) and np.all(np.isfinite(y))
    assert all(np.all(np.isfinite(g)) for g in grads)

    def binary_objective(logits, temperature):
        dist = npb.BinaryConcrete(temperature, logits=logits)
        x = dist.rsample(key_sample, (64,))
        log_prob = dist.log_prob(x)
        return jnp.sum(log_prob) + jnp.sum(x), log_prob

    binary_logits = jnp.linspace(-5, 5, 11, dtype=dtype)
    (value, log_prob), grads = jax.jit(jax.value_and_grad(binary_objective, (0, 1), has_aux=True))(
        binary_logits, jnp.asarray(0.01, dtype=dtype)
    )
    assert np.all(np.isfinite(log_prob))
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_exp_concrete_low_temperature_log_prob_is_accurate():
    """At τ = 0.01, K = 1000 the log-density matches the paper's formula evaluated in numpy
    with a max-shifted log-sum-exp (no underflow), on both backends."""
    torch.manual_seed(1)
    logits = torch.randn(1000)
    dist = pre.ExpConcrete(torch.tensor(0.01), logits=logits)
    y = dist.sample((4,))
    lam = 0.01
    log_pi = (logits - logits.logsumexp(-1)).numpy()
    score = log_pi - lam * y.numpy()
    shift = score.max(-1, keepdims=True)
    lse = np.log(np.exp(score - shift).sum(-1)) + shift[..., 0]
    expected = lgamma(1000) + 999 * log(lam) + score.sum(-1) - 1000 * lse
    np.testing.assert_allclose(dist.log_prob(y).numpy(), expected, rtol=1e-12)
    jax_dist = npb.ExpConcrete(0.01, logits=jnp.asarray(logits.numpy()))
    np.testing.assert_allclose(
        np.asarray(jax_dist.log_prob(jnp.asarray(y.numpy()))), expected, rtol=1e-12
    )


@backends
def test_exactly_one_of_probs_or_logits_even_without_validation(backend):
    cls = (pre if backend == "pyro" else npb).Concrete
    with pytest.raises(ValueError, match="probs.*logits"):
        cls(0.5, validate_args=False)
    with pytest.raises(ValueError, match="probs.*logits"):
        cls(0.5, probs=np.array([0.5, 0.5]), logits=np.zeros(2), validate_args=False)


@pytest.mark.parametrize(
    "dist_name,logits",
    [
        ("ExpConcrete", np.array([[0.1, 0.5, -1.0], [2.0, 0.0, 0.3]])),
        ("BinaryConcrete", np.array([0.1, -2.0])),
    ],
)
def test_numpyro_vmap_over_parameters(dist_name, logits):
    """Distributions built under jax.vmap carry their batch axis (NumPyro's vmap_over)."""
    from numpyro.distributions.batch_util import promote_batch_shape, vmap_over

    cls = getattr(npb, dist_name)
    make = lambda logits: cls(0.7, logits=logits)
    batched = jax.vmap(make, out_axes=vmap_over(make(jnp.asarray(logits[0])), logits=0))(
        jnp.asarray(logits)
    )
    batched = promote_batch_shape(batched)
    assert batched.batch_shape == logits.shape[:1]
    value = batched.sample(jax.random.PRNGKey(0))
    np.testing.assert_allclose(
        np.asarray(batched.log_prob(value)),
        np.asarray(make(jnp.asarray(logits)).log_prob(value)),
        rtol=1e-12,
    )
