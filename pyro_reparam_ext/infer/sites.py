"""Guide sites: which ones need an estimator, their discrete family, their per-site options.

The same names on the NumPyro backend (``numpyro_backend/infer/sites.py``):

- :func:`site_options` — a site's ``infer={"reparam_ext": {...}}``, validated;
- :func:`family_of` — the discrete family of a site's distribution (looking through
  ``Independent`` / ``expand`` / ``mask`` wrappers) and its base distribution;
- :func:`score_function_sites` — the non-reparameterized latent guide sites, in order;
- :func:`check_relaxable` — the ``ValueError`` for a site REBAR, RELAX or DisARM cannot handle;
- :func:`has_mask` — whether a site's distribution masks its log-density.
"""

from __future__ import annotations

from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.distributions.util import is_identically_zero
from torch.distributions import Bernoulli, Categorical, OneHotCategorical

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
    "score_function_sites",
    "site_options",
]
