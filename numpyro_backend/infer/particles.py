"""Particles and plate-aware costs shared by the score-function, REBAR and RELAX estimators.

One particle is one joint draw from the guide, the model replayed against it, every site's
log-density, and, for every non-reparameterized guide site, its *downstream cost*: the sum of
the cost terms (model log-densities, minus guide log-densities) that the site can influence,
summed to the site's own plates (NumPyro's provenance tracking and
:class:`~numpyro.infer.elbo.MultiFrameTensor`, as in ``TraceGraph_ELBO``). Particles are
vectorized with ``jax.vmap``; the estimators in ``score_function.py`` and ``relax.py`` turn
them into surrogate losses.

Subsampling. A site inside a subsampled ``plate`` has its log-density scaled by N/M, and so has
every cost term inside that plate. The score term therefore multiplies the *unscaled*
log-density by the (scaled) downstream cost; multiplying two scaled factors — what NumPyro's
``TraceGraph_ELBO`` does — inflates the score term by N/M (Pyro issue #531).

Relaxations (REBAR, RELAX). At a Bernoulli / Categorical / OneHotCategorical guide site the
particle draws the uniform noise u, v explicitly from the site's PRNG key
(``numpyro.handlers.seed``), takes z = logits + noise, b = H(z) and z̃ ~ p(z | b) ([1],
appendix), and records z, z̃. The relaxed cost f(σ_λ(z)) replays guide and model with the
*same* PRNG keys (so reparameterized sites reuse their noise) and the relaxed value
substituted:

- Bernoulli / OneHotCategorical: the value σ(z/λ) (softmax(z/λ)) itself, densities by the
  continuous extension b log p + (1 − b) log(1 − p) (one-hot · log π) ([2], section 3.3).
  Bernoulli / one-hot guide sites that depend on the relaxed one are relaxed too, with their
  own noise, so that the control variate is a smooth function of z given the other noises
  (the condition for unbiasedness); independent discrete sites keep their samples. Only cost
  terms inside every plate of the site enter (a term outside would couple plate elements).
- Categorical: model code indexes with the value (``locs[z]``), which a relaxed one-hot cannot
  do, so f̃ is the site's own terms only: Σ_k σ_k (log p(k) − log q(k)), σ = softmax(z/λ)
  (as on the Pyro backend). Measured against the alternative — the multilinear extension
  Σ_k σ_k f(k) from K replays with the site set to k — on the Categorical mixture (REBAR,
  η = 1, λ = ½, 2000 estimates; variance of the assignment-logit gradient at 1/2/4 particles):
  own terms 1080 / 644 / 304 at one evaluation per particle, multilinear 507 / 303 / 135 at
  K = 4 evaluations per particle: own terms is 1.7–1.9× better per evaluation.
- A Categorical guide site that depends on the relaxed site can be neither relaxed nor held
  fixed without bias; then f̃ is the site's own relaxed log p − log q only, as for integer
  Categorical sites: unbiased, less variance reduction.

Which family a site belongs to, and everything that depends on it (noise, threshold H,
relaxation σ_λ, conditional sampler, continuous-extension density), is asked of the family
objects of ``relaxation.py``; finding the sites is ``sites.py``'s.

References:
    [1] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR.
    [2] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud (2018). Backpropagation through
        the void: optimizing control variates for black-box gradient estimation.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax import lax, random
from numpyro.distributions import (
    BernoulliLogits,
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
)
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.elbo import ELBO, MultiFrameTensor, get_nonreparam_deps
from numpyro.primitives import Messenger
from numpyro.util import _validate_model, check_model_guide_match

from numpyro_backend.distributions.discrete import bernoulli_logits_log_prob
from numpyro_backend.infer.sites import (
    PREFIX,
    base_distribution,
    family_of,
    is_latent,
    relaxable_draw,
    score_function_sites,
)


def state_name(site: str, what: str) -> str:
    """Name of a learned or running quantity of ``site``, e.g. ``reparam_ext.z.eta``."""
    return f"{PREFIX}{site}.{what}"


def network_name(site: str) -> str:
    """Name of RELAX's control-variate network parameters of ``site``."""
    return f"{PREFIX}relax.{site}"


def split_param_map(param_map: dict) -> tuple[dict, dict]:
    """(model/guide parameters θ, estimator state φ) of a parameter map."""
    theta = {k: v for k, v in param_map.items() if not k.startswith(PREFIX)}
    state = {k: v for k, v in param_map.items() if k.startswith(PREFIX)}
    return theta, state


