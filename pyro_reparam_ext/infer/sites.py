"""Guide sites: which ones need an estimator, their discrete family, their per-site options.

The same names on the NumPyro backend (``numpyro_backend/infer/sites.py``):

- :func:`site_options` — a site's ``infer={"reparam_ext": {...}}``, validated;
- :func:`family_of` — the discrete family of a site's distribution (looking through
  ``Independent`` / ``expand`` / ``mask`` wrappers) and its base distribution;
- :func:`score_function_sites` — the non-reparameterized latent guide sites, in order;
- :func:`check_relaxable` — the ``ValueError`` for a site REBAR, RELAX or DisARM cannot handle;
- :func:`has_mask` — whether a site's distribution masks its log-density;
- :func:`unmasked_decisions` — which decisions of a site its masks keep.
"""

from __future__ import annotations

import torch
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.distributions.util import is_identically_zero
from pyro.poutine.util import site_is_subsample
from torch.distributions import Bernoulli, Categorical, Independent, OneHotCategorical

from pyro_reparam_ext.infer.relaxation import FAMILIES

#: Prefix of every param-store entry an estimator creates (learned or running state).
PREFIX = "reparam_ext."

#: The baselines of ``ScoreFunction_ELBO`` (constructor and per-site option).
BASELINES = ("optimal", "loo", "decaying_avg", "none")

#: Keys accepted under a guide site's ``infer={"reparam_ext": {...}}``.
SITE_OPTIONS = frozenset({"baseline", "baseline_decay", "temperature", "eta"})

# the torch distribution of each family (OneHotCategorical is not a torch Categorical)
_FAMILY_TYPES = tuple(zip((Bernoulli, OneHotCategorical, Categorical), FAMILIES, strict=True))


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


def family_of(fn) -> tuple[object | None, object]:
    """(family, base distribution) of a Bernoulli / Categorical / OneHotCategorical site.

    Looks through ``Independent`` (``to_event``), ``expand`` and ``mask`` wrappers; the family
    is one of :data:`~pyro_reparam_ext.infer.relaxation.FAMILIES`, or None for any other
    distribution (the base is then the innermost distribution).
    """
    base = fn
    while True:
        for distribution_type, family in _FAMILY_TYPES:
            if isinstance(base, distribution_type):
                return family, base
        if not hasattr(base, "base_dist"):
            return None, base
        base = base.base_dist


def has_mask(fn) -> bool:
    """Whether a (wrapped) distribution masks its log-density (``.mask(...)``)."""
    while True:
        if isinstance(fn, MaskedDistribution):
            return True
        if not hasattr(fn, "base_dist"):
            return False
        fn = fn.base_dist


def unmasked_decisions(site: dict, family):
    """Which decisions of a site element its masks keep: a boolean tensor broadcastable to
    ``batch_shape + family.decision_shape(fn)``, or None when nothing masks the site.

    Combines ``poutine.mask`` (``site["mask"]``, per element) with ``.mask(...)`` wrappers at
    any depth (inside ``to_event`` a mask selects single decisions).
    """
    fn = site["fn"]
    num_decision_dims = len(family.decision_shape(fn))
    masks = []
    if site["mask"] is not None:
        mask = torch.as_tensor(site["mask"], dtype=torch.bool)
        masks.append(mask.reshape(mask.shape + (1,) * num_decision_dims))
    event_dims = 0  # decision dims already reinterpreted as event dims above this wrapper
    while hasattr(fn, "base_dist"):
        if isinstance(fn, Independent):
            event_dims += fn.reinterpreted_batch_ndims
        if isinstance(fn, MaskedDistribution) and fn._mask is not True:
            mask = torch.as_tensor(fn._mask, dtype=torch.bool)
            masks.append(mask.reshape(mask.shape + (1,) * (num_decision_dims - event_dims)))
        fn = fn.base_dist
    if not masks:
        return None
    keep = masks[0]
    for mask in masks[1:]:
        keep = keep & mask
    return keep


def is_discrete_draw(msg: dict) -> bool:
    """Whether an estimator's messenger draws this guide sample message itself: latent, not
    yet given a value (replay, condition), not a subsample site and without ``rsample``."""
    return not (
        msg["is_observed"]
        or msg["value"] is not None
        or site_is_subsample(msg)
        or getattr(msg["fn"], "has_rsample", False)
    )


def relaxable_draw(msg: dict) -> tuple[object | None, object | None]:
    """(family, base distribution) of a guide sample message that an estimator draws itself
    (:func:`is_discrete_draw`) from a relaxable family; (None, None) for any other message,
    which is sampled as usual."""
    if not is_discrete_draw(msg):
        return None, None
    return family_of(msg["fn"])


def score_function_sites(guide_trace) -> list[str]:
    """Names of the guide sites with a score-function term, in execution order."""
    return [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]  # e.g. pyro.factor(..., has_rsample=False)
        and not is_identically_zero(site["score_parts"].score_function)
    ]


def check_relaxable(guide_trace, estimator: str) -> None:
    """``ValueError`` naming the first score-function guide site without a discrete family.

    REBAR, RELAX and DisARM handle Bernoulli, Categorical and OneHotCategorical sites (also
    wrapped); any other non-reparameterized site (``Poisson``, a ``Normal`` with
    ``has_rsample_(False)``) needs the score-function estimator.
    """
    for name in score_function_sites(guide_trace):
        fn = guide_trace.nodes[name]["fn"]
        if family_of(fn)[0] is None:
            raise ValueError(
                f"{estimator} cannot relax guide site '{name}' ({type(fn).__name__}): it handles "
                "Bernoulli, Categorical and OneHotCategorical sites (also wrapped by to_event, "
                "expand, mask). Use ScoreFunction_ELBO for this model, or make the site "
                "reparameterized."
            )


__all__ = [
    "BASELINES",
    "PREFIX",
    "SITE_OPTIONS",
    "check_relaxable",
    "family_of",
    "has_mask",
    "is_discrete_draw",
    "relaxable_draw",
    "score_function_sites",
    "site_options",
    "unmasked_decisions",
]
