"""Generic tests run over every entry of the shared case table, on both backends.

Family-specific behaviour (gradients, numerics at extreme parameters) lives in the family's
own test module; what holds for every distribution lives here.
"""

import numpy as np
import pytest
import torch
from numpyro.distributions import gof as numpyro_gof
from pyro.distributions.testing import gof as pyro_gof

from tests.backends import BACKENDS
from tests.cases import ALL_CASES

# Goodness-of-fit tests return a p-value; a correct sampler fails with probability
# GOF_ALPHA per case (seeds are fixed, so a passing run stays passing).
GOF_ALPHA = 1e-3
NUM_SAMPLES = 200

case_params = [pytest.param(c, id=c.id) for c in ALL_CASES]
backend_params = [pytest.param(b, id=b.name) for b in BACKENDS]


@pytest.mark.parametrize("backend", backend_params)
@pytest.mark.parametrize("case", case_params)
def test_log_prob_matches_reference(case, backend):
    dist = backend.make(case.dist_name, case.params)
    value = backend.sample(dist, NUM_SAMPLES, seed=1)
    actual = backend.log_prob(dist, value)
    expected = case.reference_log_prob(value, **case.params)
    assert actual.shape == value.shape[: value.ndim - len(dist.event_shape)]
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", case_params)
def test_log_prob_agrees_across_backends(case):
    pyro_backend, numpyro_backend = BACKENDS
    pyro_dist = pyro_backend.make(case.dist_name, case.params)
    numpyro_dist = numpyro_backend.make(case.dist_name, case.params)
    value = pyro_backend.sample(pyro_dist, NUM_SAMPLES, seed=2)
    np.testing.assert_allclose(
        pyro_backend.log_prob(pyro_dist, value),
        numpyro_backend.log_prob(numpyro_dist, value),
        rtol=1e-10,
        atol=1e-10,
    )


@pytest.mark.parametrize("backend", backend_params)
@pytest.mark.parametrize("case", [c for c in case_params if c.values[0].gof])
def test_sample_goodness_of_fit(case, backend):
    dist = backend.make(case.dist_name, case.params)
    assert dist.batch_shape == (), "gof cases must be unbatched"
    samples = backend.sample(dist, case.gof_num_samples, seed=3)
    log_density = backend.log_prob(dist, samples)
    if case.gof_log_density_correction is not None:
        log_density = log_density + case.gof_log_density_correction(samples)
    points = case.gof_points(samples) if case.gof_points is not None else samples
    if backend.name == "pyro":
        p_value = pyro_gof.auto_goodness_of_fit(
            torch.as_tensor(points), torch.as_tensor(np.exp(log_density)), dim=case.gof_dim
        )
    else:
        p_value = numpyro_gof.auto_goodness_of_fit(
            np.asarray(points), np.exp(log_density), dim=case.gof_dim
        )
    assert float(p_value) > GOF_ALPHA, f"gof p-value {float(p_value):.3g}"


@pytest.mark.parametrize("backend", backend_params)
@pytest.mark.parametrize("case", case_params)
def test_expand_and_shapes(case, backend):
    dist = backend.make(case.dist_name, case.params)
    new_batch_shape = (3, 2) + tuple(dist.batch_shape)
    expanded = dist.expand(new_batch_shape)
    assert tuple(expanded.batch_shape) == new_batch_shape
    assert tuple(expanded.event_shape) == tuple(dist.event_shape)
    value = backend.sample(expanded, 4, seed=4)
    assert value.shape == (4,) + new_batch_shape + tuple(dist.event_shape)
    assert backend.log_prob(expanded, value).shape == (4,) + new_batch_shape
    assert np.all(np.isfinite(backend.log_prob(expanded, value)))


@pytest.mark.parametrize("backend", backend_params)
@pytest.mark.parametrize("case", case_params)
def test_infer_shapes(case, backend):
    dist = backend.make(case.dist_name, case.params)
    arg_shapes = {k: tuple(np.shape(v)) for k, v in case.params.items() if not isinstance(v, int)}
    if case.infer_shapes_takes_ints:
        arg_shapes.update({k: v for k, v in case.params.items() if isinstance(v, int)})
    batch_shape, event_shape = type(dist).infer_shapes(**arg_shapes)
    assert tuple(batch_shape) == tuple(dist.batch_shape)
    assert tuple(event_shape) == tuple(dist.event_shape)


invalid_params = [
    pytest.param(case, override, arg_name, id=f"{case.id}-{arg_name}-{i}")
    for case in ALL_CASES
    for i, (override, arg_name) in enumerate(case.invalid_params)
]


@pytest.mark.parametrize("backend", backend_params)
@pytest.mark.parametrize("case,override,arg_name", invalid_params)
def test_invalid_params_raise_value_error(case, override, arg_name, backend):
    params = {**case.params, **override}
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(ValueError, match=arg_name):
        backend.make(case.dist_name, params, validate_args=True)
