"""Diagnostics for ELBO gradient estimators (NumPyro)."""

from __future__ import annotations

import jax
import numpy as np
from jax import lax, random
from numpyro.handlers import replay, seed, trace

from numpyro_backend.infer.particles import PREFIX, split_param_map

__all__ = ["gradient_variance"]


def _initial_params(rng_key, model, guide, args, kwargs) -> dict:
    """Constrained initial values of the param sites of guide and model (as SVI.init)."""
    model_key, guide_key = random.split(rng_key)
    guide_trace = trace(seed(guide, guide_key)).get_trace(*args, **kwargs)
    model_trace = trace(replay(seed(model, model_key), guide_trace)).get_trace(*args, **kwargs)
    params = {}
    for tr in (model_trace, guide_trace):
        params.update({n: s["value"] for n, s in tr.items() if s["type"] == "param"})
    return params


def gradient_variance(
    elbo,
    model,
    guide,
    *args,
    num_samples: int = 100,
    param_names: list[str] | None = None,
    rng_key=None,
    params: dict | None = None,
    **kwargs,
) -> dict:
    """Per-coordinate mean and variance of an ELBO's gradient estimate, without stepping.

    Differentiates ``elbo.loss(key, params, model, guide, *args, **kwargs)`` with respect to
    the model and guide parameters (estimator state ``reparam_ext.*`` excluded) for
    ``num_samples`` independent keys, in one jit-compiled ``lax.scan``. No optimizer step is
    taken; running-average baselines do update between calls, as in training.

    Example::

        stats = gradient_variance(RELAX_ELBO(), model, guide, data, num_samples=200,
                                  rng_key=jax.random.PRNGKey(0), params=svi_params)
        stats["total_variance"], stats["params"]["enc_w"]["variance"]

    :param elbo: a NumPyro ELBO (stock ones included); this package's estimators also get
        their state from ``elbo.init_state`` when ``params`` lacks it.
    :param int num_samples: number of independent gradient estimates (≥ 2).
    :param param_names: restrict to these parameters (default: all the programs use).
    :param rng_key: PRNG key (default ``PRNGKey(0)``).
    :param dict params: constrained parameter values, e.g. ``svi.get_params(state)``
        (default: the init values of the param sites).
    :returns: ``{"params": {name: {"mean": ndarray, "variance": ndarray}},
        "total_variance": float, "total_variance_se": float, "num_samples": int}`` —
        variance is the unbiased sample variance of each coordinate; ``total_variance`` sums
        it over every coordinate of the selected parameters (the trace of the covariance of
        the estimate) and ``total_variance_se`` is its standard error.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    rng_key = random.PRNGKey(0) if rng_key is None else rng_key
    init_key, rng_key = random.split(rng_key)
    if params is None:
        params = _initial_params(init_key, model, guide, args, kwargs)
    params = dict(params)
    init_state = getattr(elbo, "init_state", None)
    mutable = {}
    if init_state is not None:
        learned, mutable = init_state(init_key, params, model, guide, *args, **kwargs)
        for name, value in learned.items():
            params.setdefault(name, value)
        mutable = {k: params.pop(k, v) for k, v in mutable.items()}
    theta, phi = split_param_map(params)
    if param_names is not None:
        missing = set(param_names) - set(theta)
        if missing:
            raise ValueError(f"param_names {sorted(missing)} are not used by model/guide")
        theta = {name: theta[name] for name in param_names}
    fixed = {k: v for k, v in params.items() if k not in theta}

    def loss_fn(theta, key, state):
        param_map = {**fixed, **theta, **state}
        if state:
            out = elbo.loss_with_mutable_state(key, param_map, model, guide, *args, **kwargs)
            new_state = {k: v for k, v in (out["mutable_state"] or {}).items() if k in state}
            return out["loss"], new_state
        return elbo.loss(key, param_map, model, guide, *args, **kwargs), state

    def step(state, key):
        grads, state = jax.grad(loss_fn, has_aux=True)(theta, key, state)
        return state, grads

    _, samples = jax.jit(lambda keys: lax.scan(step, mutable, keys))(
        random.split(rng_key, num_samples)
    )
    stats = {}
    squared_deviations = 0.0
    for name, values in samples.items():
        values = np.asarray(values)
        mean = values.mean(axis=0)
        stats[name] = {"mean": mean, "variance": values.var(axis=0, ddof=1)}
        deviation = (values - mean).reshape(num_samples, -1)
        squared_deviations = squared_deviations + (deviation**2).sum(axis=1)
    assert not any(name.startswith(PREFIX) for name in stats)
    # total variance = mean squared distance of the samples to their mean (× n/(n−1)); its
    # standard error follows from the spread of those distances (as on the Pyro backend)
    correction = num_samples / (num_samples - 1)
    return {
        "params": stats,
        "total_variance": float(np.mean(squared_deviations) * correction),
        "total_variance_se": float(
            np.std(squared_deviations, ddof=1) / np.sqrt(num_samples) * correction
        ),
        "num_samples": num_samples,
    }
