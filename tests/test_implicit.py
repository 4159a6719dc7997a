"""Implicit reparameterization gradients: accuracy, unbiasedness, float32, jit/vmap.

* Gradient accuracy against the mpmath reference stored by tests/make_implicit_reference.py
  (dz/dθ = -(∂F/∂θ)/p at float64 sample points): Gamma ≤ 1e-10 relative over
  α ∈ [1e-4, 1e4] × quantiles [0.01, 0.99]; Beta (both concentrations) ≤ 1e-8 over
  α, β ∈ [0.01, 1000]; von Mises ≤ 1e-8 over κ ∈ [1e-2, 1e5].
* Pathwise test for every distribution (NumPyro's ``test_pathwise_gradient`` pattern): the
  Monte-Carlo gradient of mean(f(z)) matches the gradient of the analytic E[f(z)] within
  5 standard errors, the standard error estimated from the per-sample gradients (each sample
  gets its own copy of the parameters, so per-sample gradients are i.i.d.).
* float32: finite samples and gradients from α = 1e-4 to 1e4 and κ up to 1e5.
* NumPyro: the same gradients under ``jit`` and ``vmap``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyro.distributions as pyro_dist
import pytest
import torch
from numpyro import distributions as numpyro_dist
from scipy import integrate, special

import numpyro_backend
import numpyro_backend.ops as jax_ops
import pyro_reparam_ext
import pyro_reparam_ext.ops as torch_ops
from tests.make_implicit_reference import gamma_dz_dalpha  # the stored reference's mpmath rule

REFERENCE = json.loads(
    (Path(__file__).resolve().parent / "data" / "implicit_reference.json").read_text()
)
GAMMA_RTOL = 1e-10
VON_MISES_RTOL = 1e-8
NUM_SIGMA = 5.0  # pathwise tests: |MC - exact| ≤ 5 standard errors (two-sided p ≈ 6e-7)

BACKENDS = ["pyro", "numpyro"]


def _column(points, key):
    return np.array([p[key] for p in points], dtype=np.float64)


def _standard_gamma_grad(backend, a, x):
    if backend == "pyro":
        return torch_ops.standard_gamma_grad(torch.as_tensor(a), torch.as_tensor(x)).numpy()
    return np.asarray(jax.jit(jax_ops.standard_gamma_grad)(jnp.asarray(a), jnp.asarray(x)))


def _centered_von_mises_grad(backend, kappa, x):
    if backend == "pyro":
        return torch_ops.centered_von_mises_grad(torch.as_tensor(kappa), torch.as_tensor(x)).numpy()
    return np.asarray(jax.jit(jax_ops.centered_von_mises_grad)(jnp.asarray(kappa), jnp.asarray(x)))


# ----------------------------------------------------------------------------------------
# accuracy against the stored mpmath reference


@pytest.mark.parametrize("backend", BACKENDS)
def test_gamma_gradient_matches_mpmath(backend):
    points = REFERENCE["gamma"]
    a, x = _column(points, "concentration"), _column(points, "value")
    expected = _column(points, "dz_dconcentration")
    assert a.min() <= 1e-4 and a.max() >= 1e4  # the grid spans the stated range
    actual = _standard_gamma_grad(backend, a, x)
    np.testing.assert_allclose(actual, expected, rtol=GAMMA_RTOL, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_von_mises_gradient_matches_mpmath(backend):
    points = REFERENCE["von_mises"]
    kappa, x = _column(points, "concentration"), _column(points, "value")
    expected = _column(points, "dz_dconcentration")
    assert kappa.max() >= 1e5
    actual = _centered_von_mises_grad(backend, kappa, x)
    # the median sits at x ≈ 0 where dz/dκ = 0 by symmetry: absolute check there
    median = _column(points, "quantile") == 0.5
    np.testing.assert_allclose(actual[~median], expected[~median], rtol=VON_MISES_RTOL, atol=0)
    np.testing.assert_allclose(actual[median], expected[median], rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_beta_gradient_matches_mpmath(backend):
    """Both concentrations, α, β ∈ [0.01, 1000] × quantiles [0.01, 0.99]."""
    points = REFERENCE["beta"]
    a, b = _column(points, "concentration1"), _column(points, "concentration0")
    z = _column(points, "value")
    if backend == "pyro":
        da, db = torch_ops.beta_grad(*(torch.as_tensor(v) for v in (a, b, z)))
    else:
        da, db = jax.jit(jax_ops.beta_grad)(a, b, z)
    np.testing.assert_allclose(np.asarray(da), _column(points, "dz_dconcentration1"), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(db), _column(points, "dz_dconcentration0"), rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gamma_asymptotic_regime_edges_match_mpmath(backend):
    """The large-α expansion where its truncation is largest (α = 20, |η| = 0.6 on both
    sides) and at α = 1e3, and just outside its edges (the quadrature; below α = 20 the
    series and the continued fraction): ≤ 1e-10 against mpmath on both sides of every
    edge; the coefficient tables of both backends are the same."""
    from numpyro_backend.ops import gamma as jax_gamma
    from pyro_reparam_ext.ops import gamma as torch_gamma

    assert jax_gamma._ASYMPTOTIC_COEFFICIENTS == torch_gamma._ASYMPTOTIC_COEFFICIENTS
    low, high = torch_gamma._ASYMPTOTIC_LAMBDA_LOW, torch_gamma._ASYMPTOTIC_LAMBDA_HIGH
    edge = torch_gamma.ASYMPTOTIC_CONCENTRATION
    a, x = [], []
    for alpha in (edge, 1e3):
        for lam in (low, high, 1.0):
            for side in (1 - 1e-9, 1 + 1e-9):
                a.append(alpha)
                x.append(alpha * lam * side)
    # just below the concentration edge (torch: the 48-term series, worst truncation next
    # to x = α + 2, and the continued fraction at x = α + 2)
    below = edge * (1 - 1e-9)
    for value in (edge, (below + 2) * (1 - 1e-9), below + 2):
        a.append(below)
        x.append(value)
    a, x = np.array(a), np.array(x)
    regimes = torch_gamma._regimes(torch.as_tensor(a), torch.as_tensor(x))
    assert regimes[-1][1] is torch_gamma._asymptotic_ratio
    assert regimes[-1][0].sum() == 8 and regimes[-2][0].sum() == 4  # both sides of the edges
    assert regimes[1][0][-3:].tolist() == [True, True, False] and regimes[2][0][-1]
    expected = np.array([gamma_dz_dalpha(ai, xi) for ai, xi in zip(a, x, strict=True)])
    np.testing.assert_allclose(_standard_gamma_grad(backend, a, x), expected, rtol=GAMMA_RTOL)


def test_torch_cpu_gamma_groups_match_mpmath_at_their_worst_points():
    """The torch CPU path's element groups where their term counts are tightest: each series
    group's largest x on the regime edge α = x - 2, the continued fraction's smallest x - α
    for small and moderate α, and the large-α tables at the smallest α they serve (octave
    edges) on both edges |η| = 0.6. Bounds: series and fraction truncate at ≤ 1e-14
    (tests/make_gamma_terms.py), and their ~5N passes round at ≤ ~30 eps ≈ 7e-15 after
    cancellation (ψ(α+N+1)·A - A'): rtol 5e-14, which 3 terms fewer than the tables give
    already exceed (4e-13 to 4e-12, measured); a large-α table drops only coefficients below
    50 eps at its cell's edge, at most 139 of them: rtol 2e-12."""
    from pyro_reparam_ext.ops import gamma as torch_gamma

    points = []
    for k in (1, 4, 8, 12, 16, 19):
        x = min(k**2 / 16, 21.99)
        points.append((min(max(1e-4, x - 2) * (1 + 1e-9), 19.99), x * (1 - 1e-12)))
    for alpha in (1e-3, 0.3, 3.0, 15.0):
        for gap in (2.0, 2 * 2**0.5, 4.0):
            points.append((alpha, alpha + gap * (1 + 1e-12)))
    for alpha in (20.0, 40.0, 1280.0):  # octave edges 20·2^j: the first two, the last
        for lam, side in (
            (torch_gamma._ASYMPTOTIC_LAMBDA_LOW, 1),
            (torch_gamma._ASYMPTOTIC_LAMBDA_HIGH, -1),
        ):
            points.append((alpha, alpha * lam * (1 + side * 1e-9)))
    a, x = (np.array(column) for column in zip(*points, strict=True))
    expected = np.array([gamma_dz_dalpha(ai, xi) for ai, xi in points])
    # one call per point (together, small groups would run merged with larger ones): alone
    # (one α: the constant-α series, fraction or collapsed large-α table) and with an
    # element of α = 1000 (another group)
    for pair in (False, True):
        actual = []
        for ai, xi in points:
            a_call, x_call = ([ai, 1e3], [xi, 1e3]) if pair else ([ai], [xi])
            actual.append(_standard_gamma_grad("pyro", np.array(a_call), np.array(x_call))[0])
        actual = np.array(actual)
        small = a < torch_gamma.ASYMPTOTIC_CONCENTRATION
        np.testing.assert_allclose(actual[small], expected[small], rtol=5e-14)
        np.testing.assert_allclose(actual[~small], expected[~small], rtol=2e-12)


def test_torch_builtin_gamma_gradient_is_less_accurate():
    """Documents the motivation: torch's own Gamma gradient misses the reference by >1e-5."""
    points = REFERENCE["gamma"]
    a, x = _column(points, "concentration"), _column(points, "value")
    expected = _column(points, "dz_dconcentration")
    builtin = torch._standard_gamma_grad(torch.as_tensor(a), torch.as_tensor(x)).numpy()
    assert np.max(np.abs(builtin / expected - 1)) > 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_gammainc_derivatives(backend):
    """The gradient of P(α, x) in (α, x) against the reference (∂P/∂α = -p · dz/dα); the
    value is the backend's own incomplete gamma function (torch's is only ~1e-9 accurate at
    α ~ 1e4, so the value is checked for being exactly that)."""
    points = REFERENCE["gamma"][::7]
    a, x = _column(points, "concentration"), _column(points, "value")
    density = np.exp(special.xlogy(a - 1, x) - x - special.gammaln(a))
    expected_da = -density * _column(points, "dz_dconcentration")
    if backend == "pyro":
        ta = torch.tensor(a, requires_grad=True)
        tx = torch.tensor(x, requires_grad=True)
        value = torch_ops.gammainc(ta, tx)
        da, dx = torch.autograd.grad(value.sum(), (ta, tx))
        value, da, dx = value.detach().numpy(), da.numpy(), dx.numpy()
        builtin = torch.special.gammainc(torch.tensor(a), torch.tensor(x)).numpy()
    else:
        value = np.asarray(jax_ops.gammainc(a, x))
        da, dx = jax.vmap(jax.grad(jax_ops.gammainc, argnums=(0, 1)))(a, x)
        builtin = np.asarray(jax.scipy.special.gammainc(a, x))
    np.testing.assert_array_equal(value, builtin)
    np.testing.assert_allclose(value, special.gammainc(a, x), rtol=1e-8, atol=0)
    np.testing.assert_allclose(np.asarray(da), expected_da, rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(np.asarray(dx), density, rtol=1e-10, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_von_mises_cdf(backend):
    import mpmath as mp

    mp.mp.dps = 30
    kappa = np.array([0.3, 2.0, 7.0, 500.0])
    x = np.array([-2.0, 0.4, -0.3, 0.05])

    def reference(k, v):
        k, v = mp.mpf(k), mp.mpf(v)
        mass = mp.quad(lambda t: mp.exp(k * (mp.cos(t) - 1)), [-mp.pi, min(v, 0), v])
        return float(mass / (2 * mp.pi * mp.besseli(0, k) * mp.exp(-k)))

    expected = [reference(k, v) for k, v in zip(kappa, x, strict=True)]
    if backend == "pyro":
        actual = torch_ops.von_mises_cdf(torch.tensor(x), torch.tensor(kappa)).numpy()
        periodic = torch_ops.von_mises_cdf(torch.tensor(x + 4 * math.pi), torch.tensor(kappa))
    else:
        actual = np.asarray(jax_ops.von_mises_cdf(x, kappa))
        periodic = jax_ops.von_mises_cdf(x + 4 * math.pi, kappa)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(periodic), actual + 2, rtol=1e-12)


# ----------------------------------------------------------------------------------------
# the distributions attach exactly the ops' gradient to their samples


@pytest.mark.parametrize("backend", BACKENDS)
def test_gamma_and_von_mises_samples_carry_the_ops_gradient(backend):
    alpha = np.array([1e-3, 0.4, 3.0, 25.0, 4e3])
    rate = np.array([0.5, 2.0, 1.0, 3.0, 0.1])
    kappa = np.array([0.05, 1.0, 4.0, 300.0, 5e4])
    loc = np.array([0.3, -2.0, 3.0, 0.0, -1.0])
    if backend == "pyro":
        ta, tr = torch.tensor(alpha, requires_grad=True), torch.tensor(rate, requires_grad=True)
        z = pyro_reparam_ext.ImplicitGamma(ta, tr).rsample()
        da, dr = torch.autograd.grad(z.sum(), (ta, tr))
        z, da, dr = z.detach().numpy(), da.numpy(), dr.numpy()
        tk, tl = torch.tensor(kappa, requires_grad=True), torch.tensor(loc, requires_grad=True)
        w = pyro_reparam_ext.ImplicitVonMises(tl, tk).rsample()
        dk, dl = torch.autograd.grad(w.sum(), (tk, tl))
        w, dk, dl = w.detach().numpy(), dk.numpy(), dl.numpy()
    else:
        key = jax.random.PRNGKey(0)

        def gamma_sample(a, r):
            return numpyro_backend.ImplicitGamma(a, r).sample(key)

        def von_mises_sample(k, m):
            return numpyro_backend.ImplicitVonMises(m, k).sample(key)

        z = np.asarray(gamma_sample(alpha, rate))
        da, dr = jax.grad(lambda a, r: gamma_sample(a, r).sum(), argnums=(0, 1))(alpha, rate)
        w = np.asarray(von_mises_sample(kappa, loc))
        dk, dl = jax.grad(lambda k, m: von_mises_sample(k, m).sum(), argnums=(0, 1))(kappa, loc)
    # draws that underflow are clamped to the smallest normal number (as the stock samplers
    # do) and carry no gradient; tiny α makes that likely
    clamped = z <= np.finfo(np.float64).tiny
    np.testing.assert_array_equal(da[clamped], 0.0)
    np.testing.assert_array_equal(dr[clamped], 0.0)
    standard = z * rate
    expected_da = _standard_gamma_grad(backend, alpha, standard) / rate
    np.testing.assert_allclose(da[~clamped], expected_da[~clamped], rtol=1e-13)
    np.testing.assert_allclose(dr[~clamped], -z[~clamped] / rate[~clamped], rtol=1e-13)
    assert np.all((w >= -math.pi) & (w < math.pi))
    centered = np.angle(np.exp(1j * (w - loc)))
    np.testing.assert_allclose(dk, _centered_von_mises_grad(backend, kappa, centered), rtol=1e-9)
    np.testing.assert_allclose(dl, np.ones_like(loc))


@pytest.mark.parametrize("backend", BACKENDS)
def test_beta_samples_carry_the_ops_gradient(backend):
    a = np.array([0.02, 0.5, 3.0, 40.0, 900.0])
    b = np.array([5.0, 0.3, 3.0, 700.0, 0.05])
    if backend == "pyro":
        ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        z = pyro_reparam_ext.ImplicitBeta(ta, tb).rsample()
        da, db = torch.autograd.grad(z.sum(), (ta, tb))
        z, da, db = z.detach().numpy(), da.numpy(), db.numpy()
        expected = torch_ops.beta_grad(*(torch.as_tensor(v) for v in (a, b, z)))
    else:

        def total(ca, cb):
            z = numpyro_backend.ImplicitBeta(ca, cb).sample(jax.random.PRNGKey(0))
            return z.sum(), z

        (da, db), z = jax.grad(total, argnums=(0, 1), has_aux=True)(a, b)
        expected = jax_ops.beta_grad(a, b, z)
    np.testing.assert_allclose(da, np.asarray(expected[0]), rtol=1e-13)
    np.testing.assert_allclose(db, np.asarray(expected[1]), rtol=1e-13)


# ----------------------------------------------------------------------------------------
# pathwise tests: grad of the Monte-Carlo mean of f(z) vs grad of the exact E[f(z)]

NUM_PATHWISE_SAMPLES = 20000


def _gamma_moments(concentration, rate):
    mean = concentration / rate
    return mean + concentration / rate**2 + mean**2  # E[z] + E[z²]


def _beta_moments(concentration1, concentration0):
    total = concentration1 + concentration0
    mean = concentration1 / total
    return mean + mean * (concentration1 + 1) / (total + 1)


def _dirichlet_first_moments(concentration):
    total = concentration.sum(-1)
    mean = concentration[..., 0] / total
    return mean + mean * (concentration[..., 0] + 1) / (total + 1)


def _student_t_moments(df, loc, scale):
    return loc + scale**2 * df / (df - 2) + loc**2


def _first_component(z):
    return z[..., 0]


def _identity(z):
    return z


def _von_mises_moments_and_grad(kappa):
    """E[z + z²] for VM(0, κ) on [-π, π) and its κ-derivative E[(z + z²)(cos z - A)]."""
    ratio = special.i1e(kappa) / special.i0e(kappa)

    def density(t):
        return np.exp(kappa * (np.cos(t) - 1)) / (2 * np.pi * special.i0e(kappa))

    def moment(t):
        return (t + t * t) * density(t)

    def score(t):
        return (t + t * t) * (np.cos(t) - ratio) * density(t)

    value = integrate.quad(moment, -np.pi, np.pi, epsabs=1e-13, epsrel=1e-13)[0]
    grad = integrate.quad(score, -np.pi, np.pi, epsabs=1e-13, epsrel=1e-13)[0]
    return value, grad


# (name, params, statistic of z, exact E[statistic] as a function of the params, written
# with operators only so that it runs on torch tensors and on jax arrays)
PATHWISE_CASES = [
    ("ImplicitGamma", {"concentration": 0.3, "rate": 1.7}, _identity, _gamma_moments),
    ("ImplicitGamma", {"concentration": 6.0, "rate": 0.5}, _identity, _gamma_moments),
    ("ImplicitBeta", {"concentration1": 0.7, "concentration0": 2.5}, _identity, _beta_moments),
    (
        "ImplicitDirichlet",
        {"concentration": np.array([0.6, 1.5, 4.0])},
        _first_component,
        _dirichlet_first_moments,
    ),
    (
        "ImplicitStudentT",
        {"df": 9.0, "loc": 0.3, "scale": 1.5},
        _identity,
        _student_t_moments,
    ),
]


def _per_sample_gradients(backend, name, params, statistic):
    """Per-sample gradients of statistic(z) + statistic(z)² in every parameter.

    Each of the N samples has its own copy of the parameters, so the gradient of the sum
    w.r.t. the copies is the N per-sample gradients.
    """
    num = NUM_PATHWISE_SAMPLES
    tiled = {k: np.broadcast_to(v, (num,) + np.shape(v)).copy() for k, v in params.items()}
    if backend == "pyro":
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in tiled.items()}
        z = statistic(getattr(pyro_reparam_ext, name)(**tensors).rsample())
        grads = torch.autograd.grad((z + z * z).sum(), list(tensors.values()))
        return {k: g.numpy() for k, g in zip(tensors, grads, strict=True)}

    def total(arrays):
        z = statistic(getattr(numpyro_backend, name)(**arrays).sample(jax.random.PRNGKey(1)))
        return (z + z * z).sum()

    grads = jax.jit(jax.grad(total))({k: jnp.asarray(v) for k, v in tiled.items()})
    return {k: np.asarray(g) for k, g in grads.items()}


def _exact_gradient(backend, params, moments):
    if backend == "pyro":
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        grads = torch.autograd.grad(moments(**tensors), list(tensors.values()))
        return {k: g.numpy() for k, g in zip(tensors, grads, strict=True)}
    grads = jax.grad(lambda p: moments(**p))({k: jnp.asarray(v) for k, v in params.items()})
    return {k: np.asarray(g) for k, g in grads.items()}


def _assert_within_standard_errors(per_sample, exact):
    for name, samples in per_sample.items():
        mean = samples.mean(0)
        standard_error = samples.std(0, ddof=1) / math.sqrt(samples.shape[0])
        assert np.all(standard_error > 0), name
        np.testing.assert_array_less(np.abs(mean - exact[name]), NUM_SIGMA * standard_error)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name,params,statistic,moments",
    PATHWISE_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(PATHWISE_CASES)],
)
def test_pathwise_gradient(backend, name, params, statistic, moments):
    per_sample = _per_sample_gradients(backend, name, params, statistic)
    exact = _exact_gradient(backend, params, moments)
    _assert_within_standard_errors(per_sample, exact)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kappa", [0.8, 6.0])
