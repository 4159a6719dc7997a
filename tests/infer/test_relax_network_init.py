"""RELAX's default control-variate network starts from the same distribution on both backends.

Pyro's ``ControlVariateNet`` keeps torch ``nn.Linear``'s default init for its hidden layer
(weights and biases uniform in ±1/√fan_in) and zeros its output layer; NumPyro's
``mlp_control_variate`` must draw the same. Checked per backend: the output layer is exactly
zero, every hidden weight and bias lies within ±1/√fan_in, and the weights and the biases
pass a Kolmogorov–Smirnov test against U(−1/√fan_in, 1/√fan_in). Four KS tests at a
family-wise false-alarm rate of 1e-3 (Bonferroni): each fails when p < 2.5e-4.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import torch
from scipy import stats

from numpyro_backend.infer.relax import mlp_control_variate
from pyro_reparam_ext.infer.relax import ControlVariateNet
from tests.stats import FAMILY_FALSE_ALARM_RATE

EVENT_SIZE = 7  # e.g. coordinate-wise, 2 decisions of 1 logit: k + 2·size + D = 1 + 4 + 2
HIDDEN = 32
NUM_NETS = 20  # 4480 weights and 640 biases per backend
NUM_TESTS = 4


def _pyro_layers() -> dict[str, np.ndarray]:
    torch.manual_seed(0)
    nets = [ControlVariateNet(EVENT_SIZE, HIDDEN) for _ in range(NUM_NETS)]
    return {
        "w1": np.concatenate([n.hidden.weight.detach().numpy().ravel() for n in nets]),
        "b1": np.concatenate([n.hidden.bias.detach().numpy().ravel() for n in nets]),
        "output": np.concatenate(
            [
                np.append(n.output.weight.detach().numpy(), n.output.bias.detach().numpy())
                for n in nets
            ]
        ),
    }


def _numpyro_layers() -> dict[str, np.ndarray]:
    init_fn, _ = mlp_control_variate(HIDDEN)
    keys = jax.random.split(jax.random.PRNGKey(0), NUM_NETS)
    nets = [init_fn(key, EVENT_SIZE, np.float64) for key in keys]
    return {
        "w1": np.concatenate([np.ravel(n["w1"]) for n in nets]),
        "b1": np.concatenate([np.ravel(n["b1"]) for n in nets]),
        "output": np.concatenate([np.append(n["w2"], n["b2"]) for n in nets]),
    }


def test_relax_networks_start_from_the_same_distribution():
    bound = 1.0 / math.sqrt(EVENT_SIZE)
    uniform = stats.uniform(loc=-bound, scale=2 * bound).cdf
    for backend, layers in (("Pyro", _pyro_layers()), ("NumPyro", _numpyro_layers())):
        assert np.all(layers["output"] == 0.0), f"{backend}: output layer not zero"
        for name in ("w1", "b1"):
            values = layers[name]
            assert np.all(np.abs(values) <= bound), f"{backend} {name}: outside ±1/√fan_in"
            p = stats.kstest(values, uniform).pvalue
            assert p > FAMILY_FALSE_ALARM_RATE / NUM_TESTS, f"{backend} {name}: KS p = {p:.2e}"
