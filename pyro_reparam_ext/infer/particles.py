"""Particles, plate-aware costs and relaxed log-densities shared by every estimator here.

Which sites need an estimator and their options live in :mod:`.sites`; what depends on a
site's discrete family (noise, threshold, relaxation, scores) in :mod:`.relaxation`.

:class:`DiscreteLatentELBO` is the common base of ``ScoreFunction_ELBO``, ``REBAR_ELBO`` and
``RELAX_ELBO``. It
owns the particle loop (Pyro's vectorized particles: one outermost ``plate`` of size
``num_particles``), the pathwise part of the surrogate (as :class:`~pyro.infer.Trace_ELBO`), the
plate-aware downstream cost of every score-function site (Pyro's own
``tracegraph_elbo._compute_downstream_costs``) and the value/gradient split
``loss + (surrogate - surrogate.detach())``. A subclass only says how the gradient of each
non-reparameterized guide site is estimated (:meth:`DiscreteLatentELBO._loss_and_surrogate`).

Vocabulary and sign convention (the same on the NumPyro backend): the learning signal is the
*cost* f = log p − log q summed over the terms a site can influence — the ELBO direction, as
Pyro's ``TraceGraph_ELBO`` works with it; losses are its negatives.

Subsampling: Pyro's ``score_function`` is not scaled by the plate's N/M factor while the
costs (built from scaled log-densities) are, so the N/M factor enters each score term exactly
once (Pyro issue #531).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import broadcast_shape, is_identically_zero, scale_and_mask
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.tracegraph_elbo import _compute_downstream_costs
from pyro.infer.util import MultiFrameTensor, is_validation_enabled, torch_item
from pyro.poutine.util import site_is_subsample
from pyro.util import check_if_enumerated, warn_if_nan
from torch.distributions import Independent

from pyro_reparam_ext.infer.distributed import EstimatorELBOModule, average_running_state
from pyro_reparam_ext.infer.sites import PREFIX, family_of, has_mask


class DiscreteLatentELBO(ELBO):
    """Base class: particle loop, pathwise surrogate and value/gradient split.

    :param int num_particles: number of particles (samples) averaged per estimate.
    :param max_plate_nesting: bound on the number of nested ``plate`` contexts (guessed from
        one run when infinite, as in Pyro).
    :param bool vectorize_particles: draw the particles in one vectorized run (default) rather
        than a Python loop. Leave-one-out baselines need it when ``num_particles > 1``.
    :param retain_graph: passed to ``backward`` as in :class:`pyro.infer.ELBO`.
    :param bool strict_enumeration_warning: as in :class:`pyro.infer.ELBO`.
    :param bool ignore_jit_warnings: as in :class:`pyro.infer.ELBO`.
    """

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
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            retain_graph=retain_graph,
            strict_enumeration_warning=strict_enumeration_warning,
            ignore_jit_warnings=ignore_jit_warnings,
        )

    #: whether :meth:`_end_step` is given the trace of the step's ``param`` sites
    _end_step_needs_params = False

    # ---- particles -------------------------------------------------------------------------

    @property
    def particle_dim(self) -> int | None:
        """The batch dim of the vectorized particle plate (negative), or None without one."""
        if self.vectorize_particles and self.num_particles > 1:
            return -self.max_plate_nesting
        return None

    def _particle_runs(self, model, guide, args, kwargs) -> Iterator[tuple]:
        """(model, guide) pairs to trace: one plate-wrapped pair when vectorized, else K."""
        if self.vectorize_particles:
            if self.max_plate_nesting == float("inf"):
                self._guess_max_plate_nesting(model, guide, args, kwargs)
            yield self._vectorized_num_particles(model), self._vectorized_num_particles(guide)
        else:
            for _ in range(self.num_particles):
                yield model, guide

    def _get_trace(self, model, guide, args, kwargs):
        # "dense" graphs give _compute_downstream_costs the guide's dependency order.
        model_trace, guide_trace = get_importance_trace(
            "dense", self.max_plate_nesting, model, guide, args, kwargs
        )
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    # ---- the three ELBO methods ------------------------------------------------------------

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """−ELBO estimate whose gradient is this estimator's gradient estimate.

        The value is the usual −ELBO (averaged over particles); the gradient with respect to
        model and guide parameters is the estimator's, and with respect to an estimator's own
        learned parameters (``reparam_ext.*``) whatever that estimator trains them with.
        """
        loss = 0.0
        surrogate_loss = 0.0
        self._begin_step()
        # the step's param sites, for estimators whose _end_step needs them
        param_capture = poutine.trace(param_only=True) if self._end_step_needs_params else None
        with contextlib.nullcontext() if param_capture is None else param_capture:
            for run_model, run_guide in self._particle_runs(model, guide, args, kwargs):
                loss_run, surrogate_run = self._loss_and_surrogate(
                    run_model, run_guide, args, kwargs
                )
                loss = loss + loss_run / self.num_particles
                surrogate_loss = surrogate_loss + surrogate_run / self.num_particles
        param_trace = None if param_capture is None else param_capture.trace
        surrogate_loss = self._end_step(surrogate_loss, param_trace)
        warn_if_nan(loss, "loss")
        if not isinstance(surrogate_loss, torch.Tensor):  # model and guide without sample sites
            return torch.as_tensor(loss, dtype=torch.get_default_dtype())
        return loss + (surrogate_loss - surrogate_loss.detach())

    def loss(self, model, guide, *args, **kwargs) -> float:
        """−ELBO estimate as a float; draws fresh particles and updates no estimator state."""
        elbo = 0.0
        with torch.no_grad():
            for run_model, run_guide in self._particle_runs(model, guide, args, kwargs):
                model_trace, guide_trace = DiscreteLatentELBO._get_trace(
                    self, run_model, run_guide, args, kwargs
                )
                elbo_run = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
                elbo = elbo + torch_item(elbo_run) / self.num_particles
        loss = -elbo
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Backpropagate :meth:`differentiable_loss` into the parameters; return its value.

        As Pyro's ELBOs, the backward pass is skipped when the two programs use no parameter
        (empty or parameter-free programs, every parameter under ``poutine.block``).
        """
        with poutine.trace(param_only=True) as param_capture:
            loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if param_capture.trace.nodes and loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        loss = torch_item(loss)
        warn_if_nan(loss, "loss")
        return loss

    def __call__(self, model, guide) -> EstimatorELBOModule:
        """An ``ELBOModule`` whose parameters and buffers include this estimator's state."""
        return EstimatorELBOModule(model, guide, self)

    # ---- hooks for subclasses --------------------------------------------------------------

    def _begin_step(self) -> None:
        """Called once per :meth:`differentiable_loss` before the particles."""

    def _end_step(self, surrogate_loss: torch.Tensor, param_trace=None) -> torch.Tensor:
        """Called once per :meth:`differentiable_loss` with the particle-averaged surrogate
        and the trace of the ``param`` sites the step used."""
        return surrogate_loss

    def _loss_and_surrogate(self, model, guide, args, kwargs):
        """(−ELBO summed over the run's particles, surrogate loss) for one particle run."""
        raise NotImplementedError("abstract: each estimator defines its score terms")


