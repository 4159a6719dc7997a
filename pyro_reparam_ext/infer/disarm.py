r"""DisARM / ARMS: antithetically coupled samples for Bernoulli and categorical guide sites.

For a Bernoulli decision b with logit α, p = σ(α), and n = ``num_particles`` copies of the
whole guide, the n values of every decision are drawn *coupled*: with d ~ Dirichlet(1, …, 1)
(n components) and the rarer outcome's probability p₋ = min(p, 1 − p) = σ(−|α|),

    copy i takes the rarer outcome  ⟺  (1 − dᵢ)^{n−1} < p₋                   (Dirichlet copula)

(each (1 − dᵢ)^{n−1} is Uniform(0, 1), so every copy is a Bernoulli(p) draw; at most one dᵢ
exceeds ½, so the rare outcome is spread out over the copies). With f the decision's
downstream cost, the ARMS estimate of ∂E[f]/∂α ([2]; the multi-sample estimator with
the Dirichlet copula) is

    ĝ = p(1 − p) / ((n − 1) D) · Σᵢ (f(bᵢ) − f̄)(bᵢ − p),     f̄ = (1/n) Σⱼ f(bⱼ),
    D = p(1 − p) − Cov(bᵢ, bⱼ) = p₋ − C(p₋, p₋),  C(q, q) = max(0, 2 q^{1/(n−1)} − 1)^{n−1}

(C is the copula's bivariate CDF: P(both copies rare)). p(1 − p)/D = 1/(1 − ρ) undoes the
negative correlation ρ of the copies, which makes the leave-one-out score-function estimator
unbiased again. At n = 2 the copula is u₂ = 1 − u₁, D = p₋ and ĝ reduces to the DisARM
estimator ([1]: ĝ = ½ (f(b) − f(b̃)) (−1)^{b̃} 1[b ≠ b̃] σ(|α|) for the pair b, b̃). Each term
(f(bᵢ) − f̄₋ᵢ)(bᵢ − p)·p(1 − p)/D, with f̄₋ᵢ the mean of the *other* copies, is what copy i
contributes; their average over the n copies is ĝ. D is evaluated as
p₋·(−expm1((n − 1)·log1p(−(1 − a)/a))), a = p₋^{1/(n−1)}, which keeps its relative accuracy
for tiny p₋ (float32 included).

Why the rarer outcome: the Dirichlet copula is not symmetric (at most one dᵢ can be large,
many can be small); tying the rare outcome to "dᵢ large" makes the rare outcomes of different
copies nearly exclusive — the strongest negative correlation — whether p is below or above ½.

Plates, several decisions, several sites (the rule). Every scalar decision — every plate
element, every event coordinate of a ``to_event`` site — is coupled with its own Dirichlet
draw, and its cost is the plate-aware downstream cost of Pyro's ``TraceGraph_ELBO``
(``_compute_downstream_costs``: the log p − log q terms the element can influence, scaled
N/M under subsampling while the score is not). The n copies are whole guide runs (the
vectorized particle plate), so a site *after* another discrete site sees, in each copy, that
copy's upstream values (the papers' multi-layer form samples the layers jointly per copy in
the same way). A decision is coupled only where its logit is the same in all n copies (a
root site, a site whose logits depend only on parameters and data, or copies whose upstream
values happened to agree); where the copies' logits differ (the decision depends on upstream
sampled values that differ) its n values are drawn independently and it gets the
leave-one-out score-function term (f(bᵢ) − f̄₋ᵢ)(bᵢ − pᵢ) ([3]) instead. Both choices are
unbiased given everything upstream (the choice is a function of upstream values only, and the
cost of a copy never depends on another copy's noise at the same decision), so the whole
estimator is unbiased. Reparameterized guide sites get the pathwise gradient, averaged over
the n copies (as ``Trace_ELBO`` with ``num_particles = n``).

Categorical and OneHotCategorical sites: the stick-breaking coupled estimator of [4]: with
the categories in increasing order of probability, π₍₀₎ ≤ … ≤ π₍K−1₎, the category is the
first k with b_k = 1 among K − 1 *independent* binaries b_k ~ Bernoulli(π₍k₎ / Σ_{j≥k} π₍j₎),
logits α_k = ℓ₍k₎ − logsumexp(ℓ₍k+1:₎) (the last category if none). f is a function of
independent Bernoulli decisions, so each binary is coupled and estimated exactly as a
Bernoulli decision above (DisARM / ARMS), and backprop chains ∂/∂α_k into the logits. A
binary that no copy reaches (every copy stopped earlier) has terms of zero mean given the
earlier binaries; they are dropped (a Rao-Blackwellization that keeps the estimate
unbiased). Why this and not CARMS ([5]): it reuses the binary coupling and the copula factor
unchanged — one code path, unbiased for every n, no extra evaluations — where CARMS needs a
K-category copula and its own debiasing terms. Why increasing probability: the antithetic
effect is strongest for rare binary outcomes (see above); putting the rare categories first
measured lower variance than the natural and the decreasing order (categorical mixture,
n = 2: 471 vs 576 and 545; loo: 675).

Any other non-reparameterized site (e.g. ``Poisson``) raises ``ValueError`` at first use,
naming the site: use ``ScoreFunction_ELBO`` for it.

References:
    [1] Z. Dong, A. Mnih, G. Tucker (2020). DisARM: An Antithetic Gradient Estimator for Binary
        Latent Variables. NeurIPS.
    [2] A. Dimitriev, M. Zhou (2021). ARMS: Antithetic-REINFORCE-Multi-Sample Gradient for
        Binary Variables. ICML.
    [3] W. Kool, H. van Hoof, M. Welling (2019). Buy 4 REINFORCE Samples, Get a Baseline for
        Free! (leave-one-out baseline).
    [4] Z. Dong, A. Mnih, G. Tucker (2021). Coupled Gradient Estimators for Discrete Latent
        Variables. NeurIPS.
    [5] A. Dimitriev, M. Zhou (2021). CARMS: Categorical-Antithetic-REINFORCE Multi-Sample
        Gradient Estimator. NeurIPS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.poutine.messenger import Messenger

from pyro_reparam_ext.distributions.concrete import (
    bernoulli_hard,
    bernoulli_relaxed_logits,
    uniform_noise,
)
from pyro_reparam_ext.infer.particles import (
    DiscreteLatentELBO,
    downstream_costs,
    extends_options,
    pathwise_elbo_and_surrogate,
)
from pyro_reparam_ext.infer.sites import (
    check_relaxable,
    family_of,
    relaxable_draw,
    score_function_sites,
)

__all__ = ["DisARM_ELBO"]


def coupled_bernoulli(logits: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws of every decision along ``dim`` (size n): Dirichlet-copula coupled where the
    logits agree along ``dim``, independent elsewhere. Returns (values, coupled mask)."""
    num = logits.shape[dim]
    coupled = (logits == logits.narrow(dim, 0, 1)).all(dim, keepdim=True).expand_as(logits)
    exponential = -torch.log(uniform_noise(logits.shape, like=logits))
    dirichlet = exponential / exponential.sum(dim, keepdim=True)
    # (1 − d)^{n−1} < p₋, in logs; the rare outcome is 1 for α ≤ 0 and 0 for α > 0
    rare = (num - 1) * torch.log1p(-dirichlet) < F.logsigmoid(-logits.abs())
    coupled_value = torch.where(logits > 0, ~rare, rare).to(logits.dtype)
    independent = bernoulli_hard(
        bernoulli_relaxed_logits(logits, uniform_noise(logits.shape, like=logits))
    )
    return torch.where(coupled, coupled_value, independent), coupled