# ----------------------------------------------------------------------------------------------
# Site log-densities through the wrappers


def _follow_wrappers(fn, value, leaf, apply_masks: bool = True) -> jnp.ndarray:
    """``leaf(base, value)`` for the base distribution of ``fn``, summed, broadcast and masked
    (unless ``apply_masks`` is False) through its ``Independent`` / ``expand`` / ``mask``
    wrappers like ``fn.log_prob``."""
    if isinstance(fn, Independent):
        log_prob = _follow_wrappers(fn.base_dist, value, leaf, apply_masks)
        return log_prob.sum(axis=tuple(range(-fn.reinterpreted_batch_ndims, 0)))
    if isinstance(fn, ExpandedDistribution):
        # as ExpandedDistribution.log_prob: the value may carry more batch dims already (a
        # masked prior expanded by a plate, then expanded again)
        log_prob = _follow_wrappers(fn.base_dist, value, leaf, apply_masks)
        shape = lax.broadcast_shapes(tuple(fn.batch_shape), jnp.shape(log_prob))
        return jnp.broadcast_to(log_prob, shape)
    if isinstance(fn, MaskedDistribution):
        log_prob = _follow_wrappers(fn.base_dist, value, leaf, apply_masks)
        if not apply_masks:  # still broadcast to the mask's batch shape, as fn.log_prob is
            return jnp.broadcast_to(log_prob, lax.broadcast_shapes(fn.batch_shape, log_prob.shape))
        return jnp.where(fn._mask, log_prob, 0.0)
    return leaf(fn, value)


def _relaxed_leaf(base, value):
    family, _ = family_of(base)
    return family.log_prob(base.logits, value)


def relaxed_log_prob(fn, value) -> jnp.ndarray:
    """The site's continuous-extension log-density at a relaxed value ([2] section 3.3):
    b log p + (1 − b) log(1 − p) per Bernoulli decision, one-hot · log π per one-hot one
    (``family.log_prob``), summed, broadcast and masked through the wrappers (``Independent``,
    ``expand``, ``mask``) of ``fn`` so that the result has ``fn.batch_shape`` like
    ``fn.log_prob``.
    """
    return _follow_wrappers(fn, value, _relaxed_leaf)


def decision_log_prob(fn, hard, mask=None, logits=None, *, apply_masks=True) -> jnp.ndarray:
    """log q of the decisions selected by ``mask`` (shape ``family.decision_shape(fn)`` plus
    ``family.category_dims`` trailing 1s; None: all), per site element; differentiable in the
    logits: the distribution's, or ``logits``, the site's full logits (``family.logits``) given
    apart (REBAR/RELAX differentiate at a copy of them).

    Follows the wrappers of ``fn`` like :func:`relaxed_log_prob`, so a masked site
    (``.mask(...)``) gets 0 at its masked elements, as ``fn.log_prob`` does — unless
    ``apply_masks`` is False: then the true log q of every decision (REBAR/RELAX's score term,
    as on Pyro).
    """
    family, _ = family_of(fn)
    selected = (
        True if mask is None else mask.reshape(mask.shape[: mask.ndim - family.category_dims])
    )

    def leaf(base, value):
        at = base.logits if logits is None else logits
        per_decision = family.decision_log_prob(at, family.as_relaxed(value, at))
        return jnp.where(selected, per_decision, 0.0)

    return _follow_wrappers(fn, hard, leaf, apply_masks)


def bernoulli_log_prob(fn, value) -> jnp.ndarray:
    """log q(value) of a (wrapped) Bernoulli, with the right gradient at logits = 0
    (:func:`~numpyro_backend.distributions.discrete.bernoulli_logits_log_prob`: stock
    ``BernoulliLogits`` sites of a user's guide get it too)."""
    return _follow_wrappers(fn, value, lambda base, v: bernoulli_logits_log_prob(base.logits, v))


def _base_log_prob(base, value):
    if isinstance(base, BernoulliLogits):
        return bernoulli_logits_log_prob(base.logits, value)
    return base.log_prob(value)


def score_log_prob(fn, value) -> jnp.ndarray:
    """log q(value) of a (wrapped) guide site with its masks not applied, per element: the
    score function of a masked site (``.mask(...)`` at any depth, ``handlers.mask``, a bool
    mask too), which keeps the true log q — the site is still sampled from q, and its cost
    may depend on it through unmasked terms; as Pyro's ``particles.score_log_prob``.
    Otherwise as the site's ``log_prob`` (Bernoulli by :func:`bernoulli_log_prob`)."""
    return _follow_wrappers(fn, value, _base_log_prob, apply_masks=False)