# ---- traces -> ELBO, pathwise surrogate, costs --------------------------------------------


def pathwise_elbo_and_surrogate(model_trace, guide_trace) -> tuple[torch.Tensor, torch.Tensor]:
    """(ELBO, surrogate ELBO without score-function terms), as in Pyro's ``Trace_ELBO``.

    The surrogate holds log p (pathwise in model parameters and reparameterized values) and
    the guide's ``entropy_term`` (−log q for reparameterized sites, zero for the others).
    """
    elbo = 0.0
    surrogate = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            elbo = elbo + site["log_prob_sum"].detach()
            surrogate = surrogate + site["log_prob_sum"]
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            elbo = elbo - site["log_prob_sum"].detach()
            entropy_term = site["score_parts"].entropy_term
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
    return elbo, surrogate


def downstream_costs(model_trace, guide_trace, sites: list[str]):
    """Plate-aware downstream cost of each score-function site and the nodes it sums.

    Reuses Pyro's ``_compute_downstream_costs``: a site is credited only with the
    log p − log q terms of itself, of later guide sites that are not in an independent plate
    element, and of their model children; terms inside a plate the site is also in stay
    per element. Returns ``(costs, nodes)`` where ``costs[name]`` (detached) has the site's
    batch shape and ``nodes[name]`` is the set of trace sites it includes.
    """
    model_trace = with_guide_only_sites(model_trace, guide_trace)
    costs, nodes = _compute_downstream_costs(model_trace, guide_trace, set(sites))
    out = {}
    for name in sites:
        shape = guide_trace.nodes[name]["score_parts"].score_function.shape
        out[name] = torch.broadcast_to(torch.as_tensor(costs[name]).detach(), shape)
    return out, nodes