def test_pathwise_gradient_von_mises(backend, kappa):
    """κ: E[z + z²] at loc = 0 (the sample map x(u; κ) never crosses ±π, so z + z² is smooth
    along it). loc: the wrap at ±π makes z + z² jump, so a periodic statistic is used there:
    E[cos z + sin z] = A(κ)(cos μ + sin μ)."""
    num = NUM_PATHWISE_SAMPLES
    kappas = np.full(num, kappa)
    locs = np.full(num, 0.7)
    if backend == "pyro":
        tk = torch.tensor(kappas, requires_grad=True)
        z = pyro_reparam_ext.ImplicitVonMises(torch.zeros(num), tk).rsample()
        (dk,) = torch.autograd.grad((z + z * z).sum(), (tk,))
        tl = torch.tensor(locs, requires_grad=True)
        w = pyro_reparam_ext.ImplicitVonMises(tl, torch.tensor(kappas)).rsample()
        (dl,) = torch.autograd.grad((w.cos() + w.sin()).sum(), (tl,))
        dk, dl = dk.numpy(), dl.numpy()
    else:

        def total_kappa(k):
            z = numpyro_backend.ImplicitVonMises(0.0, k).sample(jax.random.PRNGKey(2))
            return (z + z * z).sum()

        def total_loc(m):
            w = numpyro_backend.ImplicitVonMises(m, kappas).sample(jax.random.PRNGKey(3))
            return (jnp.cos(w) + jnp.sin(w)).sum()

        dk = np.asarray(jax.jit(jax.grad(total_kappa))(kappas))
        dl = np.asarray(jax.jit(jax.grad(total_loc))(locs))
    _, exact_dk = _von_mises_moments_and_grad(kappa)
    ratio = special.i1e(kappa) / special.i0e(kappa)
    exact_dl = ratio * (math.cos(0.7) - math.sin(0.7))
    _assert_within_standard_errors(
        {"concentration": dk, "loc": dl}, {"concentration": exact_dk, "loc": exact_dl}
    )