# ----------------------------------------------------------------------------------------------
# Controlled sampling: the guide's discrete sites drawn from explicit noise


@dataclass(frozen=True)
class SiteDraw:
    """What :class:`_DrawWithNoise` records for one discrete guide site: its family, full
    logits (``family.logits``), relaxed logits z and a conditional draw z̃ ~ p(z | b), and the
    uniform noise (u, v) they were drawn from (z, z̃ at other logits: RELAX's φ objective)."""

    family: object
    logits: jnp.ndarray
    z: jnp.ndarray
    z_tilde: jnp.ndarray
    u: jnp.ndarray
    v: jnp.ndarray


class _DrawWithNoise(Messenger):
    """Draw every relaxable guide site as b = H(z) from explicit noise; record z and z̃.

    Sits outside ``seed`` so that it sees the site's PRNG key, which keeps the key sequence
    (and so every other site's noise) identical to a plain run of the guide.
    """

    def __init__(self, fn=None):
        self.records: dict[str, SiteDraw] = {}
        super().__init__(fn)

    def process_message(self, msg):
        family, base = relaxable_draw(msg)
        if family is None:
            return
        logits = family.logits(msg["fn"], base)
        u, v = family.noise(msg["kwargs"]["rng_key"], logits)
        z = family.relaxed_logits(logits, u)
        value = family.hard(z)
        z_tilde = family.conditional_relaxed_logits(logits, family.as_relaxed(value, logits), v)
        msg["value"] = lax.stop_gradient(value)
        self.records[msg["name"]] = SiteDraw(family, logits, z, z_tilde, u, v)


class _RelaxedReplay(Messenger):
    """Replay a guide with given values at some sites and relaxed noise draws at others.

    ``values``: site -> value to substitute (hard samples, a relaxed value, a category k).
    ``relax``: replayable site -> (family, temperature); the site is redrawn from its own noise
    as σ_λ(z) (``family.soft``) with logits from this run (it lies downstream of the relaxed
    site).
    """

    def __init__(self, fn=None, values=None, relax=None):
        self.values = values or {}
        self.relax = relax or {}
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        name = msg["name"]
        if name in self.relax:
            family, temperature = self.relax[name]
            logits = family.logits(msg["fn"], base_distribution(msg["fn"]))
            u, _ = family.noise(msg["kwargs"]["rng_key"], logits)
            msg["value"] = family.soft(family.relaxed_logits(logits, u), temperature)
        elif name in self.values:
            msg["value"] = self.values[name]


class _StopNonreparamGradient(Messenger):
    """Samples of non-reparameterized sites carry no gradient (as in NumPyro's ELBOs)."""

    def postprocess_message(self, msg):
        if is_latent(msg) and not msg["fn"].has_rsample:
            msg["value"] = lax.stop_gradient(msg["value"])
            msg["intermediates"] = None


# ----------------------------------------------------------------------------------------------
# One particle


def _log_probs(tr: dict, relaxed: frozenset = frozenset()) -> None:
    """Store ``unscaled_log_prob`` and (plate-)scaled ``log_prob`` in every sample site."""
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        if name in relaxed:
            log_prob = relaxed_log_prob(site["fn"], site["value"])
        elif isinstance(base_distribution(site["fn"]), BernoulliLogits):
            log_prob = bernoulli_log_prob(site["fn"], site["value"])
        elif site["intermediates"]:
            log_prob = site["fn"].log_prob(site["value"], site["intermediates"])
        else:
            log_prob = site["fn"].log_prob(site["value"])
        site["unscaled_log_prob"] = log_prob
        scale = site["scale"]
        site["log_prob"] = log_prob if scale is None else scale * log_prob


def _downstream_cost(
    model_trace, guide_trace, model_deps, guide_deps, node, local_only=False
) -> jnp.ndarray:
    """Cost terms ``node`` can influence, summed to ``node``'s plates, broadcast to its shape.

    ``local_only``: keep only terms inside every plate of ``node``. A term outside one of
    them depends on several plate elements at once; a control variate built from it would
    couple the elements' noises and lose unbiasedness.
    """
    target = guide_trace[node]
    frames = frozenset(target["cond_indep_stack"])
    cost = MultiFrameTensor()
    for sign, tr, deps in ((1.0, model_trace, model_deps), (-1.0, guide_trace, guide_deps)):
        for name, site in tr.items():
            if site["type"] != "sample" or node not in deps[name]:
                continue
            if local_only and not frames <= frozenset(site["cond_indep_stack"]):
                continue
            cost.add((site["cond_indep_stack"], sign * site["log_prob"]))
    total = cost.sum_to(target["cond_indep_stack"])
    return jnp.broadcast_to(total, jnp.shape(target["unscaled_log_prob"]))


