"""Score-function (REINFORCE) ELBO with the variance-minimising ("optimal") baseline.

References:
    [1] J. Schulman, N. Heess, T. Weber, P. Abbeel (2015). Gradient Estimation Using
        Stochastic Computation Graphs (downstream credit).
    [2] E. Greensmith, P. Bartlett, J. Baxter (2004). Variance Reduction Techniques for
        Gradient Estimates in Reinforcement Learning, JMLR 5, section 5 (the optimal constant
        baseline b* = E[f s²] / E[s²], per coordinate).
    [3] W. Kool, H. van Hoof, M. Welling (2019). Buy 4 REINFORCE Samples, Get a Baseline for
        Free! (leave-one-out baseline, "RLOO").
"""

from __future__ import annotations

import torch

from pyro_reparam_ext.infer.particles import (
    DiscreteLatentELBO,
    downstream_costs,
    extends_options,
    pathwise_elbo_and_surrogate,
    running_state,
    score_log_prob,
    update_running_state,
)
from pyro_reparam_ext.infer.sites import (
    BASELINES,
    PREFIX,
    family_of,
    score_function_sites,
    site_options,
)


def _check_baseline(baseline, where: str = "baseline") -> None:
    if baseline not in BASELINES:
        raise ValueError(f"{where} must be one of {list(BASELINES)}, got {baseline!r}")


def _check_decay(decay, where: str = "baseline_decay") -> None:
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"{where} must be in [0, 1), got {decay!r}")


