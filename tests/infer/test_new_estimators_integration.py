"""DisARM_ELBO and IWAE_ELBO where the other estimators are: ``gradient_variance`` and pyroapi.

On the catalogue's Bernoulli model (three Bernoulli sites, b1 | b0 in the guide), on both
backends:

- ``gradient_variance`` of ``DisARM_ELBO`` (n = 2) returns a finite, positive per-parameter
  variance and a mean within ``Z_MAX`` standard errors of the exact ELBO gradient
  (tests/data/estimator_reference.json);
- ``IWAE_ELBO(1)`` estimates the ELBO's gradient (the K = 1 bound is the ELBO): mean within
  ``Z_MAX`` SE of the same exact gradient; ``IWAE_ELBO(2)`` estimates the gradient of the
  two-sample bound, for which the catalogue has no reference: finite variance, and the two
  backends agree within ``Z_MAX`` SE of the difference of their means;
- under ``pyroapi.pyro_backend(...)`` both names are the package's classes, and the
  backend-agnostic model and guide train a few SVI steps with each.

Tolerance: each mean is an average of ``NUM_SAMPLES`` independent estimates, so by the CLT
(mean − exact) / SE is ≈ N(0, 1) with SE = sqrt(sample variance / NUM_SAMPLES); over the
model's 7 gradient coordinates P(max |z| > 5) ≈ 7 · 5.7e-7 = 4e-6 per check. The sample
variance of 500 draws has a relative error of a few percent (the estimates are bounded:
finite kurtosis), which moves the 5-SE threshold by about as much. The same argument with
SE² = SE_pyro² + SE_numpyro² (independent runs) gives the cross-backend check.
"""

from __future__ import annotations

import numpy as np
import pyroapi
import pytest

import numpyro_backend
import pyro_reparam_ext
from tests.infer.models import BERNOULLI_NONLINEAR
from tests.infer.numpyro_helpers import fast_compile, gradient_stats  # noqa: F401  (fixture)
from tests.infer.pyro_helpers import torch_inputs

ENTRY = BERNOULLI_NONLINEAR
NUM_SAMPLES = 500
Z_MAX = 5.0


def _pyro_stats(elbo, seed: int = 0) -> dict:
    import pyro

    pyro.clear_param_store()
    data, init = torch_inputs(ENTRY)
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        pyro.set_rng_seed(seed)  # inside: entering pyro_backend reseeds the RNG (pyroapi)
        return pyro_reparam_ext.gradient_variance(
            elbo, ENTRY.model, ENTRY.guide, data, init, num_samples=NUM_SAMPLES
        )


def _numpyro_stats(elbo, seed: int = 0) -> dict:
    return gradient_stats(elbo, ENTRY, NUM_SAMPLES, seed=seed)


def _check_finite(stats: dict) -> None:
    assert stats["num_samples"] == NUM_SAMPLES
    assert set(stats["params"]) == set(ENTRY.exact_grads)
    for name, s in stats["params"].items():
        assert np.all(np.isfinite(s["mean"])), name
        # every coordinate of this model's gradient is random under each estimator
        assert np.all(np.isfinite(s["variance"])) and np.all(s["variance"] > 0), name
    assert np.isfinite(stats["total_variance"]) and np.isfinite(stats["total_variance_se"])


def _max_z(stats: dict, target: dict, target_se: dict | None = None) -> tuple[float, str]:
    worst, where = 0.0, ""
    for name, s in stats["params"].items():
        se2 = s["variance"] / stats["num_samples"]
        if target_se is not None:
            se2 = se2 + target_se[name] ** 2
        z = np.abs(s["mean"] - target[name]) / np.sqrt(se2)
        if z.max() > worst:
            worst, where = float(z.max()), f"{name}{list(np.ndindex(z.shape))[int(np.argmax(z))]}"
    return worst, where


def _se(stats: dict) -> dict:
    return {n: np.sqrt(s["variance"] / stats["num_samples"]) for n, s in stats["params"].items()}