def copula_debias(logits: torch.Tensor, num: int) -> torch.Tensor:
    """p(1 − p) / D = 1 / (1 − ρ) of the Dirichlet copula with ``num`` copies (module docstring).

    With a = p₋^{1/(n−1)}: D/p₋ = 1 − (2 − 1/a)^{n−1} when a > ½, else 1; and
    p(1 − p)/D = σ(|α|) / (D/p₋).
    """
    log_a = F.logsigmoid(-logits.abs()) / (num - 1)
    ratio = -torch.expm1(log_a) / log_a.exp()  # (1 − a)/a, < 1 exactly when a > ½
    overlap = ratio < 1.0
    safe = torch.where(overlap, ratio, torch.zeros_like(ratio))
    d_over_p_min = torch.where(overlap, -torch.expm1((num - 1) * torch.log1p(-safe)), 1.0)
    return torch.sigmoid(logits.abs()) / d_over_p_min


def coupled_score_weights(
    logits: torch.Tensor, value: torch.Tensor, cost: torch.Tensor, coupled, dim: int
) -> torch.Tensor:
    """Per copy and decision: (f(bᵢ) − f̄₋ᵢ)(bᵢ − p)·(p(1 − p)/D if coupled else 1).

    ``cost`` has the logits' shape (broadcast over event dims); ``dim`` indexes the copies.
    Their mean over the copies is the ARMS / DisARM estimate of ∂E[f]/∂α (coupled) or the
    leave-one-out score-function estimate (independent).
    """
    num = logits.shape[dim]
    leave_one_out = cost - (cost.sum(dim, keepdim=True) - cost) / (num - 1)
    debias = torch.where(coupled, copula_debias(logits, num), 1.0)
    return leave_one_out * (value - torch.sigmoid(logits)) * debias