class Particle:
    """One joint draw: traces, downstream costs and (optionally) relaxation records.

    :param rng_key: the particle's key; split into the guide's and the model's keys.
    :param dict params: parameter values (model and guide), possibly traced.
    :param bool draw_with_noise: draw relaxable guide sites from explicit noise (REBAR/RELAX).
    """

    def __init__(self, rng_key, params, model, guide, args, kwargs, draw_with_noise=False):
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        self.model_key, self.guide_key = random.split(rng_key)
        self.params = params
        guide_fn, drawer = self._seeded_guide(guide, draw_with_noise)
        guide_fn = substitute(_StopNonreparamGradient(guide_fn), data=params)
        self.guide_trace = trace(guide_fn).get_trace(*args, **kwargs)
        model_fn = substitute(replay(seed(model, self.model_key), self.guide_trace), data=params)
        self.model_trace = trace(model_fn).get_trace(*args, **kwargs)
        check_model_guide_match(self.model_trace, self.guide_trace)
        _validate_model(self.model_trace, plate_warning="strict")
        _log_probs(self.guide_trace)
        _log_probs(self.model_trace)
        self.records = drawer.records if drawer is not None else {}

        latents = {n: s["value"] for n, s in self.guide_trace.items() if is_latent(s)}
        self.model_deps, self.guide_deps = get_nonreparam_deps(
            model, guide, args, kwargs, params, latents=latents
        )
        self.nonreparam = score_function_sites(self.guide_trace)

    def _seeded_guide(self, guide, draw_with_noise: bool):
        """(the seeded guide to trace, the messenger recording its relaxation noise or None).

        The one hook for how guide sites draw; DisARM's coupled copies override it.
        """
        guide_fn = seed(guide, self.guide_key)
        if not draw_with_noise:
            return guide_fn, None
        drawer = _DrawWithNoise()
        return drawer(guide_fn), drawer

    def elbo(self) -> jnp.ndarray:
        """The ELBO estimate; its gradient is the pathwise part (score terms are added apart)."""
        elbo = 0.0  # a weak-typed zero keeps the inputs' dtype (float32 stays float32)
        for site in self.model_trace.values():
            if site["type"] == "sample":
                elbo = elbo + jnp.sum(site["log_prob"])
        for site in self.guide_trace.values():
            if site["type"] == "sample":
                log_prob = jnp.sum(site["log_prob"])
                if is_latent(site) and not site["fn"].has_rsample:
                    log_prob = lax.stop_gradient(log_prob)  # E[∇ log q] = 0
                elbo = elbo - log_prob
        return jnp.asarray(elbo)

    def downstream_cost(self, node: str) -> jnp.ndarray:
        """Scaled downstream cost of guide site ``node`` (gradient stopped)."""
        return lax.stop_gradient(
            _downstream_cost(
                self.model_trace, self.guide_trace, self.model_deps, self.guide_deps, node
            )
        )

    def log_prob(self, node: str) -> jnp.ndarray:
        """Unscaled log q of guide site ``node``, per element (differentiable in the params)."""
        return self.guide_trace[node]["unscaled_log_prob"]

    def mutable_state(self) -> dict:
        return {
            n: s["value"]
            for tr in (self.guide_trace, self.model_trace)
            for n, s in tr.items()
            if s["type"] == "mutable"
        }

    # -- relaxed replays -----------------------------------------------------------------------

    def _downstream_discrete(self, node: str) -> list[str]:
        """Discrete guide sites whose distribution depends on ``node`` (transitively)."""
        return [
            n
            for n in self.nonreparam
            if n != node and node in self.guide_deps[n] and n in self.records
        ]

    def relaxed_cost(self, node, value, temperatures) -> jnp.ndarray:
        """Downstream cost of ``node`` with ``value`` substituted there, by a replay.

        Other discrete guide sites keep their hard samples except the replayable ones
        (Bernoulli, OneHotCategorical) downstream of ``node``, which are relaxed with their
        own noise (temperatures: site -> λ). ``node``'s densities are evaluated by the
        continuous extension at the relaxed ``value``.
        The parameters enter with their gradient stopped: the control variate depends on
        the guide parameters only through its argument z.
        """
        params = lax.stop_gradient(self.params)
        downstream = self._downstream_discrete(node)
        relax = {
            n: (self.records[n].family, temperatures[n])
            for n in downstream
            if self.records[n].family.replayable
        }
        values = {n: self.guide_trace[n]["value"] for n in self.nonreparam if n not in relax}
        values[node] = value
        relaxed = frozenset(relax) | frozenset([node])
        guide_fn = _RelaxedReplay(seed(self.guide, self.guide_key), values=values, relax=relax)
        guide_trace = trace(substitute(guide_fn, data=params)).get_trace(*self.args, **self.kwargs)
        model_fn = substitute(replay(seed(self.model, self.model_key), guide_trace), data=params)
        model_trace = trace(model_fn).get_trace(*self.args, **self.kwargs)
        _log_probs(guide_trace, relaxed)
        _log_probs(model_trace, relaxed)
        return _downstream_cost(
            model_trace, guide_trace, self.model_deps, self.guide_deps, node, local_only=True
        )

    def relaxed_cost_fn(self, node: str, temperatures: dict):
        """f̃(s): the relaxed downstream cost of ``node`` as a function of the relaxed value s.

        Bernoulli / OneHotCategorical: one replay with s substituted. Integer Categorical, or
        a site with a Categorical downstream: the site's own terms (``_own_cost_fn``).
        """
        record = self.records[node]
        downstream = self._downstream_discrete(node)
        replayable = [record] + [self.records[n] for n in downstream]
        if not all(r.family.replayable for r in replayable):
            return self._own_cost_fn(node)
        return lambda s: self.relaxed_cost(node, s, temperatures)

    def _own_cost_fn(self, node: str):
        """f̃(s) from the site's own log p − log q terms only.

        Used for integer Categorical sites (user code may index with the value, so a relaxed
        value cannot be replayed) and when a Categorical guide site depends on ``node`` (its
        integer value can be neither relaxed nor held fixed without biasing the control
        variate). Still unbiased, with less variance reduction. The same on the Pyro backend.
        """
        record = self.records[node]
        terms = []
        for tr, sign in ((self.model_trace, 1.0), (self.guide_trace, -1.0)):
            site = tr[node]
            fn = jax.tree.map(lax.stop_gradient, site["fn"])
            scale = 1.0 if site["scale"] is None else site["scale"]
            terms.append((fn, sign * scale))
        value = self.guide_trace[node]["value"]
        if record.family.replayable or self.guide_trace[node]["fn"].event_shape:
            # per decision, by the continuous extension (a Categorical's with event dims too)
            return lambda s: sum(c * relaxed_log_prob(fn, s) for fn, c in terms)
        ks = jnp.arange(record.z.shape[-1])

        def log_probs(fn):
            return jax.vmap(lambda k: fn.log_prob(jnp.full(value.shape, k, value.dtype)), 0, -1)(ks)

        table = sum(c * log_probs(fn) for fn, c in terms)
        return lambda s: jnp.sum(s * table, -1)


