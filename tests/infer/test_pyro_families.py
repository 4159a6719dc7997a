"""The discrete-family objects of ``pyro_reparam_ext.infer.relaxation`` and ``sites.family_of``.

Every estimator asks a site's family for its logits, scores, noise, threshold and continuous
extension; these tests check each method against torch's own distributions (log-densities
and their autograd gradients) and against the sampling identities REBAR/RELAX rely on.
"""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

from pyro_reparam_ext.infer.particles import relaxed_log_prob
from pyro_reparam_ext.infer.relaxation import (
    FAMILIES,
    BernoulliRelaxation,
    CategoricalRelaxation,
    OneHotCategoricalRelaxation,
)
from pyro_reparam_ext.infer.sites import check_relaxable, family_of, has_mask

LOGITS = torch.tensor([[0.3, -1.2, 2.0], [-0.5, 0.0, 4.0]], dtype=torch.float64)


def _sites():
    """(family class, distribution with batch (2,) and decisions (3,), a sample)."""
    bernoulli = dist.Bernoulli(logits=LOGITS).to_event(1)
    categorical = dist.Categorical(logits=LOGITS.unsqueeze(-2).expand(2, 3, 3)).to_event(1)
    one_hot = dist.OneHotCategorical(logits=LOGITS.unsqueeze(-2).expand(2, 3, 3)).to_event(1)
    return [
        (BernoulliRelaxation, bernoulli),
        (CategoricalRelaxation, categorical),
        (OneHotCategoricalRelaxation, one_hot),
    ]


SITES = _sites()
IDS = [family.name for family, _ in SITES]


def test_families_attributes():
    assert [f.name for f in FAMILIES] == ["bernoulli", "one_hot_categorical", "categorical"]
    assert [f.category_dims for f in FAMILIES] == [0, 1, 1]
    assert [f.replayable for f in FAMILIES] == [True, True, False]


@pytest.mark.parametrize("family_type, fn", SITES, ids=IDS)
def test_family_of_looks_through_wrappers(family_type, fn):
    wrapped = fn.expand((4, 2)).mask(torch.tensor(True))
    family, base = family_of(wrapped)
    assert type(family) is family_type
    assert type(base) is type(family_of(fn)[1])
    assert has_mask(wrapped) and not has_mask(fn)
    assert family.decision_shape(wrapped) == (3,)
    assert family.logits(wrapped, base).shape[:3] == (4, 2, 3)


def test_family_of_other_distributions_is_none():
    assert family_of(dist.Normal(0.0, 1.0).to_event(0))[0] is None
    assert family_of(dist.Poisson(torch.ones(3)).to_event(1))[0] is None


@pytest.mark.parametrize("family_type, fn", SITES, ids=IDS)
def test_log_prob_at_hard_values_is_the_distribution_log_prob(family_type, fn):
    family, base = family_of(fn)
    value = fn.sample()
    logits = family.logits(fn, base)
    expected = fn.log_prob(value)
    torch.testing.assert_close(relaxed_log_prob(fn, family.as_relaxed(value, logits)), expected)
    per_decision = family.decision_log_prob(logits, family.as_relaxed(value, logits))
    torch.testing.assert_close(per_decision.sum(-1), expected)


@pytest.mark.parametrize("family_type, fn", SITES, ids=IDS)
def test_score_is_the_gradient_of_log_prob(family_type, fn):
    family, base = family_of(fn)
    value = fn.sample()
    logits = family.logits(fn, base).detach().requires_grad_()
    log_q = family.decision_log_prob(logits, family.as_relaxed(value, logits)).sum()
    (expected,) = torch.autograd.grad(log_q, logits)
    torch.testing.assert_close(family.score(logits.detach(), value), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("family_type, fn", SITES, ids=IDS)
def test_conditional_draw_keeps_the_outcome(family_type, fn, dtype):
    # extreme-but-valid logits included: z̃ must still threshold to the sampled value b
    torch.manual_seed(0)
    family, base = family_of(fn)
    logits = (
        (20.0 * family.logits(fn, base))
        .to(dtype)
        .expand((500,) + fn.batch_shape + (3,) * (1 + family.category_dims))
    )
    u, v = family.noise(logits)
    hard = family.hard(family.relaxed_logits(logits, u))
    z_tilde = family.conditional_relaxed_logits(logits, family.as_relaxed(hard, logits), v)
    assert torch.isfinite(z_tilde).all()
    assert torch.equal(family.hard(z_tilde), hard)


@pytest.mark.parametrize("family_type, fn", SITES, ids=IDS)
def test_threshold_of_relaxed_logits_has_the_site_distribution(family_type, fn):
    # N draws per decision and category: the frequency of each outcome has standard error
    # sqrt(p(1 - p) / N); 5 SE over these 18-30 cells gives a false-alarm rate below 2e-5.
    torch.manual_seed(1)
    num = 20000
    family, base = family_of(fn)
    logits = family.logits(fn, base)
    u, _ = family.noise(logits.expand((num,) + logits.shape))
    value = family.as_relaxed(family.hard(family.relaxed_logits(logits, u)), logits)
    frequency = value.mean(0)
    probs = torch.sigmoid(logits) if family.category_dims == 0 else torch.softmax(logits, -1)
    se = (probs * (1 - probs) / num).sqrt()
    assert ((frequency - probs).abs() <= 5 * se + 1e-12).all()


def test_stick_breaking_pieces():
    # one-hot and integer Categorical share the binaries; Bernoulli is its own binary
    logits = LOGITS
    order = CategoricalRelaxation.category_order(logits)
    binaries = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=logits.dtype)
    index = CategoricalRelaxation.value_from_binaries(binaries, order)
    assert torch.equal(index, torch.stack([order[0, 1], order[1, 2]]))
    one_hot = OneHotCategoricalRelaxation.value_from_binaries(binaries, order)
    assert torch.equal(one_hot.argmax(-1), index)
    reached = CategoricalRelaxation.reached(binaries)
    assert reached.tolist() == [[True, True], [True, True]]
    assert not CategoricalRelaxation.reached(torch.tensor([[1.0, 0.0]]))[0, 1]
    assert BernoulliRelaxation.category_order(logits) is None
    assert torch.equal(BernoulliRelaxation.binary_logits(logits, None), logits)


def test_check_relaxable_names_the_site():
    import pyro
    import pyro.poutine as poutine

    def guide():
        pyro.sample("b", dist.Bernoulli(0.3))
        pyro.sample("k", dist.Poisson(2.0))

    trace = poutine.trace(guide).get_trace()
    trace.compute_score_parts()
    with pytest.raises(ValueError, match=r"REBAR_ELBO cannot relax guide site 'k' \(Poisson\)"):
        check_relaxable(trace, "REBAR_ELBO")