def with_guide_only_sites(model_trace, guide_trace):
    """``model_trace`` plus a zero-log-density copy of every guide-only observed site.

    A guide's ``pyro.factor`` (observed, no model counterpart) is part of log q; Pyro's
    ``_compute_downstream_costs`` expects every guide sample site in the model trace, so the
    site is given a model entry with log p = 0 and keeps its −log q in the costs of the
    earlier sites it depends on.
    """
    extra = [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"] and name not in model_trace.nodes
    ]
    if not extra:
        return model_trace
    model_trace = model_trace.copy()
    for name in extra:
        site = guide_trace.nodes[name]
        zero = torch.zeros_like(site["log_prob"])
        model_trace.add_node(name, **{**site, "log_prob": zero, "log_prob_sum": zero.sum()})
    return model_trace


def frames_of_stack(stack) -> frozenset:
    """The vectorized plate frames of a ``cond_indep_stack`` (what MultiFrameTensor keys on)."""
    return frozenset(f for f in stack if f.vectorized)


def sum_local_terms(terms: list[tuple[tuple, torch.Tensor]], site: dict) -> torch.Tensor:
    """Sum (cond_indep_stack, tensor) terms to ``site``'s plates, keeping only *local* terms.

    A term outside one of the site's plates depends on several plate elements at once; a
    control variate built from it would couple the elements' noises and lose unbiasedness, so
    it is left out (the control variate may be any smooth function of the site's own noise).
    """
    target = frames_of_stack(site["cond_indep_stack"])
    total = MultiFrameTensor()
    total.add(*((stack, value) for stack, value in terms if target <= frames_of_stack(stack)))
    return total.sum_to(site["cond_indep_stack"])


