"""log_bessel_iv and bessel_iv_ratio against mpmath values stored in tests/data (both backends).

Reference: ``tests/make_bessel_reference.py`` (40-digit mpmath) over order v ∈ [0, 2048] and
argument x ∈ [1e-6, 1e5], with points on both sides of every regime switch.

Accuracy contract (float64): relative error of I_v(x) ≤ 1e-10, i.e.
|Δ log I_v| ≤ 1e-10 · max(1, |log I_v|) (the second form where log I_v itself is large, since
float64 cannot hold log I_v better than its own relative precision), and relative error of the
ratio ≤ 1e-10. Gradients in x: d/dx log I_v = R_v + v/x and dR_v/dx = 1 − R_v² − (2v+1)R_v/x.
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import numpyro_backend.ops as jops
import pyro_reparam_ext.ops as tops

REFERENCE = json.loads((Path(__file__).parent / "data" / "bessel_reference.json").read_text())
ROWS = REFERENCE["rows"]
V = np.array([r["v"] for r in ROWS])
X = np.array([r["x"] for r in ROWS])
LOG_IV = np.array([float(r["log_iv"]) for r in ROWS])
RATIO = np.array([float(r["ratio"]) for r in ROWS])
DRATIO = np.array([float(r["dratio"]) for r in ROWS])
RTOL = 1e-10


def _torch_values(v, x, dtype):
    vt = torch.tensor(v, dtype=dtype)
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    log_iv = tops.log_bessel_iv(vt, xt)
    (dlog,) = torch.autograd.grad(log_iv.sum(), xt)
    ratio = tops.bessel_iv_ratio(vt, xt)
    (dratio,) = torch.autograd.grad(ratio.sum(), xt)
    return [t.detach().double().numpy() for t in (log_iv, ratio, dlog, dratio)]


def _jax_values(v, x, dtype):
    vj, xj = jnp.asarray(v, dtype=dtype), jnp.asarray(x, dtype=dtype)
    log_iv = jax.jit(jops.log_bessel_iv)(vj, xj)
    ratio = jops.bessel_iv_ratio(vj, xj)
    dlog = jax.vmap(jax.grad(jops.log_bessel_iv, argnums=1))(vj, xj)
    dratio = jax.jit(jax.vmap(jax.grad(jops.bessel_iv_ratio, argnums=1)))(vj, xj)
    return [np.asarray(a, dtype=np.float64) for a in (log_iv, ratio, dlog, dratio)]


VALUES = {"pyro": _torch_values, "numpyro": _jax_values}


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_float64_matches_mpmath(backend):
    dtype = torch.float64 if backend == "pyro" else jnp.float64
    log_iv, ratio, dlog, dratio = VALUES[backend](V, X, dtype)
    log_err = np.abs(log_iv - LOG_IV) / np.maximum(1.0, np.abs(LOG_IV))
    assert log_err.max() <= RTOL, f"worst at v={V[log_err.argmax()]}, x={X[log_err.argmax()]}"
    ratio_err = np.abs(ratio - RATIO) / RATIO
    assert ratio_err.max() <= RTOL, f"worst at v={V[ratio_err.argmax()]}, x={X[ratio_err.argmax()]}"
    # gradient of log I_v: the identity evaluated on the reference ratio
    expected_dlog = RATIO + V / X
    np.testing.assert_allclose(dlog, expected_dlog, rtol=RTOL)
    # dR/dx = 1 − R² − (2v+1)R/x cancels to O(1/x²) at large x, so it inherits the ratio's
    # error: allow RTOL relative, plus the ratio's contract error RTOL·R propagated through
    # ∂(dR/dx)/∂R = −2R − (2v+1)/x, plus the float64 rounding of the three terms
    propagated = (2 * RATIO + (2 * V + 1) / X) * RTOL * RATIO
    rounding = 4 * np.finfo(np.float64).eps * (1 + RATIO**2 + (2 * V + 1) * RATIO / X)
    assert np.all(np.abs(dratio - DRATIO) <= RTOL * np.abs(DRATIO) + propagated + rounding)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_float32_is_finite_and_close(backend):
    dtype = torch.float32 if backend == "pyro" else jnp.float32
    log_iv, ratio, dlog, dratio = VALUES[backend](V, X, dtype)
    for values in (log_iv, ratio, dlog, dratio):
        assert np.all(np.isfinite(values))
    # the float32 contract is finiteness; a loose accuracy check (float32 eps = 1.2e-7 times
    # the O(100) rounding steps of the expansions) catches gross failures
    assert np.all(np.abs(log_iv - LOG_IV) <= 1e-5 * np.maximum(1.0, np.abs(LOG_IV)))
    assert np.all(np.abs(ratio - RATIO) <= 1e-4 * RATIO)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_zero_argument(backend):
    v = np.array([0.0, 0.5, 3.0])
    if backend == "pyro":
        x = torch.zeros(3)
        log_iv = tops.log_bessel_iv(torch.tensor(v), x).numpy()
        ratio = tops.bessel_iv_ratio(torch.tensor(v), x).numpy()
    else:
        log_iv = np.asarray(jops.log_bessel_iv(v, jnp.zeros(3)))
        ratio = np.asarray(jops.bessel_iv_ratio(v, jnp.zeros(3)))
    np.testing.assert_array_equal(log_iv, [0.0, -np.inf, -np.inf])
    np.testing.assert_array_equal(ratio, [0.0, 0.0, 0.0])


def test_broadcasting_dtype_and_scalar_order():
    x = torch.tensor([[1.0], [100.0]], dtype=torch.float32, requires_grad=True)
    v = torch.tensor([0.0, 20.0, 300.0])
    out = tops.log_bessel_iv(v, x)
    assert out.shape == (2, 3) and out.dtype == torch.float32
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    assert tops.bessel_iv_ratio(1.5, torch.ones(4, dtype=torch.float64)).dtype == torch.float64
    # JAX: vmap over the argument with a scalar order
    batched = jax.vmap(lambda xi: jops.bessel_iv_ratio(255.0, xi))(jnp.array([1.0, 1e3]))
    direct = jops.bessel_iv_ratio(255.0, jnp.array([1.0, 1e3]))
    np.testing.assert_allclose(batched, direct, rtol=1e-14)


def test_python_float_order_skips_regimes_without_changing_values():
    """A Python-number order selects the regimes on the host (Debye alone for v ≥ 10, series
    and Hankel alone below): the values must equal those of a tensor order, which evaluates
    every regime and picks per element, at the regime boundaries too."""
    x = torch.tensor([0.0, 1e-6, 0.5, 49.9, 50.1, 1e3, 1e5], dtype=torch.float64)
    for v in [0.0, 0.5, 7.0, 9.99, 10.0, 255.0]:
        vt = torch.tensor(v, dtype=torch.float64)
        for fn in (tops.log_bessel_iv, tops.bessel_iv_ratio):
            np.testing.assert_array_equal(fn(v, x).numpy(), fn(vt, x).numpy())
