"""The NumPyro family objects of ``numpyro_backend/infer/relaxation.py`` and ``sites.py``;
REBAR/RELAX at a masked site.

For each of Bernoulli, OneHotCategorical and Categorical: the contract's attributes; the
family found through ``to_event`` / ``expand`` / ``mask`` wrappers; the conditional sampler
z̃ ~ p(z | b) has H(z̃) = b exactly, and averaged over b ~ H(z) it has the law of z itself (the
identity REBAR's unbiasedness rests on; a Kolmogorov–Smirnov test); the relaxation σ_λ tends
to H as λ → 0; the continuous-extension log-density equals the distribution's log_prob at hard
values; the score equals ``jax.grad`` of the distribution's log_prob. Masked Bernoulli sites
get coordinate-wise control variates (as on Pyro), and their gradient is unbiased.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

from numpyro_backend.distributions.discrete import BernoulliLogits, OneHotCategorical
from numpyro_backend.infer import REBAR_ELBO, RELAX_ELBO, gradient_variance
from numpyro_backend.infer.relaxation import (
    FAMILIES,
    BernoulliRelaxation,
    CategoricalRelaxation,
    OneHotCategoricalRelaxation,
)
from numpyro_backend.infer.sites import family_of

LOGITS = np.array([[0.3, -1.2, 2.0, 0.1], [-0.5, -0.5, 0.4, -3.0], [0.0, 6.0, -6.0, 1.5]])


def _make_bernoulli(logits):
    return BernoulliLogits(logits=logits)


def _make_one_hot(logits):
    return OneHotCategorical(logits=logits)


def _make_categorical(logits):
    return dist.CategoricalLogits(logits=logits)


#: (family, distribution constructor from logits (K = 4 categories or 4 decisions), id)
CASES = [
    pytest.param(FAMILIES[0], _make_bernoulli, id="bernoulli"),
    pytest.param(FAMILIES[1], _make_one_hot, id="one_hot_categorical"),
    pytest.param(FAMILIES[2], _make_categorical, id="categorical"),
]


def test_contract_attributes():
    names = [(f.name, f.category_dims, f.replayable, type(f)) for f in FAMILIES]
    assert names == [
        ("bernoulli", 0, True, BernoulliRelaxation),
        ("one_hot_categorical", 1, True, OneHotCategoricalRelaxation),
        ("categorical", 1, False, CategoricalRelaxation),
    ]


@pytest.mark.parametrize("family, make", CASES)
def test_family_of_looks_through_wrappers(family, make):
    base = make(jnp.asarray(LOGITS))
    batch_shape = tuple(base.batch_shape)
    mask = jnp.array([True, False, True]).reshape((3,) + (1,) * (len(batch_shape) - 1))
    # event dims (3, 4) of decisions for Bernoulli, (3,) decisions of 4 categories otherwise
    wrapped = base.expand((2,) + batch_shape).to_event(2 - family.category_dims)
    for fn in (base, base.to_event(1), base.mask(mask), wrapped, wrapped.mask(True)):
        found, found_base = family_of(fn)
        assert found is family and found_base is base
        logits = family.logits(fn, found_base)
        categories = LOGITS.shape[-1:] if family is FAMILIES[2] else ()
        assert logits.shape == tuple(fn.batch_shape) + tuple(fn.event_shape) + categories
    expected = {"bernoulli": (3, 4), "one_hot_categorical": (3,), "categorical": (3,)}
    assert family.decision_shape(wrapped) == expected[family.name]


def test_family_of_other_distributions_is_none():
    assert family_of(dist.Poisson(2.0).to_event(0))[0] is None
    assert family_of(dist.Normal(0.0, 1.0).expand((3,)).to_event(1))[0] is None
    assert family_of(dist.BernoulliProbs(0.3).mask(True))[0] is FAMILIES[0]
    assert family_of(dist.CategoricalProbs(jnp.ones(3) / 3))[0] is FAMILIES[2]


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _draws(family, logits, num, seed=0):
    """(z, b, z̃) for ``num`` noise draws at every logit (one compiled call: eager JAX
    compiles every primitive at every new shape, which dominates these tests' time)."""
    logits = jnp.broadcast_to(logits, (num,) + logits.shape)
    u, v = family.noise(jax.random.PRNGKey(seed), logits)
    z = family.relaxed_logits(logits, u)
    hard = family.hard(z)
    z_tilde = family.conditional_relaxed_logits(logits, family.as_relaxed(hard, logits), v)
    return z, hard, z_tilde


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("family, make", CASES)
def test_conditional_sample_has_the_same_hard_value(family, make, dtype):
    # extreme-but-valid logits included: ±6 in LOGITS, ±40 here (σ(−40) ≈ 4e-18 < float32 eps)
    logits = jnp.concatenate([jnp.asarray(LOGITS), jnp.array([[40.0, -40.0, 0.0, 20.0]])])
    z, hard, z_tilde = _draws(family, logits.astype(dtype), 2000)
    assert z.dtype == z_tilde.dtype == dtype
    assert bool(jnp.all(jnp.isfinite(z))) and bool(jnp.all(jnp.isfinite(z_tilde)))
    np.testing.assert_array_equal(family.hard(z_tilde), hard)


@pytest.mark.parametrize("family, make", CASES)
def test_conditional_sample_averaged_over_b_has_the_law_of_z(family, make):
    # z̃ drawn from p(z | b) with b = H(z) has, marginally, the law of z: Logistic(ℓ, 1) per
    # Bernoulli logit, log π_k + Gumbel(0, 1) per category. A KS test per logit coordinate
    # (12 coordinates, 20000 draws each, z̃'s noise v independent of z's u). False alarm:
    # the family of 12 × 3 = 36 coordinates is held to α = 1e-3 by Bonferroni, each
    # coordinate's p-value compared with 1e-3 / 36.
    _, _, z_tilde = _draws(family, jnp.asarray(LOGITS), 20000, seed=1)
    samples = np.asarray(z_tilde).reshape(20000, -1)
    if family is FAMILIES[0]:
        locs, law = LOGITS.reshape(-1), stats.logistic
    else:
        locs, law = np.asarray(jax.nn.log_softmax(LOGITS, -1)).reshape(-1), stats.gumbel_r
    p_values = [stats.kstest(samples[:, i], law(loc=loc).cdf).pvalue for i, loc in enumerate(locs)]
    assert min(p_values) > 1e-3 / 36


@pytest.mark.parametrize("family, make", CASES)
def test_soft_tends_to_hard(family, make):
    z, hard, _ = _draws(family, jnp.asarray(LOGITS), 200)

    @jax.jit
    def soft_where_clear(z, hard):
        # where z is farther than 0.01 from the threshold (an argmax tie), σ_λ(z) at
        # λ = 1e-4 is H(z) to within e^{−100}
        if family is FAMILIES[0]:
            clear = jnp.abs(z) > 0.01
        else:
            top2 = jnp.sort(z, -1)[..., -2:]
            clear = jnp.broadcast_to((top2[..., 1] - top2[..., 0] > 0.01)[..., None], z.shape)
        relaxed_hard = family.as_relaxed(hard, z)
        return jnp.where(clear, family.soft(z, 1e-4), relaxed_hard), relaxed_hard

    soft, relaxed_hard = soft_where_clear(z, hard)
    np.testing.assert_allclose(soft, relaxed_hard, atol=1e-12)
    assert soft.shape == z.shape


@pytest.mark.parametrize("family, make", CASES)
def test_log_prob_is_the_distributions_at_hard_values(family, make):
    logits = jnp.asarray(LOGITS)
    _, hard, _ = _draws(family, logits, 50)

    @jax.jit
    def log_probs(logits):
        relaxed = family.as_relaxed(hard, logits)
        return (
            make(logits).log_prob(hard),
            family.log_prob(logits, relaxed),
            family.decision_log_prob(logits, relaxed),
        )

    expected, extension, per_decision = log_probs(logits)
    np.testing.assert_allclose(extension, expected, rtol=1e-12)
    np.testing.assert_allclose(per_decision, expected, rtol=1e-12)


@pytest.mark.parametrize("family, make", CASES)
def test_score_is_the_gradient_of_log_prob(family, make):
    # logits = 0 included: where NumPyro's own BernoulliLogits has the wrong gradient
    logits = jnp.asarray(LOGITS)
    _, hard, _ = _draws(family, logits, 20)

    @jax.jit
    def scores(logits):
        def log_prob(logits):
            return jnp.sum(make(logits).log_prob(hard))

        score = jnp.broadcast_to(family.score(logits, hard), hard.shape[:1] + logits.shape)
        return score.sum(0), jax.grad(log_prob)(logits)

    np.testing.assert_allclose(*scores(logits), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family, make", CASES)
def test_noise_is_uniform_inside_the_interval(family, make):
    logits = jnp.zeros((1000, 4), jnp.float32)
    u, v = family.noise(jax.random.PRNGKey(2), logits)
    assert u.shape == v.shape == logits.shape and u.dtype == v.dtype == jnp.float32
    assert bool(jnp.all((u > 0) & (u < 1) & (v > 0) & (v < 1)))
    assert not bool(jnp.any(u == v))  # independent streams


@pytest.mark.parametrize("family", FAMILIES[1:], ids=lambda f: f.name)
def test_stick_breaking_binaries_give_the_value(family):
    # DisARM's pieces: the value from the binaries is category order[k] for the first k with
    # b_k = 1 (the last if none); every binary up to and including the first success is reached
    logits = jnp.asarray(LOGITS)
    order = family.category_order(logits)
    binaries = jnp.array([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    index = jnp.array([order[0, 1], order[1, 3], order[2, 0]])
    value = family.value_from_binaries(binaries, order)
    expected = jax.nn.one_hot(index, 4) if family.replayable else index
    np.testing.assert_array_equal(value, expected)
    reached = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0]], bool)
    np.testing.assert_array_equal(family.reached(binaries), reached)
    assert family.binary_logits(logits, order).shape == (3, 3)


# ---- masked sites: coordinate-wise control variates, unbiased ----------------------------------
# 4 points with 2 Bernoulli decisions each (to_event); point 1 masked out in model and guide
# (``.mask``), so its logits' exact gradient is 0 and every estimate of it is exactly 0.

MASK_X = np.array([1.1, -0.4, 0.3, 1.6])
OBSERVED = np.array([True, False, True, True])
PRIOR_LOGITS = np.array([0.2, -0.4])
MASK_INIT = {
    "w": np.array([1.3, -0.7]),
    "q_logits": np.array([[0.4, -0.2], [0.1, 0.3], [-0.5, 0.6], [0.2, 0.0]]),
}


def _masked_model():
    w = numpyro.param("w", jnp.asarray(MASK_INIT["w"]))
    with numpyro.plate("data", 4):
        prior = dist.Bernoulli(logits=jnp.asarray(PRIOR_LOGITS)).to_event(1)
        z = numpyro.sample("z", prior.mask(jnp.asarray(OBSERVED)))
        mean = 2.0 * jnp.tanh((z * w).sum(-1) - 0.3)
        numpyro.sample("x", dist.Normal(mean, 0.5).mask(jnp.asarray(OBSERVED)), obs=MASK_X)


def _masked_guide():
    logits = numpyro.param("q_logits", jnp.asarray(MASK_INIT["q_logits"]))
    with numpyro.plate("data", 4):
        fn = dist.Bernoulli(logits=logits).to_event(1).mask(jnp.asarray(OBSERVED))
        numpyro.sample("z", fn)


def _exact_masked_gradient() -> dict:
    """∇ of −ELBO by enumerating each point's 4 values of z (the points are independent)."""
    values = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (4 values, 2)

    def negative_elbo(params):
        log_q = BernoulliLogits(params["q_logits"][:, None, :]).log_prob(values).sum(-1)
        log_prior = BernoulliLogits(jnp.asarray(PRIOR_LOGITS)).log_prob(values).sum(-1)
        mean = 2.0 * jnp.tanh((values * params["w"]).sum(-1) - 0.3)
        log_lik = dist.Normal(mean, 0.5).log_prob(MASK_X[:, None])  # (points, values)
        elbo = jnp.sum(jnp.exp(log_q) * (log_prior + log_lik - log_q), -1)
        return -jnp.sum(jnp.where(jnp.asarray(OBSERVED), elbo, 0.0))

    params = {k: jnp.asarray(v) for k, v in MASK_INIT.items()}
    return {k: np.asarray(v) for k, v in jax.grad(negative_elbo)(params).items()}


@pytest.fixture(scope="module")
def fast_compile():
    """XLA with most optimizations off: these tests are compile-bound (a few thousand draws
    of a tiny model run in well under a second; compiling takes seconds)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def test_masked_sites_get_coordinatewise_control_variates():
    # RELAX's network input at a coordinate-wise site: [z_j, ℓ, b₋ⱼ, one-hot of j], i.e.
    # 1 + 2·2 + 2 = 7 numbers per decision (joint: [z, ℓ], 4 numbers per element)
    params = {k: jnp.asarray(v) for k, v in MASK_INIT.items()}
    for coordinatewise, size in ((True, 7), (False, 4)):
        elbo = RELAX_ELBO(1, coordinatewise=coordinatewise)
        learned, _ = elbo.init_state(jax.random.PRNGKey(0), params, _masked_model, _masked_guide)
        assert learned["reparam_ext.relax.z"]["w1"].shape[0] == size


@pytest.mark.parametrize("make_elbo", [lambda: REBAR_ELBO(1), lambda: RELAX_ELBO(2)])
def test_masked_site_gradient_is_unbiased(fast_compile, make_elbo):
    # Mean of n = 2000 estimates vs the exact gradient, at perturbed control-variate
    # parameters (unbiasedness holds for every η, λ, ρ). Threshold: each z = (mean − exact)/SE
    # is t-distributed with 1999 dof (≈ normal: P(|t| > 5) = 6e-7); 8 coordinates per test
    # (w: 2, the unmasked logits: 6) × 2 tests, so by Bonferroni P(any |z| > 5) ≤ 16 · 6e-7
    # ≈ 1e-5. The masked row's
    # estimates are exactly 0 (no term of the estimator depends on it), so it is checked
    # for equality, not by a z-score.
    elbo = make_elbo()
    params = {k: jnp.asarray(v) for k, v in MASK_INIT.items()}
    learned, _ = elbo.init_state(jax.random.PRNGKey(0), params, _masked_model, _masked_guide)
    learned = jax.tree.map(lambda x: x + 0.3 * jnp.ones_like(x), learned)
    stats = gradient_variance(
        elbo,
        _masked_model,
        _masked_guide,
        num_samples=2000,
        rng_key=jax.random.PRNGKey(1),
        params={**params, **learned},
    )
    for name, exact in _exact_masked_gradient().items():
        mean = np.asarray(stats["params"][name]["mean"])
        se = np.sqrt(np.asarray(stats["params"][name]["variance"]) / stats["num_samples"])
        if name == "q_logits":
            np.testing.assert_array_equal(mean[1], 0.0)
            np.testing.assert_array_equal(se[1], 0.0)
            mean, se, exact = mean[OBSERVED], se[OBSERVED], exact[OBSERVED]
        z = np.abs(mean - exact) / se
        assert z.max() < 5.0, (name, z)
