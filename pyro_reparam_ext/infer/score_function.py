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
    PARAM_PREFIX,
    DiscreteLatentELBO,
    downstream_costs,
    full_logits,
    pathwise_elbo_and_surrogate,
    running_state,
    score_function_sites,
    score_wrt_logits,
    site_options,
    unwrap_discrete,
    update_running_state,
)

BASELINES = ("optimal", "loo", "decaying_avg", "none")


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
    (f − baseline)·∇ log q(b | η); reparameterized sites get the pathwise gradient. Baselines:

    - ``"optimal"``: per logit coordinate j, b*_j = E[f s_j²] / E[s_j²] with
      s = ∇_η log q(b | η) and η the site's logits ([2], eq. 5.4 specialised to one
      coordinate); the coordinate-wise estimate (f − b*_j) s_j is then chained into upstream
      parameters by backprop. With ``num_particles >= 2`` the two expectations are estimated
      from the *other* particles (leave-one-out, so the baseline is independent of the
      particle it corrects and the estimator stays unbiased); with one particle from running
      averages of f s² and s² over previous steps (param-store state
      ``reparam_ext.<site>.baseline_fs2`` / ``.baseline_s2``). Sites without logits (e.g.
      Poisson) fall back to ``"loo"`` (K ≥ 2) or ``"decaying_avg"`` (K = 1).
    - ``"loo"``: the mean cost of the other particles ([3]); needs ``num_particles >= 2``.
    - ``"decaying_avg"``: an exponential moving average of previous costs, per element, as
      Pyro's ``use_decaying_avg_baseline`` (state ``reparam_ext.<site>.baseline_avg``).
    - ``"none"``: plain REINFORCE with downstream credit.

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
    :param max_plate_nesting: as in Pyro's ELBOs.
    :param bool vectorize_particles: vectorize the particles (needed for ``"loo"``, and for
        ``"optimal"`` with K ≥ 2).
    :param str baseline: one of ``"optimal"``, ``"loo"``, ``"decaying_avg"``, ``"none"``.
    :param float baseline_decay: decay of the running averages, in [0, 1).
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
        baseline: str = "optimal",
        baseline_decay: float = 0.9,
        retain_graph: bool | None = None,
        strict_enumeration_warning: bool = True,
        ignore_jit_warnings: bool = False,
    ):
        _check_baseline(baseline)
        _check_decay(baseline_decay)
        if baseline == "loo" and num_particles < 2:
            raise ValueError(
                f"baseline='loo' needs num_particles >= 2, got num_particles={num_particles}"
            )
        if baseline in ("loo", "optimal") and num_particles > 1 and not vectorize_particles:
            raise ValueError(
                f"baseline={baseline!r} with num_particles > 1 needs vectorize_particles=True "
                "(the leave-one-out estimate uses all particles at once)"
            )
        super().__init__(
            num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=vectorize_particles,
            retain_graph=retain_graph,
            strict_enumeration_warning=strict_enumeration_warning,
            ignore_jit_warnings=ignore_jit_warnings,
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
        score = site["score_parts"].score_function
        many = self.particle_dim is not None

        if baseline == "optimal":
            kind, base = unwrap_discrete(site["fn"])
            if kind is not None:
                return self._optimal_term(site, kind, base, cost, decay)
            baseline = "loo" if many else "decaying_avg"  # documented fallback
        if baseline == "loo":
            if not many:
                raise ValueError(
                    f"site '{site['name']}': baseline 'loo' needs vectorized num_particles >= 2"
                )
            dim = self.particle_dim
            k = cost.shape[dim]
            cost = cost - (cost.sum(dim, keepdim=True) - cost) / (k - 1)
        elif baseline == "decaying_avg":
            mean_cost = cost.mean(self.particle_dim) if many else cost
            state = running_state(
                f"{PARAM_PREFIX}{site['name']}.baseline_avg", torch.zeros_like(mean_cost)
            )
            previous = state.detach().clone()
            update_running_state(state, mean_cost, decay)
            if many:
                previous = previous.unsqueeze(self.particle_dim)
            cost = cost - previous
        return (score * cost.detach()).sum()

    def _optimal_term(self, site, kind, base, cost, decay) -> torch.Tensor:
        logits = full_logits(site["fn"], kind, base)
        s = score_wrt_logits(kind, logits.detach(), site["value"])
        # bring the per-decision cost to the logits' shape (event dims, categories)
        extra = logits.dim() - cost.dim()
        cost = cost.reshape(cost.shape + (1,) * extra)
        s2 = s * s
        fs2 = cost * s2
        if self.particle_dim is not None:
            dim = self.particle_dim - extra  # the particle dim counted in the logits' shape
            # leave-one-out: moments from the other K - 1 particles only
            num = fs2.sum(dim, keepdim=True) - fs2
            den = s2.sum(dim, keepdim=True) - s2
        else:
            num = running_state(f"{PARAM_PREFIX}{site['name']}.baseline_fs2", torch.zeros_like(fs2))
            den = running_state(f"{PARAM_PREFIX}{site['name']}.baseline_s2", torch.zeros_like(s2))
            num, den = num.detach().clone(), den.detach().clone()
            update_running_state(
                running_state(f"{PARAM_PREFIX}{site['name']}.baseline_fs2", fs2), fs2, decay
            )
            update_running_state(
                running_state(f"{PARAM_PREFIX}{site['name']}.baseline_s2", s2), s2, decay
            )
        positive = den > 0
        baseline = torch.where(positive, num / torch.where(positive, den, 1.0), 0.0)
        # gradient w.r.t. the logits is (f − b*_j) s_j; backprop chains it upstream
        return (logits * ((cost - baseline) * s).detach()).sum()


__all__ = ["BASELINES", "ScoreFunction_ELBO"]
