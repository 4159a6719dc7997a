"""RELAX's default control-variate network r_ρ starts the same way on both backends.

Pyro's :class:`~pyro_reparam_ext.infer.relax.ControlVariateNet` and NumPyro's
:func:`~numpyro_backend.infer.relax.mlp_control_variate` (the default of each backend's
``RELAX_ELBO``): hidden weights and biases uniform in ±1/√event_size (torch ``nn.Linear``'s
default), output layer 0, so r_ρ is the zero function at the start.

The hidden weights (64 × 32 = 2048) and biases together (2080 values, scaled by √64 to
U(−1, 1)) are checked by a one-sample Kolmogorov–Smirnov test against U(−1, 1). Threshold:
the two tests (one per backend) form a family held to the suite's false-alarm rate α = 1e-3
(tests/stats.py); by Bonferroni each may reject with probability α / 2, so the statistic D must
stay below the (1 − α/2) quantile of the exact null distribution of D for n = 2080
(``scipy.stats.kstwo``), D_c ≈ 0.045. Power: the former NumPyro init, N(0, 0.1²) weights and
zero biases, is 0.10 from U(−1, 1) in D after the same scaling, 2.3 D_c.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import torch
from scipy import stats

from numpyro_backend.infer import RELAX_ELBO as NumPyroRELAX
from pyro_reparam_ext.infer import RELAX_ELBO as PyroRELAX
from pyro_reparam_ext.infer.relax import ControlVariateNet
from tests.stats import FAMILY_FALSE_ALARM_RATE

EVENT_SIZE = 64
HIDDEN_DIM = 32  # the default hidden_dim of both backends' RELAX_ELBO
NUM_TESTS = 2  # one per backend


def _assert_uniform(weights, biases) -> None:
    values = np.concatenate([np.ravel(weights), np.ravel(biases)]).astype(np.float64)
    assert values.size == (EVENT_SIZE + 1) * HIDDEN_DIM
    scaled = values * math.sqrt(EVENT_SIZE)  # U(-1/√fan_in, 1/√fan_in) -> U(-1, 1)
    statistic = stats.kstest(scaled, stats.uniform(-1.0, 2.0).cdf).statistic
    threshold = stats.kstwo.isf(FAMILY_FALSE_ALARM_RATE / NUM_TESTS, values.size)
    assert statistic < threshold, (statistic, threshold)


def test_pyro_default_network_init():
    torch.manual_seed(0)
    assert PyroRELAX().hidden_dim == HIDDEN_DIM
    net = ControlVariateNet(EVENT_SIZE, HIDDEN_DIM)  # what RELAX_ELBO builds by default
    assert net.hidden.weight.shape == (HIDDEN_DIM, EVENT_SIZE)
    _assert_uniform(net.hidden.weight.detach().numpy(), net.hidden.bias.detach().numpy())
    for param in (net.output.weight, net.output.bias):
        assert torch.all(param == 0)
    x = torch.randn(5, EVENT_SIZE)
    out = net(x)
    assert out.shape == (5,) and torch.all(out == 0)


def test_numpyro_default_network_init():
    elbo = NumPyroRELAX()
    assert elbo.hidden_dim == HIDDEN_DIM
    init_fn, apply_fn = elbo.control_variate  # the default: mlp_control_variate(hidden_dim)
    params = init_fn(jax.random.PRNGKey(0), EVENT_SIZE, jnp.float64)
    assert params["w1"].shape == (EVENT_SIZE, HIDDEN_DIM)
    _assert_uniform(params["w1"], params["b1"])
    for name in ("w2", "b2"):
        assert jnp.all(params[name] == 0)
    x = jax.random.normal(jax.random.PRNGKey(1), (5, EVENT_SIZE))
    out = apply_fn(params, x)
    assert out.shape == (5,) and jnp.all(out == 0)
