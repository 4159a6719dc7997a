"""Guide sites: which ones need an estimator, their discrete family, their per-site options.

The same names on the Pyro backend (``pyro_reparam_ext/infer/sites.py``):

- :func:`site_options` — a site's ``infer={"reparam_ext": {...}}``, validated;
- :func:`family_of` — the discrete family of a site's distribution (looking through
  ``Independent`` / ``expand`` / ``mask`` wrappers) and its base distribution;
- :func:`score_function_sites` — the non-reparameterized latent guide sites, in order;
- :func:`check_relaxable` — the ``ValueError`` for a site REBAR, RELAX or DisARM cannot handle;
- :func:`has_mask` — whether a site's distribution masks its log-density;
- :func:`unmasked_decisions` — which decisions of a site its masks keep.

NumPyro only: :func:`guide_sites` traces the guide once (at ``SVI.init`` and at trace time of
the loss) to find those sites and their options.
"""

from __future__ import annotations

import jax.numpy as jnp
from numpyro.distributions import (
    BernoulliLogits,
    BernoulliProbs,
    CategoricalLogits,
    CategoricalProbs,
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
)
from numpyro.handlers import seed, substitute, trace

from numpyro_backend.distributions.discrete import OneHotCategorical
from numpyro_backend.infer.relaxation import FAMILIES

__all__ = [
    "BASELINES",
    "PREFIX",
    "SITE_OPTIONS",
    "check_relaxable",
    "family_of",
    "guide_sites",
    "has_mask",
    "is_discrete_draw",
    "relaxable_draw",
    "score_function_sites",
    "site_options",
    "unmasked_decisions",
]

#: Prefix of every name the estimators keep in SVI's parameters or mutable state.
PREFIX = "reparam_ext."

#: The baselines of ``ScoreFunction_ELBO`` (constructor and per-site option).
BASELINES = ("optimal", "loo", "decaying_avg", "none")

#: Keys accepted under a guide site's ``infer={"reparam_ext": {...}}``.
SITE_OPTIONS = frozenset({"baseline", "baseline_decay", "temperature", "eta"})

#: The distributions a site's family is recognized by (looked through: :data:`WRAPPERS`).
_FAMILY_TYPES = tuple(
    zip(
        (
            (BernoulliLogits, BernoulliProbs),
            OneHotCategorical,
            (CategoricalLogits, CategoricalProbs),
        ),
        FAMILIES,
        strict=True,
    )
)

#: Wrappers that keep a distribution's family: ``to_event``, ``expand``, ``mask``.
WRAPPERS = (Independent, ExpandedDistribution, MaskedDistribution)


def site_options(site: dict) -> dict:
    """The site's ``infer["reparam_ext"]`` options, validated against :data:`SITE_OPTIONS`."""
    options = (site.get("infer") or {}).get("reparam_ext", {})
    unknown = set(options) - SITE_OPTIONS
    if unknown:
        raise ValueError(
            f"site '{site['name']}': unknown infer['reparam_ext'] option(s) {sorted(unknown)}; "
            f"valid options are {sorted(SITE_OPTIONS)}"
        )
    return options


def base_distribution(fn):
    """The distribution inside ``fn``'s :data:`WRAPPERS`."""
    while isinstance(fn, WRAPPERS):
        fn = fn.base_dist
    return fn


def family_of(fn) -> tuple[object | None, object]:
    """(family, base distribution) of a Bernoulli / Categorical / OneHotCategorical site.

    Looks through ``Independent`` (``to_event``), ``expand`` and ``mask`` wrappers; the family
    is one of :data:`~numpyro_backend.infer.relaxation.FAMILIES`, or None for any other
    distribution (the base is then the innermost distribution).
    """
    base = base_distribution(fn)
    for distribution_types, family in _FAMILY_TYPES:
        if isinstance(base, distribution_types):
            return family, base
    return None, base


def has_mask(fn) -> bool:
    """Whether a (wrapped) distribution masks its log-density (``.mask(...)``)."""
    while isinstance(fn, WRAPPERS):
        if isinstance(fn, MaskedDistribution):
            return True
        fn = fn.base_dist
    return False


def unmasked_decisions(site: dict, family):
    """Which decisions of a site element its masks keep: a boolean array broadcastable to
    ``batch_shape + family.decision_shape(fn)``, or None when nothing masks the site.

    Combines the ``.mask(...)`` wrappers at any depth (``handlers.mask`` is one, outermost;
    inside ``to_event`` a mask selects single decisions); a Python bool mask counts as an
    array of that value.
    """
    fn = site["fn"]
    num_decision_dims = len(family.decision_shape(fn))
    keep = None
    event_dims = 0  # decision dims already reinterpreted as event dims above this wrapper
    while isinstance(fn, WRAPPERS):
        if isinstance(fn, Independent):
            event_dims += fn.reinterpreted_batch_ndims
        if isinstance(fn, MaskedDistribution):
            mask = jnp.asarray(fn._mask, dtype=bool)
            mask = mask.reshape(mask.shape + (1,) * (num_decision_dims - event_dims))
            keep = mask if keep is None else keep & mask
        fn = fn.base_dist
    return keep


def is_latent(site: dict) -> bool:
    """Whether a trace entry is an unobserved sample site."""
    return site["type"] == "sample" and not site.get("is_observed", False)


def is_discrete_draw(msg: dict) -> bool:
    """Whether an estimator's messenger draws this guide sample message itself: latent, not
    yet given a value (replay, condition) and without ``rsample``."""
    return is_latent(msg) and msg["value"] is None and not msg["fn"].has_rsample


def relaxable_draw(msg: dict) -> tuple[object | None, object | None]:
    """(family, base distribution) of a guide sample message that an estimator draws itself
    (:func:`is_discrete_draw`) from a relaxable family; (None, None) for any other message,
    which is sampled as usual."""
    if not is_discrete_draw(msg):
        return None, None
    return family_of(msg["fn"])


def score_function_sites(guide_trace: dict) -> list[str]:
    """Names of the guide's latent sites without a reparameterized sampler, in trace order."""
    return [n for n, s in guide_trace.items() if is_latent(s) and not s["fn"].has_rsample]


def check_relaxable(guide_trace: dict, estimator: str) -> None:
    """``ValueError`` naming the first score-function guide site REBAR/RELAX cannot relax.

    They handle Bernoulli, Categorical and OneHotCategorical sites (also wrapped by
    ``to_event``, ``expand``, ``mask``); any other non-reparameterized site (``Poisson``, a
    continuous site without ``rsample``) needs the score-function estimator.
    """
    for name in score_function_sites(guide_trace):
        fn = guide_trace[name]["fn"]
        if family_of(fn)[0] is None:
            raise ValueError(
                f"{estimator} cannot relax guide site '{name}' ({type(fn).__name__}): it handles "
                "Bernoulli, Categorical and OneHotCategorical sites (also wrapped by to_event, "
                "expand, mask). Use ScoreFunction_ELBO for this model, or make the site "
                "reparameterized."
            )


def guide_sites(rng_key, params, guide, args, kwargs) -> dict:
    """The guide's non-reparameterized sites (name -> site) from one trace, for initialization."""
    guide_trace = trace(substitute(seed(guide, rng_key), data=params)).get_trace(*args, **kwargs)
    return {name: guide_trace[name] for name in score_function_sites(guide_trace)}