def control_variate_input(z, element_ndim: int) -> jnp.ndarray:
    """The network input of RELAX's r_ρ per element: z with its last ``element_ndim`` dims
    (decisions and categories: ``len(family.decision_shape(fn)) + family.category_dims``)
    flattened."""
    batch_shape = z.shape[: z.ndim - element_ndim]
    return z.reshape(batch_shape + (-1,))


# ----------------------------------------------------------------------------------------------
# Vectorized particles


def leave_one_out_mean(x: jnp.ndarray) -> jnp.ndarray:
    """Mean over the other particles (axis 0) for every particle."""
    num = x.shape[0]
    return (jnp.sum(x, 0, keepdims=True) - x) / (num - 1)


def safe_ratio(numerator, denominator):
    """numerator / denominator, 0 where the denominator is 0 (no information yet)."""
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------
# Base class


class ParticleELBO(ELBO):
    """Shared constructor, particle map and state handling of the estimators in this package.

    Learned estimator state (REBAR/RELAX: η, log λ, the network) is read from ``param_map``
    under ``reparam_ext.*`` names; running averages (baselines) are mutable state. Both are
    created by :meth:`init_state`, which :class:`numpyro_backend.infer.SVI` calls in ``init``
    (NumPyro's own ``SVI.init`` only discovers parameters of the model and guide).

    :param int num_particles: number of particles (samples) averaged per estimate.
    :param max_plate_nesting: accepted for the Pyro signature (particles are vmapped).
    :param vectorize_particles: ``True`` (vmap), ``False`` (``lax.map``) or a map callable.
    :param retain_graph: accepted for Pyro's signature; no effect (JAX keeps no graph).
    :param bool strict_enumeration_warning: accepted for Pyro's signature; no effect (no
        enumeration here).
    :param bool ignore_jit_warnings: accepted for Pyro's signature; no effect (no Pyro JIT).
    """

    can_infer_discrete = True

    def __init__(
        self,
        num_particles: int = 1,
        *,
        max_plate_nesting: float = float("inf"),
        vectorize_particles: bool = True,
        retain_graph: bool | None = None,
        strict_enumeration_warning: bool = True,
        ignore_jit_warnings: bool = False,
    ):
        if not (isinstance(num_particles, int) and num_particles >= 1):
            raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
        super().__init__(num_particles=num_particles, vectorize_particles=vectorize_particles)
        # Accepted for the Pyro signature; particles are vmapped, so no dims are reserved.
        self.max_plate_nesting = max_plate_nesting
        # Pyro's ELBO arguments, accepted so that code written for Pyro runs; no effect here
        # (JAX keeps no graph, there is no enumeration, jit warnings are Pyro's).
        self.retain_graph = retain_graph
        self.strict_enumeration_warning = strict_enumeration_warning
        self.ignore_jit_warnings = ignore_jit_warnings

    def map_particles(self, fn, rng_key):
        """``fn(key)`` for every particle, stacked along a leading particle axis."""
        keys = random.split(rng_key, self.num_particles)
        return self.vectorize_particles_fn(fn, keys)

    def init_state(self, rng_key, param_map, model, guide, *args, **kwargs) -> tuple[dict, dict]:
        """Initial ``(learned parameters, mutable state)`` of this estimator for a model/guide."""
        return {}, {}

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)[
            "loss"
        ]

    def _require(self, state: dict, names: list[str]) -> None:
        missing = [n for n in names if n not in state]
        if missing:
            raise ValueError(
                f"{type(self).__name__} keeps {missing} in SVI's parameters / mutable state, but "
                "param_map has no such entries. Use numpyro_backend.infer.SVI (NumPyro's SVI "
                "cannot discover state that lives in the loss), or add the entries returned by "
                "elbo.init_state(rng_key, param_map, model, guide, *args, **kwargs) to param_map."
            )