def param_leaves(*traces, exclude_prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """Unconstrained param-store leaves of the ``param`` sites in ``traces`` (by name)."""
    leaves = {}
    for trace in traces:
        for name, site in trace.nodes.items():
            if site["type"] != "param" or name.startswith(exclude_prefix) or name in leaves:
                continue
            value = site["value"]
            unconstrained = getattr(value, "unconstrained", None)
            leaf = unconstrained() if unconstrained is not None else value
            if isinstance(leaf, torch.Tensor) and leaf.requires_grad:
                leaves[name] = leaf
    return leaves


def running_state(name: str, init: torch.Tensor) -> torch.Tensor:
    """A running-average buffer kept in the param store, outside the trainable set.

    The buffer is a param-store entry with ``requires_grad=False``: ``get_state`` /
    ``set_state`` / ``save`` / ``load`` keep it with the parameters (so training resumes with
    its baselines), while ``named_parameters()`` code that trains or checks gradients can skip
    it by ``requires_grad`` as a torch buffer. Registered under :func:`poutine.block` so SVI's
    optimizer never sees it; updated in place with :func:`update_running_state`.
    Re-initialized if the stored shape differs.
    """
    store = pyro.get_param_store()
    if name in store and store.get_param(name).shape != init.shape:
        del store[name]
    with poutine.block():
        value = pyro.param(name, init.detach())
    unconstrained = getattr(value, "unconstrained", None)
    buffer = unconstrained() if unconstrained is not None else value
    buffer.requires_grad_(False)  # the param store makes every new entry require grad
    return buffer


def update_running_state(state: torch.Tensor, new_value: torch.Tensor, decay: float) -> None:
    with torch.no_grad():
        state.mul_(decay).add_((1.0 - decay) * new_value.detach())
    average_running_state(state)  # the same baseline on every rank under torch.distributed


# ---- discrete distributions: relaxed log-density ----------------------------------------


def sum_decisions(fn, family, per_decision: torch.Tensor) -> torch.Tensor:
    """Sum a per-decision log-density over the decision dims of a site element."""
    event_dims = len(family.decision_shape(fn))
    return per_decision.sum(tuple(range(-event_dims, 0))) if event_dims else per_decision


def relaxed_log_prob(fn, value: torch.Tensor) -> torch.Tensor:
    """The continuous extension of a discrete log-density at a relaxed value, per element.

    Bernoulli: b·log p + (1 − b)·log(1 − p); (OneHot)Categorical: the dot product of the
    (relaxed) one-hot value with log π. Equal to ``fn.log_prob`` at hard values. Categorical
    sites take a relaxed one-hot of shape ``batch + event + (K,)``.
    """
    family, base = family_of(fn)
    return sum_decisions(fn, family, family.log_prob(family.logits(fn, base), value))


def site_log_prob(site: dict, relaxed: bool) -> torch.Tensor:
    """Scaled and masked log-density of a trace site, by continuous extension if relaxed."""
    fn, value = site["fn"], site["value"]
    family = family_of(fn)[0]
    if relaxed and family is not None and value.is_floating_point() and not site["is_observed"]:
        log_prob = relaxed_log_prob(fn, value)
    else:
        log_prob = fn.log_prob(value, *site["args"], **site["kwargs"])
    return scale_and_mask(log_prob, site["scale"], site["mask"])


def _unmasked_log_prob(fn, value: torch.Tensor) -> torch.Tensor:
    """``fn.log_prob(value)`` with the ``.mask(...)`` wrappers at any depth not applied."""
    if isinstance(fn, MaskedDistribution):
        log_prob = _unmasked_log_prob(fn.base_dist, value)
        return log_prob.expand(broadcast_shape(fn.batch_shape, log_prob.shape))
    if isinstance(fn, Independent):
        log_prob = _unmasked_log_prob(fn.base_dist, value)
        return log_prob.sum(tuple(range(-fn.reinterpreted_batch_ndims, 0)))
    if isinstance(fn, ExpandedDistribution):
        log_prob = _unmasked_log_prob(fn.base_dist, value)
        return log_prob.expand(broadcast_shape(fn.batch_shape, log_prob.shape))
    return fn.log_prob(value)


def score_log_prob(site: dict) -> torch.Tensor:
    """The score function of a guide site with its masks not applied, per element.

    Pyro's ``score_parts`` leave the score function unmasked under ``poutine.mask`` and an
    outermost tensor ``.mask(...)``, but mask it inside ``to_event`` (``Independent`` builds
    it from its masked ``log_prob``) and for a Python bool mask. A masked site is still
    sampled from q, and its cost may depend on it through unmasked terms, so the estimators
    take the true log q at every mask (as on NumPyro: ``particles.score_log_prob``); an
    unmasked site's is ``score_parts.score_function`` itself.
    """
    score = site["score_parts"].score_function
    if not has_mask(site["fn"]):
        return score
    return _unmasked_log_prob(site["fn"], site["value"]).expand(score.shape)


def relaxed_cost(model_trace, guide_trace, nodes, site: dict, skip=()) -> torch.Tensor:
    """Σ over ``nodes`` (but ``skip``) of log p − log q in relaxed traces, kept local to
    ``site``'s plates."""
    terms = []
    for name in nodes:
        if name in skip:
            continue
        if name in guide_trace.nodes and not site_is_subsample(guide_trace.nodes[name]):
            guide_site = guide_trace.nodes[name]
            log_r = -site_log_prob(guide_site, True)
            if name in model_trace.nodes:  # else a guide-only observed site (pyro.factor)
                log_r = log_r + site_log_prob(model_trace.nodes[name], True)
            terms.append((guide_site["cond_indep_stack"], log_r))
        elif name in model_trace.nodes and not site_is_subsample(model_trace.nodes[name]):
            model_site = model_trace.nodes[name]
            terms.append((model_site["cond_indep_stack"], site_log_prob(model_site, True)))
    return sum_local_terms(terms, site)


__all__ = [
    "DiscreteLatentELBO",
    "downstream_costs",
    "param_leaves",
    "pathwise_elbo_and_surrogate",
    "relaxed_cost",
    "relaxed_log_prob",
    "running_state",
    "score_log_prob",
    "sum_decisions",
]


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
