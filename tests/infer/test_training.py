"""Training behaviour: the RELAX toy, resuming from a saved param store, site validation."""

import numpy as np
import pyro
import pyroapi
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import Adam

from pyro_reparam_ext.infer import REBAR_ELBO, RELAX_ELBO, ScoreFunction_ELBO
from tests.infer.models import BINARY_VAE, RELAX_TOY
from tests.infer.pyro_helpers import param_leaf, torch_inputs, warm_up_control_variates


@pytest.mark.parametrize("seed", [0, 1])
def test_rebar_toy_reaches_the_right_end(seed):
    # Grathwohl et al. (2018) §6.1: minimise E[(b − 0.499)²]; the optimum is θ → 0. The
    # gradient 0.002·θ(1 − θ) is tiny next to the cost (≈ 0.25). After a 100-step warm-up of
    # the control variate (η, λ), 500 Adam steps at lr 0.05 (logit θ can move by at most 25)
    # must bring θ below 0.05. RELAX_ELBO does not reach this in the same budget (measured,
    # one particle, 300 warm-up steps): with lr 0.05 on η, λ, ρ, Adam's ≈ lr-sized steps keep
    # φ jittering, rare large ĝ inflate θ's Adam second moment (RMS 0.039 against a final
    # standard deviation 0.004) and logit θ moves only −0.18 in 500 steps; with lr 0.002 on
    # φ, −1.0 (−4.1 / −2.2 after 2000 steps, 2 seeds); with lr 0.2 on θ, −6.8 / −1.2. REBAR
    # with K = 2 gets the cost's offset exactly from the leave-one-out baseline (η → 0).
    # test_variance.py checks the paper's toy claim (RELAX's variance ≪ REBAR's at K = 1).
    data, init = torch_inputs(RELAX_TOY)
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        pyro.set_rng_seed(seed)  # inside: entering pyro_backend reseeds the RNG (pyroapi)
        elbo = REBAR_ELBO(num_particles=2)
        warm_up_control_variates(elbo, RELAX_TOY.model, RELAX_TOY.guide, (data, init), 100, 0.05)
        svi = SVI(RELAX_TOY.model, RELAX_TOY.guide, Adam({"lr": 0.05}), loss=elbo)
        for _ in range(500):
            svi.step(data, init)
    theta = torch.sigmoid(param_leaf("theta_logit")).item()
    assert theta < 0.05, f"θ = {theta:.3g} after 500 steps"


def _train(svi, data, init, steps, seed):
    pyro.set_rng_seed(seed)
    return [svi.step(data, init) for _ in range(steps)]


def test_param_store_save_load_resumes_relax(tmp_path):
    # Train, save the param store and optimizer state, train on: trajectory A. Then reload
    # both into a fresh store, a fresh RELAX_ELBO and a fresh SVI and train on from the same
    # random state: trajectory B must be identical — the learned control-variate state
    # (temperature, η, network) comes back from the store, not from the estimator object.
    data, init = torch_inputs(BINARY_VAE)
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        optim = Adam({"lr": 0.02})
        svi = SVI(BINARY_VAE.model, BINARY_VAE.guide, optim, loss=RELAX_ELBO(max_plate_nesting=1))
        _train(svi, data, init, 20, seed=1)
        store = pyro.get_param_store()
        learned = {"reparam_ext.z.log_temperature", "reparam_ext.z.eta"}
        assert learned <= set(store.keys())
        assert any(k.startswith("reparam_ext.relax.z$$$") for k in store.keys())
        assert store.get_param("reparam_ext.z.eta").item() != 1.0  # it has been trained
        store.save(tmp_path / "params.pt")
        optim.save(tmp_path / "optim.pt")
        losses_a = _train(svi, data, init, 10, seed=2)
        state_a = {k: v.detach().clone() for k, v in store.items()}

        pyro.clear_param_store()
        pyro.get_param_store().load(tmp_path / "params.pt")
        optim_b = Adam({"lr": 0.02})
        optim_b.load(tmp_path / "optim.pt")
        svi_b = SVI(
            BINARY_VAE.model, BINARY_VAE.guide, optim_b, loss=RELAX_ELBO(max_plate_nesting=1)
        )
        losses_b = _train(svi_b, data, init, 10, seed=2)
        state_b = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    np.testing.assert_allclose(losses_b, losses_a, rtol=1e-12)
    assert set(state_a) == set(state_b)
    for name in state_a:
        torch.testing.assert_close(state_b[name], state_a[name], rtol=1e-12, atol=1e-12)


def _poisson_model():
    rate = pyro.param("rate", torch.tensor(2.0), constraint=pyro.distributions.constraints.positive)
    k = pyro.sample("k", pyro.distributions.Poisson(rate))
    pyro.sample("x", pyro.distributions.Normal(k, 1.0), obs=torch.tensor(3.0))


