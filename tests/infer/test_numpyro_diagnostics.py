"""``gradient_variance`` on both backends: same semantics, nested params, one compile.

Also guards the RELAX-toy training trajectory against measurements that change it: a
gradient-variance measurement between training steps must leave training exactly as it would
have been without it (on Pyro the measurement's running baselines live in the param store).
"""

import functools
import importlib.util
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from jax.example_libraries import stax
from numpyro.distributions import constraints as nconstraints
from numpyro.infer import Trace_ELBO as NTrace_ELBO
from pyro.distributions import constraints as pconstraints
from pyro.infer import Trace_ELBO as PTrace_ELBO

import numpyro_backend.infer as nb
import pyro_reparam_ext.infer as pb

LOC, SCALE = 0.3, 0.5
NUM_SAMPLES = 2000
K_SIGMA = 5.0  # two-sided tolerance, in standard errors


# ---- same semantics on both backends: unconstrained gradients ------------------------------
#
# model z ~ N(0, 1), guide z = loc + s ε with s = exp(u) (a positive param). One sample of
# −ELBO = z²/2 − log s − ε²/2 + const, so, w.r.t. the unconstrained (loc, u):
#   ∂/∂loc = loc + s ε                 mean loc,      variance s²
#   ∂/∂u   = (loc + s ε) s ε − 1       mean s² − 1,   variance s² (loc² + 2 s²)
# (w.r.t. the constrained s the variance would be loc² + 2 s² instead: 0.59 vs 0.1475).
EXACT = {
    "loc": (LOC, SCALE**2),
    "scale": (SCALE**2 - 1, SCALE**2 * (LOC**2 + 2 * SCALE**2)),
}


def _pyro_stats():
    def model():
        pyro.sample("z", pdist.Normal(0.0, 1.0))

    def guide():
        loc = pyro.param("loc", torch.tensor(LOC))
        scale = pyro.param("scale", torch.tensor(SCALE), constraint=pconstraints.positive)
        pyro.sample("z", pdist.Normal(loc, scale))

    return pb.gradient_variance(PTrace_ELBO(), model, guide, num_samples=NUM_SAMPLES)


def _numpyro_model():
    numpyro.sample("z", ndist.Normal(0.0, 1.0))


def _numpyro_guide():
    loc = numpyro.param("loc", jnp.asarray(LOC))
    scale = numpyro.param("scale", jnp.asarray(SCALE), constraint=nconstraints.positive)
    numpyro.sample("z", ndist.Normal(loc, scale))


def _numpyro_stats(rng_key=None, params=None):
    return nb.gradient_variance(
        NTrace_ELBO(),
        _numpyro_model,
        _numpyro_guide,
        num_samples=NUM_SAMPLES,
        rng_key=jax.random.PRNGKey(1) if rng_key is None else rng_key,
        params=params,
    )


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_gradients_are_wrt_unconstrained_params_with_exact_moments(backend):
    stats = _pyro_stats() if backend == "pyro" else _numpyro_stats()
    assert set(stats) == {"params", "total_variance", "total_variance_se", "num_samples"}
    assert set(stats["params"]) == set(EXACT)
    assert stats["num_samples"] == NUM_SAMPLES
    for name, (mean, _) in EXACT.items():
        got = stats["params"][name]
        se_mean = np.sqrt(got["variance"] / NUM_SAMPLES)
        assert abs(got["mean"] - mean) < K_SIGMA * se_mean, (name, got["mean"], mean)
    total = sum(variance for _, variance in EXACT.values())
    assert abs(stats["total_variance"] - total) < K_SIGMA * stats["total_variance_se"]


def test_backends_agree_on_total_variance():
    pyro_stats, numpyro_stats = _pyro_stats(), _numpyro_stats()
    difference = pyro_stats["total_variance"] - numpyro_stats["total_variance"]
    se = np.hypot(pyro_stats["total_variance_se"], numpyro_stats["total_variance_se"])
    assert abs(difference) < K_SIGMA * se