# ---- gradient_variance ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda m: m.DisARM_ELBO(2), lambda m: m.IWAE_ELBO(1)])
def test_pyro_gradient_variance_unbiased(make):
    elbo = make(pyro_reparam_ext)
    stats = _pyro_stats(elbo)
    _check_finite(stats)
    z, where = _max_z(stats, ENTRY.exact_grads)
    assert z < Z_MAX, f"{type(elbo).__name__}: |z| = {z:.2f} at {where}"


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("make", [lambda m: m.DisARM_ELBO(2), lambda m: m.IWAE_ELBO(1)])
def test_numpyro_gradient_variance_unbiased(make):
    elbo = make(numpyro_backend)
    stats = _numpyro_stats(elbo)
    _check_finite(stats)
    z, where = _max_z(stats, ENTRY.exact_grads)
    assert z < Z_MAX, f"{type(elbo).__name__}: |z| = {z:.2f} at {where}"


@pytest.mark.usefixtures("fast_compile")
def test_iwae_two_sample_gradient_variance_agrees_across_backends():
    pyro_stats = _pyro_stats(pyro_reparam_ext.IWAE_ELBO(2), seed=3)
    numpyro_stats = _numpyro_stats(numpyro_backend.IWAE_ELBO(2), seed=3)
    _check_finite(pyro_stats)
    _check_finite(numpyro_stats)
    pyro_means = {n: s["mean"] for n, s in pyro_stats["params"].items()}
    z, where = _max_z(numpyro_stats, pyro_means, target_se=_se(pyro_stats))
    assert z < Z_MAX, f"IWAE_ELBO(2) Pyro vs NumPyro: |z| = {z:.2f} at {where}"
    # exact K-tuple references for this bound are in tests/infer/test_iwae.py; here the two
    # backends' gradient_variance must agree on the same (Pyro-side) model and guide


# ---- pyroapi backends ----------------------------------------------------------------------

BACKENDS = {"pyro_reparam_ext": pyro_reparam_ext, "numpyro_backend": numpyro_backend}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_pyroapi_backends_list_them(backend):
    with pyroapi.pyro_backend(backend):
        assert pyroapi.infer.DisARM_ELBO is BACKENDS[backend].DisARM_ELBO
        assert pyroapi.infer.IWAE_ELBO is BACKENDS[backend].IWAE_ELBO


def _numpy(value) -> np.ndarray:
    return np.asarray(value.detach() if hasattr(value, "detach") else value)


def _inputs(backend: str):
    if backend == "pyro_reparam_ext":
        return torch_inputs(ENTRY)
    from tests.infer.numpyro_helpers import jax_inputs

    return jax_inputs(ENTRY)


@pytest.mark.usefixtures("fast_compile")
@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("name", ["DisARM_ELBO", "IWAE_ELBO"])
def test_backend_agnostic_model_trains(backend, name):
    from pyroapi import infer, optim, pyro

    data, init = _inputs(backend)
    with pyroapi.pyro_backend(backend):
        pyro.set_rng_seed(0)
        pyro.clear_param_store()
        elbo = getattr(infer, name)(2, max_plate_nesting=ENTRY.max_plate_nesting)
        svi = infer.SVI(ENTRY.model, ENTRY.guide, optim.Adam({"lr": 0.05}), elbo)
        losses = [svi.step(data, init) for _ in range(5)]
        store = pyro.get_param_store()
        trained = {n: _numpy(store[n]) for n in ENTRY.init_params}
        pyro.clear_param_store()
    assert np.all(np.isfinite(losses))
    # the steps reached the param store: every parameter (model and guide) moved and is finite
    # (a noisy coordinate's Adam steps can cancel, so no size is asserted)
    for n, value in trained.items():
        assert np.all(np.isfinite(value)) and np.any(value != ENTRY.init_params[n]), (n, value)