def _poisson_guide():
    rate = pyro.param(
        "q_rate", torch.tensor(1.5), constraint=pyro.distributions.constraints.positive
    )
    pyro.sample("k", pyro.distributions.Poisson(rate))


@pytest.mark.parametrize("make", [REBAR_ELBO, RELAX_ELBO], ids=["rebar", "relax"])
def test_unrelaxable_site_raises_naming_it(make):
    with pytest.raises(ValueError, match=r"site 'k' \(Poisson\).*ScoreFunction_ELBO"):
        make().differentiable_loss(_poisson_model, _poisson_guide)


def test_score_function_handles_any_site_type():
    # the documented fallback of baseline="optimal" for sites without logits
    for elbo in [ScoreFunction_ELBO(), ScoreFunction_ELBO(num_particles=3)]:
        loss = elbo.differentiable_loss(_poisson_model, _poisson_guide)
        (grad,) = torch.autograd.grad(loss, [param_leaf("q_rate")])
        assert torch.isfinite(grad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"baseline": "mean"},
            r"baseline must be one of \['optimal', 'loo', 'decaying_avg', 'none'\]",
        ),
        ({"baseline": "loo"}, "needs num_particles >= 2"),
        ({"baseline_decay": 1.0}, r"baseline_decay must be in \[0, 1\)"),
        ({"num_particles": 0}, "num_particles must be an integer >= 1"),
        ({"num_particles": 2, "vectorize_particles": False}, "needs vectorize_particles=True"),
    ],
)
def test_score_function_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScoreFunction_ELBO(**kwargs)


def test_relax_arguments():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        REBAR_ELBO(temperature=0.0)
    with pytest.raises(ValueError, match="control_variate must be None, an nn.Module"):
        RELAX_ELBO(control_variate=3)


def test_unknown_site_option_names_site_and_key():
    def guide():
        pyro.sample(
            "b",
            pyro.distributions.Bernoulli(pyro.param("p", torch.tensor(0.3))),
            infer={"reparam_ext": {"temprature": 0.1}},
        )

    def model():
        pyro.sample("b", pyro.distributions.Bernoulli(0.5))

    for elbo in [ScoreFunction_ELBO(), RELAX_ELBO()]:
        with pytest.raises(ValueError, match=r"site 'b'.*\['temprature'\]"):
            elbo.differentiable_loss(model, guide)


def test_custom_control_variate_module_is_registered():
    # coordinate-wise input of a 3-decision Bernoulli element: the decision's relaxed value
    # (1), the element's logits (3), the other decisions' values (3), a one-hot of j (3)
    data, init = torch_inputs(BINARY_VAE)
    net = torch.nn.Sequential(torch.nn.Linear(10, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    net = net.double()
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        elbo = RELAX_ELBO(
            max_plate_nesting=1, control_variate=torch.nn.Sequential(net, torch.nn.Flatten(-2))
        )
        loss = elbo.differentiable_loss(BINARY_VAE.model, BINARY_VAE.guide, data, init)
    assert any(k.startswith("reparam_ext.relax$$$") for k in pyro.get_param_store().keys())
    (grad,) = torch.autograd.grad(loss, [net[0].weight])
    assert grad.abs().sum() > 0  # the network gets the variance gradient


@pytest.mark.parametrize(
    "make",
    [
        lambda: ScoreFunction_ELBO(max_plate_nesting=1),
        lambda: ScoreFunction_ELBO(num_particles=3, max_plate_nesting=1),
        lambda: REBAR_ELBO(num_particles=2, max_plate_nesting=1),
        lambda: RELAX_ELBO(max_plate_nesting=1),
    ],
    ids=["optimal-K1", "optimal-K3", "rebar-K2", "relax-K1"],
)
def test_float32_stays_float32_and_finite(make):
    # tensors created inside the estimators (noise, running state, η, λ, the network) take
    # the dtype of the inputs
    data = {"x": torch.tensor(BINARY_VAE.make_data()["x"], dtype=torch.float32)}
    data["prior_logits"] = torch.zeros(3, dtype=torch.float32)
    init = {k: torch.tensor(v, dtype=torch.float32) for k, v in BINARY_VAE.init_params.items()}
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        loss = make().differentiable_loss(BINARY_VAE.model, BINARY_VAE.guide, data, init)
    store = pyro.get_param_store()
    assert loss.dtype == torch.float32
    assert all(store.get_param(name).dtype == torch.float32 for name in store.keys())
    leaves = [param_leaf(name) for name in BINARY_VAE.init_params]
    for grad in torch.autograd.grad(loss, leaves):
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