class ScoreFunction_ELBO(DiscreteLatentELBO):
    r"""ELBO whose non-reparameterized guide sites get the score-function estimator.

    For a guide site with value b ~ q(b | η) and plate-aware downstream cost f (the log p −
    log q terms b can influence, as in Pyro's ``TraceGraph_ELBO``), the gradient estimate is
    (f − baseline)·∇ log q(b | η); reparameterized sites get the pathwise gradient. At a
    masked guide site (``poutine.mask``, ``.mask(...)`` at any depth, a bool mask too) the score
    keeps the true log q(b) (:func:`~pyro_reparam_ext.infer.particles.score_log_prob`): the
    mask drops the site's log q from f and the ELBO, but the site is still sampled from q and
    f may depend on it through unmasked terms (as on NumPyro). Baselines:

    - ``"optimal"``: per logit coordinate j (s = ∇_η log q(b | η), η the site's logits) the
      estimate (f − b_j) s_j, chained into upstream parameters by backprop, with b_j close
      to the variance-minimising constant b*_j = E[f s_j²] / E[s_j²] ([2], eq. 5.4 for one
      coordinate). With one particle b_j = b_run = R[f s²] / R[s²], running averages over
      previous steps (param-store state ``reparam_ext.<site>.baseline_fs2`` / ``.baseline_s2``).
      With K ≥ 2 particles, particle k gets ``b = (1 − λ) m₋ₖ + λ b_run``, m₋ₖ the mean cost of
      the other particles (the ``"loo"`` baseline): see *Mixing weight* below. Sites without
      logits (e.g. Poisson) fall back to ``"loo"`` (K ≥ 2) or ``"decaying_avg"`` (K = 1).
    - ``"loo"``: the mean cost of the other particles ([3]); needs ``num_particles >= 2``.
    - ``"decaying_avg"``: an exponential moving average of previous costs, per element, as
      Pyro's ``use_decaying_avg_baseline`` (state ``reparam_ext.<site>.baseline_avg``).
    - ``"none"``: plain REINFORCE with downstream credit.

    *Mixing weight* (K ≥ 2). Any b that depends only on the other particles of the step and on
    earlier steps keeps the estimate unbiased (E[s_k | b] = 0 for a score s_k). With
    b = m₋ₖ + λ (b_run − m₋ₖ) the site's estimate for coordinate j (the mean over particles)
    is A_j − λ B_j, with A_j = mean_k (f_k − m₋ₖ) s_kj the ``"loo"`` estimate and
    B_j = mean_k (b_run,j − m₋ₖ) s_kj, which has mean zero for the same reason: a control
    variate. The total variance Σ_j Var(A_j − λ B_j) is a quadratic in λ, minimised at
    λ* = Σ_j E[A_j B_j] / Σ_j E[B_j²]. It includes the covariance between particles (the
    leave-one-out baseline correlates their estimates). Its per-particle part is the
    precision weighting of the two estimates of b*_j: with m₋ₖ = b*_j + δ_m,
    b_run,j = b*_j + δ_r, (s_k, f_k) independent of δ_m, δ_r and E[s_j² (f − b*_j)] = 0 (the
    definition of b*_j), E[s_j² (f − m₋ₖ)(b_run,j − m₋ₖ)] / E[s_j² (b_run,j − m₋ₖ)²]
    = E[δ_m² − δ_m δ_r] / E[(δ_r − δ_m)²], that is MSE(m₋ₖ) / (MSE(m₋ₖ) + MSE(b_run)) for
    independent errors. So λ → 1 when the running moments are good (parameters that move
    slowly, the same data) and λ → 0 when they are stale or describe other data points
    (minibatches): ``"loo"``. The two sums are running averages of their per-step values
    (state ``.baseline_mixing_num`` / ``.baseline_mixing_den``), read before the step updates
    them, so λ depends on earlier steps only; λ is clipped to [0, 1] (a convex combination of
    two baselines). One λ per site rather than per coordinate: per-coordinate ratios of running
    averages are noisy enough to lose what they adapt (measured with the per-particle part
    alone: about 5% higher variance on the binary VAE and the Categorical mixture of
    ``benchmarks/estimators.py``).

    Per-site overrides: ``infer={"reparam_ext": {"baseline": ..., "baseline_decay": ...}}``.
    Running averages live in the param store as non-trainable entries (``requires_grad=False``,
    saved and loaded with it, hidden from the optimizer).

    Every model/guide pair Pyro's ``TraceGraph_ELBO`` accepts runs (also guide-only
    ``pyro.factor`` sites, which TraceGraph_ELBO rejects); programs without parameters skip
    the backward pass. Refused with ``ValueError``: ``baseline="loo"`` with
    ``num_particles=1``, and ``baseline="loo"`` / ``"optimal"`` with ``num_particles > 1``
    and ``vectorize_particles=False``.

    Example::

        svi = SVI(model, guide, Adam({"lr": 0.01}),
                  loss=ScoreFunction_ELBO(num_particles=4, baseline="optimal"))

    :param int num_particles: particles per estimate.
    :param str baseline: one of ``"optimal"``, ``"loo"``, ``"decaying_avg"``, ``"none"``.
    :param float baseline_decay: decay of the running averages, in [0, 1).

    Pyro's ELBO options ``max_plate_nesting``, ``vectorize_particles`` (default True here),
    ``retain_graph``, ``strict_enumeration_warning`` and ``ignore_jit_warnings``: as in
    :class:`pyro.infer.ELBO`;
    ``"loo"``, and ``"optimal"`` with K ≥ 2, need ``vectorize_particles=True``.
    """

    @extends_options(DiscreteLatentELBO.__init__)
    def __init__(
        self,
        num_particles: int = 1,
        *,
        baseline: str = "optimal",
        baseline_decay: float = 0.9,
        **elbo_options,
    ):
        _check_baseline(baseline)
        _check_decay(baseline_decay)
        if baseline == "loo" and num_particles < 2:
            raise ValueError(
                f"baseline='loo' needs num_particles >= 2, got num_particles={num_particles}"
            )
        super().__init__(num_particles, **elbo_options)
        if baseline in ("loo", "optimal") and num_particles > 1 and not self.vectorize_particles:
            raise ValueError(
                f"baseline={baseline!r} with num_particles > 1 needs vectorize_particles=True "
                "(the leave-one-out estimate uses all particles at once)"
            )
        self.baseline = baseline
        self.baseline_decay = baseline_decay

    def _loss_and_surrogate(self, model, guide, args, kwargs):
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        elbo, surrogate = pathwise_elbo_and_surrogate(model_trace, guide_trace)
        sites = score_function_sites(guide_trace)
        if sites:
            costs, _ = downstream_costs(model_trace, guide_trace, sites)
            for name in sites:
                surrogate = surrogate + self._score_term(guide_trace.nodes[name], costs[name])
        return -elbo, -surrogate

    def _score_term(self, site: dict, cost: torch.Tensor) -> torch.Tensor:
        """Surrogate-ELBO term whose gradient is this site's score-function estimate."""
        options = site_options(site)
        baseline = options.get("baseline", self.baseline)
        _check_baseline(baseline, f"site '{site['name']}': infer['reparam_ext']['baseline']")
        decay = options.get("baseline_decay", self.baseline_decay)
        _check_decay(decay, f"site '{site['name']}': infer['reparam_ext']['baseline_decay']")
        score = score_log_prob(site)  # the true log q at masked sites, as on NumPyro
        many = self.particle_dim is not None

        if baseline == "optimal":
            family, base = family_of(site["fn"])
            if family is not None:
                return self._optimal_term(site, family, base, cost, decay)
            baseline = "loo" if many else "decaying_avg"  # documented fallback
        if baseline == "loo":
            if not many:
                raise ValueError(
                    f"site '{site['name']}': baseline 'loo' needs vectorized num_particles >= 2"
                )
            cost = cost - leave_one_out_mean(cost, self.particle_dim)
        elif baseline == "decaying_avg":
            mean_cost = cost.mean(self.particle_dim) if many else cost
            state = running_state(
                f"{PREFIX}{site['name']}.baseline_avg", torch.zeros_like(mean_cost)
            )
            previous = state.detach().clone()
            update_running_state(state, mean_cost, decay)
            if many:
                previous = previous.unsqueeze(self.particle_dim)
            cost = cost - previous
        return (score * cost.detach()).sum()

    def _optimal_term(self, site, family, base, cost, decay) -> torch.Tensor:
        logits = family.logits(site["fn"], base)
        s = family.score(logits.detach(), site["value"])
        # bring the per-decision cost to the logits' shape (event dims, categories)
        extra = logits.dim() - cost.dim()
        cost = cost.reshape(cost.shape + (1,) * extra)
        s2 = s * s
        dim = None if self.particle_dim is None else self.particle_dim - extra
        coordinates = s2.shape if dim is None else s2.mean(dim).shape
        state = [
            running_state(f"{PREFIX}{site['name']}.{name}", s2.new_zeros(shape))
            for name, shape in optimal_state_shapes(coordinates, dim is not None).items()
        ]
        baseline = optimal_baseline(cost, s2, state, dim)  # from earlier steps' state only
        for buffer, value in zip(state, optimal_statistics(cost, s, state, dim), strict=True):
            update_running_state(buffer, value, decay)
        # gradient w.r.t. the logits is (f − b_j) s_j; backprop chains it upstream
        return (logits * ((cost - baseline) * s).detach()).sum()