# ----------------------------------------------------------------------------------------
# float32 over the grid

FLOAT32_ALPHAS = np.array([1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0, 3.9, 4.0, 10.0, 100.0, 1e3, 1e4])
FLOAT32_KAPPAS = np.array([1e-4, 1e-2, 0.5, 2.4, 2.6, 10.0, 1e2, 1e3, 1e4, 1e5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_finite_samples_and_gradients(backend):
    num = 2000
    alphas = np.repeat(FLOAT32_ALPHAS, num // len(FLOAT32_ALPHAS) + 1)[:num].astype(np.float32)
    kappas = np.repeat(FLOAT32_KAPPAS, num // len(FLOAT32_KAPPAS) + 1)[:num].astype(np.float32)
    params = {
        "ImplicitGamma": {"concentration": alphas, "rate": np.float32(2.0)},
        "ImplicitBeta": {"concentration1": alphas, "concentration0": alphas[::-1].copy()},
        "ImplicitDirichlet": {"concentration": np.stack([alphas, alphas[::-1]], -1)},
        # df < 1 draws χ² values so small that dz/d(df) ∝ z/χ² leaves the float32 range
        "ImplicitStudentT": {
            "df": np.maximum(alphas, np.float32(1.0)),
            "loc": np.float32(0.0),
            "scale": np.float32(1.0),
        },
        "ImplicitVonMises": {"loc": np.float32(0.5), "concentration": kappas},
    }
    for name, values in params.items():
        if backend == "pyro":
            tensors = {
                k: torch.tensor(v, dtype=torch.float32, requires_grad=True)
                for k, v in values.items()
            }
            z = getattr(pyro_reparam_ext, name)(**tensors).rsample()
            grads = torch.autograd.grad(z.sum(), list(tensors.values()))
            z, grads = z.detach().numpy(), [g.numpy() for g in grads]
        else:
            arrays = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in values.items()}

            def total(p, name=name):
                z = getattr(numpyro_backend, name)(**p).sample(jax.random.PRNGKey(0))
                return z.sum(), z

            grads, z = jax.jit(jax.grad(total, has_aux=True))(arrays)
            z, grads = np.asarray(z), list(grads.values())
        assert z.dtype == np.float32, name
        assert np.all(np.isfinite(z)), name
        for g in grads:
            assert np.asarray(g).dtype == np.float32, name
            assert np.all(np.isfinite(g)), name


# ----------------------------------------------------------------------------------------
# NumPyro: jit and vmap


def test_numpyro_jit_and_vmap_give_the_implicit_gradient():
    """grad under jit(vmap(...)) with one key per element equals the ops' gradient at the
    drawn samples (and the draws equal the unbatched ones)."""
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    alphas = jnp.array([0.2, 2.0, 50.0])
    kappas = jnp.array([0.5, 20.0, 3e3])

    def gamma_sample(a, k):
        return numpyro_backend.ImplicitGamma(a, 1.5).sample(k)

    def von_mises_sample(c, k):
        return numpyro_backend.ImplicitVonMises(0.3, c).sample(k)

    for sample, params, ops_grad, scale in (
        (gamma_sample, alphas, jax_ops.standard_gamma_grad, 1.5),
        (von_mises_sample, kappas, jax_ops.centered_von_mises_grad, None),
    ):
        draws = jax.jit(jax.vmap(sample))(params, keys)
        grads = jax.jit(jax.vmap(jax.grad(sample)))(params, keys)
        np.testing.assert_array_equal(draws[1], sample(params[1], keys[1]))
        if scale is not None:  # Gamma: x = rate·z is the standard draw
            expected = ops_grad(params, draws * scale) / scale
        else:  # von Mises: the centered draw is z - loc
            expected = ops_grad(params, jnp.angle(jnp.exp(1j * (draws - 0.3))))
        np.testing.assert_allclose(grads, expected, rtol=1e-10)


# ----------------------------------------------------------------------------------------
# the worked example of ImplicitlyReparameterized


class _TorchCdfGamma(pyro_reparam_ext.ImplicitlyReparameterized, pyro_dist.Gamma):
    def sample_detached(self, sample_shape=torch.Size()):
        return pyro_dist.Gamma.rsample(self, sample_shape)

    def implicit_cdf(self, value):
        return torch_ops.gammainc(self.concentration, self.rate * value)


class _JaxCdfGamma(numpyro_backend.ImplicitlyReparameterized, numpyro_dist.Gamma):
    def sample_detached(self, key, sample_shape=()):
        return numpyro_dist.Gamma.sample(self, key, sample_shape)

    def implicit_cdf(self, value):
        return jax_ops.gammainc(self.concentration, self.rate * value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_user_subclass_through_the_cdf_matches_implicit_gamma(backend):
    """The docstring example: a Gamma made reparameterizable from its sampler and CDF gets the
    same gradient as ImplicitGamma on the same draws."""
    alpha = np.array([0.7, 3.0, 30.0])
    rate = np.array([1.0, 2.0, 0.5])
    if backend == "pyro":
        grads = []
        for cls in (_TorchCdfGamma, pyro_reparam_ext.ImplicitGamma):
            torch.manual_seed(5)
            ta = torch.tensor(alpha, requires_grad=True)
            tr = torch.tensor(rate, requires_grad=True)
            z = cls(ta, tr).rsample((50,))
            grads.append([z.detach().numpy(), *torch.autograd.grad(z.sum(), (ta, tr))])
    else:
        grads = []
        for cls in (_JaxCdfGamma, numpyro_backend.ImplicitGamma):

            def total(a, r, cls=cls):
                z = cls(a, r).sample(jax.random.PRNGKey(5), (50,))
                return z.sum(), z

            (da, dr), z = jax.jit(jax.grad(total, argnums=(0, 1), has_aux=True))(alpha, rate)
            grads.append([z, da, dr])
    (z_cdf, da_cdf, dr_cdf), (z_ref, da_ref, dr_ref) = grads
    np.testing.assert_array_equal(np.asarray(z_cdf), np.asarray(z_ref))
    np.testing.assert_allclose(np.asarray(da_cdf), np.asarray(da_ref), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(dr_cdf), np.asarray(dr_ref), rtol=1e-9)


def test_torch_gamma_sampling_and_gradient_never_synchronize():
    """Issue 15: no host synchronization in ``ImplicitGamma.rsample`` (which computes the
    implicit gradient in the forward pass) on an accelerator. The accelerator path
    (torch.where over every regime) makes no syncing call at all; the CPU path reads the
    range of α and the sizes of its element groups (``tolist``) and finds the quadrature's
    elements among those of α ≥ 20 (``nonzero``), which the recorder lists (a sync on an
    accelerator, none on the CPU) and which must be its only such calls; both give the same
    gradient."""
    from pyro_reparam_ext.ops import gamma as gamma_ops
    from tests.test_sphere import _HostSyncRecorder

    torch.manual_seed(0)
    # every regime: series and continued fraction (α < 20, both sides of x = α + 2; below /
    # above α = 4), large α (the asymptotic expansion)
    alpha = torch.tensor([0.01, 0.5, 3.0, 10.0, 30.0, 3e3], dtype=torch.float64).repeat(200)
    x = torch._standard_gamma(alpha)
    # and the quadrature: large α, far tails (|η| > 0.6)
    alpha, x = (
        torch.cat([alpha, torch.tensor([30.0, 30.0])]),
        torch.cat([x, torch.tensor([5.0, 80.0])]),
    )
    assert all(mask.any() for mask, _ in gamma_ops._regimes(alpha, x))
    accelerator = _HostSyncRecorder()
    with accelerator:
        selected = gamma_ops._select_regimes(alpha, x, gamma_ops._regimes(alpha, x))
    assert accelerator.calls == [] and {"exp", "digamma"} <= accelerator.seen
    cpu = _HostSyncRecorder()
    concentration = alpha.clone().requires_grad_(True)
    # argument validation (constructor) is not part of the sampling path
    dist = pyro_reparam_ext.ImplicitGamma(
        concentration, torch.ones_like(alpha), validate_args=False
    )
    with cpu:
        z = dist.rsample()
    assert set(cpu.calls) == {"tolist", "nonzero"}
    (grad,) = torch.autograd.grad(z.sum(), concentration)
    expected = gamma_ops._select_regimes(alpha, z.detach(), gamma_ops._regimes(alpha, z.detach()))
    # two evaluations of the same regimes: the CPU groups' division-free forms with each
    # group's term count against the accelerator path's forms with the most terms; each
    # truncates at ≤ 1e-14 relative (tests/make_gamma_terms.py), rounding adds a few eps
    np.testing.assert_allclose(grad.numpy(), expected.numpy(), rtol=2.5e-14)
    assert torch.isfinite(selected).all()
