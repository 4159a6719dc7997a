"""Diagnostics for ELBO gradient estimators (NumPyro).

:func:`gradient_variance` draws its samples in one compiled call, cached per (elbo, model,
guide, selected parameters, constant arguments: ints, strings, ...; arrays and floats are
traced): later calls with the same shapes do not recompile. Nested parameters
(``numpyro.module`` / stax / flax pytrees) are flattened into leaves named ``site.key.key``
(e.g. ``net$params.0.1`` for stax's first bias). The same function names as the Pyro
backend's ``diagnostics.py``: :func:`_gradient_samples` draws, :func:`_summary` summarizes.
"""

from __future__ import annotations

import weakref

import jax
import numpy as np
from jax import lax, random
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey
from numpyro.distributions import biject_to, constraints
from numpyro.handlers import replay, seed, substitute, trace

from numpyro_backend.infer.particles import PREFIX, split_param_map
from numpyro_backend.infer.svi import split_arguments

__all__ = ["gradient_variance"]

# elbo -> {(model, guide, selected sites, static args): jitted sampler}; weak so that a cached
# sampler lives as long as its ELBO (whose running state it may read) and no longer
_SAMPLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _param_sites(rng_key, model, guide, args, kwargs, params=None) -> dict:
    """name -> param site of guide and model (guide first), values substituted from params."""
    model_key, guide_key = random.split(rng_key)
    if params is not None:
        guide, model = substitute(guide, data=params), substitute(model, data=params)
    guide_trace = trace(seed(guide, guide_key)).get_trace(*args, **kwargs)
    model_trace = trace(replay(seed(model, model_key), guide_trace)).get_trace(*args, **kwargs)
    sites = {}
    for tr in (guide_trace, model_trace):
        for name, site in tr.items():
            if site["type"] == "param":
                sites.setdefault(name, site)
    return sites


def _initial_params(rng_key, model, guide, args, kwargs) -> dict:
    """Constrained initial values of the param sites of guide and model (as SVI.init)."""
    sites = _param_sites(rng_key, model, guide, args, kwargs)
    return {name: site["value"] for name, site in sites.items()}


def _transform(site):
    """Bijection from unconstrained space onto a param site's support (as SVI.init)."""
    return biject_to(site["kwargs"].get("constraint", constraints.real))


def _key_name(key) -> str:
    if isinstance(key, DictKey):
        return str(key.key)
    if isinstance(key, GetAttrKey):
        return key.name
    if isinstance(key, (SequenceKey, FlattenedIndexKey)):
        return str(key.idx)
    return str(key)


def _flatten(name: str, value) -> dict:
    """Leaves of a (possibly nested) parameter, named ``name.key.key`` (``name`` for arrays)."""
    leaves = jax.tree_util.tree_flatten_with_path(value)[0]
    return {
        ".".join([name, *map(_key_name, path)]) if path else name: leaf for path, leaf in leaves
    }


