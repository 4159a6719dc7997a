"""IWAE_ELBO on both backends: exact K-sample references, DReG variance, VIMCO, plates.

References (shared by both backends, computed independently of the library):

- Bernoulli latent: b ~ Bernoulli(σ(θ)), x | b ~ N(μ_b, 1), guide b ~ Bernoulli(σ(η)). The
  K-sample bound E[log (1/K) Σ_k w(b_k)] is an exact finite sum over the 2^K K-tuples; its
  gradient in (θ, η) comes from torch autograd of that sum.
- Gaussian latent: z ~ N(θ, 1), x | z ~ N(z, 1), guide z ~ N(μ, e^s). The gradient of the
  K = 8 bound is the mean of the IWAE estimator Σ_k w̃_k ∂f_k written out by hand in numpy
  (f_k's derivatives below), over 10^6 independent K-tuples; its SE enters the tolerance.

Plated copies. A model of N independent identical elements, each with its own parameters
(θ_n, η_n all equal), gives N independent draws of the one-element estimator in one call when
the bound is formed per element; the same models check the per-element bound itself (the
loss equals −N × the one-element bound, not the whole-trace bound, which is far lower).

Tolerances: a mean of n i.i.d. draws is compared with its reference at 5 standard errors,
SE = sqrt(s²/n + SE_ref²): a false failure has probability < 6e-7 per comparison. A variance
ratio is compared on the log scale: the sample variance's log has SE sqrt((κ − 1)/n) with κ
the sample kurtosis (delta method), so log(v_a / v_b) > 5·sqrt(SE_a² + SE_b²) shows v_a > v_b.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch

from numpyro_backend.infer import IWAE_ELBO as NumPyroIWAE
from numpyro_backend.infer import SVI as NumPyroSVI
from pyro_reparam_ext.infer import IWAE_ELBO as PyroIWAE

BACKENDS = ["pyro", "numpyro"]
MU = (-1.0, 1.5)  # Bernoulli model: x | b ~ N(MU[b], 1)
X_BERNOULLI = 0.3
THETA_B, ETA_B = 0.3, -0.4  # prior and guide logits
X_GAUSS, THETA_G, MU_G, S_G = 1.0, 0.1, 0.2, math.log(0.9)  # posterior N(0.55, 0.5)


# ------------------------------------------------------------------------------------------
# references


def exact_bernoulli(num_particles: int) -> tuple[float, np.ndarray]:
    """Exact K-sample bound and its gradient in (θ, η), by enumerating the 2^K K-tuples."""
    total, grads, _ = _exact_bernoulli(num_particles)
    return total, grads


def bound_sd_limit() -> float:
    """An upper bound on sd(L̂) for one element: L̂ lies in [min_b f(b), max_b f(b)], so by
    Popoviciu's inequality its variance is at most (max f − min f)² / 4."""
    f = _exact_bernoulli(1)[2]
    return (f.max() - f.min()) / 2


def _exact_bernoulli(num_particles: int):
    theta = torch.tensor(THETA_B, requires_grad=True)
    eta = torch.tensor(ETA_B, requires_grad=True)
    b = torch.tensor([0.0, 1.0])
    log_q = b * torch.nn.functional.logsigmoid(eta) + (1 - b) * torch.nn.functional.logsigmoid(-eta)
    log_prior = b * torch.nn.functional.logsigmoid(theta) + (
        1 - b
    ) * torch.nn.functional.logsigmoid(-theta)
    log_lik = torch.distributions.Normal(torch.tensor(MU), 1.0).log_prob(torch.tensor(X_BERNOULLI))
    f = log_prior + log_lik - log_q
    total = 0.0
    for config in itertools.product([0, 1], repeat=num_particles):
        idx = torch.tensor(config)
        prob = log_q[idx].sum().exp()
        total = total + prob * (f[idx].logsumexp(0) - math.log(num_particles))
    grads = torch.autograd.grad(total, [theta, eta])
    return float(total.detach()), np.array([float(g) for g in grads]), f.detach().numpy()


