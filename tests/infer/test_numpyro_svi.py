"""NumPyro estimators inside SVI: jit-compiled updates, learned and running state, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pyroapi
import pytest
from numpyro.infer import SVI as StockSVI
from numpyro.optim import Adam

from numpyro_backend.backend.pyro import clear_param_store
from numpyro_backend.infer import REBAR_ELBO, RELAX_ELBO, SVI, ScoreFunction_ELBO, gradient_variance
from tests.infer.models import RELAX_TOY
from tests.infer.numpyro_helpers import (
    fast_compile,  # noqa: F401  (fixture)
    jax_inputs,
)

pytestmark = pytest.mark.usefixtures("fast_compile")


def _run(elbo, entry, steps, init_params=None, seed=0):
    clear_param_store()
    data, init = jax_inputs(entry)
    with pyroapi.pyro_backend("numpyro_backend"):
        svi = SVI(entry.model, entry.guide, Adam(0.05), elbo)
        result = svi.run(
            jax.random.PRNGKey(seed),
            steps,
            data,
            init,
            progress_bar=False,
            init_params=init_params,
        )
    return svi, result


def test_relax_learns_its_control_variate_inside_svi_run():
    elbo = RELAX_ELBO(num_particles=1)
    _, result = _run(elbo, RELAX_TOY, 30)
    params = result.params
    assert np.all(np.isfinite(np.asarray(result.losses)))
    # φ = (η, log λ, ρ) moved away from its initial values: SVI's one gradient call updated it
    assert params["reparam_ext.b.eta"] != pytest.approx(1.0)
    assert params["reparam_ext.b.log_temperature"] != pytest.approx(np.log(0.5))
    assert np.abs(np.asarray(params["reparam_ext.relax.b"]["w2"])).max() > 0
    assert params["theta_logit"] != pytest.approx(0.0)


def test_resuming_from_saved_params_restores_the_learned_state():
    elbo = REBAR_ELBO(num_particles=1)
    svi, first = _run(elbo, RELAX_TOY, 10)
    saved = dict(first.params)
    data, init = jax_inputs(RELAX_TOY)
    with pyroapi.pyro_backend("numpyro_backend"):
        state = svi.init(jax.random.PRNGKey(1), data, init, init_params=saved)
        resumed = svi.get_params(state)
    assert saved["reparam_ext.b.eta"] != pytest.approx(1.0)
    for name in ("reparam_ext.b.eta", "reparam_ext.b.log_temperature", "theta_logit"):
        assert resumed[name] == pytest.approx(float(saved[name]))


def test_running_baseline_is_mutable_state_updated_by_svi():
    elbo = ScoreFunction_ELBO(num_particles=1, baseline="optimal")
    clear_param_store()
    data, init = jax_inputs(RELAX_TOY)
    with pyroapi.pyro_backend("numpyro_backend"):
        svi = SVI(RELAX_TOY.model, RELAX_TOY.guide, Adam(0.01), elbo)
        state = svi.init(jax.random.PRNGKey(0), data, init)
        assert set(state.mutable_state) == {
            "reparam_ext.b.baseline_fs2",
            "reparam_ext.b.baseline_s2",
        }
        update = jax.jit(svi.update)
        for _ in range(3):
            state, loss = update(state, data, init)
    assert np.isfinite(loss)
    assert np.asarray(state.mutable_state["reparam_ext.b.baseline_s2"]).min() > 0


def test_stock_svi_without_estimator_state_raises_a_clear_error():
    clear_param_store()
    data, init = jax_inputs(RELAX_TOY)
    with pyroapi.pyro_backend("numpyro_backend"):
        svi = StockSVI(RELAX_TOY.model, RELAX_TOY.guide, Adam(0.01), RELAX_ELBO())
        state = svi.init(jax.random.PRNGKey(0), data, init)
        with pytest.raises(ValueError, match="numpyro_backend.infer.SVI"):
            svi.update(state, data, init)


def _poisson_model():
    numpyro.sample("n", dist.Poisson(3.0))


def _poisson_guide():
    rate = numpyro.param("rate", 2.0, constraint=dist.constraints.positive)
    numpyro.sample("n", dist.Poisson(rate))


@pytest.mark.parametrize("estimator", [REBAR_ELBO, RELAX_ELBO])
def test_unrelaxable_site_raises_value_error_naming_it(estimator):
    with pytest.raises(ValueError, match="site 'n'.*Poisson"):
        estimator().loss(
            jax.random.PRNGKey(0), {"rate": jnp.array(2.0)}, _poisson_model, _poisson_guide
        )


def test_score_function_handles_any_discrete_site():
    elbo = ScoreFunction_ELBO(num_particles=2)  # "optimal" falls back to "loo" without logits
    loss = elbo.loss(
        jax.random.PRNGKey(0), {"rate": jnp.array(2.0)}, _poisson_model, _poisson_guide
    )
    assert np.isfinite(loss)


def test_bad_arguments_raise_value_errors_naming_them():
    with pytest.raises(ValueError, match="baseline must be one of"):
        ScoreFunction_ELBO(baseline="mean")
    with pytest.raises(ValueError, match="num_particles >= 2"):
        ScoreFunction_ELBO(baseline="loo")
    with pytest.raises(ValueError, match="baseline_decay"):
        ScoreFunction_ELBO(baseline_decay=1.0)
    with pytest.raises(ValueError, match="temperature"):
        REBAR_ELBO(temperature=0.0)
    with pytest.raises(ValueError, match="control_variate"):
        RELAX_ELBO(control_variate="mlp")


def test_gradient_variance_structure_and_total():
    # a case with known moments: a reparameterized Normal guide
    def model():
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    def guide():
        loc = numpyro.param("loc", 0.3)
        numpyro.sample("x", dist.Normal(loc, 1.0))

    stats = gradient_variance(
        ScoreFunction_ELBO(), model, guide, num_samples=4000, rng_key=jax.random.PRNGKey(0)
    )
    assert set(stats) == {"params", "total_variance", "total_variance_se", "num_samples"}
    # loss = x²/2 − ε²/2 + const with x = loc + ε: the gradient is x = loc + ε,
    # mean loc, variance 1
    grad = stats["params"]["loc"]
    se_mean = np.sqrt(grad["variance"] / 4000)
    assert abs(grad["mean"] - 0.3) < 5 * se_mean
    assert abs(stats["total_variance"] - 1.0) < 5 * stats["total_variance_se"]


def test_param_store_save_and_load_resumes_learned_state(tmp_path):
    # through the pyroapi alias, as a backend-agnostic user would
    data, init = jax_inputs(RELAX_TOY)
    with pyroapi.pyro_backend("numpyro_backend"):
        from pyroapi import infer, optim, pyro

        pyro.clear_param_store()
        svi = infer.SVI(
            RELAX_TOY.model, RELAX_TOY.guide, optim.Adam({"lr": 0.05}), infer.RELAX_ELBO()
        )
        for _ in range(5):
            svi.step(data, init)
        saved = {k: v for k, v in pyro.get_param_store().items()}
        pyro.get_param_store().save(tmp_path / "store.pkl")
        pyro.clear_param_store()
        pyro.get_param_store().load(tmp_path / "store.pkl")
        resumed = infer.SVI(
            RELAX_TOY.model, RELAX_TOY.guide, optim.Adam({"lr": 0.05}), infer.RELAX_ELBO()
        )
        resumed.evaluate_loss(data, init)  # initializes from the store
        params = resumed.get_params()
        pyro.clear_param_store()
    assert saved["reparam_ext.b.eta"] != pytest.approx(1.0)
    for name in ("theta_logit", "reparam_ext.b.eta", "reparam_ext.b.log_temperature"):
        assert params[name] == pytest.approx(float(saved[name]))
    np.testing.assert_allclose(
        params["reparam_ext.relax.b"]["w2"], saved["reparam_ext.relax.b"]["w2"]
    )


@pytest.mark.parametrize("estimator", [ScoreFunction_ELBO, RELAX_ELBO])
def test_float32_inputs_give_float32_finite_gradients_and_state(estimator):
    entry = RELAX_TOY
    data, init = jax_inputs(entry)
    data = {k: v.astype(jnp.float32) if hasattr(v, "astype") else v for k, v in data.items()}
    init = {k: v.astype(jnp.float32) for k, v in init.items()}
    elbo = estimator(num_particles=2)
    with pyroapi.pyro_backend("numpyro_backend"):
        learned, mutable = elbo.init_state(
            jax.random.PRNGKey(0), init, entry.model, entry.guide, data, init
        )
        grads = jax.jit(
            jax.grad(
                lambda p: elbo.loss(jax.random.PRNGKey(1), p, entry.model, entry.guide, data, init)
            )
        )({**init, **learned, **mutable})  # running baselines (optimal at K = 2) included
    for leaf in jax.tree.leaves(learned) + jax.tree.leaves(mutable) + jax.tree.leaves(grads):
        assert leaf.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(leaf)))