def _sampler(elbo, model, guide, selected: tuple, args, kwargs):
    """The jitted ``(params, mutable, keys, traced args) -> gradient samples`` for a program.

    Compiled once per (elbo, model, guide, selected sites, constant arguments: the rule of
    :func:`~numpyro_backend.infer.svi.is_static_argument`); jit itself recompiles only for
    new shapes/dtypes (e.g. another ``num_samples``).
    """
    arguments_key, _, rebuild = split_arguments(args, kwargs)
    cache_key = (model, guide, selected, arguments_key)
    try:
        cache = _SAMPLERS.setdefault(elbo, {})
    except TypeError:  # an ELBO that cannot be weakly referenced or hashed: no caching
        cache = {}
    if cache_key in cache:
        return cache[cache_key]

    elbo_ref = weakref.ref(elbo)  # the cache must not keep its key alive

    def sample(params, mutable, keys, traced):
        args, kwargs = rebuild(traced)
        elbo = elbo_ref()
        # the param sites' constraints, found at trace time (static: one compile)
        sites = _param_sites(keys[0], model, guide, args, kwargs, params)
        transforms = {name: _transform(sites[name]) for name in selected}
        unconstrained = {
            name: jax.tree.map(transforms[name].inv, params[name]) for name in selected
        }
        fixed = {k: v for k, v in params.items() if k not in unconstrained}

        def loss_fn(unconstrained, key, state):
            constrained = {n: jax.tree.map(transforms[n], u) for n, u in unconstrained.items()}
            param_map = {**fixed, **constrained, **state}
            if state:
                out = elbo.loss_with_mutable_state(key, param_map, model, guide, *args, **kwargs)
                new_state = {k: v for k, v in (out["mutable_state"] or {}).items() if k in state}
                return out["loss"], new_state
            return elbo.loss(key, param_map, model, guide, *args, **kwargs), state

        def step(state, key):
            grads, state = jax.grad(loss_fn, has_aux=True)(unconstrained, key, state)
            return state, grads

        if not mutable:  # independent samples: one vectorized call
            return jax.vmap(lambda key: step(mutable, key)[1])(keys)
        # sequential, so that running-average baselines update between samples (as training,
        # and as the Pyro backend's param-store state does)
        return lax.scan(step, mutable, keys)[1]

    cache[cache_key] = jitted = jax.jit(sample)
    return jitted


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
    the *unconstrained* model and guide parameters (what the optimizer sees, as on the Pyro
    backend; estimator state ``reparam_ext.*`` excluded) for ``num_samples`` independent keys,
    in one compiled ``lax.scan`` (cached; see the module docstring). No optimizer step is
    taken; running-average baselines update between the samples, as in training, from the
    values in ``params`` (the caller's state is not changed).

    Example::

        stats = gradient_variance(RELAX_ELBO(), model, guide, data, num_samples=200,
                                  rng_key=jax.random.PRNGKey(0),
                                  params={**svi.get_params(state), **state.mutable_state})
        stats["total_variance"], stats["params"]["enc_w"]["variance"]

    :param elbo: a NumPyro ELBO (stock ones included); this package's estimators also get
        their state from ``elbo.init_state`` when ``params`` lacks it.
    :param int num_samples: number of independent gradient estimates (≥ 2).
    :param param_names: restrict to these parameters, by site name (all leaves of the site)
        or by leaf name ``site.key.key`` (default: all the programs use).
    :param rng_key: PRNG key (default ``PRNGKey(0)``).
    :param dict params: constrained parameter values, e.g. ``svi.get_params(state)``, and
        optionally estimator state (default: the init values of the param sites).
    :returns: ``{"params": {name: {"mean": ndarray, "variance": ndarray}},
        "total_variance": float, "total_variance_se": float, "num_samples": int}`` —
        gradients are w.r.t. the unconstrained parameters; variance is the unbiased sample
        variance of each coordinate; ``total_variance`` sums it over every coordinate of the
        selected parameters (the trace of the covariance of the estimate) and
        ``total_variance_se`` is its standard error.
    """
    _check_num_samples(num_samples)
    rng_key = random.PRNGKey(0) if rng_key is None else rng_key
    samples = _gradient_samples(
        elbo, model, guide, args, kwargs, num_samples, param_names, rng_key, params
    )
    return _summary(samples, num_samples)


def _check_num_samples(num_samples: int) -> None:
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")


def _with_estimator_state(elbo, rng_key, params, model, guide, args, kwargs) -> tuple:
    """(parameters with the estimator's learned state added, its mutable state): what the
    estimator's ``init_state`` gives, unless ``params`` holds it already."""
    params = dict(params)
    init_state = getattr(elbo, "init_state", None)
    if init_state is None:
        return params, {}
    learned, mutable = init_state(rng_key, params, model, guide, *args, **kwargs)
    for name, value in learned.items():
        params.setdefault(name, value)
    return params, {k: params.pop(k, v) for k, v in mutable.items()}


def _selection(theta: dict, param_names) -> tuple:
    """(the param sites to differentiate, the leaf names to keep or None for all)."""
    if param_names is None:
        return tuple(theta), None
    leaf_sites = {leaf: name for name in theta for leaf in _flatten(name, theta[name])}
    missing = {n for n in param_names if n not in theta and n not in leaf_sites}
    if missing:
        raise ValueError(f"param_names {sorted(missing)} are not used by model/guide")
    selected = tuple(dict.fromkeys(n if n in theta else leaf_sites[n] for n in param_names))
    wanted = {
        leaf for n in param_names for leaf in (_flatten(n, theta[n]) if n in theta else {n: None})
    }
    return selected, wanted


def _gradient_samples(
    elbo, model, guide, args, kwargs, num_samples, param_names, rng_key, params
) -> dict:
    """leaf name -> (num_samples, *shape) gradient estimates of −ELBO, from one compiled call."""
    init_key, rng_key = random.split(rng_key)
    if params is None:
        params = _initial_params(init_key, model, guide, args, kwargs)
    params, mutable = _with_estimator_state(elbo, init_key, params, model, guide, args, kwargs)
    theta, _ = split_param_map(params)
    selected, wanted = _selection(theta, param_names)
    sample = _sampler(elbo, model, guide, selected, args, kwargs)
    _, traced, _ = split_arguments(args, kwargs)
    grads = sample(params, mutable, random.split(rng_key, num_samples), traced)
    samples = {}
    for name in selected:
        samples.update(_flatten(name, grads[name]))
    assert not any(name.startswith(PREFIX) for name in samples)
    if wanted is None:
        return samples
    return {name: value for name, value in samples.items() if name in wanted}


def _summary(samples: dict, num_samples: int) -> dict:
    """gradient_variance's result from name -> (num_samples, *shape) gradient samples."""
    stats = {}
    squared_deviations = 0.0
    for name, values in samples.items():
        values = np.asarray(values, dtype=np.float64)
        mean = values.mean(axis=0)
        stats[name] = {"mean": mean, "variance": values.var(axis=0, ddof=1)}
        deviation = (values - mean).reshape(num_samples, -1)
        squared_deviations = squared_deviations + (deviation**2).sum(axis=1)
    # total variance = mean squared distance of the samples to their mean (× n/(n−1)); its
    # standard error follows from the spread of those distances
    correction = num_samples / (num_samples - 1)
    return {
        "params": stats,
        "total_variance": float(np.mean(squared_deviations) * correction),
        "total_variance_se": float(
            np.std(squared_deviations, ddof=1) / np.sqrt(num_samples) * correction
        ),
        "num_samples": num_samples,
    }
