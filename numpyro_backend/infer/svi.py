"""SVI that also initializes the estimators' own state (a drop-in for ``numpyro.infer.SVI``).

NumPyro's ``SVI.init`` finds parameters and mutable state by tracing the model and guide,
so it cannot see what an ELBO keeps for itself (RELAX's control variate, running baselines).
This subclass adds the entries returned by ``loss.init_state(...)``; ``update``, ``run``,
``evaluate`` and ``get_params`` are NumPyro's, unchanged (jit-compiled as usual).

Example::

    svi = SVI(model, guide, numpyro.optim.Adam(1e-2), loss=RELAX_ELBO())
    result = svi.run(jax.random.PRNGKey(0), 1000, data)
    result.params["reparam_ext.z.eta"]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random
from numpyro.infer import svi as _svi

__all__ = ["SVI"]


def is_static_argument(leaf) -> bool:
    """Whether a leaf of a program's arguments is compiled in as a constant.

    The one rule of this package wherever it compiles a step for given arguments (the pyroapi
    alias's ``SVI.step``, :func:`~numpyro_backend.infer.gradient_variance`): arrays and
    floats (Python or NumPy scalars) are data and stay traced (a new value does not
    recompile); everything else — ints, bools (also NumPy's), strings, None, callables — is
    a size, flag or name that programs use in Python control flow (``plate`` sizes,
    ``range``), so it is a constant.
    """
    data = (jax.Array, np.ndarray, float, complex, np.floating, np.complexfloating)
    return not isinstance(leaf, data)


def _hashable(leaf):
    try:
        hash(leaf)
        return leaf
    except TypeError:
        return ("id", id(leaf))


def split_arguments(args: tuple, kwargs: dict) -> tuple[tuple, list, Callable]:
    """``(key, traced, rebuild)`` of a program's ``(args, kwargs)`` under
    :func:`is_static_argument`.

    ``traced`` are the leaves to pass through ``jax.jit``; ``rebuild(traced)`` returns
    ``(args, kwargs)`` with the constants put back; ``key`` is hashable and equal for two
    calls whose constants and tree structure are equal (cache compiled functions under it).
    """
    leaves, treedef = jax.tree.flatten((args, kwargs), is_leaf=lambda x: x is None)
    is_traced = tuple(not is_static_argument(leaf) for leaf in leaves)
    constants = [leaf for leaf, t in zip(leaves, is_traced, strict=True) if not t]
    traced = [leaf for leaf, t in zip(leaves, is_traced, strict=True) if t]

    def rebuild(traced_leaves):
        traced_iter, constant_iter = iter(traced_leaves), iter(constants)
        merged = [next(traced_iter) if t else next(constant_iter) for t in is_traced]
        return jax.tree.unflatten(treedef, merged)

    key = (treedef, is_traced, tuple(_hashable(c) for c in constants))
    return key, traced, rebuild


class SVI(_svi.SVI):
    """:class:`numpyro.infer.SVI` whose ``init`` also creates the loss's own state.

    Pass earlier ``get_params(...)`` output as ``init_params`` to resume: entries named
    ``reparam_ext.*`` there replace the estimator's initial values. NumPyro's own ``SVI.init``
    discovers parameters only by tracing the model and guide, so an estimator's learned state
    (REBAR/RELAX temperature, η, network; running baselines) would be missing; ``update`` and
    ``run`` are NumPyro's, unchanged.

    Example::

        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), loss=RELAX_ELBO(num_particles=2))
        result = svi.run(jax.random.PRNGKey(0), 2000, data)

    :param model: the model (a Python callable with NumPyro primitives).
    :param guide: the guide.
    :param optim: a ``numpyro.optim`` optimizer (or an optax one, as NumPyro's SVI accepts).
    :param loss: the ELBO: one of this package's estimators or any NumPyro ELBO.
    :param static_kwargs: keyword arguments held constant under ``jit``, as in NumPyro.
    """

    def init(self, rng_key, *args, init_params=None, **kwargs):
        svi_state = super().init(rng_key, *args, init_params=init_params, **kwargs)
        init_state = getattr(self.loss, "init_state", None)
        if init_state is None:
            return svi_state
        params = self.get_params(svi_state)
        learned, mutable = init_state(
            random.fold_in(rng_key, 1),
            params,
            self.model,
            self.guide,
            *args,
            **kwargs,
            **self.static_kwargs,
        )
        if not learned and not mutable:
            return svi_state
        if init_params is not None:
            learned.update({k: v for k, v in init_params.items() if k in learned})
            mutable.update({k: v for k, v in init_params.items() if k in mutable})
        # Estimator parameters are unconstrained (constrain_fn passes unknown names through).
        unconstrained = self.optim.get_params(svi_state.optim_state)
        unconstrained.update(learned)
        mutable_state = dict(svi_state.mutable_state or {})
        mutable_state.update(mutable)
        unconstrained, mutable_state = jax.tree.map(
            lambda x: lax.convert_element_type(x, jnp.result_type(x)),
            (unconstrained, mutable_state),
        )
        return _svi.SVIState(
            self.optim.init(unconstrained), mutable_state or None, svi_state.rng_key
        )
