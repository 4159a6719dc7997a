"""REBAR and RELAX: control-variate gradient estimators for discrete guide sites.

For a discrete guide site with logits ℓ (Bernoulli, Categorical or OneHotCategorical, also
wrapped by ``to_event`` / ``expand`` / ``mask``) the estimators draw uniform noise u, v and

    z = ℓ + logistic(u) (Gumbel for categorical),  b = H(z),  z̃ ~ p(z | b) from v,
    ĝ = [f(b) − c(z̃) − β] ∇ log q(b) + ∇c(z) − ∇c(z̃)                          ([2] eq. (8))

where f is the site's plate-aware downstream cost (log p − log q of the terms the site can
influence, see :mod:`.particles`), c a control variate — REBAR's c(z) = η·f(σ_λ(z)) ([1]),
RELAX's c(z) = η·f(σ_λ(z)) + r_ρ(z) ([2] section 3.3) — and β, with ``num_particles >= 2``
only, the leave-one-out mean of the other particles' f − c(z̃) (zero otherwise). ĝ is
unbiased for any η, λ, ρ, which are trained by the SVI optimizer to minimise the
single-sample variance: ∇_φ Var ĝ = E[∇_φ ĝ²] ([2] eq. (6)). Equation numbers: [2] as
arXiv:1711.00123v3, the same on the NumPyro backend and in docs/guides/derivations.rst.

One backward pass gives both gradients. The θ-part of the returned loss is built with
φ = (η, λ, ρ) held constant, so its gradient is ĝ for the model and guide parameters and
nothing for φ. For φ the estimate is rebuilt at a detached copy ℓ' of the site's logits with
φ live and differentiated once with ``create_graph``: ĝ_ℓ = ∂S/∂ℓ' is a differentiable
function of φ; ∇_φ Σ ĝ_ℓ² (the second derivative) is taken there and injected linearly,
⟨φ, sg(∇_φ Σ ĝ_ℓ²)⟩, so that it trains φ only (a replay may depend on θ through the
programs' arguments). Two approximations of φ's training signal — only of it — keep this cheap:
the variance of the estimate with respect to the logits rather than to the parameters θ
(the φ-dependent part of ĝ_θ is (∂ℓ/∂θ)ᵀ ĝ_ℓ, so a control variate that removes ĝ_ℓ's
noise removes all of ĝ_θ's that a control variate can reach), and, with
coordinate-wise control variates, the sum over an element's D decisions estimated from
:data:`VARIANCE_DECISIONS` decision(s) chosen uniformly at random, weighted D / m (unbiased for
the sum). With one joint control variate (two relaxed copies) one replay serves both: the
estimate is built once with φ live and its φ-gradient replaced. Measured with
``benchmarks/coordinatewise.py`` (128-point binary VAE, K = 2, one thread; ratio to
TraceGraph_ELBO in the same run, alternating runs of the previous and this code on the
loaded shared machine, four pairs): REBAR 2.2–3.4× → 1.8–2.7× at 16 latents, 3.4–4.9× →
2.7–3.5× at 32; RELAX 3.6–5.5× → 2.8–4.0× at 16, 6.3–7.6× → 4.1–4.7× at 32.
With RELAX's default network the θ-part evaluates r_ρ at the 2·D copies with ρ held
constant as value + (z_j − sg(z_j))·∂r/∂z_j, the derivative computed in the forward pass
(:func:`_linearized_network`: no backward through the (2, batch, D, hidden) tensors, tanh as
2σ(2a) − 1), and the relaxed copies are written into copies of b (the backward gathers the
relaxed entries): same gradients up to float rounding (≤ 1.3e-15 relative; REBAR bitwise).
Measured as above, three alternating pairs at load 0.6–1.5: RELAX 3.1–3.5× → 2.4–3.5× at 16
latents, 5.0–5.4× → 3.4–4.3× at 32; REBAR 2.2–2.4× → 1.9–2.3× at 16, 3.2–4.0× → 2.7–3.7×
at 32. What is left is mostly the model itself at the 2·D copies (its float64 log-density
and matrix products, forward and backward) and, on this VM, page faults of the fresh large
tensors (with glibc's ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` set to 1e9 a
D = 32 RELAX step took 31 ms against 46 ms, REBAR 25 against 30, measured once each).
Later speed-ups, each leaving the estimate equal up to float rounding: Bernoulli
log-densities as one fused op; the conditional draw z̃ in five elementwise ops (and more
accurate); the decision index known rather than searched (views, not gathers); the site's
own cost from the affine continuous extension; φ's variance term at its one selected
decision only, from one vector–Jacobian product; the replays' random-number state set rather
than redrawn; the all-decision copies written and read through a diagonal; the linearized
network's two points in one buffer. D = 32, alternating runs against the code before them at
load 3–7: REBAR 3.2–3.9× → 2.9–3.4× and RELAX 3.9–4.6× → 3.5–3.9× in processes whose heap
is faulted in again each step (2,000–5,000 minor faults per step), REBAR 3.2× → 2.4–2.7×
and RELAX 3.9× → 2.9–3.3× in processes whose heap is not (about 1); D = 16: REBAR
2.3–2.5× → 1.7–2.1×, RELAX 2.8–2.9× → 2.2–2.4×.

How f(σ_λ(z)) is evaluated ("the relaxed replay"): the guide is re-run from the random-number
state of the original run, so every continuous (reparameterized) site draws the same noise
and every later discrete site the same u; the site takes the relaxed value σ_λ(z) (softmax
for one-hot), later discrete sites take their own relaxed values σ_λ(ℓ' + logistic(u')) with
logits ℓ' recomputed from the relaxed inputs, and earlier sites keep their sampled values. The
model is replayed against that guide trace and discrete log-densities are evaluated by their
continuous extension (b·log p + (1 − b)·log(1 − p); one-hot·log π). Parameters are detached in
the replay, so c depends on the guide's parameters only through z. Terms outside the site's
plates are left out of c (they would couple plate elements). The random-number handling of
the replays lives in one place, :class:`ReplayRandomness`.

Coordinate-wise control variates (``coordinatewise=True``, the default). A site element with
D > 1 decisions — the event dims of a ``to_event`` Bernoulli, several one-hot decisions — has
one cost f for all of them, so with one joint control variate the score term of decision j
also carries the noise of the other D − 1 decisions. Instead, decision j gets its own
control variate c_j(z) = η·f(b₋ⱼ, σ_λ(z_j)) (+ r_ρ): decision j relaxed, the element's other
decisions held at their sampled values b₋ⱼ, and c_j enters only decision j's terms,
ĝ = Σ_j [f(b) − c_j(z̃)] ∇log q(b_j) + ∇c_j(z) − ∇c_j(z̃). Unbiased because the decisions of
an element are independent given the logits, so b₋ⱼ is independent of (z_j, z̃_j) and each
term is the one-decision estimator of ∇ E[f] through decision j's logits at fixed b₋ⱼ (c_j
may depend on b₋ⱼ because it is differentiated along z_j only). The 2·D relaxed
values of a site are replayed at once, along an extra batch dimension left of every plate
(the program must broadcast over leading batch dims, as Pyro's ``vectorize_particles``
already requires; where its code raises, or a reparameterized guide site follows the site,
the copies are replayed one by one), and the site's own log-density at the 2·D copies is
evaluated by its factorization over decisions. Measured on the test suite's binary VAE (3
decisions per data point, one particle): encoder-gradient variance 15–17× below
TraceGraph_ELBO's decaying-average baseline against 2.4–2.9× with the joint form.
``coordinatewise=False`` gives the papers' joint form.

Masked decisions (``poutine.mask``, ``.mask(...)``; inside ``to_event`` a mask selects single
decisions; :func:`kept_decisions`): the score term keeps the true log q(b_j) (also where
Pyro's ``score_parts`` mask it: inside ``to_event``, a bool mask; see
:func:`~pyro_reparam_ext.infer.particles.score_log_prob`), and the control variate is zero
there (c ≡ 0). Where the cost cannot depend on the masked decision (the site masked in model and
guide) f − β = 0 and the term vanishes; the NumPyro backend does the same.

Behaviour at sites the relaxation cannot reach:

- a ``Categorical`` site (integer-valued: user code indexes with it), or a site followed in the
  guide by a ``Categorical`` site, cannot be replayed with a relaxed value; its control
  variate then relaxes the site's own log p − log q term only (plus r_ρ for RELAX) — still
  unbiased, with less variance reduction. Why not the multilinear extension
  f̃(σ) = Σ_k σ_k f(k) from one replay per category: measured on the Categorical mixture of
  tests/infer/models.py (3 categories, η = 1, λ = ½ fixed, 2000 estimates each), the total
  variance of the assignment logits' gradient is 1080 / 644 / 304 here at K = 1 / 2 / 4
  particles (K model evaluations) against 507 / 303 / 135 with the multilinear extension
  (4K evaluations): per evaluation this treatment is 1.7–1.9× better (variance × evaluations
  1080–1290 against 2030–2420; at 4 evaluations each, 304 against 507); NumPyro does the same;
- any other non-reparameterized guide site (e.g. ``Poisson``, a non-reparameterized
  ``Gamma``) raises ``ValueError`` naming the site: use :class:`ScoreFunction_ELBO` for it.

Learned state, in the param store (saved and loaded with it, updated by SVI's optimizer):
``reparam_ext.<site>.log_temperature`` (log λ), ``reparam_ext.<site>.eta`` (η) and, for
RELAX, the network ``reparam_ext.relax.<site>`` (``pyro.module``).

References:
    [1] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR:
        Low-variance, unbiased gradient estimates for discrete latent variable models.
    [2] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud (2018). Backpropagation through
        the void: Optimizing control variates for black-box gradient estimation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import pyro
import pyro.poutine as poutine
import torch
import torch.nn.functional as F
from pyro.distributions.util import scale_and_mask
from pyro.poutine.messenger import Messenger
from torch import nn

from pyro_reparam_ext.infer.particles import (
    DiscreteLatentELBO,
    downstream_costs,
    extends_options,
    pathwise_elbo_and_surrogate,
    relaxed_cost,
    score_log_prob,
    sum_decisions,
    sum_local_terms,
)
from pyro_reparam_ext.infer.sites import (
    PREFIX,
    check_relaxable,
    family_of,
    relaxable_draw,
    score_function_sites,
    site_options,
    unmasked_decisions,
)

__all__ = ["REBAR_ELBO", "RELAX_ELBO"]

#: Decisions per site element whose ĝ trains φ in a step (coordinate-wise control variates):
#: see :meth:`REBAR_ELBO._variance_term`.
VARIANCE_DECISIONS = 1


# ---- coordinate-wise control variates: decisions, copies, the site's own term -------------


def decision_masks(family, logits, batch_shape, coordinatewise: bool):
    """One boolean mask per decision of a site element, or None for one joint control variate.

    Shape ``(D,) + (1,) * len(batch_shape) + decision_shape`` (plus a trailing 1 over the
    categories of a one-hot): mask j selects decision j. None when ``coordinatewise`` is off
    or an element holds a single decision.
    """
    shape = tuple(logits.shape[len(batch_shape) : logits.dim() - family.category_dims])
    size = num_decisions(family, logits, batch_shape)
    if not coordinatewise or size <= 1:
        return None
    masks = torch.eye(size, dtype=torch.bool, device=logits.device)
    masks = masks.reshape((size,) + (1,) * len(batch_shape) + shape + (1,) * family.category_dims)
    masks._decision_index = slice(None)  # all D in order: indexing by it is a view
    return masks


def decision_index(masks) -> torch.Tensor | slice:
    """The decision each mask selects: (m,) indices into an element's D decisions, or
    ``slice(None)`` for the D masks of :func:`decision_masks` (in order), so that indexing
    by it is a view, not a gather. Known without a search for the masks of
    :func:`decision_masks` and :func:`variance_masks`, which record it."""
    index = getattr(masks, "_decision_index", None)
    if index is not None:
        return index
    return masks.reshape(masks.shape[0], -1).to(torch.uint8).argmax(-1)


def variance_masks(masks, num: int):
    """``num`` of the D decision masks, chosen uniformly at random, and the weight D / num.

    φ's training signal (the variance of ĝ, see :meth:`REBAR_ELBO._variance_term`) is a sum
    over decisions; the sum over a uniformly random subset, weighted D / num, estimates it
    without bias at a fraction of the cost. Joint control variates (``masks`` None): all.
    """
    if masks is None or masks.shape[0] <= num:
        return masks, 1.0
    chosen = torch.randperm(masks.shape[0], device=masks.device)[:num]
    subset = masks[chosen]
    if isinstance(getattr(masks, "_decision_index", None), slice):
        subset._decision_index = chosen
    return subset, masks.shape[0] / num


def decision_scores(family, logits, hard, masks, score_function) -> torch.Tensor:
    """log q of each decision selected by ``masks``, (m, *batch) — or, joint, the site's
    score function, (1, *batch)."""
    if masks is None:
        return score_function.unsqueeze(0)
    per_decision = family.decision_log_prob(logits, hard).reshape(score_function.shape + (-1,))
    return per_decision.movedim(-1, 0)[decision_index(masks)]


def kept_decisions(site, family, masks, batch_shape):
    """Whether the site's masks keep each decision ``masks`` selects, (m, *batch) — joint:
    whether they keep some decision of the element, (1, *batch) — or None if unmasked.

    A masked decision keeps its score term with the true log q(b_j) (the site is still
    sampled from q), but gets no control variate: where its cost cannot depend on it (the
    usual case: the site masked in model and guide) f − β = 0 and its whole term vanishes,
    and elsewhere it is a plain score-function term, unbiased either way.
    """
    keep = unmasked_decisions(site, family)
    if keep is None:
        return None
    shape = batch_shape + family.decision_shape(site["fn"])
    keep = torch.broadcast_to(keep, shape).reshape(batch_shape + (-1,))
    if masks is None:
        return keep.any(-1).unsqueeze(0)
    return keep.movedim(-1, 0)[decision_index(masks)]


@dataclass
class SiteDraw:
    """What the relaxation messenger records for one discrete guide site."""

    family: object
    logits: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    value: torch.Tensor
    #: the logits-free parts of (z, z̃) of a family with ``_points``, cached by relaxed_points
    point_noise: tuple | None = None
    #: the random-number state right after the draw, where a replay sets it instead of drawing
    rng_after: dict | None = None


def relaxed_points(draw: SiteDraw, logits: torch.Tensor, select=None):
    """(z, z̃) stacked: the relaxed logits of the draw's noise at ``logits`` (the draw's own,
    or a detached copy) and a conditional draw given b; and b (all of it).

    ``select`` (see :func:`decision_selector`): (z, z̃) at the selected decisions only,
    (2, *batch, m, k), computed from the selected logits and noise (elementwise per decision).
    """
    family = draw.family
    hard = family.as_relaxed(draw.value, logits)
    keep = (lambda t: t) if select is None else select
    points = getattr(family, "_points", None)
    if points is not None:  # Bernoulli: the noise's part computed once for both estimates
        if draw.point_noise is None:
            draw.point_noise = family._point_noise(draw.u, draw.v, hard)
        return points(keep(logits), tuple(keep(t) for t in draw.point_noise)), hard
    z = family.relaxed_logits(keep(logits), keep(draw.u))
    z_tilde = family.conditional_relaxed_logits(keep(logits), keep(hard), keep(draw.v))
    return torch.stack([z, z_tilde]), hard


def decision_selector(logits, batch_shape, masks):
    """t ↦ t at the decisions ``masks`` select, (*lead, *batch, m, k), for a tensor t shaped
    ``lead + logits.shape`` (k: the logits per decision)."""
    index = decision_index(masks)
    num = math.prod(masks.shape[1:])
    dims = logits.dim()

    def select(t):
        lead = tuple(t.shape[: t.dim() - dims])
        return t.reshape(lead + tuple(batch_shape) + (num, -1))[..., index, :]

    return select


def relaxed_copies(soft, hard, masks, batch_shape, selected: bool = False) -> torch.Tensor:
    """The relaxed values c is evaluated at: (2, m or 1, *value_shape).

    ``soft`` (2, *value_shape) holds σ_λ(z), σ_λ(z̃). Copy (p, i) relaxes the decision mask i
    selects at point p and holds the element's other decisions at their sampled values
    (coordinate-wise), or relaxes the whole value (joint). The relaxed entries are written
    into copies of b, so the backward pass gathers m entries per element instead of
    reducing over the (2, m, *value_shape) copies. ``selected``: ``soft`` holds the selected
    decisions only, (2, *batch, m, k) (:func:`decision_selector`).
    """
    if masks is None:
        return soft.unsqueeze(1)
    index = decision_index(masks)
    size, num = masks.shape[0], math.prod(masks.shape[1:])
    flat_hard = hard.reshape(batch_shape + (num, -1))
    relaxed = soft if selected else soft.reshape((2,) + batch_shape + (num, -1))[..., index, :]
    if isinstance(index, slice) and size == num:  # all D: copy j's decision j, a diagonal
        return _DiagonalCopies.apply(relaxed, flat_hard).reshape((2, size) + hard.shape)
    copies = flat_hard.expand((2, size) + flat_hard.shape).clone()
    positions = torch.arange(size, device=masks.device)
    put = positions if isinstance(index, slice) else index
    copies[:, positions, ..., put, :] = relaxed.movedim(-2, 0)
    return copies.reshape((2, size) + hard.shape)


class _DiagonalCopies(torch.autograd.Function):
    """(2, D, *batch, D, k) copies of ``hard`` (*batch, D, k) with copy j's decision j set from
    ``relaxed`` (2, *batch, D, k): written through a diagonal view, and the backward pass
    takes the gradient's diagonal (a view; index_put's backward gathers it, and autograd's
    in-place copy into a view would clone the whole gradient first). Differentiable again:
    the backward is ``diagonal``."""

    @staticmethod
    def forward(ctx, relaxed, hard):
        copies = hard.expand((2, hard.shape[-2]) + hard.shape).clone()
        copies.diagonal(dim1=1, dim2=-2).copy_(relaxed.movedim(-2, -1))
        return copies

    @staticmethod
    def backward(ctx, grad):
        # copied out, so that the (2, D, *batch, D, k) gradient is freed at once
        return grad.diagonal(dim1=1, dim2=-2).movedim(-1, -2).contiguous(), None


def separable_own_cost(
    family, soft, hard, masks, batch_shape, model_site, guide_site, selected: bool = False
):
    """The target site's own relaxed log p − log q at every copy, (2, D or 1, *batch).

    The density factorizes over the decisions of an element, so copy (p, j) — decision j at
    ``soft[p]``, the others at b — costs Σ_k t_k(b) − t_j(b) + t_j(soft[p]) without evaluating
    the density at each copy; t_j(soft[p]) − t_j(b) is affine in the value (the continuous
    extension is linear in it), ``_log_prob_change`` of the family. None when a replayed
    density's logits changed shape (they depend on relaxed values): the copies are then
    evaluated one by one. ``selected``: ``soft`` holds the selected decisions only.
    """
    select = decision_selector(hard, batch_shape, masks) if selected else None
    total = 0.0
    for site, sign in ((model_site, 1.0), (guide_site, -1.0)):
        site_family, base = family_of(site["fn"])
        logits = site_family.logits(site["fn"], base)
        if logits.shape != hard.shape:
            return None
        at_hard = family.decision_log_prob(logits, hard).reshape(batch_shape + (-1,))
        if selected:  # the change at the selected decisions only: (2, *batch, m)
            change = family._log_prob_change(select(logits), select(hard), soft)
        else:
            change = family._log_prob_change(logits, hard, soft)
        change = change.reshape((2,) + batch_shape + (-1,))
        at_hard, change = at_hard.movedim(-1, 0), change.movedim(-1, 1)
        if masks is None:
            own = at_hard.sum(0) + change.sum(1, keepdim=True)
        else:
            own = at_hard.sum(0) + (change if selected else change[:, decision_index(masks)])
        total = total + sign * scale_and_mask(own, site["scale"], site["mask"])
    return total


# ---- relaxed replays ----------------------------------------------------------------------


class _RelaxationNoise(Messenger):
    """Samples every discrete guide site as b = H(z), z = ℓ + noise, recording a SiteDraw.

    In replay mode (``target`` set) it sets the random-number state to where the recorded
    run's draw left it (the same stream as drawing that noise again, without the draw), so
    the stream stays aligned for later continuous sites, gives the target the relaxed value
    ``target_value`` (which may carry extra leading copy dims), later discrete sites their own
    relaxed values σ_λ(ℓ' + noise) with the recorded noise, and earlier ones their sampled
    values.
    """

    def __init__(self, records=None, target=None, target_value=None, temps=None):
        super().__init__()
        self.records = {} if records is None else records
        self.target = target
        self.target_value = target_value
        self.temps = temps
        self._seen_target = False

    def _pyro_sample(self, msg):
        family, base = relaxable_draw(msg)
        if family is None:  # sampled as usual; check_relaxable refuses it after the run
            return
        fn = msg["fn"]
        logits, name = family.logits(fn, base), msg["name"]
        if self.target is None:
            u, v = family.noise(logits)
            value = family.hard(family.relaxed_logits(logits, u))
            self.records[name] = SiteDraw(family, logits, u, v, value, rng_after=_rng_state())
        else:
            record = self.records[name]
            _set_rng_state(record.rng_after)  # as if the recorded run's draws were repeated
            if name == self.target:
                value = self.target_value
                self._seen_target = True
            elif not self._seen_target:
                value = record.value
            else:
                value = family.soft(family.relaxed_logits(logits, record.u), self.temps[name])
        msg["value"] = value


class _DetachParams(Messenger):
    """Detach parameter values, so a replay depends on parameters only through its inputs.

    Post-processing runs outermost first, so the plates inside the program see the detached
    value after this messenger: it keeps the link to the param-store leaf that Pyro's
    subsampling plate records local parameters (``event_dim``) on.
    """

    def _pyro_post_param(self, msg):
        value = msg["value"]
        detached = value.detach()
        leaf = getattr(value, "_pyro_unconstrained_param", None)
        if leaf is None and hasattr(value, "unconstrained"):
            leaf = value.unconstrained()
        if leaf is not None:
            detached._pyro_unconstrained_param = leaf
        msg["value"] = detached


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


class ReplayRandomness:
    """The random-number handling of relaxed replays, in one place.

    ``record()`` wraps the original run: it saves the state before and after. ``replay()``
    wraps one replay: it starts from the saved state before (so the replay draws the same
    continuous noise and the same subsample indices) and leaves the state where the original
    run left it, so the replays consume no randomness of their own.
    """

    def __init__(self):
        self.before = self.after = None

    @contextmanager
    def record(self) -> Iterator[None]:
        self.before = _rng_state()
        yield
        self.after = _rng_state()

    @contextmanager
    def replay(self) -> Iterator[None]:
        _set_rng_state(self.before)
        try:
            yield
        finally:
            _set_rng_state(self.after)

    @contextmanager
    def untouched(self) -> Iterator[None]:
        """Leaves the state where the original run left it (e.g. after a network's init)."""
        try:
            yield
        finally:
            _set_rng_state(self.after)


@dataclass
class ParticleRun:
    """One particle run: the program, its traces and draws, and how to replay it."""

    model: Callable
    guide: Callable
    args: tuple
    kwargs: dict
    model_trace: object
    guide_trace: object
    records: dict
    randomness: ReplayRandomness
    max_plate_nesting: float

    def replay_cost(self, target: str, value, temps: dict, nodes, own_cost=None):
        """Σ of the ``nodes``' log p − log q with ``target`` set to the relaxed ``value``.

        With ``own_cost`` (a function of the target's replayed model and guide sites giving
        its own term, or None where it cannot), returns ``(other terms, own term)``.
        """
        noise = _RelaxationNoise(self.records, target=target, target_value=value, temps=temps)
        # validation off: relaxed values lie outside the discrete supports by design, and the
        # recorded run of the same program was validated
        with self.randomness.replay(), _DetachParams(), pyro.validation_enabled(False):
            guide_trace = poutine.trace(noise(self.guide)).get_trace(*self.args, **self.kwargs)
            model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(
                *self.args, **self.kwargs
            )
        site = self.guide_trace.nodes[target]
        if own_cost is None:
            return relaxed_cost(model_trace, guide_trace, nodes, site)
        own = own_cost(model_trace.nodes[target], guide_trace.nodes[target])
        skip = () if own is None else (target,)
        return relaxed_cost(model_trace, guide_trace, nodes, site, skip=skip), own

    def can_batch_replays(self, target: str) -> bool:
        """Whether copies of ``target``'s relaxed value can share one replay (extra batch dim).

        Needs a finite plate nesting (the copy dim goes left of every plate) and no
        reparameterized guide site after the target: such a site would draw fresh noise for
        each copy instead of the recorded one.
        """
        if self.max_plate_nesting == float("inf"):
            return False
        names = [n for n, s in self.guide_trace.nodes.items() if s["type"] == "sample"]
        for name in names[names.index(target) + 1 :]:
            site = self.guide_trace.nodes[name]
            if not site["is_observed"] and getattr(site["fn"], "has_rsample", False):
                return False
        return True

    def own_cost(self, name: str, value) -> torch.Tensor:
        """Relaxed log p − log q of the site alone (for sites the replay cannot reach)."""
        guide_site, model_site = self.guide_trace.nodes[name], self.model_trace.nodes[name]
        terms = []
        for site, sign in ((model_site, 1.0), (guide_site, -1.0)):
            family, base = family_of(site["fn"])
            logits = family.logits(site["fn"], base).detach()
            log_prob = sum_decisions(site["fn"], family, family.log_prob(logits, value))
            terms.append((site["cond_indep_stack"], sign * log_prob * site["scale"]))
        return sum_local_terms(terms, guide_site)


def relaxed_costs(run: ParticleRun, name: str, copies, temps, nodes, own_cost) -> torch.Tensor:
    """The relaxed cost of every copy of ``name``'s relaxed value: (*copy_shape, *batch).

    ``copies`` has shape ``copy_shape + value_shape``. One replay with the copies along an
    extra batch dim left of every plate when possible (the 2·D coordinate-wise replays of a
    site then cost about one replay); one replay per copy when the program's code does not
    broadcast over that dim (it raises), or when batching would change its noise.
    """
    site = run.guide_trace.nodes[name]
    batch_shape = site["score_parts"].score_function.shape
    copy_shape = copies.shape[:2]
    flat = copies.reshape((-1,) + copies.shape[2:])
    later = list(run.records)[list(run.records).index(name) :]
    if not all(run.records[t].family.replayable for t in later):
        cost = run.own_cost(name, flat)
    else:
        cost = None
        if run.can_batch_replays(name):
            try:
                cost = _batched_replay_cost(run, name, flat, batch_shape, temps, nodes, own_cost)
            except (RuntimeError, ValueError, IndexError):  # code that assumes its batch shape
                cost = None
        if cost is None:
            cost = torch.stack(
                [
                    torch.broadcast_to(run.replay_cost(name, c, temps, nodes), batch_shape)
                    for c in flat.unbind(0)
                ]
            )
    return torch.broadcast_to(cost, flat.shape[:1] + batch_shape).reshape(copy_shape + batch_shape)


def _batched_replay_cost(run, name, flat, batch_shape, temps, nodes, own_cost) -> torch.Tensor:
    """One replay of all copies ``flat`` (C, *value_shape), the copy dim left of every plate."""
    num = flat.shape[0]
    pad = int(run.max_plate_nesting) - len(batch_shape)
    value = flat.reshape((num,) + (1,) * pad + flat.shape[1:])
    cost, own = run.replay_cost(name, value, temps, nodes, own_cost)
    cost = torch.as_tensor(cost, dtype=flat.dtype, device=flat.device)  # 0.0: no other terms
    cost = torch.broadcast_to(cost, (num,) + (1,) * pad + batch_shape).reshape((num,) + batch_shape)
    return cost if own is None else cost + own.reshape((num,) + batch_shape)


def estimator_leaves() -> list[torch.Tensor]:
    """The trainable estimator state φ in the param store (η, log λ, networks' weights)."""
    store = pyro.get_param_store()
    leaves = (
        store.get_param(name).unconstrained() for name in store.keys() if name.startswith(PREFIX)
    )
    return [leaf for leaf in leaves if leaf.requires_grad]


def score_surrogate(score, cost, c_points, baseline) -> torch.Tensor:
    """Surrogate-ELBO term whose θ-gradient is ĝ = [f − c(z̃)]∇log q + ∇c(z) − ∇c(z̃).

    ``score`` (D, *batch): log q per decision (or of the element); ``cost`` (*batch): the
    downstream cost f (detached); ``c_points`` (2, D, *batch): c at z and z̃ ([2] eq. (8)). The
    score.detach()·c(z̃) term cancels −score·∇c(z̃) while keeping c(z̃)'s dependence on φ
    inside ∇_θ, which the variance gradient needs; the baseline β of f − c(z̃) keeps its
    φ-dependence too.
    """
    c_z, c_z_tilde = c_points.unbind(0)
    shift = c_z_tilde + baseline(cost - c_z_tilde)
    return (score * (cost - shift) + score.detach() * shift).sum() + (c_z - c_z_tilde).sum()


def score_surrogate_gradient(score, logits, cost, c_points, baseline) -> torch.Tensor | None:
    """∂/∂``logits`` of :func:`score_surrogate`, differentiable in φ (``create_graph``).

    ĝ_ℓ = Σ (f − c(z̃) − β)·∂score/∂ℓ + ∂[Σ c(z) − c(z̃)]/∂ℓ: one backward pass, the
    residual f − c(z̃) − β the vector of the score's vector–Jacobian product. The surrogate's
    other paths from ℓ — through c(z̃) and β inside the residual — carry a gradient of
    exactly zero there (score − score.detach()), so the same ĝ_ℓ comes without following
    them, here or in the second derivative of Σ ĝ_ℓ². None if nothing depends on ``logits``.
    """
    c_z, c_z_tilde = c_points.unbind(0)
    residual = cost - (c_z_tilde + baseline(cost - c_z_tilde))
    outputs = list(torch.broadcast_tensors(score, residual))
    control = (c_z - c_z_tilde).sum()
    if control.requires_grad:
        outputs.append(control)
    vectors = [outputs.pop(1)] + [torch.ones_like(control)] * (len(outputs) - 1)
    (grad,) = torch.autograd.grad(outputs, [logits], vectors, create_graph=True, allow_unused=True)
    return grad


# ---- control variate networks -------------------------------------------------------------


class ControlVariateNet(nn.Module):
    """Default r_ρ: a one-hidden-layer tanh MLP from a site element's input to a scalar.

    RELAX feeds it the relaxed logits z and the site's (detached) logits, concatenated:
    ``batch + (event_size,)`` in, ``batch`` out. Initialisation, the same on both backends
    (NumPyro's :func:`numpyro_backend.infer.relax.mlp_control_variate`): hidden weights and
    biases uniform in ±1/√event_size (``nn.Linear``'s default), and the output layer (weights
    and bias) 0, so r_ρ starts as the zero function and RELAX starts as REBAR.
    """

    def __init__(self, event_size: int, hidden_dim: int = 32):
        super().__init__()
        self.hidden = nn.Linear(event_size, hidden_dim)
        self.output = nn.Linear(hidden_dim, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(torch.tanh(self.hidden(z))).squeeze(-1)


def _own_relaxed_logits(family, points, masks, batch_shape) -> torch.Tensor:
    """z_j of each decision at both points: (2, D, *batch, k), k logits per decision."""
    ndims = masks.dim() - 1 - len(batch_shape) - family.category_dims
    stop = -family.category_dims
    own = (points.unsqueeze(1) * masks).sum(tuple(range(stop - ndims, stop)))
    return own if family.category_dims else own.unsqueeze(-1)


def network_input(
    family, points, logits, hard, masks, batch_shape, selected: bool = False
) -> torch.Tensor:
    """RELAX's network input at both points: (2, D or 1, *batch, input_size).

    Joint: [z, ℓ]. Coordinate-wise, for decision j: [z_j, ℓ, b with decision j zeroed, one-hot
    of j]. ℓ is detached (a fixed function of z for the identity behind ĝ; it carries what
    the guide conditions on, e.g. the data point in a VAE). ``selected``: ``points`` hold the
    selected decisions only, (2, *batch, m, k).
    """
    flat_logits = logits.detach().reshape(batch_shape + (-1,))
    if masks is None:
        parts = [points.reshape((2, 1) + batch_shape + (-1,)), flat_logits]
    else:
        num = masks.shape[0]  # the selected decisions
        if selected:
            own = points.movedim(-2, 1)
        else:
            own = _own_relaxed_logits(family, points, masks, batch_shape)
        others = (hard * ~masks).reshape((num,) + batch_shape + (-1,))
        position = masks.reshape(num, -1).to(points.dtype)
        position = position.reshape((num,) + (1,) * len(batch_shape) + (-1,))
        parts = [own, flat_logits, others, position]
    shape = (2, parts[0].shape[1]) + batch_shape
    return torch.cat([torch.broadcast_to(p, shape + p.shape[-1:]) for p in parts], -1)


def num_decisions(family, logits, batch_shape) -> int:
    """D, the number of decisions in one site element."""
    return math.prod(logits.shape[len(batch_shape) : logits.dim() - family.category_dims])


def factored_network(
    net, family, points, logits, hard, masks, batch_shape, detach: bool = False, selected=False
) -> torch.Tensor:
    """:class:`ControlVariateNet` at the coordinate-wise inputs without building them.

    Its first layer is linear, so for decision j
    W·[z_j, ℓ, b₋ⱼ, e_j] + w₀ = W_z z_j + (W_ℓ ℓ + W_b b + w₀) − W_b,j b_j + W_e,j: the part
    shared by an element's D decisions is computed once, not once per decision (the input
    has 2·size + D + k numbers per decision). Equal to ``net(network_input(...))`` at the
    decisions ``masks`` selects, (2, m, *batch). ``detach``: with the network's parameters
    held constant, evaluated by :func:`_linearized_network` (same value and first
    derivative in ``points``). ``selected``: ``points`` hold the selected decisions only,
    (2, *batch, m, k).
    """
    num = num_decisions(family, logits, batch_shape)
    index = decision_index(masks)
    params = (net.hidden.weight, net.hidden.bias, net.output.weight, net.output.bias)
    weight, bias, out_weight, out_bias = (t.detach() for t in params) if detach else params
    if detach:  # σ(2a) is evaluated, not tanh(a): the hidden layer's input scaled by 2
        weight, bias = 2.0 * weight, 2.0 * bias
    flat_logits = logits.detach().reshape(batch_shape + (-1,))
    hard_flat = hard.reshape(batch_shape + (-1,))
    size = flat_logits.shape[-1]
    per = size // num
    w_own, w_logits, w_hard, w_position = weight.split([per, size, size, num], dim=1)
    # layout (*batch, m, hidden): decisions next to the hidden units, no copies by movedim
    shared = F.linear(flat_logits, w_logits) + F.linear(hard_flat, w_hard) + bias
    own_hard = hard_flat.reshape(batch_shape + (num, per))[..., index, :]
    # shared + W_e,j − W_b,j b_j (the same at z, z̃): one (*batch, m, hidden) tensor allocated,
    # W_b,j b_j subtracted in place (one fused pass for one logit per decision)
    base = shared.unsqueeze(-2) + w_position.T[index]
    if per == 1:
        base = base.addcmul_(own_hard, w_hard.T[index], value=-1.0)
    else:
        w_own_hard = w_hard.reshape(-1, num, per)[:, index]
        base = base.sub_(torch.einsum("...dk,hdk->...dh", own_hard, w_own_hard))
    if not selected:  # z_j: (2, *batch, m, k)
        points = points.reshape((2,) + batch_shape + (num, per))[..., index, :]
    own = points
    if detach:
        out = _linearized_network(base, own, w_own, out_weight, out_bias)
    else:
        out = F.linear(torch.tanh(_hidden_input(base, own, w_own)), out_weight, out_bias)
    return out.squeeze(-1).movedim(-1, 1)


def _hidden_input(base, own, w_own, out=None) -> torch.Tensor:
    """The hidden layer's input W_z z_j + base at both points: (2, *batch, m, hidden) (or at
    one point, ``own`` without the leading 2; ``out``: written there, without autograd)."""
    if own.shape[-1] == 1:  # one fused op over the 2·m copies (the widest tensors of a step)
        return torch.addcmul(base, own, w_own.T, out=out)
    if out is None:
        return F.linear(own, w_own) + base
    return torch.add(F.linear(own, w_own), base, out=out)


def _linearized_network(base, own, w_own, out_weight, out_bias) -> torch.Tensor:
    """r = w_o·tanh(a) + b_o as value + (z_j − sg(z_j))·∂r/∂z_j, with ``base`` and
    ``w_own`` the hidden layer's (constant) weights scaled by 2: 2a = 2·W_z z_j + 2·base.

    Same value and first derivative in z_j as the network with its parameters held
    constant, the derivative w_o·(1 − tanh²(a))·W_z computed in the forward pass: no
    backward through the (2, *batch, m, hidden) tensors. tanh(a) = 2σ(2a) − 1 and
    1 − tanh²(a) = 4σ(2a)(1 − σ(2a)): float64 ``sigmoid`` costs about a fifth of ``tanh``
    on CPU (measured, one thread). The two points one after the other in one
    (*batch, m, hidden) buffer: half the memory of both at once, the same numbers.
    """
    with torch.no_grad():
        out_w, out_b = 2.0 * out_weight, out_bias - out_weight.sum()
        slope_w = 2.0 * w_own.T * out_weight
        values, slopes, s = [], [], None
        for point in own.unbind(0):  # z_j, then z̃_j
            s = _hidden_input(base, point, w_own, out=s).sigmoid_()  # σ(2a)
            values.append(F.linear(s, out_w, out_b))
            slopes.append(F.linear(s.addcmul_(s, s, value=-1.0), slope_w))
        value, slope = torch.stack(values), torch.stack(slopes)
    return value + ((own - own.detach()) * slope).sum(-1, keepdim=True)


# ---- the estimators -----------------------------------------------------------------------


class REBAR_ELBO(DiscreteLatentELBO):
    r"""REBAR ELBO (Tucker et al. 2017): relaxed-model control variate with learned η and λ.

    Discrete guide sites get ĝ = [f(b) − c(z̃)]∇log q(b) + ∇c(z) − ∇c(z̃) with
    c(z) = η·f(σ_λ(z)); reparameterized sites get the pathwise gradient. See the module
    docstring for the relaxed replay, the site types handled and the param-store names.

    Refused with ``ValueError`` (at the first loss evaluation): a non-reparameterized guide
    site that is not Bernoulli, Categorical or OneHotCategorical (e.g. ``Poisson``, a
    ``Normal`` with ``has_rsample_(False)``); use :class:`ScoreFunction_ELBO` there. Every
    other pattern Pyro's ``TraceGraph_ELBO`` accepts runs, including subsampled plates with
    local parameters, masks, scales, guide-only ``pyro.factor`` sites and programs without
    parameters (the backward pass is then skipped).

    Example::

        svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=REBAR_ELBO(num_particles=2))

    :param int num_particles: particles per estimate.
    :param float temperature: initial λ of every site (per-site override:
        ``infer={"reparam_ext": {"temperature": ...}}``).
    :param float eta: initial η of every site (per-site override ``"eta"``).
    :param bool learn_temperature: train λ (registered as ``reparam_ext.<site>.log_temperature``).
    :param bool learn_eta: train η (registered as ``reparam_ext.<site>.eta``).
    :param bool coordinatewise: one control variate per decision of a site element (default;
        the 2·D relaxed replays of a site run as one replay with an extra batch dim) instead of
        one per element; see the module docstring.

    Pyro's ELBO options ``max_plate_nesting``, ``vectorize_particles`` (default True here),
    ``retain_graph``, ``strict_enumeration_warning`` and ``ignore_jit_warnings``: as in
    :class:`pyro.infer.ELBO`.
    """

    @extends_options(DiscreteLatentELBO.__init__)
    def __init__(
        self,
        num_particles: int = 1,
        *,
        temperature: float = 0.5,
        eta: float = 1.0,
        learn_temperature: bool = True,
        learn_eta: bool = True,
        coordinatewise: bool = True,
        **elbo_options,
    ):
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        super().__init__(num_particles, **elbo_options)
        self.temperature = float(temperature)
        self.eta = float(eta)
        self.learn_temperature = learn_temperature
        self.learn_eta = learn_eta
        self.coordinatewise = bool(coordinatewise)

    # ---- control-variate parameters -------------------------------------------------------

    def _scalar(self, name, init: float, learn: bool, like: torch.Tensor) -> torch.Tensor:
        init = torch.tensor(init, dtype=like.dtype, device=like.device)
        return pyro.param(f"{PREFIX}{name}", init) if learn else init

    def _site_controls(self, site: dict, like: torch.Tensor) -> tuple:
        """(λ, η) of a site: learned param-store scalars or the configured constants."""
        name, options = site["name"], site_options(site)
        temperature = float(options.get("temperature", self.temperature))
        if not temperature > 0:
            raise ValueError(f"site '{name}': temperature must be > 0, got {temperature!r}")
        log_temp = self._scalar(
            f"{name}.log_temperature", math.log(temperature), self.learn_temperature, like
        )
        eta = self._scalar(f"{name}.eta", float(options.get("eta", self.eta)), self.learn_eta, like)
        return log_temp.exp(), eta

    def _network_term(
        self, name, family, points, logits, hard, masks, batch_shape, detach, selected=False
    ):
        """r_ρ at both points, (2, m or 1, *batch) (``detach``: ρ held constant; ``selected``:
        ``points`` at the selected decisions only): zero for REBAR."""
        return 0.0

    def _learns(self) -> bool:
        """Whether φ has a learned part (η, λ or, for RELAX, the network)."""
        return self.learn_eta or self.learn_temperature

    # ---- one particle run -----------------------------------------------------------------

    def _record_run(self, model, guide, args, kwargs) -> ParticleRun:
        """Run guide (with recorded relaxation noise) and model once: a ParticleRun."""
        noise, randomness = _RelaxationNoise(), ReplayRandomness()
        with randomness.record():
            model_trace, guide_trace = self._get_trace(model, noise(guide), args, kwargs)
        check_relaxable(guide_trace, type(self).__name__)
        return ParticleRun(
            model,
            guide,
            args,
            kwargs,
            model_trace,
            guide_trace,
            noise.records,
            randomness,
            self.max_plate_nesting,
        )

    def _loss_and_surrogate(self, model, guide, args, kwargs):
        run = self._record_run(model, guide, args, kwargs)
        elbo, surrogate = pathwise_elbo_and_surrogate(run.model_trace, run.guide_trace)
        sites = score_function_sites(run.guide_trace)
        if not sites:
            return -elbo, -surrogate
        costs, nodes = downstream_costs(run.model_trace, run.guide_trace, sites)
        controls = {
            name: self._site_controls(run.guide_trace.nodes[name], draw.logits)
            for name, draw in run.records.items()
        }
        temps = {name: temperature for name, (temperature, _) in controls.items()}
        with run.randomness.untouched():
            for name in sites:
                surrogate = surrogate + self._site_term(
                    run, name, costs[name], nodes[name], controls, temps
                )
        return -elbo, -surrogate

    def _site_term(self, run, name, cost, nodes, controls, temps) -> torch.Tensor:
        """Surrogate term of one site: ĝ for θ (φ held constant), minus φ's variance term."""
        site, draw = run.guide_trace.nodes[name], run.records[name]
        batch_shape = site["score_parts"].score_function.shape
        masks = decision_masks(draw.family, draw.logits, batch_shape, self.coordinatewise)
        if masks is None and self._learns() and torch.is_grad_enabled():
            return self._joint_term(run, name, cost, nodes, controls, temps)
        fixed = {other: tuple(t.detach() for t in pair) for other, pair in controls.items()}
        fixed_temps = {other: temperature for other, (temperature, _) in fixed.items()}
        hard = draw.family.as_relaxed(draw.value, draw.logits)
        score = decision_scores(draw.family, draw.logits, hard, masks, score_log_prob(site))
        term = self._estimate(
            run, name, draw.logits, score, cost, nodes, fixed[name], fixed_temps, masks, True
        )
        if self._learns() and torch.is_grad_enabled():
            term = term - self._variance_term(run, name, cost, nodes, controls, temps, masks)
        return term

    def _estimate(self, run, name, logits, score, cost, nodes, control, temps, masks, detach):
        """Σ over the decisions in ``masks`` of the surrogate whose gradient is ĝ ([2] eq. (8)),
        with c evaluated at the relaxed copies of those decisions at ``logits``."""
        site = run.guide_trace.nodes[name]
        c_points = self._control_points(run, name, logits, nodes, control, temps, masks, detach)
        return score_surrogate(
            score, cost, c_points, lambda residual: self._residual_baseline(site, residual)
        )

    def _control_points(
        self, run, name, logits, nodes, control, temps, masks, detach, selected=False
    ):
        """c at z and z̃ for the decisions in ``masks`` at ``logits``: (2, m or 1, *batch).

        ``selected`` (coordinate-wise): z, z̃ and their relaxed values are computed at the
        selected decisions only (:func:`decision_selector`), not at all D and then gathered —
        the same numbers, and, for φ's variance term (one decision of D), D times smaller
        tensors in its forward pass and both derivatives.
        """
        site, draw = run.guide_trace.nodes[name], run.records[name]
        family, batch_shape = draw.family, site["score_parts"].score_function.shape
        temperature, eta = control
        select = decision_selector(logits, batch_shape, masks) if selected else None
        points, hard = relaxed_points(draw, logits, select)
        soft = family.soft(points, temperature)
        own_cost = partial(
            separable_own_cost, family, soft, hard, masks, batch_shape, selected=selected
        )
        copies = relaxed_copies(soft, hard, masks, batch_shape, selected)
        c_points = eta * relaxed_costs(run, name, copies, temps, nodes, own_cost)
        c_points = c_points + self._network_term(
            name, family, points, logits, hard, masks, batch_shape, detach, selected
        )
        keep = kept_decisions(site, family, masks, batch_shape)
        if keep is not None:  # masked decisions get no control variate: c ≡ 0 there
            c_points = torch.where(keep, c_points, 0.0)
        return c_points

    def _variance_term(self, run, name, cost, nodes, controls, temps, masks) -> torch.Tensor:
        """A term whose φ-gradient is φ's training signal ∇_φ Σ ĝ_ℓ² (and θ-gradient zero).

        ĝ_ℓ is ĝ with respect to the site's logits ℓ, for the decisions of
        :func:`variance_masks` (all, joint; :data:`VARIANCE_DECISIONS` random ones of each
        element's D, weighted D / m, coordinate-wise): the estimate is recomputed at a
        detached copy of ℓ with φ live, differentiated once with ``create_graph``, and the
        second derivative is injected linearly into φ. The variance with respect to
        the logits rather than to θ ([2] eq. (6) takes θ's; see the module docstring): ĝ_ℓ's
        second derivative needs neither θ's Jacobian nor the full 2·D copies. Only φ's
        training signal is affected; ĝ for θ is unbiased for every φ.
        """
        draw, site = run.records[name], run.guide_trace.nodes[name]
        family = draw.family
        logits = draw.logits.detach().requires_grad_()
        hard = family.as_relaxed(draw.value, logits)
        masks, weight = variance_masks(masks, VARIANCE_DECISIONS)
        if masks is None:
            score = sum_decisions(site["fn"], family, family.decision_log_prob(logits, hard))
            score = score.unsqueeze(0)
        else:  # log q of the selected decisions, (m, *batch), from their logits only
            batch_shape = site["score_parts"].score_function.shape
            select = decision_selector(logits, batch_shape, masks)
            score = family.decision_log_prob(select(logits), select(hard))
            score = score.reshape(batch_shape + (-1,)).movedim(-1, 0)
        c_points = self._control_points(
            run, name, logits, nodes, controls[name], temps, masks, False, masks is not None
        )
        g_logits = score_surrogate_gradient(
            score, logits, cost, c_points, lambda residual: self._residual_baseline(site, residual)
        )
        phi = estimator_leaves()
        if g_logits is None or not phi:
            return torch.zeros((), dtype=logits.dtype, device=logits.device)
        variance = weight * (g_logits * g_logits).sum()
        # injected linearly: the replay may depend on θ through the programs' arguments, and
        # the variance must train φ only
        g_phi = torch.autograd.grad(variance, phi, allow_unused=True, retain_graph=True)
        return sum((p * g.detach()).sum() for p, g in zip(phi, g_phi, strict=True) if g is not None)

    def _joint_term(self, run, name, cost, nodes, controls, temps) -> torch.Tensor:
        """:meth:`_site_term` for one joint control variate: one replay serves θ and φ.

        The estimate is built once with φ live at logits whose value is ℓ and whose gradient
        reaches both θ and a detached copy ℓ' (cheap: two relaxed copies). Its φ-gradient is
        replaced by ∇_φ Σ ĝ_ℓ², ĝ_ℓ its gradient at ℓ', as in :meth:`_variance_term`.
        """
        site, draw = run.guide_trace.nodes[name], run.records[name]
        family, fn = draw.family, site["fn"]
        leaf = draw.logits.detach().requires_grad_()
        logits = leaf + (draw.logits - draw.logits.detach())
        hard = family.as_relaxed(draw.value, leaf)
        leaf_score = sum_decisions(fn, family, family.decision_log_prob(leaf, hard))
        score = score_log_prob(site) + (leaf_score - leaf_score.detach())
        term = self._estimate(
            run, name, logits, score.unsqueeze(0), cost, nodes, controls[name], temps, None, False
        )
        phi = estimator_leaves()
        grads = torch.autograd.grad(term, [leaf, *phi], create_graph=True, allow_unused=True)
        if grads[0] is None or not phi:
            return term
        g_variance = torch.autograd.grad(
            (grads[0] * grads[0]).sum(), phi, allow_unused=True, retain_graph=True
        )
        correction = 0.0
        for p, g_var, g_direct in zip(phi, g_variance, grads[1:], strict=True):
            for g in (g_var, g_direct):
                if g is not None:
                    correction = correction + (p * g.detach()).sum()
        # the loss is −term: its φ-gradient becomes −∇_φ term + (∇_φ term + ∇_φ Σ ĝ_ℓ²)
        return term - correction

    def _residual_baseline(self, site, residual):
        """Leave-one-out baseline for f − c(z̃) when ``num_particles >= 2`` (else none).

        The mean of the *other* particles' f − c(z̃): independent of this particle's draw, so
        ĝ stays unbiased, and a function of φ, so ∇_φ Σ ĝ² sees it follow φ. It absorbs the
        part of f the relaxation cannot follow (constants, per-data-point offsets) from the
        first step on, as the input-dependent baselines used with REBAR in [1], section 6.
        With one particle there is no such baseline (a running average of past residuals
        would not follow φ and would bias φ's training); r_ρ (RELAX) learns offsets instead.
        ``infer={"reparam_ext": {"baseline": "none"}}`` turns it off.
        """
        choice = site_options(site).get("baseline", "loo")
        if choice not in ("loo", "none"):
            raise ValueError(
                f"site '{site['name']}': infer['reparam_ext']['baseline'] must be 'loo' or "
                f"'none' for {type(self).__name__}, got {choice!r}"
            )
        dim = self.particle_dim
        if choice == "none" or dim is None:
            return 0.0
        k = residual.shape[dim]
        return (residual.sum(dim, keepdim=True) - residual) / (k - 1)

    # ---- φ: gradient of the variance -------------------------------------------------------


class RELAX_ELBO(REBAR_ELBO):
    r"""RELAX ELBO (Grathwohl et al. 2018): REBAR's control variate plus a learned network.

    c(z) = η·f(σ_λ(z)) + r_ρ(z), with r_ρ a small neural network of each site element's
    relaxed logits z and, as context, its detached logits ℓ (a fixed function of z for the
    identity behind ĝ; ℓ carries what the guide conditions on, e.g. the data point).
    Coordinate-wise (the default, for elements with D > 1 decisions), decision j's network
    input is [z_j, ℓ, b with decision j zeroed, one-hot of j] — k + 2·size + D numbers for k
    logits per decision and ``size`` logits per element — otherwise [z, ℓ] (2·size). Default
    :class:`ControlVariateNet` (one hidden layer of ``hidden_dim`` tanh units, output
    initialised at zero), registered as ``reparam_ext.relax.<site>``.

    Example::

        svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=RELAX_ELBO(num_particles=2))

    Learning rate of the control variate: Adam moves every weight by about ``lr`` per step
    whatever the size of its gradient, so φ = (η, λ, ρ) keeps jittering at that scale. Where the
    gradient signal is tiny next to the cost (the toy of [2]: f(1) − f(0) = 0.002 against a
    cost of 0.82) that jitter dominates the estimate (measured on the toy after a warm-up at
    fixed θ: gradient standard deviation 0.005 at θ = ½ and 0.015 at θ = 0.12 with lr 0.01 for
    φ, 0.001 and 0.004 with lr 0.003; signal 5e-4 and 2e-4), so θ reaches the optimum slowly:
    with the paper's protocol (lr 0.01 for everything, one particle) θ averaged over steps
    50,000–100,000 is below 0.075 on 8 of 8 seeds (NumPyro test), like the paper's own code
    (logit −2.5 / −3.1 after 20,000 steps). A smaller learning rate for φ, by a per-parameter
    callable, trades tracking speed for less jitter::

        Adam(lambda name: {"lr": 2e-3 if name.startswith("reparam_ext") else 1e-2})

    :param control_variate: None for the default network; an ``nn.Module`` mapping the
        network input above, of shape ``batch + (input_size,)``, to ``batch`` (shared by every
        site, registered as ``reparam_ext.relax``); or a callable
        ``(site_name, input_size) -> nn.Module`` building one network per site (registered
        as ``reparam_ext.relax.<site>``).
    :param int hidden_dim: hidden units of the default network.

    Other arguments, and the patterns refused with ``ValueError``, as :class:`REBAR_ELBO`.
    """

    @extends_options(REBAR_ELBO.__init__)
    def __init__(
        self,
        num_particles: int = 1,
        *,
        control_variate: nn.Module | Callable[[str, int], nn.Module] | None = None,
        hidden_dim: int = 32,
        **rebar_options,
    ):
        super().__init__(num_particles, **rebar_options)
        if control_variate is not None and not callable(control_variate):
            raise ValueError(
                "control_variate must be None, an nn.Module or a callable "
                f"(site_name, event_size) -> nn.Module, got {type(control_variate).__name__}"
            )
        self.control_variate = control_variate
        self.hidden_dim = int(hidden_dim)
        self._networks: dict[str, nn.Module] = {}
        self._step_networks: dict[str, nn.Module] = {}  # registered in this step

    def _begin_step(self) -> None:
        super()._begin_step()
        self._step_networks = {}

    def _network(self, name: str, event_size: int, like: torch.Tensor) -> nn.Module:
        """The site's network, registered with ``pyro.module`` once per step (the θ estimate
        and φ's variance term share it)."""
        net = self._step_networks.get(name)
        if net is None:
            net = self._step_networks[name] = self._register_network(name, event_size, like)
        return net

    def _register_network(self, name: str, event_size: int, like: torch.Tensor) -> nn.Module:
        if isinstance(self.control_variate, nn.Module):
            return pyro.module("reparam_ext.relax", self.control_variate, update_module_params=True)
        net = self._networks.get(name)
        if net is None:
            if self.control_variate is None:
                net = ControlVariateNet(event_size, self.hidden_dim)
            else:
                net = self.control_variate(name, event_size)
            net = net.to(dtype=like.dtype, device=like.device)
            self._networks[name] = net
        return pyro.module(f"reparam_ext.relax.{name}", net, update_module_params=True)

    def _learns(self) -> bool:
        return True  # the network

    def _network_term(
        self, name, family, points, logits, hard, masks, batch_shape, detach, selected=False
    ):
        if masks is not None:
            size = logits[(0,) * len(batch_shape)].numel()
            num = num_decisions(family, logits, batch_shape)
            net = self._network(name, size // num + 2 * size + num, points)
            if type(net) is ControlVariateNet:
                return factored_network(
                    net, family, points, logits, hard, masks, batch_shape, detach, selected
                )
        inputs = network_input(family, points, logits, hard, masks, batch_shape, selected)
        net = self._network(name, inputs.shape[-1], points)
        if not detach:
            return net(inputs)
        constants = {key: value.detach() for key, value in net.named_parameters()}
        return torch.func.functional_call(net, constants, (inputs,))
