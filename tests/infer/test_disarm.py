"""DisARM_ELBO (DisARM at n = 2, ARMS with the Dirichlet copula at n > 2), both backends.

Unbiasedness against exact gradients (the catalogue's references in
``tests/data/estimator_reference.json``, and, for a Bernoulli model in a plate of 8
subsampled to 3 with two dependent sites, Pyro's ``TraceEnum_ELBO`` on the full data), the
backends' agreement, the variance claim of the papers at equal evaluations, and the errors.

Tolerances. Pyro: ``NUM_CALLS`` = 30 calls, each the mean of ``NUM_DRAWS`` draws; a
coordinate's z-score is t-distributed with 29 degrees of freedom, P(|t₂₉| > 5) = 2.5e-5.
The Pyro cases below have 268 coordinates in all (7 + 5 + 45 + 19 + 42 + 16, at n = 2 and
4), so a correct estimator fails one of them with probability ≤ 268 · 2.5e-5 = 6.7e-3 (union
bound). NumPyro: ``NUM_SAMPLES`` = 2000 independent estimates (no running state), z ≈
normal, P(|z| > 5) = 5.7e-7 per coordinate, 89 coordinates: ≤ 5.1e-5; the cross-backend
comparison (5 combined SE, at most as heavy-tailed as the Pyro t₂₉ term) adds
≤ 89 · 2.5e-5 = 2.2e-3. The variance tests' mean checks (thousands of draws, 63 coordinates,
normal) add ≤ 4e-5. A bias of 5 SE — 3–10 % of a typical gradient coordinate here — fails:
with the copula's factor p(1 − p)/D replaced by 1 (the leave-one-out estimator applied to
coupled samples, biased), the Pyro cases give |z| = 8–74 (Bernoulli models) and 45–54 (the
one-hot sites), NumPyro |z| = 5.8 (bernoulli_nonlinear, n = 4) and 14 (the subsampled
mixture), checked when writing this test.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.optim
import pyro
import pyroapi
import pytest
import torch
from pyroapi import distributions as dist
from pyroapi import ops
from pyroapi import pyro as pyro_api

import numpyro_backend.infer as numpyro_infer
import pyro_reparam_ext.infer as pyro_infer
from numpyro_backend.backend.pyro import clear_param_store
from numpyro_backend.infer import SVI as NumPyroSVI
from numpyro_backend.infer.disarm import copula_debias as numpyro_copula_debias
from numpyro_backend.infer.relaxation import CategoricalRelaxation as NumPyroCategorical
from pyro_reparam_ext.infer.disarm import copula_debias, coupled_score_weights
from pyro_reparam_ext.infer.relaxation import CategoricalRelaxation
from tests.infer.make_reference import _grads, enum_reference
from tests.infer.models import MODELS, EstimatorModel
from tests.infer.numpyro_helpers import (
    estimates_from_stats,
    fast_compile,  # noqa: F401  (fixture)
    gradient_stats,
)
from tests.infer.pyro_helpers import (
    estimates_from_batches,
    gradient_batches,
    param_leaf,
    torch_inputs,
    with_draws,
)
from tests.stats import max_abs_z

NUM_CALLS = 30
NUM_DRAWS = 256
NUM_SAMPLES = 2000
Z_MAX = 5.0

# ---------------------------------------------------------------------------------------------
# A Bernoulli model in a subsampled plate (8 points, 3 per step) with two dependent sites:
# z2's guide logits depend on z1, so z2 is coupled only in the copies where z1 agrees.


def _subsampled_model(data, init):
    w = pyro_api.param("w", init["w"])
    n = data["x"].shape[0]
    with pyro_api.plate("data", n, subsample_size=data["subsample_size"]) as idx:
        z1 = pyro_api.sample("z1", dist.Bernoulli(probs=0.4))
        z2 = pyro_api.sample("z2", dist.Bernoulli(probs=0.6))
        mean = 2.0 * ops.tanh(w[0] * z1 - w[1] * z2 + 0.5 * z1 * z2)
        pyro_api.sample("x", dist.Normal(mean, 0.6), obs=data["x"][idx])


def _subsampled_guide(data, init):
    a = pyro_api.param("q_a", init["q_a"])
    c = pyro_api.param("q_c", init["q_c"])
    k = pyro_api.param("q_k", init["q_k"])
    n = data["x"].shape[0]
    with pyro_api.plate("data", n, subsample_size=data["subsample_size"]) as idx:
        z1 = pyro_api.sample("z1", dist.Bernoulli(logits=a[idx]))
        pyro_api.sample("z2", dist.Bernoulli(logits=c[idx] + k * z1))


_rng = np.random.RandomState(11)
SUBSAMPLED = EstimatorModel(
    name="disarm_subsampled",
    model=_subsampled_model,
    guide=_subsampled_guide,
    make_data=lambda: {
        "x": np.array([1.8, -0.4, 0.9, 2.2, -1.1, 0.3, 1.5, -0.8]),
        "subsample_size": 3,
    },
    init_params={
        "w": np.array([1.1, 0.7]),
        "q_a": _rng.normal(0.0, 1.0, 8),
        "q_c": _rng.normal(0.0, 1.0, 8),
        "q_k": np.array(0.9),
    },
    max_plate_nesting=1,
    discrete_sites=("z1", "z2"),
    description="z1, z2 | z1 Bernoulli in a plate of 8 subsampled to 3",
)
ENTRIES = {**MODELS, SUBSAMPLED.name: SUBSAMPLED}


@functools.cache
def exact_grads(entry_name: str) -> dict[str, np.ndarray]:
    if entry_name != SUBSAMPLED.name:
        return MODELS[entry_name].exact_grads
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        loss, init = enum_reference(SUBSAMPLED)  # TraceEnum_ELBO on the full data
        return {k: np.asarray(v) for k, v in _grads(loss, init).items()}


@functools.cache
def pyro_batches(entry_name: str, num_particles: int) -> dict[str, np.ndarray]:
    entry = ENTRIES[entry_name]
    pyro.clear_param_store()
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        pyro.set_rng_seed(num_particles)  # inside: entering pyro_backend reseeds (pyroapi)
        return gradient_batches(
            lambda nesting: pyro_infer.DisARM_ELBO(num_particles, max_plate_nesting=nesting),
            entry,
            NUM_CALLS,
            NUM_DRAWS,
            names=list(exact_grads(entry_name)),
        )


@functools.cache
def numpyro_stats(entry_name: str, num_particles: int) -> dict:
    elbo = numpyro_infer.DisARM_ELBO(num_particles)
    return gradient_stats(elbo, ENTRIES[entry_name], NUM_SAMPLES, seed=num_particles)


# the catalogue's Bernoulli model (three sites, b1 | b0), its Bernoulli + Normal guide, the
# binary VAE (three decisions per element, to_event), the subsampled two-site plate, the
# Categorical mixture in a plate of 12 subsampled to 4 (its score terms are weakly tested
# here: every call shares one subsample, whose noise dominates the SE; NumPyro draws a
# subsample per estimate) and two one-hot decisions (to_event) followed by a dependent
# Bernoulli site, where the stick-breaking estimator is tested with power
PYRO_CASES = [
    (name, n)
    for name in (
        "bernoulli_nonlinear",
        "bernoulli_normal",
        "binary_vae",
        SUBSAMPLED.name,
        "categorical_mixture",
        "event_sites",
    )
    for n in (2, 4)
]
# compile-bound (3-5 s of CPU per case): the dependent sites (ARMS, n = 4), the Bernoulli +
# Normal guide, the subsampled plate with dependent sites (DisARM, n = 2), the subsampled
# Categorical mixture (stick-breaking DisARM) and the one-hot + Bernoulli sites (n = 4)
NUMPYRO_CASES = [
    ("bernoulli_nonlinear", 4),
    ("bernoulli_normal", 2),
    (SUBSAMPLED.name, 2),
    ("categorical_mixture", 2),
    ("event_sites", 4),
]


@pytest.mark.parametrize("entry_name, n", PYRO_CASES, ids=[f"{e}-n{n}" for e, n in PYRO_CASES])
def test_pyro_mean_gradient_matches_exact(entry_name, n):
    estimates = estimates_from_batches(pyro_batches(entry_name, n))
    z, where = max_abs_z(estimates, exact_grads(entry_name))
    assert z < Z_MAX, f"{entry_name} / DisARM n={n}: |z| = {z:.2f} at {where}"


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize(
    "entry_name, n", NUMPYRO_CASES, ids=[f"{e}-n{n}" for e, n in NUMPYRO_CASES]
)
def test_numpyro_mean_gradient_matches_exact_and_pyro(entry_name, n):
    stats = numpyro_stats(entry_name, n)
    exact = exact_grads(entry_name)
    assert set(stats["params"]) == set(exact)
    z, where = max_abs_z(estimates_from_stats(stats), exact)
    assert z < Z_MAX, f"{entry_name} / DisARM n={n}: |z| = {z:.2f} at {where}"
    batches = pyro_batches(entry_name, n)
    for name, values in batches.items():
        mean_np = stats["params"][name]["mean"]
        se_np = np.sqrt(stats["params"][name]["variance"] / stats["num_samples"])
        se_pyro = values.std(0, ddof=1) / np.sqrt(values.shape[0])
        z_between = np.abs(mean_np - values.mean(0)) / np.sqrt(se_np**2 + se_pyro**2)
        assert z_between.max() < Z_MAX, f"{name}: backends differ by {z_between.max():.2f} SE"


# ---------------------------------------------------------------------------------------------
# Variance at equal evaluations. Per-draw gradients in one call: the guide parameters of a
# discrete site get leading dims of ``num_draws`` copies (all equal to the catalogue's initial
# values), one per element of an outer ``draws`` plate, so the gradient w.r.t. copy d is draw
# d's gradient (draws share nothing sampled). The claim "DisARM (n = 2) has lower variance
# than the leave-one-out score function with 2 samples" (Dong et al. 2020; ARMS vs loo with
# n samples: Dimitriev & Zhou 2021; stick-breaking: Dong et al. 2021) is tested on
# log(V_loo / V_disarm) > 5 SE, its SE from the spread of the per-draw squared deviations
# (delta method). Measured: binary
# VAE encoder 1.37 (n = 2) and 1.37 (n = 4), z ≈ 19-23 with 4000 draws; the stick-breaking
# estimator at the one-hot site of ``event_sites`` 1.25 (n = 2) and 1.21 (n = 4), z ≈ 21-26
# with 16000 draws. The mean of the DisARM draws is also checked against the exact gradient.

#: entry -> (parameter -> leading dims of the per-draw copies, draws)
PER_DRAW = {
    "binary_vae": ({"enc_w": (1,), "enc_b": (1, 1)}, 4000),
    "event_sites": ({"q_z_logits": (1, 1)}, 16000),
}


def _pyro_per_draw_rows(entry_name: str, elbo) -> np.ndarray:
    entry = MODELS[entry_name]
    prefixes, num_draws = PER_DRAW[entry_name]
    data, init = torch_inputs(entry)
    for name, prefix in prefixes.items():
        shape = (num_draws,) + prefix[1:] + init[name].shape
        init[name] = init[name].expand(shape).clone()
    model = with_draws(entry.model, num_draws, -entry.max_plate_nesting - 1)
    guide = with_draws(entry.guide, num_draws, -entry.max_plate_nesting - 1)
    pyro.clear_param_store()
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        pyro.set_rng_seed(0)
        loss = elbo.differentiable_loss(model, guide, data, init)
        grads = torch.autograd.grad(loss, [param_leaf(name) for name in prefixes])
    return torch.cat([g.reshape(num_draws, -1) for g in grads], 1).detach().numpy()


def _total_variance(samples: np.ndarray) -> tuple[float, float]:
    """Trace of the covariance of per-draw gradient rows and its standard error."""
    squared = ((samples - samples.mean(0)) ** 2).sum(1)
    correction = samples.shape[0] / (samples.shape[0] - 1)
    return squared.mean() * correction, squared.std(ddof=1) / math.sqrt(len(squared)) * correction


def _exact_z(entry_name: str, samples: np.ndarray) -> float:
    """Largest |mean − exact| / SE over the per-draw coordinates (normal: thousands of draws)."""
    grads = MODELS[entry_name].exact_grads
    exact = np.concatenate([grads[name].ravel() for name in PER_DRAW[entry_name][0]])
    se = samples.std(0, ddof=1) / math.sqrt(samples.shape[0])
    return float(np.max(np.abs(samples.mean(0) - exact) / se))


def _log_ratio_z(reference, other) -> tuple[float, float]:
    log_ratio = math.log(reference[0] / other[0])
    se = math.hypot(reference[1] / reference[0], other[1] / other[0])
    return math.exp(log_ratio), log_ratio / se


VARIANCE_CASES = [("binary_vae", 2), ("binary_vae", 4), ("event_sites", 2), ("event_sites", 4)]


@pytest.mark.parametrize(
    "entry_name, n", VARIANCE_CASES, ids=[f"{e}-n{n}" for e, n in VARIANCE_CASES]
)
def test_pyro_disarm_variance_below_leave_one_out(entry_name, n):
    nesting = MODELS[entry_name].max_plate_nesting + 1
    disarm_rows = _pyro_per_draw_rows(
        entry_name, pyro_infer.DisARM_ELBO(n, max_plate_nesting=nesting)
    )
    loo_rows = _pyro_per_draw_rows(
        entry_name, pyro_infer.ScoreFunction_ELBO(n, max_plate_nesting=nesting, baseline="loo")
    )
    z_mean = _exact_z(entry_name, disarm_rows)
    assert z_mean < Z_MAX, f"DisARM-{n} mean gradient: |z| = {z_mean:.2f}"
    ratio, z = _log_ratio_z(_total_variance(loo_rows), _total_variance(disarm_rows))
    print(f"\n{entry_name} guide-gradient variance loo-{n} / DisARM-{n}: {ratio:.3f} (z = {z:.1f})")
    assert z > Z_MAX, f"ratio {ratio:.3f}, z = {z:.2f}"


# ---------------------------------------------------------------------------------------------
# The formulas: n = 2 is DisARM, the debiasing factor is finite and accurate at extreme logits


def test_two_copies_give_the_disarm_estimator():
    # ½ Σᵢ wᵢ must equal ½ (f(b) − f(b̃)) (−1)^{b̃} 1[b ≠ b̃] σ(|α|) (Dong et al. 2020)
    logits = torch.tensor([[-1.3, 0.4, 2.0, -0.2], [-1.3, 0.4, 2.0, -0.2]])
    values = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    reward = torch.tensor([[0.7, -0.3, 1.1, 2.0], [-0.5, 0.9, 0.2, 1.5]])
    coupled = torch.ones_like(logits, dtype=torch.bool)
    weights = coupled_score_weights(logits, values, reward, coupled, 0)
    b, b_tilde = values
    disarm = (
        0.5
        * (reward[0] - reward[1])
        * (-1.0) ** b_tilde
        * (b != b_tilde).to(logits.dtype)
        * torch.sigmoid(logits[0].abs())
    )
    torch.testing.assert_close(weights.mean(0), disarm, rtol=1e-12, atol=1e-12)


def test_stick_breaking_reproduces_the_categorical_probabilities():
    # P(first success at k) = Π_{j<k} (1 − σ(α_j)) σ(α_k), the last category if none, must be
    # π of the category order[k], on both backends
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.1], [-0.5, -0.5, 0.4, -3.0]], dtype=torch.float64)
    order = CategoricalRelaxation.category_order(logits)
    alpha = CategoricalRelaxation.binary_logits(logits, order)
    p = torch.sigmoid(alpha)
    none_before = torch.cumprod(torch.cat([torch.ones_like(p[..., :1]), 1 - p], -1), -1)
    first = none_before * torch.cat([p, torch.ones_like(p[..., :1])], -1)
    expected = torch.gather(torch.softmax(logits, -1), -1, order)
    torch.testing.assert_close(first, expected, rtol=1e-12, atol=1e-12)
    jax_logits = jnp.asarray(logits.numpy())
    jax_alpha = NumPyroCategorical.binary_logits(
        jax_logits, NumPyroCategorical.category_order(jax_logits)
    )
    np.testing.assert_allclose(np.asarray(jax_alpha), alpha.numpy(), rtol=1e-12)
    # increasing probability: the rare categories come first
    assert (torch.diff(torch.gather(logits, -1, order), dim=-1) >= 0).all()


@pytest.mark.parametrize("num", [2, 3, 8])
def test_copula_debias_matches_its_definition(num):
    # p(1 − p)/D with D = p₋ − max(0, 2 p₋^{1/(n−1)} − 1)^{n−1}, in float64 at moderate logits
    logits = torch.linspace(-6.0, 6.0, 49, dtype=torch.float64)
    p = torch.sigmoid(logits)
    p_min = torch.minimum(p, 1 - p)
    overlap = torch.clamp(2 * p_min ** (1.0 / (num - 1)) - 1, min=0.0) ** (num - 1)
    expected = p * (1 - p) / (p_min - overlap)
    torch.testing.assert_close(copula_debias(logits, num), expected, rtol=1e-10, atol=0)
    np.testing.assert_allclose(
        np.asarray(numpyro_copula_debias(jnp.asarray(logits.numpy()), num)),
        expected.numpy(),
        rtol=1e-10,
    )


@pytest.mark.parametrize("num", [2, 4])
def test_copula_debias_finite_in_float32_at_extreme_logits(num):
    logits = torch.tensor([-80.0, -30.0, -1e-4, 0.0, 1e-4, 30.0, 80.0], dtype=torch.float32)
    value = copula_debias(logits, num)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    # the factor is 1/(1 − ρ) with the copies' correlation ρ ∈ [−1, 0]: within [½, 1]
    assert ((value >= 0.5) & (value <= 1.0)).all()
    jax_value = numpyro_copula_debias(jnp.asarray(logits.numpy()), num)
    assert jax_value.dtype == jnp.float32 and bool(jnp.isfinite(jax_value).all())
    np.testing.assert_allclose(np.asarray(jax_value), value.numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Errors: unsupported sites (named), bad constructor arguments


def _poisson_program():
    def model():
        pyro_api.sample("y", dist.Poisson(2.0))

    def guide():
        pyro_api.sample("y", dist.Poisson(pyro_api.param("rate", ops.ones(()) * 1.5)))

    return model, guide


def test_pyro_unsupported_site_raises_naming_it():
    pyro.clear_param_store()
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        model, guide = _poisson_program()
        elbo = pyro_infer.DisARM_ELBO(2, max_plate_nesting=0)
        with pytest.raises(ValueError, match=r"'y'.*ScoreFunction_ELBO"):
            elbo.differentiable_loss(model, guide)


def test_numpyro_unsupported_site_raises_at_svi_init():
    clear_param_store()
    with pyroapi.pyro_backend("numpyro_backend"):
        model, guide = _poisson_program()
        svi = NumPyroSVI(model, guide, numpyro.optim.Adam(1e-2), numpyro_infer.DisARM_ELBO(2))
        with pytest.raises(ValueError, match=r"'y'.*ScoreFunction_ELBO"):
            svi.init(jax.random.PRNGKey(0))


@pytest.mark.parametrize("infer", [pyro_infer, numpyro_infer], ids=["pyro", "numpyro"])
def test_constructor_rejects_bad_arguments(infer):
    with pytest.raises(ValueError, match="num_particles"):
        infer.DisARM_ELBO(1)
    with pytest.raises(ValueError, match="vectorize_particles"):
        infer.DisARM_ELBO(2, vectorize_particles=False)
    with pytest.raises(TypeError):
        infer.DisARM_ELBO(2, 1)  # everything after num_particles is keyword-only