def test_params_are_constrained_values_and_restriction_by_name():
    # params are given constrained (as svi.get_params): scale = 2 → ∂/∂u mean 2² − 1 = 3
    stats = nb.gradient_variance(
        NTrace_ELBO(),
        _numpyro_model,
        _numpyro_guide,
        num_samples=NUM_SAMPLES,
        rng_key=jax.random.PRNGKey(2),
        params={"loc": jnp.asarray(LOC), "scale": jnp.asarray(2.0)},
        param_names=["scale"],
    )
    assert set(stats["params"]) == {"scale"}
    got = stats["params"]["scale"]
    assert abs(got["mean"] - 3.0) < K_SIGMA * np.sqrt(got["variance"] / NUM_SAMPLES)
    with pytest.raises(ValueError, match="param_names"):
        nb.gradient_variance(
            NTrace_ELBO(), _numpyro_model, _numpyro_guide, num_samples=2, param_names=["nope"]
        )


# ---- nested parameters (numpyro.module / stax) ----------------------------------------------

X = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
Y = jnp.asarray([0.5, -1.0, 2.0, 0.0])


def _net_model(x, y):
    net = numpyro.module("net", stax.serial(stax.Dense(2), stax.Tanh, stax.Dense(1)), (4, 3))
    numpyro.sample("y", ndist.Normal(net(x)[:, 0], 1.0).to_event(1), obs=y)


def _empty_guide(x, y):
    pass


def test_nested_module_params_are_flattened_with_readable_names():
    params = {
        "net$params": stax.serial(stax.Dense(2), stax.Tanh, stax.Dense(1))[0](
            jax.random.PRNGKey(0), (4, 3)
        )[1]
    }
    stats = nb.gradient_variance(
        NTrace_ELBO(), _net_model, _empty_guide, X, Y, num_samples=3, params=params
    )
    shapes = {name: s["mean"].shape for name, s in stats["params"].items()}
    assert shapes == {
        "net$params.0.0": (3, 2),
        "net$params.0.1": (2,),
        "net$params.2.0": (2, 1),
        "net$params.2.1": (1,),
    }

    # no latent variables: every estimate is the exact gradient (variance 0)
    def loss(p):
        return NTrace_ELBO().loss(jax.random.PRNGKey(0), p, _net_model, _empty_guide, X, Y)

    exact = jax.grad(loss)(params)["net$params"]
    np.testing.assert_allclose(stats["params"]["net$params.0.0"]["mean"], exact[0][0], rtol=1e-12)
    np.testing.assert_allclose(stats["params"]["net$params.2.1"]["mean"], exact[2][1], rtol=1e-12)
    # identical samples: only the rounding of their float64 mean (~1e-16 relative) is left
    assert stats["total_variance"] < 1e-24
    # a leaf can be selected by its name, a site by its own
    only = nb.gradient_variance(
        NTrace_ELBO(),
        _net_model,
        _empty_guide,
        X,
        Y,
        num_samples=3,
        params=params,
        param_names=["net$params.2.1"],
    )
    assert set(only["params"]) == {"net$params.2.1"}


# ---- one compile per (elbo, model, guide, shapes) -------------------------------------------


def test_second_call_does_not_retrace_the_programs():
    traced = []

    def model():
        traced.append("model")  # runs only while JAX traces (or SVI-style init traces)
        _numpyro_model()

    elbo = NTrace_ELBO()
    params = {"loc": jnp.asarray(LOC), "scale": jnp.asarray(SCALE)}
    first = time.perf_counter()
    nb.gradient_variance(elbo, model, _numpyro_guide, num_samples=50, params=params)
    first = time.perf_counter() - first
    count = len(traced)
    second = time.perf_counter()
    for seed in range(3):  # new keys and new parameter values: same shapes
        nb.gradient_variance(
            elbo,
            model,
            _numpyro_guide,
            num_samples=50,
            params={"loc": jnp.asarray(0.1 * seed), "scale": jnp.asarray(SCALE)},
            rng_key=jax.random.PRNGKey(seed),
        )
    second = (time.perf_counter() - second) / 3
    assert len(traced) == count
    print(f"\ngradient_variance: first call {first:.3f} s, later calls {second * 1e3:.1f} ms")