class _CoupledNoise(Messenger):
    """Draws the n copies (the particle dim) of every discrete guide site's binary decisions by
    :func:`coupled_bernoulli` and records (binaries, coupled mask, category order) per site."""

    def __init__(self, particle_dim: int):
        super().__init__()
        self.particle_dim = particle_dim
        self.records: dict[str, tuple] = {}

    def _pyro_sample(self, msg):
        family, base = relaxable_draw(msg)
        if family is None:  # sampled as usual; check_relaxable refuses it after the run
            return
        fn = msg["fn"]
        logits = family.logits(fn, base).detach()
        order = family.category_order(logits)
        alpha = family.binary_logits(logits, order)
        binaries, coupled = coupled_bernoulli(alpha, _copies_dim(fn, alpha, self.particle_dim))
        msg["value"] = family.value_from_binaries(binaries, order)
        self.records[msg["name"]] = binaries, coupled, order


def _copies_dim(fn, alpha: torch.Tensor, particle_dim: int) -> int:
    """The particle dim counted from the end of ``alpha`` (batch dims, then decision dims)."""
    return particle_dim - (alpha.dim() - len(fn.batch_shape))


class DisARM_ELBO(DiscreteLatentELBO):
    r"""ELBO with antithetically coupled samples at discrete guide sites: DisARM / ARMS.

    ``num_particles`` = n ≥ 2 coupled copies of the guide per estimate; every Bernoulli
    decision gets DisARM ([1], n = 2) or ARMS with the Dirichlet copula ([2], n > 2), which
    reduces to DisARM at n = 2; Categorical / OneHotCategorical sites get the same coupling on
    their stick-breaking binaries ([4]); reparameterized sites get the pathwise gradient
    averaged over the n copies. The returned loss is the usual −ELBO averaged over the n
    copies. See the module docstring for the equations, the rule for plates and dependent
    discrete sites, and the sites that raise ``ValueError`` (e.g. ``Poisson``: use
    ``ScoreFunction_ELBO``).

    Example::

        svi = SVI(model, guide, Adam({"lr": 1e-2}), loss=DisARM_ELBO(num_particles=2))

    :param int num_particles: number n ≥ 2 of coupled copies per estimate.

    Pyro's ELBO options ``max_plate_nesting``, ``vectorize_particles`` (default True here),
    ``retain_graph``, ``strict_enumeration_warning`` and ``ignore_jit_warnings``: as in
    :class:`pyro.infer.ELBO`;
    ``vectorize_particles`` must be True: the n copies are coupled, so they are drawn in one
    vectorized run.
    """

    @extends_options(DiscreteLatentELBO.__init__)
    def __init__(self, num_particles: int = 2, **elbo_options):
        if not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(f"num_particles must be an integer >= 2, got {num_particles!r}")
        super().__init__(num_particles, **elbo_options)
        if not self.vectorize_particles:
            raise ValueError(
                "vectorize_particles must be True for DisARM_ELBO (its num_particles copies "
                "are coupled, so they are drawn in one vectorized run)"
            )

    def _loss_and_surrogate(self, model, guide, args, kwargs):
        noise = _CoupledNoise(self.particle_dim)
        model_trace, guide_trace = self._get_trace(model, noise(guide), args, kwargs)
        check_relaxable(guide_trace, type(self).__name__)
        elbo, surrogate = pathwise_elbo_and_surrogate(model_trace, guide_trace)
        sites = score_function_sites(guide_trace)
        if sites:
            costs, _ = downstream_costs(model_trace, guide_trace, sites)
            for name in sites:
                site = guide_trace.nodes[name]
                surrogate = surrogate + self._site_term(site, costs[name], noise.records[name])
        return -elbo, -surrogate

    def _site_term(self, site: dict, cost: torch.Tensor, record) -> torch.Tensor:
        """Surrogate-ELBO term whose gradient, divided by n, is the site's coupled estimate."""
        fn = site["fn"]
        family, base = family_of(fn)
        binaries, coupled, order = record
        alpha = family.binary_logits(family.logits(fn, base), order)
        dim = _copies_dim(fn, alpha, self.particle_dim)
        cost = cost.reshape(cost.shape + (1,) * (alpha.dim() - cost.dim()))
        weights = coupled_score_weights(alpha.detach(), binaries, cost, coupled, dim)
        # a decision that no copy reaches has terms of zero mean given the earlier decisions
        weights = weights * family.reached(binaries).any(dim, keepdim=True)
        # gradient w.r.t. α is the per-copy weight; backprop chains it to the logits, upstream
        return (alpha * weights.detach()).sum()