@pytest.fixture(scope="module")
def gaussian_reference():
    """K = 8 bound and gradient in (θ, μ, s), mean and SE over 10^6 numpy K-tuples."""
    rng = np.random.default_rng(20190101)
    num, reps = 8, 1_000_000
    sigma = math.exp(S_G)
    eps = rng.standard_normal((reps, num))
    z = MU_G + sigma * eps
    log_p = -0.5 * (z - THETA_G) ** 2 - 0.5 * (X_GAUSS - z) ** 2 - math.log(2 * math.pi)
    log_q = -0.5 * eps**2 - S_G - 0.5 * math.log(2 * math.pi)
    f = log_p - log_q
    weights = np.exp(f - f.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    bound = np.log(np.mean(np.exp(f - f.max(1, keepdims=True)), 1)) + f.max(1)
    # total derivatives of f_k along the reparameterization z = μ + e^s ε
    df_dz = -(z - THETA_G) + (X_GAUSS - z) + (z - MU_G) / sigma**2
    per_tuple = np.stack(
        [
            bound,
            np.sum(weights * (z - THETA_G), 1),  # ∂/∂θ
            np.sum(weights * (-(z - THETA_G) + (X_GAUSS - z)), 1),  # ∂/∂μ
            np.sum(weights * (df_dz * sigma * eps + 1 - eps**2), 1),  # ∂/∂s
        ],
        1,
    )
    return per_tuple.mean(0), per_tuple.std(0) / math.sqrt(reps)


def z_scores(draws: np.ndarray, reference, reference_se=0.0) -> np.ndarray:
    se = np.sqrt(draws.var(0, ddof=1) / draws.shape[0] + np.asarray(reference_se) ** 2)
    return (draws.mean(0) - np.asarray(reference)) / se


def log_variance_ratio(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(var a / var b) per column and its delta-method SE."""

    def log_var_se(x):
        centred = x - x.mean(0)
        var = (centred**2).mean(0)
        kurtosis = (centred**4).mean(0) / var**2
        return np.log(var), np.sqrt((kurtosis - 1) / x.shape[0])

    (la, sa), (lb, sb) = log_var_se(a), log_var_se(b)
    return la - lb, np.sqrt(sa**2 + sb**2)


# ------------------------------------------------------------------------------------------
# models on both backends; each returns (loss values, per-element gradients)


def pyro_bernoulli(elbo, num_elements, calls, subsample_size=None):
    theta = torch.full((num_elements,), THETA_B, requires_grad=True)
    eta = torch.full((num_elements,), ETA_B, requires_grad=True)
    mu = torch.tensor(MU)

    def model():
        with pyro.plate("data", num_elements, subsample_size=subsample_size) as idx:
            b = pyro.sample("b", pdist.Bernoulli(logits=theta[idx]))
            pyro.sample("x", pdist.Normal(mu[b.long()], 1.0), obs=torch.tensor(X_BERNOULLI))

    def guide():
        with pyro.plate("data", num_elements, subsample_size=subsample_size) as idx:
            pyro.sample("b", pdist.Bernoulli(logits=eta[idx]))

    losses, grads = [], []
    for _ in range(calls):
        loss = elbo.differentiable_loss(model, guide)
        g = torch.autograd.grad(loss, [theta, eta])
        losses.append(float(loss.detach()))
        grads.append(torch.stack(g, -1).numpy())
    return np.array(losses), -np.concatenate(grads)


def numpyro_bernoulli(elbo, num_elements, calls, subsample_size=None, seed=0):
    mu = jnp.array(MU)

    def model(theta, eta):
        with numpyro.plate("data", num_elements, subsample_size=subsample_size) as idx:
            b = numpyro.sample("b", ndist.Bernoulli(logits=theta[idx]))
            numpyro.sample("x", ndist.Normal(mu[b.astype(jnp.int32)], 1.0), obs=X_BERNOULLI)

    def guide(theta, eta):
        with numpyro.plate("data", num_elements, subsample_size=subsample_size) as idx:
            numpyro.sample("b", ndist.Bernoulli(logits=eta[idx]))

    def loss(key, theta, eta):
        return elbo.loss(key, {}, model, guide, theta, eta)

    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(loss, (1, 2)), (0, None, None)))
    keys = jax.random.split(jax.random.PRNGKey(seed), calls)
    theta = jnp.full((num_elements,), THETA_B)
    eta = jnp.full((num_elements,), ETA_B)
    values, (g_theta, g_eta) = value_and_grad(keys, theta, eta)
    grads = np.stack([np.asarray(g_theta).reshape(-1), np.asarray(g_eta).reshape(-1)], -1)
    return np.asarray(values), -grads


def pyro_gaussian(elbo, num_elements, calls):
    params = [torch.full((num_elements,), v, requires_grad=True) for v in (THETA_G, MU_G, S_G)]
    theta, mu, s = params

    def model():
        with pyro.plate("data", num_elements):
            z = pyro.sample("z", pdist.Normal(theta, 1.0))
            pyro.sample("x", pdist.Normal(z, 1.0), obs=torch.tensor(X_GAUSS))

    def guide():
        with pyro.plate("data", num_elements):
            pyro.sample("z", pdist.Normal(mu, s.exp()))

    losses, grads = [], []
    for _ in range(calls):
        loss = elbo.differentiable_loss(model, guide)
        losses.append(float(loss.detach()))
        grads.append(torch.stack(torch.autograd.grad(loss, params), -1).numpy())
    return np.array(losses), -np.concatenate(grads)


def numpyro_gaussian(elbo, num_elements, calls, seed=0):
    def model(theta, mu, s):
        with numpyro.plate("data", num_elements):
            z = numpyro.sample("z", ndist.Normal(theta, 1.0))
            numpyro.sample("x", ndist.Normal(z, 1.0), obs=X_GAUSS)

    def guide(theta, mu, s):
        with numpyro.plate("data", num_elements):
            numpyro.sample("z", ndist.Normal(mu, jnp.exp(s)))

    def loss(key, *params):
        return elbo.loss(key, {}, model, guide, *params)

    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(loss, (1, 2, 3)), (0, None, None, None)))
    keys = jax.random.split(jax.random.PRNGKey(seed), calls)
    params = [jnp.full((num_elements,), v) for v in (THETA_G, MU_G, S_G)]
    values, grads = value_and_grad(keys, *params)
    grads = np.stack([np.asarray(g).reshape(-1) for g in grads], -1)
    return np.asarray(values), -grads


def run_bernoulli(backend, elbo_kwargs, num_elements, calls, **kwargs):
    if backend == "pyro":
        return pyro_bernoulli(PyroIWAE(**elbo_kwargs), num_elements, calls, **kwargs)
    return numpyro_bernoulli(NumPyroIWAE(**elbo_kwargs), num_elements, calls, **kwargs)


def run_gaussian(backend, elbo_kwargs, num_elements, calls):
    if backend == "pyro":
        return pyro_gaussian(PyroIWAE(**elbo_kwargs), num_elements, calls)
    return numpyro_gaussian(NumPyroIWAE(**elbo_kwargs), num_elements, calls)


# ------------------------------------------------------------------------------------------
# VIMCO (non-reparameterized guide): unbiased per element, bound value exact


# Sequential particles: Pyro's Python loop here; NumPyro's lax.map in the subsampling test.
@pytest.mark.parametrize(
    "backend,num_particles,vectorize",
    [(b, k, True) for b in BACKENDS for k in (1, 3)] + [("pyro", 3, False)],
)
def test_vimco_per_element_unbiased(backend, num_particles, vectorize):
    """N = 4000 elements x 2 calls: 8000 draws of the one-element VIMCO gradient (particles
    vectorized, or drawn one after the other: Python loop / ``lax.map``)."""
    bound, grad = exact_bernoulli(num_particles)
    num_elements, calls = 4000, 2
    elbo_kwargs = {"num_particles": num_particles, "vectorize_particles": vectorize}
    losses, grads = run_bernoulli(backend, elbo_kwargs, num_elements, calls)
    assert np.all(np.abs(z_scores(grads, grad)) < 5), (z_scores(grads, grad), grad)
    # −loss / N is a mean of N·calls i.i.d. L̂_n: SE <= bound_sd_limit() / sqrt(N·calls)
    se = bound_sd_limit() / math.sqrt(num_elements * calls)
    assert abs(-losses.mean() / num_elements - bound) < 5 * se


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vectorize", [True, False])
def test_vimco_subsampled_scale(backend, vectorize):
    """Subsampling M of N elements scales the per-element bound by N / M (same minibatch for
    all K particles); gradients of the selected elements are unbiased, the others zero."""
    num_particles, num_elements, subsample = 2, 4000, 2000
    bound, grad = exact_bernoulli(num_particles)
    elbo_kwargs = {"num_particles": num_particles, "vectorize_particles": vectorize}
    losses, grads = run_bernoulli(backend, elbo_kwargs, num_elements, 2, subsample_size=subsample)
    grads = grads.reshape(2, num_elements, 2)
    selected = grads[np.any(grads != 0, -1)]
    assert selected.shape[0] == 2 * subsample
    # each selected gradient carries the factor N / M = 2
    assert np.all(np.abs(z_scores(selected / 2, grad)) < 5)
    se = bound_sd_limit() / math.sqrt(subsample * 2) * num_elements
    assert abs(-losses.mean() - num_elements * bound) < 5 * se


@pytest.mark.parametrize("backend", BACKENDS)
def test_vimco_whole_trace_unbiased(backend):
    """One element without a plate: a global latent, the whole-trace bound (K = 3)."""
    num_particles = 3
    bound, grad = exact_bernoulli(num_particles)
    calls = 600 if backend == "pyro" else 8000
    if backend == "pyro":
        elbo = PyroIWAE(num_particles)
        theta = torch.tensor(THETA_B, requires_grad=True)
        eta = torch.tensor(ETA_B, requires_grad=True)
        mu = torch.tensor(MU)

        def model():
            b = pyro.sample("b", pdist.Bernoulli(logits=theta))
            pyro.sample("x", pdist.Normal(mu[b.long()], 1.0), obs=torch.tensor(X_BERNOULLI))

        def guide():
            pyro.sample("b", pdist.Bernoulli(logits=eta))

        rows = []
        for _ in range(calls):
            loss = elbo.differentiable_loss(model, guide)
            rows.append(
                [-float(loss.detach())]
                + [-float(g) for g in torch.autograd.grad(loss, [theta, eta])]
            )
        rows = np.array(rows)
    else:
        elbo = NumPyroIWAE(num_particles)
        mu = jnp.array(MU)

        def model(theta, eta):
            b = numpyro.sample("b", ndist.Bernoulli(logits=theta))
            numpyro.sample("x", ndist.Normal(mu[b.astype(jnp.int32)], 1.0), obs=X_BERNOULLI)

        def guide(theta, eta):
            numpyro.sample("b", ndist.Bernoulli(logits=eta))

        fn = jax.vmap(
            jax.value_and_grad(lambda k, t, e: elbo.loss(k, {}, model, guide, t, e), (1, 2)),
            (0, None, None),
        )
        keys = jax.random.split(jax.random.PRNGKey(1), calls)
        values, grads = jax.jit(fn)(keys, THETA_B, ETA_B)
        rows = -np.stack([values, grads[0], grads[1]], -1)
    z = z_scores(rows, np.concatenate([[bound], grad]))
    assert np.all(np.abs(z) < 5), z


def test_per_element_bound_above_whole_trace():
    """On N = 1000 elements the per-element bound Σ_n L̂_n equals N × the one-element bound and
    lies above the whole-trace bound log (1/K) Σ_k Π_n w_nk (computed by hand from guide draws;
    K = 3, expected gap ≈ N (L_3 − L_1) ≈ 54 nats). Pyro 1.9.2's RenyiELBO(alpha=0) keeps the
    model's common plates too (``get_dependent_plate_dims``): its value agrees with ours."""
    num_particles, num_elements, calls = 3, 1000, 20
    bound, _ = exact_bernoulli(num_particles)
    ours, _ = pyro_bernoulli(PyroIWAE(num_particles), num_elements, calls)
    se = bound_sd_limit() / math.sqrt(num_elements * calls)
    assert abs(-ours.mean() / num_elements - bound) < 5 * se
    # whole-trace bound by hand: f_nk = log p(b, x) − log q(b) summed over n before logsumexp
    _, _, f = _exact_bernoulli(1)
    b = torch.rand(calls, num_particles, num_elements) < torch.sigmoid(torch.tensor(ETA_B))
    f_sum = torch.tensor(f)[b.long()].sum(-1)
    whole = -(f_sum.logsumexp(-1) - math.log(num_particles)).numpy()
    gap = whole.mean() - ours.mean()  # losses are −bounds
    gap_se = math.sqrt(whole.var(ddof=1) / calls + ours.var(ddof=1) / calls)
    assert gap > 5 * gap_se, (gap, gap_se)

    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=num_particles, vectorize_particles=True)
    mu = torch.tensor(MU)

    def model():
        with pyro.plate("data", num_elements):
            b = pyro.sample("b", pdist.Bernoulli(logits=torch.full((num_elements,), THETA_B)))
            pyro.sample("x", pdist.Normal(mu[b.long()], 1.0), obs=torch.tensor(X_BERNOULLI))

    def guide():
        with pyro.plate("data", num_elements):
            pyro.sample("b", pdist.Bernoulli(logits=torch.full((num_elements,), ETA_B)))

    theirs = np.array([renyi.loss(model, guide) for _ in range(calls)])
    assert abs(theirs.mean() - ours.mean()) < 5 * 2 * se * num_elements


# ------------------------------------------------------------------------------------------
# DReG and IWAE (reparameterized guide)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dreg_and_iwae_unbiased_lower_variance(backend, gaussian_reference):
    """K = 8: both estimators' means match the reference gradient (θ, μ, s) at 5 SE, the loss
    matches −bound, and DReG's guide-gradient variance is below IWAE's (log-ratio test)."""
    reference, reference_se = gaussian_reference
    num_elements, calls = 4000, 2
    draws = {}
    for dreg in (True, False):
        losses, grads = run_gaussian(
            backend, {"num_particles": 8, "dreg": dreg}, num_elements, calls
        )
        z = z_scores(grads, reference[1:], reference_se[1:])
        assert np.all(np.abs(z) < 5), (dreg, z)
        draws[dreg] = grads
    # loss: −Σ_n L̂_n; L̂_n has sd < 1 here (reference sd 0.39), so SE < 1/sqrt(N·calls)
    se = 1.0 / math.sqrt(num_elements * calls) + reference_se[0]
    assert abs(-losses.mean() / num_elements - reference[0]) < 5 * se
    log_ratio, se = log_variance_ratio(draws[False][:, 1:], draws[True][:, 1:])
    assert np.all(log_ratio > 5 * se), (np.exp(log_ratio), se)
    # θ is a model parameter: DReG leaves its estimator unchanged (same law, equal variances)
    log_ratio, se = log_variance_ratio(draws[False][:, :1], draws[True][:, :1])
    assert np.all(np.abs(log_ratio) < 5 * se)


# ------------------------------------------------------------------------------------------
# training and errors


def test_numpyro_svi_jit_trains_to_posterior():
    """Jitted numpyro_backend.SVI with DReG reaches the exact posterior N(x/2, 1/2): at the
    optimum the DReG guide gradient is exactly zero (w̃ constant), so the fit is sharp."""
    x = jnp.linspace(-1.0, 2.0, 5)

    def model():
        with numpyro.plate("data", 5):
            z = numpyro.sample("z", ndist.Normal(0.0, 1.0))
            numpyro.sample("x", ndist.Normal(z, 1.0), obs=x)

    def guide():
        loc = numpyro.param("loc", jnp.zeros(5))
        log_scale = numpyro.param("log_scale", jnp.zeros(5))
        with numpyro.plate("data", 5):
            numpyro.sample("z", ndist.Normal(loc, jnp.exp(log_scale)))

    svi = NumPyroSVI(model, guide, numpyro.optim.Adam(0.1), loss=NumPyroIWAE(8))
    result = svi.run(jax.random.PRNGKey(0), 400, progress_bar=False)
    np.testing.assert_allclose(result.params["loc"], x / 2, atol=1e-3)
    np.testing.assert_allclose(jnp.exp(result.params["log_scale"]), math.sqrt(0.5), atol=1e-3)


def test_pyro_svi_trains_to_posterior():
    x = torch.linspace(-1.0, 2.0, 5)

    def model():
        with pyro.plate("data", 5):
            z = pyro.sample("z", pdist.Normal(0.0, 1.0))
            pyro.sample("x", pdist.Normal(z, 1.0), obs=x)

    def guide():
        loc = pyro.param("loc", torch.zeros(5))
        log_scale = pyro.param("log_scale", torch.zeros(5))
        with pyro.plate("data", 5):
            pyro.sample("z", pdist.Normal(loc, log_scale.exp()))

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), loss=PyroIWAE(8))
    for _ in range(400):
        svi.step()
    np.testing.assert_allclose(pyro.param("loc").detach().numpy(), x.numpy() / 2, atol=1e-3)
    scale = pyro.param("log_scale").exp().detach().numpy()
    np.testing.assert_allclose(scale, math.sqrt(0.5), atol=1e-3)