# ---- the optimal baseline: running moments mixed with the leave-one-out mean ---------------


def optimal_state_shapes(coordinates: tuple, many: bool) -> dict[str, tuple]:
    """Running state of the optimal baseline, name -> shape: the moments E[f s²], E[s²] per
    coordinate and, with several particles, λ's numerator and denominator (one per site)."""
    shapes = {"baseline_fs2": tuple(coordinates), "baseline_s2": tuple(coordinates)}
    if many:
        shapes.update(baseline_mixing_num=(), baseline_mixing_den=())
    return shapes


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where the denominator is 0 (no information yet)."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1.0), 0.0)


def leave_one_out_mean(cost: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean over the other particles (along ``dim``) for every particle."""
    return (cost.sum(dim, keepdim=True) - cost) / (cost.shape[dim] - 1)


def optimal_baseline(cost, s2, state, dim: int | None) -> torch.Tensor:
    """b = (1 − λ) m₋ₖ + λ b_run per coordinate (K = 1: b = b_run), from ``state`` alone and
    the other particles' costs ``m₋ₖ`` — never from the particle the baseline is applied to."""
    running = _safe_ratio(state[0], state[1])  # b_run = R[f s²] / R[s²]
    if dim is None:
        return running.expand_as(s2)
    weight = _safe_ratio(state[2], state[3]).clamp(0.0, 1.0)  # λ, from earlier steps
    return (1.0 - weight) * leave_one_out_mean(cost, dim) + weight * running.unsqueeze(dim)


def optimal_statistics(cost, s, state, dim: int | None) -> list[torch.Tensor]:
    """This step's values of the running state: the moments' means over the particles, and
    λ's Σ_j A_j B_j and Σ_j B_j² (see the class docstring) with this step's b_run.

    Coordinates without a running baseline yet (R[s²] = 0) add nothing, so the first step's
    meaningless b_run = 0 does not hold λ down for the next ~1/(1 − decay) steps.
    """
    s2 = s * s
    if dim is None:
        return [cost * s2, s2]
    running = _safe_ratio(state[0], state[1]).unsqueeze(dim)
    other = leave_one_out_mean(cost, dim)
    loo_estimate = ((cost - other) * s).mean(dim)  # A
    correction = ((running - other) * s).mean(dim)  # B
    ready = state[1] > 0  # coordinates with a running baseline
    num = torch.where(ready, loo_estimate * correction, 0.0).sum()
    den = torch.where(ready, correction * correction, 0.0).sum()
    return [(cost * s2).mean(dim), s2.mean(dim), num, den]


__all__ = ["BASELINES", "ScoreFunction_ELBO"]
