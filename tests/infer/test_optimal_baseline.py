"""ScoreFunction_ELBO(baseline="optimal") with K = 2: leave-one-out mixed with running moments.

With K ≥ 2 particle k's baseline is (1 − λ) m₋ₖ + λ b_run (see the class docstring): the other
particles' mean cost mixed with the running optimal baseline, λ estimated from earlier steps.
Both backends, after a warm-up at fixed parameters so that λ > 0 (checked):

- unbiased: the mean gradient matches the exact one (tests/data/estimator_reference.json);
- lower variance than ``"loo"`` at fixed parameters, where the running moments are good.
"""

import jax
import numpy as np
import pyro
import pyroapi
import pytest
import torch
from jax import lax

import numpyro_backend as npb
import pyro_reparam_ext as pre
from numpyro_backend.backend.pyro import clear_param_store
from tests.infer.models import BINARY_VAE, CATEGORICAL_MIXTURE
from tests.infer.numpyro_helpers import (
    fast_compile,  # noqa: F401  (fixture)
    jax_inputs,
)
from tests.infer.pyro_helpers import param_leaf, torch_inputs, with_draws

pytestmark = pytest.mark.usefixtures("fast_compile")

K = 2
WARM_UP = 30  # steps at fixed parameters before measuring: λ's moments settle in ~1/(1 − 0.9)
# Unbiasedness, |z| < 5 on every coordinate. Pyro: NUM_CALLS calls, each the mean of NUM_DRAWS
# draws side by side in an outer plate; the SE of a coordinate comes from the spread of the
# calls, so z is t-distributed on 59 degrees of freedom: P(|t₅₉| > 5) = 5.4e-6, times ≤ 45
# coordinates and 4 Pyro tests: a correct estimator fails the Pyro tests with probability
# ≤ 1.0e-3. NumPyro: NUM_SAMPLES single draws, z normal: P(|z| > 5) = 5.7e-7 per coordinate,
# ≤ 5e-5 for its 2 tests. The draws are conditionally unbiased given the running state (a
# martingale-difference sequence), so the central limit theorem and the sample SE still apply
# although the state links successive calls.
Z_MAX = 5.0
NUM_CALLS, NUM_DRAWS = 60, 64
NUM_SAMPLES = 2000
# Variance: total variance (trace of the covariance) of the guide-parameter gradient over
# VARIANCE_SAMPLES draws, with its standard error from the spread of the per-draw squared
# deviations (gradient_variance's total_variance_se). Optimal must be below loo by more than
# Z_LOWER standard errors of the difference: if it were not lower, the chance of passing is
# < P(z > 3) = 1.3e-3. (Measured ratio loo / optimal on this model: ~3, i.e. z ≈ 12 at 200.)
Z_LOWER = 3.0
VARIANCE_SAMPLES = 200
GUIDE_PARAMS = ["enc_w", "enc_b"]


def _max_abs_z(samples: dict, exact: dict) -> tuple[float, str]:
    """Largest |mean − exact| / SE over the coordinates (SE from the samples' spread)."""
    worst, where = 0.0, ""
    for name, values in samples.items():
        se = values.std(0, ddof=1) / np.sqrt(len(values))
        z = np.atleast_1d(np.abs(values.mean(0) - exact[name]) / se)
        if z.max() > worst:
            worst, where = float(z.max()), f"{name}{list(np.unravel_index(z.argmax(), z.shape))}"
    return worst, where


def _mixing_weight(state: dict, site: str) -> float:
    num = float(state[f"reparam_ext.{site}.baseline_mixing_num"])
    den = float(state[f"reparam_ext.{site}.baseline_mixing_den"])
    return num / den


# ---- Pyro ---------------------------------------------------------------------------------


def _pyro_state(site: str) -> dict:
    store = pyro.get_param_store()
    return {n: store[n].detach() for n in store.keys() if n.startswith(f"reparam_ext.{site}.")}


