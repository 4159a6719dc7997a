"""Test configuration shared by both backends.

float64 everywhere (torch default dtype and JAX x64), argument validation on, fixed seeds.
Warnings are turned into errors by ``filterwarnings = error`` in pyproject.toml.
"""

import jax
import numpy as np
import pyro
import pytest
import torch

jax.config.update("jax_enable_x64", True)
torch.set_default_dtype(torch.float64)
# The tests' tensors are small: intra-op thread hand-offs cost more than they save, and on a
# busy 2-core machine they make small torch ops 10-1000x slower.
torch.set_num_threads(1)

import numpyro  # noqa: E402  (after the x64 switch)

pyro.enable_validation(True)
numpyro.enable_validation(True)


@pytest.fixture(autouse=True)
def fixed_seeds():
    """Every test starts from the same RNG state on both backends."""
    pyro.set_rng_seed(0)  # seeds torch, numpy and random
    np.random.seed(0)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