#: the options every estimator takes last, as :class:`pyro.infer.ELBO` names them
ELBO_TAIL_OPTIONS = ("retain_graph", "strict_enumeration_warning", "ignore_jit_warnings")


def extends_options(base_init):
    """Decorator for an estimator ``__init__(self, num_particles=N, *, <own options>,
    **options)`` that passes ``options`` on to a base constructor, so that the base's options
    (Pyro's ELBO keywords, or REBAR's for RELAX) are written once.

    The decorated ``__init__`` gets the signature ``(self, num_particles=N, *, <base_init's
    keyword-only options>, <own options>, <ELBO_TAIL_OPTIONS>)``, with ``base_init``'s
    defaults: ``inspect.signature``, ``help`` and the API documentation show every option, and
    a misspelled or extra argument raises ``TypeError`` naming the estimator. It is a thin
    wrapper whose own source declares no defaults, because Sphinx's
    ``autodoc_preserve_defaults`` matches a function's source against its signature and fails
    on one that ``__signature__`` extends.
    """

    def decorate(init):
        own = list(inspect.signature(init).parameters.values())
        extra = [p for p in own if p.kind is p.KEYWORD_ONLY]
        base = inspect.signature(base_init).parameters.values()
        base = [p for p in base if p.kind is p.KEYWORD_ONLY]
        head = [p for p in base if p.name not in ELBO_TAIL_OPTIONS]
        tail = [p for p in base if p.name in ELBO_TAIL_OPTIONS]
        positional = [p for p in own if p.kind is p.POSITIONAL_OR_KEYWORD]
        signature = inspect.Signature(positional + head + extra + tail)

        def __init__(self, *args, **kwargs):
            try:
                signature.bind(self, *args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{type(self).__name__}: {error}") from None
            init(self, *args, **kwargs)

        for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(__init__, attribute, getattr(init, attribute))
        __init__.__signature__ = signature
        return __init__

    return decorate
