"""Batched coordinate-wise replays of Pyro's REBAR/RELAX equal the one-copy-per-replay loop.

With ``coordinatewise=True`` the 2·D relaxed values of a site are replayed at once along an
extra batch dim (``relax.relaxed_costs``); the loop over copies is the fallback. Both must
give the same estimate from the same random state — not just in distribution — so the test
compares the gradients of one ``differentiable_loss`` call bit-for-bit up to float rounding.
The unbiasedness of the estimator itself is checked in test_unbiasedness.py.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyroapi
import pytest
import torch

from pyro_reparam_ext.infer import REBAR_ELBO, RELAX_ELBO, relax
from pyro_reparam_ext.infer.relaxation import BernoulliRelaxation, OneHotCategoricalRelaxation
from tests.infer.models import BINARY_VAE, EVENT_SITES
from tests.infer.pyro_helpers import torch_inputs


def _custom_network(site_name, input_size):
    return torch.nn.Sequential(torch.nn.Linear(input_size, 4), torch.nn.Tanh(), _Last())


class _Last(torch.nn.Module):
    def forward(self, x):
        return x.sum(-1)


ESTIMATORS = {
    "rebar": lambda: REBAR_ELBO(2, max_plate_nesting=1),
    "relax": lambda: RELAX_ELBO(2, max_plate_nesting=1),
    "relax-custom-net": lambda: RELAX_ELBO(2, max_plate_nesting=1, control_variate=_custom_network),
    "rebar-joint": lambda: REBAR_ELBO(2, max_plate_nesting=1, coordinatewise=False),
}


def _gradients(make_elbo, model, guide, args, seed):
    pyro.set_rng_seed(seed)
    elbo = make_elbo()
    loss = elbo.differentiable_loss(model, guide, *args)
    store = pyro.get_param_store()
    names = sorted(store.keys())
    grads = torch.autograd.grad(loss, [store.get_param(n).unconstrained() for n in names])
    return loss.detach(), dict(zip(names, grads, strict=True))


def _compare(make_elbo, model, guide, args, monkeypatch):
    pyro.clear_param_store()
    _gradients(make_elbo, model, guide, args, seed=0)  # registers η, λ, networks
    state = pyro.get_param_store().get_state()
    batched = _gradients(make_elbo, model, guide, args, seed=1)
    with monkeypatch.context() as patch:
        patch.setattr(relax.ParticleRun, "can_batch_replays", lambda self, target: False)
        pyro.get_param_store().set_state(state)
        looped = _gradients(make_elbo, model, guide, args, seed=1)
    torch.testing.assert_close(batched[0], looped[0], rtol=1e-12, atol=1e-12)
    assert batched[1].keys() == looped[1].keys()
    for name in batched[1]:
        torch.testing.assert_close(batched[1][name], looped[1][name], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("entry", [BINARY_VAE, EVENT_SITES], ids=lambda e: e.name)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_batched_replays_equal_looped(entry, estimator, monkeypatch):
    data, init = torch_inputs(entry)
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        _compare(ESTIMATORS[estimator], entry.model, entry.guide, (data, init), monkeypatch)


def test_program_that_does_not_broadcast_falls_back(monkeypatch):
    """A model whose code assumes its batch shape (a reshape) replays copies one by one."""
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])

    def model():
        with pyro.plate("data", 2):
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(3)).to_event(1))
            flat = z.reshape(2, 2, 3)  # (particles, data, latents): no room for copies
            pyro.sample("x", dist.Bernoulli(logits=2.0 * flat - 1.0).to_event(1), obs=x)

    def guide():
        logits = pyro.param("q", torch.zeros(2, 3))
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Bernoulli(logits=logits).to_event(1))

    failures = []
    batched_replay_cost = relax._batched_replay_cost

    def spy(*args):
        try:
            return batched_replay_cost(*args)
        except RuntimeError:
            failures.append(args[1])
            raise

    monkeypatch.setattr(relax, "_batched_replay_cost", spy)
    _compare(lambda: REBAR_ELBO(2, max_plate_nesting=1), model, guide, (), monkeypatch)
    assert failures and set(failures) == {"z"}


@pytest.mark.parametrize(
    "family, decisions",
    [(BernoulliRelaxation(), (5,)), (OneHotCategoricalRelaxation(), (2, 3))],
    ids=lambda x: getattr(x, "name", None),
)
def test_factored_network_equals_network_of_input(family, decisions):
    batch = (3, 4)
    shape = batch + decisions
    logits = torch.randn(shape)
    points = torch.randn((2,) + shape)
    hard = family.hard(family.relaxed_logits(logits, family.noise(logits)[0]))
    masks = relax.decision_masks(family, logits, batch, True)
    inputs = relax.network_input(family, points, logits, hard, masks, batch)
    net = relax.ControlVariateNet(inputs.shape[-1], hidden_dim=8)
    with torch.no_grad():
        for param in net.parameters():
            param.normal_()
    factored = relax.factored_network(net, family, points, logits, hard, masks, batch)
    torch.testing.assert_close(factored, net(inputs), rtol=1e-12, atol=1e-12)
    # parameters held constant (the θ-part of a step): same value and gradient in the points,
    # the derivative computed in the forward pass, tanh(a) as 2σ(2a) − 1
    points.requires_grad_()
    weights = torch.randn(factored.shape)
    for subset in (masks, masks[torch.tensor([1, 0])]):
        inputs = relax.network_input(family, points, logits, hard, subset, batch)
        linearized = relax.factored_network(
            net, family, points, logits, hard, subset, batch, detach=True
        )
        expected = net(inputs)
        torch.testing.assert_close(linearized, expected, rtol=1e-12, atol=1e-12)
        (grad,) = torch.autograd.grad((weights[:, : len(subset)] * linearized).sum(), points)
        (expected_grad,) = torch.autograd.grad((weights[:, : len(subset)] * expected).sum(), points)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