def _hierarchical(backend):
    """Guide where z2's distribution depends on z1's value: DReG cannot stop q's params."""
    if backend == "pyro":
        loc = torch.tensor(0.5, requires_grad=True)

        def model():
            z1 = pyro.sample("z1", pdist.Normal(0.0, 1.0))
            pyro.sample("z2", pdist.Normal(z1, 1.0))

        def guide():
            z1 = pyro.sample("z1", pdist.Normal(loc, 1.0))
            pyro.sample("z2", pdist.Normal(z1 * loc, 1.0))

        return lambda elbo: elbo.differentiable_loss(model, guide)

    def model(loc):
        z1 = numpyro.sample("z1", ndist.Normal(0.0, 1.0))
        numpyro.sample("z2", ndist.Normal(z1, 1.0))

    def guide(loc):
        z1 = numpyro.sample("z1", ndist.Normal(loc, 1.0))
        numpyro.sample("z2", ndist.Normal(z1 * loc, 1.0))

    return lambda elbo: jax.jit(
        jax.grad(lambda p: elbo.loss(jax.random.PRNGKey(0), {}, model, guide, p))
    )(0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dreg_rejects_hierarchical_guide(backend):
    cls = PyroIWAE if backend == "pyro" else NumPyroIWAE
    run = _hierarchical(backend)
    with pytest.raises(ValueError, match="site 'z2'.*depends on the value of 'z1'"):
        run(cls(4))
    run(cls(4, dreg=False))  # the plain IWAE gradient needs no stopped q


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors(backend):
    cls = PyroIWAE if backend == "pyro" else NumPyroIWAE
    with pytest.raises(ValueError, match="num_particles"):
        cls(0)
    with pytest.raises(ValueError, match="dreg"):
        cls(2, dreg="yes")
    with pytest.raises(TypeError):
        cls(2, float("inf"))  # everything after num_particles is keyword-only


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsupported_sites_name_the_site(backend):
    """Enumerated sites, and (DReG) a discrete site drawn after a reparameterized one."""
    if backend == "pyro":
        loc = torch.tensor(0.5, requires_grad=True)

        def model():
            z = pyro.sample("z", pdist.Normal(0.0, 1.0))
            pyro.sample("b", pdist.Bernoulli(logits=z))

        def guide():
            z = pyro.sample("z", pdist.Normal(loc, 1.0))
            pyro.sample("b", pdist.Bernoulli(logits=z), infer=infer)

        def run(elbo):
            return elbo.differentiable_loss(model, guide)

    else:

        def model():
            z = numpyro.sample("z", ndist.Normal(0.0, 1.0))
            numpyro.sample("b", ndist.Bernoulli(logits=z))

        def guide():
            z = numpyro.sample("z", ndist.Normal(0.5, 1.0))
            numpyro.sample("b", ndist.Bernoulli(logits=z), infer=infer)

        def run(elbo):
            return elbo.loss(jax.random.PRNGKey(0), {}, model, guide)

    cls = PyroIWAE if backend == "pyro" else NumPyroIWAE
    infer = {}
    with pytest.raises(ValueError, match="site 'b': with dreg=True a non-reparameterized"):
        run(cls(3))
    run(cls(3, dreg=False))
    infer = {"enumerate": "parallel"}
    with pytest.raises(ValueError, match="site 'b': IWAE_ELBO does not enumerate"):
        run(cls(3, dreg=False))


# ------------------------------------------------------------------------------------------
# a discrete and a reparameterized site together: VIMCO for b, DReG / IWAE for z | b

M_MIXED = (-1.0, 1.0)  # model z | b ~ N(M_MIXED[b], 1), x | z ~ N(z, 1), b ~ Bernoulli(σ(θ))
X_MIXED, THETA_M, ETA_M, LOC_M, S_M = 0.4, 0.2, -0.3, (-0.5, 0.8), math.log(0.8)


@pytest.fixture(scope="module")
def mixed_reference():
    """Gradient of the K = 2 bound in (θ, η, μ_0, μ_1, s): exact sum over the 4 b-tuples of
    q(b) E_ε[L̂(b, z(ε))], the inner expectation over 20 blocks of 20000 fixed ε each (torch
    autograd through both); mean and SE over the blocks."""
    num, blocks, per_block = 2, 20, 20000
    gen = torch.Generator().manual_seed(11)
    grads = []
    for _ in range(blocks):
        params = [torch.tensor(v, requires_grad=True) for v in (THETA_M, ETA_M, *LOC_M, S_M)]
        theta, eta, loc0, loc1, s = params
        eps = torch.randn(per_block, num, generator=gen)
        total = 0.0
        for config in itertools.product([0, 1], repeat=num):
            b = torch.tensor(config, dtype=torch.float64)
            log_q_b = torch.nn.functional.logsigmoid((2 * b - 1) * eta)
            loc = torch.where(b > 0, loc1, loc0)
            z = loc + s.exp() * eps
            log_p = (
                torch.nn.functional.logsigmoid((2 * b - 1) * theta)
                + torch.distributions.Normal(torch.tensor(M_MIXED)[b.long()], 1.0).log_prob(z)
                + torch.distributions.Normal(z, 1.0).log_prob(torch.tensor(X_MIXED))
            )
            log_q = log_q_b + torch.distributions.Normal(loc, s.exp()).log_prob(z)
            bound = (log_p - log_q).logsumexp(-1).mean() - math.log(num)
            total = total + log_q_b.sum().exp() * bound
        grads.append(torch.stack(torch.autograd.grad(total, params)).numpy())
    grads = np.array(grads)
    return grads.mean(0), grads.std(0, ddof=1) / math.sqrt(blocks)


def mixed_draws(backend, dreg, num_elements=4000, calls=2):
    """Per-element gradients in (θ, η, μ_0, μ_1, s) of N independent copies (K = 2)."""
    values = (THETA_M, ETA_M, *LOC_M, S_M)
    if backend == "pyro":
        params = [torch.full((num_elements,), v, requires_grad=True) for v in values]
        theta, eta, loc0, loc1, s = params
        means = torch.tensor(M_MIXED)

        def model():
            with pyro.plate("data", num_elements):
                b = pyro.sample("b", pdist.Bernoulli(logits=theta))
                z = pyro.sample("z", pdist.Normal(means[b.long()], 1.0))
                pyro.sample("x", pdist.Normal(z, 1.0), obs=torch.tensor(X_MIXED))

        def guide():
            with pyro.plate("data", num_elements):
                b = pyro.sample("b", pdist.Bernoulli(logits=eta))
                pyro.sample("z", pdist.Normal(torch.where(b > 0, loc1, loc0), s.exp()))

        elbo, out = PyroIWAE(2, dreg=dreg), []
        for _ in range(calls):
            loss = elbo.differentiable_loss(model, guide)
            out.append(torch.stack(torch.autograd.grad(loss, params), -1).numpy())
        return -np.concatenate(out)
    means = jnp.array(M_MIXED)

    def model(theta, eta, loc0, loc1, s):
        with numpyro.plate("data", num_elements):
            b = numpyro.sample("b", ndist.Bernoulli(logits=theta))
            z = numpyro.sample("z", ndist.Normal(means[b.astype(jnp.int32)], 1.0))
            numpyro.sample("x", ndist.Normal(z, 1.0), obs=X_MIXED)

    def guide(theta, eta, loc0, loc1, s):
        with numpyro.plate("data", num_elements):
            b = numpyro.sample("b", ndist.Bernoulli(logits=eta))
            numpyro.sample("z", ndist.Normal(jnp.where(b > 0, loc1, loc0), jnp.exp(s)))

    elbo = NumPyroIWAE(2, dreg=dreg)
    grad = jax.grad(lambda key, *p: elbo.loss(key, {}, model, guide, *p), tuple(range(1, 6)))
    keys = jax.random.split(jax.random.PRNGKey(5), calls)
    params = [jnp.full((num_elements,), v) for v in values]
    grads = jax.jit(jax.vmap(grad, (0,) + (None,) * 5))(keys, *params)
    return -np.stack([np.asarray(g).reshape(-1) for g in grads], -1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dreg", [True, False])
def test_discrete_then_reparameterized_unbiased(backend, dreg, mixed_reference):
    """b ~ q(b), z ~ q(z | b): VIMCO for b with DReG (or IWAE) for z, unbiased at 5 SE."""
    reference, reference_se = mixed_reference
    z = z_scores(mixed_draws(backend, dreg), reference, reference_se)
    assert np.all(np.abs(z) < 5), z
