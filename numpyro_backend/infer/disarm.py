r"""DisARM / ARMS: antithetically coupled samples for Bernoulli and categorical sites (NumPyro).

The same estimator as the Pyro backend's ``pyro_reparam_ext.infer.disarm`` (see its module
docstring for the derivation). For a Bernoulli decision with logit α, p = σ(α), and
n = ``num_particles`` copies of the whole guide, with d ~ Dirichlet(1, …, 1) (n components)
and p₋ = min(p, 1 − p) = σ(−|α|):

    copy i takes the rarer outcome  ⟺  (1 − dᵢ)^{n−1} < p₋                   (Dirichlet copula)

    ĝ = p(1 − p) / ((n − 1) D) · Σᵢ (f(bᵢ) − f̄)(bᵢ − p),     f̄ = (1/n) Σⱼ f(bⱼ),
    D = p₋ − C(p₋, p₋),   C(q, q) = max(0, 2 q^{1/(n−1)} − 1)^{n−1}

ARMS with the Dirichlet copula ([2]); at n = 2 the copula is antithetic (u₂ = 1 − u₁),
D = p₋ and ĝ is DisARM ([1]: ĝ = ½ (f(b) − f(b̃)) (−1)^{b̃} 1[b ≠ b̃] σ(|α|)). f is the
decision's plate-aware downstream cost (``particles.py``: NumPyro's provenance tracking and
``MultiFrameTensor``; scaled N/M under subsampling, the score unscaled).

The rule for plates and several sites, as on Pyro: every scalar decision (plate element,
event coordinate) is coupled with its own Dirichlet draw; the n copies are whole guide runs
(vmapped, ``jax.vmap`` with a named axis), so a later site sees its own copy's upstream
values; a decision is coupled where its logit is equal in all n copies, and otherwise drawn
independently with the leave-one-out score-function term (f(bᵢ) − f̄₋ᵢ)(bᵢ − pᵢ) ([3]). Both
are unbiased given the upstream values. A subsampled ``plate`` draws the same indices in all
n copies (as Pyro's vectorized particles do), so the copies' plate elements are coupled.
Reparameterized sites get the pathwise gradient averaged over the n copies.

Categorical / OneHotCategorical sites: the stick-breaking coupled estimator of [4], as on
Pyro: with the categories in increasing order of probability, the category is the first k
with b_k = 1 among K − 1 independent binaries of logits α_k = ℓ₍k₎ − logsumexp(ℓ₍k+1:₎) (the
last category if none); each binary is coupled and estimated as a Bernoulli decision, and the
terms of a binary that no copy reaches are dropped (zero mean given the earlier binaries).
Chosen over CARMS ([5]) because it reuses the binary coupling unchanged (unbiased for every
n, no extra evaluations); see the Pyro module for the measured effect of the order.

Any other non-reparameterized site (e.g. ``Poisson``) raises ``ValueError`` naming the site
in ``init_state`` (called by :class:`numpyro_backend.infer.SVI`'s ``init``) and in the loss:
use ``ScoreFunction_ELBO`` for it.

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

import jax
import jax.numpy as jnp
from jax import lax, random
from numpyro.handlers import seed
from numpyro.primitives import Messenger

from numpyro_backend.distributions.concrete import (
    bernoulli_hard,
    bernoulli_relaxed_logits,
    uniform_noise,
)
from numpyro_backend.infer.particles import (
    Particle,
    ParticleELBO,
    extends_options,
    split_param_map,
)
from numpyro_backend.infer.sites import family_of, guide_sites, is_discrete_draw

__all__ = ["DisARM_ELBO"]

#: Name of the vmapped axis of the n coupled copies.
COPIES = "reparam_ext_copies"


def unsupported_site_error(name: str, fn) -> ValueError:
    """The ValueError for a guide site DisARM_ELBO cannot couple, saying what to use."""
    return ValueError(
        f"DisARM_ELBO cannot handle guide site '{name}' ({type(fn).__name__}): it couples "
        "Bernoulli, Categorical and OneHotCategorical sites only. Use ScoreFunction_ELBO for "
        "this model, or make the site reparameterized."
    )


def check_supported(sites: dict) -> None:
    """ValueError naming the first non-reparameterized guide site that is not discrete."""
    for name, site in sites.items():
        if family_of(site["fn"])[0] is None:
            raise unsupported_site_error(name, site["fn"])


def copula_debias(logits, num: int):
    """p(1 − p) / D = 1 / (1 − ρ) of the Dirichlet copula with ``num`` copies.

    With a = p₋^{1/(n−1)}: D/p₋ = 1 − (2 − 1/a)^{n−1} when a > ½, else 1; and
    p(1 − p)/D = σ(|α|) / (D/p₋), evaluated with expm1/log1p (accurate for tiny p₋).
    """
    log_a = jax.nn.log_sigmoid(-jnp.abs(logits)) / (num - 1)
    ratio = -jnp.expm1(log_a) / jnp.exp(log_a)  # (1 − a)/a, < 1 exactly when a > ½
    overlap = ratio < 1.0
    safe = jnp.where(overlap, ratio, 0.0)
    d_over_p_min = jnp.where(overlap, -jnp.expm1((num - 1) * jnp.log1p(-safe)), 1.0)
    return jax.nn.sigmoid(jnp.abs(logits)) / d_over_p_min


def coupled_score_weights(logits, value, cost, coupled):
    """Per copy (axis 0) and decision: (f(bᵢ) − f̄₋ᵢ)(bᵢ − p)·(p(1 − p)/D if coupled else 1).

    Their mean over the copies is the ARMS / DisARM estimate of ∂E[f]/∂α (coupled) or the
    leave-one-out score-function estimate (independent).
    """
    num = logits.shape[0]
    leave_one_out = cost - (jnp.sum(cost, 0, keepdims=True) - cost) / (num - 1)
    debias = jnp.where(coupled, copula_debias(logits, num), 1.0)
    return leave_one_out * (value - jax.nn.sigmoid(logits)) * debias


class _CoupledDraw(Messenger):
    """Inside ``jax.vmap(..., axis_name=COPIES)``: draw the binary decisions of each discrete
    guide site in this copy, coupled with the other copies where their α agree (records them
    with the coupled mask and the category order); give every subsampled
    plate the same indices in all copies. Sits inside ``seed`` and needs no site keys: all
    noise comes from ``coupling_key`` (shared by the copies) and the copy index."""

    def __init__(self, fn, coupling_key, num_copies: int):
        self.coupling_key = coupling_key
        self.num_copies = num_copies
        self.counter = 0
        self.records: dict = {}
        super().__init__(fn)

    def _next_key(self):
        self.counter += 1
        return random.fold_in(self.coupling_key, self.counter)

    def process_message(self, msg):
        if msg["type"] == "plate":
            if msg["value"] is None and msg["kwargs"].get("rng_key") is None:
                msg["kwargs"]["rng_key"] = self._next_key()  # the same subsample in every copy
            return
        if not is_discrete_draw(msg):
            return
        fn = msg["fn"]
        family, base = family_of(fn)
        if family is None:
            raise unsupported_site_error(msg["name"], fn)
        logits = lax.stop_gradient(family.logits(fn, base))
        order = family.category_order(logits)
        alpha = family.binary_logits(logits, order)
        binaries, coupled = self._coupled_bernoulli(alpha)
        msg["value"] = lax.stop_gradient(family.value_from_binaries(binaries, order))
        self.records[msg["name"]] = {
            "family": family,
            "binaries": binaries,
            "coupled": coupled,
            "order": order,
        }

    def _coupled_bernoulli(self, alpha):
        """This copy's binaries: Dirichlet-copula coupled where α agrees in all copies,
        independent elsewhere; and the coupled mask."""
        every_copy = lax.all_gather(alpha, COPIES)
        coupled = jnp.all(every_copy == every_copy[0], axis=0)
        key_copula, key_independent = random.split(self._next_key())
        shape = (self.num_copies,) + alpha.shape
        exponential = -jnp.log(uniform_noise(key_copula, shape, alpha.dtype))
        index = lax.axis_index(COPIES)
        dirichlet = exponential[index] / jnp.sum(exponential, 0)
        # (1 − d)^{n−1} < p₋, in logs; the rare outcome is 1 for α ≤ 0 and 0 for α > 0
        rare = (self.num_copies - 1) * jnp.log1p(-dirichlet) < jax.nn.log_sigmoid(-jnp.abs(alpha))
        coupled_value = jnp.where(alpha > 0, ~rare, rare).astype(alpha.dtype)
        u = uniform_noise(random.fold_in(key_independent, index), alpha.shape, alpha.dtype)
        independent = bernoulli_hard(bernoulli_relaxed_logits(alpha, u))
        return jnp.where(coupled, coupled_value, independent), coupled


class _CoupledParticle(Particle):
    """:class:`Particle` (traces, log-densities, downstream costs) of one coupled copy."""

    def __init__(self, rng_key, params, model, guide, args, kwargs, coupling_key, num_copies):
        self._coupling = (coupling_key, num_copies)
        super().__init__(rng_key, params, model, guide, args, kwargs)

    def _seeded_guide(self, guide, draw_with_noise: bool):
        drawer = _CoupledDraw(guide, *self._coupling)
        self.draws = drawer.records
        return seed(drawer, self.guide_key), None


class DisARM_ELBO(ParticleELBO):
    r"""ELBO with antithetically coupled samples at discrete guide sites: DisARM / ARMS.

    ``num_particles`` = n ≥ 2 coupled copies of the guide per estimate; every Bernoulli
    decision gets DisARM ([1], n = 2) or ARMS with the Dirichlet copula ([2], n > 2), which
    reduces to DisARM at n = 2; Categorical / OneHotCategorical sites get the same coupling on
    their stick-breaking binaries ([4]); reparameterized sites get the pathwise gradient
    averaged over the n copies. The loss value is the usual −ELBO averaged over the n copies.
    See the module docstring for the equations and the rule for plates and dependent sites.
    Any other non-reparameterized site (e.g. ``Poisson``) raises ``ValueError`` naming it, at
    ``SVI.init`` (:class:`numpyro_backend.infer.SVI`) or at the first loss evaluation.

    Example::

        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), loss=DisARM_ELBO(num_particles=2))

    :param int num_particles: number n ≥ 2 of coupled copies per estimate.

    Pyro's ELBO options ``max_plate_nesting``, ``vectorize_particles``, ``retain_graph``,
    ``strict_enumeration_warning`` and ``ignore_jit_warnings`` are accepted for Pyro's
    signature; ``vectorize_particles`` must be True: the n coupled copies are drawn in one
    ``jax.vmap`` (they exchange their logits to decide where to couple).
    """

    @extends_options(ParticleELBO.__init__)
    def __init__(self, num_particles: int = 2, **elbo_options):
        if not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(f"num_particles must be an integer >= 2, got {num_particles!r}")
        if elbo_options.get("vectorize_particles", True) is not True:
            raise ValueError(
                "vectorize_particles must be True for DisARM_ELBO (its num_particles copies "
                "are coupled, so they are drawn in one vectorized run)"
            )
        super().__init__(num_particles, **elbo_options)

    def init_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        """No learned state; raises ``ValueError`` for a guide site it cannot handle."""
        params, _ = split_param_map(param_map)
        check_supported(guide_sites(rng_key, params, guide, args, kwargs))
        return {}, {}

    def _copy(self, rng_key, coupling_key, params, model, guide, args, kwargs) -> dict:
        particle = _CoupledParticle(
            rng_key, params, model, guide, args, kwargs, coupling_key, self.num_particles
        )
        sites = {}
        for name in particle.nonreparam:
            record = particle.draws[name]
            family, base = family_of(particle.guide_trace[name]["fn"])
            logits = family.logits(particle.guide_trace[name]["fn"], base)
            sites[name] = {
                "alpha": family.binary_logits(logits, record["order"]),
                "binaries": record["binaries"],
                "reached": family.reached(record["binaries"]),
                "cost": particle.downstream_cost(name),
                "coupled": record["coupled"],
            }
        return {"elbo": particle.elbo(), "sites": sites}

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        params, _ = split_param_map(param_map)
        check_supported(guide_sites(random.PRNGKey(0), params, guide, args, kwargs))
        particle_key, coupling_key = random.split(rng_key)
        out = jax.vmap(
            lambda key: self._copy(key, coupling_key, params, model, guide, args, kwargs),
            axis_name=COPIES,
        )(random.split(particle_key, self.num_particles))
        surrogate = 0.0  # weak-typed: keeps the inputs' dtype
        for site in out["sites"].values():
            alpha, cost = site["alpha"], site["cost"]
            cost = cost.reshape(cost.shape + (1,) * (alpha.ndim - cost.ndim))
            weights = coupled_score_weights(
                lax.stop_gradient(alpha), site["binaries"], cost, site["coupled"]
            )
            # a decision that no copy reaches has terms of zero mean given the earlier ones
            weights = weights * jnp.any(site["reached"], 0)
            # gradient w.r.t. α is the per-copy weight; backprop chains it to the logits
            surrogate = surrogate + jnp.sum(alpha * lax.stop_gradient(weights))
        elbo = jnp.mean(out["elbo"])
        surrogate = jnp.asarray(surrogate, elbo.dtype) / self.num_particles
        loss = -(elbo + surrogate - lax.stop_gradient(surrogate))
        return {"loss": loss, "mutable_state": None}