# ---- RELAX toy: measuring must not change training, on either backend -----------------------
#
# examples/relax_toy.py measures gradient_variance at step 0 and then trains. The Pyro
# measurement once left the score-function baseline's running averages it had created in the
# param store, so Pyro trained with a warmed-up baseline from step 0 and reached θ ≈ 0.02 in
# 1000 steps while NumPyro (and any unmeasured run, on either backend) stayed near θ ≈ 0.41:
# the cold first step is plain REINFORCE, |g| ≈ 0.41, which fixes Adam's second moment ~1e5
# above the later, baselined gradients. Criterion: the logit trajectory after a measurement
# equals, exactly, the trajectory of a run without it (same seeds).

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOY_STEPS = 40


def _examples_common():
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location("_examples_common", EXAMPLES / "common.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def _pyro_toy_trajectory(measure: bool, seed: int) -> np.ndarray:
    from pyro import poutine

    pyro.clear_param_store()
    target = torch.tensor(0.499)

    def model():
        with poutine.scale(scale=1e-4):
            b = pyro.sample("b", pdist.Bernoulli(probs=torch.tensor(0.5)))
        pyro.sample("f", pdist.Normal(b, 0.5**0.5), obs=target)

    def guide():
        logit = pyro.param("theta_logit", torch.tensor(0.0))
        with poutine.scale(scale=1e-4):
            pyro.sample("b", pdist.Bernoulli(logits=logit))

    elbo = pb.ScoreFunction_ELBO(num_particles=1, max_plate_nesting=0, baseline="optimal")
    if measure:
        with _examples_common().pyro_running_state_kept():
            pb.gradient_variance(elbo, model, guide, num_samples=20)
    pyro.set_rng_seed(seed)  # the measurement used the RNG: training draws the same samples
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    logits = []
    for _ in range(TOY_STEPS):
        svi.step()
        logits.append(float(pyro.param("theta_logit").detach()))
    return np.asarray(logits)


@functools.cache
def _numpyro_toy():
    """(svi, jitted update, elbo, model, guide), built once: one compile for every run."""
    from numpyro import handlers

    def model():
        with handlers.scale(scale=1e-4):
            b = numpyro.sample("b", ndist.Bernoulli(probs=0.5))
        numpyro.sample("f", ndist.Normal(b, 0.5**0.5), obs=jnp.asarray(0.499))

    def guide():
        logit = numpyro.param("theta_logit", jnp.asarray(0.0))
        with handlers.scale(scale=1e-4):
            numpyro.sample("b", ndist.Bernoulli(logits=logit))

    elbo = nb.ScoreFunction_ELBO(num_particles=1, max_plate_nesting=0, baseline="optimal")
    svi = nb.SVI(model, guide, numpyro.optim.Adam(0.01), elbo)
    return svi, jax.jit(svi.update), elbo, model, guide


def _numpyro_toy_trajectory(measure: bool, seed: int) -> np.ndarray:
    svi, update, elbo, model, guide = _numpyro_toy()
    state = svi.init(jax.random.PRNGKey(seed))
    logits = []
    for step in range(TOY_STEPS):
        if measure and step % 10 == 0:  # as the example: measure, then train on
            params = {**svi.get_params(state), **state.mutable_state}
            nb.gradient_variance(elbo, model, guide, num_samples=20, params=params)
        state, _ = update(state)
        logits.append(float(svi.get_params(state)["theta_logit"]))
    return np.asarray(logits)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_measuring_the_toy_does_not_change_its_training(backend):
    trajectory = _pyro_toy_trajectory if backend == "pyro" else _numpyro_toy_trajectory
    for seed in range(3):
        if backend == "pyro":
            pyro.set_rng_seed(seed)
        plain, measured = trajectory(False, seed), trajectory(True, seed)
        np.testing.assert_array_equal(measured, plain)