def _pyro_gradients(entry, decay: float):
    """Warm-up calls, then ``NUM_CALLS`` calls of ``NUM_DRAWS`` draws at fixed parameters."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    data, init = torch_inputs(entry)
    nesting = entry.max_plate_nesting + 1
    model = with_draws(entry.model, NUM_DRAWS, -nesting)
    guide = with_draws(entry.guide, NUM_DRAWS, -nesting)
    elbo = pre.ScoreFunction_ELBO(K, max_plate_nesting=nesting, baseline_decay=decay)
    for _ in range(WARM_UP):
        elbo.differentiable_loss(model, guide, data, init)
    names = list(entry.exact_grads)
    out = {name: [] for name in names}
    for _ in range(NUM_CALLS):
        loss = elbo.differentiable_loss(model, guide, data, init)
        grads = torch.autograd.grad(loss, [param_leaf(n) for n in names])
        for name, grad in zip(names, grads, strict=True):
            out[name].append(grad.numpy() / NUM_DRAWS)
    return {name: np.stack(v) for name, v in out.items()}


# decay 0: the running moments are the previous step's alone, no better than the other
# particle, so λ ≈ 1/2 and the leave-one-out half of the baseline carries weight (at the
# default decay λ ≈ 1 hides a baseline that wrongly includes its own particle there)
@pytest.mark.parametrize("decay", [0.9, 0.0])
@pytest.mark.parametrize("entry", [BINARY_VAE, CATEGORICAL_MIXTURE], ids=lambda e: e.name)
def test_pyro_unbiased(entry, decay):
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        batches = _pyro_gradients(entry, decay)
        weight = _mixing_weight(_pyro_state("z"), "z")
    assert 0.0 < weight, f"λ = {weight}: the running moments were not used"
    z, where = _max_abs_z(batches, entry.exact_grads)
    assert z < Z_MAX, f"{entry.name}: |z| = {z:.2f} at {where} (λ = {weight:.2f})"


def _pyro_variance(baseline: str) -> tuple[float, float]:
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    data, init = torch_inputs(BINARY_VAE)
    elbo = pre.ScoreFunction_ELBO(K, max_plate_nesting=1, baseline=baseline)
    model, guide = BINARY_VAE.model, BINARY_VAE.guide
    pre.gradient_variance(elbo, model, guide, data, init, num_samples=WARM_UP)
    stats = pre.gradient_variance(
        elbo, model, guide, data, init, num_samples=VARIANCE_SAMPLES, param_names=GUIDE_PARAMS
    )
    return stats["total_variance"], stats["total_variance_se"]


def test_pyro_variance_below_loo():
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        optimal, loo = _pyro_variance("optimal"), _pyro_variance("loo")
    z = (loo[0] - optimal[0]) / np.hypot(loo[1], optimal[1])
    assert z > Z_LOWER, f"variance optimal {optimal} vs loo {loo}: z = {z:.2f}"


# ---- NumPyro ------------------------------------------------------------------------------


def _numpyro_gradients(entry, baseline: str, num_samples: int):
    """(gradient samples by name, final running state): one jitted scan over the warm-up
    and ``num_samples`` draws at fixed parameters, the state carried from draw to draw."""
    clear_param_store()  # pyroapi's ``param`` prefers stored values; start from ``init``
    data, init = jax_inputs(entry)
    elbo = npb.ScoreFunction_ELBO(K, baseline=baseline)
    key = jax.random.PRNGKey(0)
    _, state = elbo.init_state(key, init, entry.model, entry.guide, data, init)

    def loss(params, state, key):
        out = elbo.loss_with_mutable_state(
            key, {**params, **state}, entry.model, entry.guide, data, init
        )
        return out["loss"], {n: out["mutable_state"][n] for n in state}

    def step(state, key):
        grads, state = jax.grad(loss, has_aux=True)(init, state, key)
        return state, grads

    keys = jax.random.split(jax.random.PRNGKey(1), WARM_UP + num_samples)
    state, grads = jax.jit(lambda s, k: lax.scan(step, s, k))(state, keys)
    return {n: np.asarray(g[WARM_UP:]) for n, g in grads.items()}, state


def _total_variance(samples: dict, names) -> tuple[float, float]:
    """Total variance and its SE, as ``gradient_variance`` computes them."""
    deviation = np.concatenate(
        [(samples[n] - samples[n].mean(0)).reshape(len(samples[n]), -1) for n in names], axis=1
    )
    squared = (deviation**2).sum(1)
    n = len(squared)
    return squared.mean() * n / (n - 1), squared.std(ddof=1) / np.sqrt(n) * n / (n - 1)


@pytest.mark.parametrize("entry", [BINARY_VAE, CATEGORICAL_MIXTURE], ids=lambda e: e.name)
def test_numpyro_unbiased(entry):
    with pyroapi.pyro_backend("numpyro_backend"):
        samples, state = _numpyro_gradients(entry, "optimal", NUM_SAMPLES)
    weight = _mixing_weight(state, "z")
    assert 0.0 < weight, f"λ = {weight}: the running moments were not used"
    z, where = _max_abs_z(samples, entry.exact_grads)
    assert z < Z_MAX, f"{entry.name}: |z| = {z:.2f} at {where} (λ = {weight:.2f})"


def test_numpyro_variance_below_loo():
    with pyroapi.pyro_backend("numpyro_backend"):
        optimal = _total_variance(
            _numpyro_gradients(BINARY_VAE, "optimal", VARIANCE_SAMPLES)[0], GUIDE_PARAMS
        )
        loo = _total_variance(
            _numpyro_gradients(BINARY_VAE, "loo", VARIANCE_SAMPLES)[0], GUIDE_PARAMS
        )
    z = (loo[0] - optimal[0]) / np.hypot(loo[1], optimal[1])
    assert z > Z_LOWER, f"variance optimal {optimal} vs loo {loo}: z = {z:.2f}"
