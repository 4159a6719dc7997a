"""REBAR and RELAX ELBO estimators for Bernoulli and Categorical guide sites (NumPyro).

For a discrete guide site with logits θ: u, v uniform; z = θ + noise; b = H(z);
z̃ ~ p(z | b). The estimator is ([2], eq. 8)

    ĝ = [f(b) − c(z̃)] ∇ log q(b) + ∇c(z) − ∇c(z̃),

with f the site's plate-aware downstream cost. REBAR's control variate is c = η f(σ_λ(z)),
RELAX's c = η f(σ_λ(z)) + r_ρ(z) with r_ρ a small network; f at a relaxed value is
computed by a replay of model and guide (``particles.py``). The control-variate parameters
φ = (η, log λ, ρ) are SVI parameters named ``reparam_ext.<site>.eta``,
``reparam_ext.<site>.log_temperature`` and ``reparam_ext.relax.<site>``; SVI's single
gradient call gives the model/guide parameters θ the estimate ĝ and φ the gradient of the
estimator's second moment Σ_j ĝ_j² ([2], eq. 9), because the loss is the surrogate

    L = −ELBO + ⟨θ, −sg(ĝ)⟩ − sg(·) + Σ_j ĝ_j(φ)² − sg(·),

where ĝ(φ) is computed inside the loss as a gradient with θ held fixed (``sg``: stop-gradient).

Example::

    from numpyro_backend.infer import RELAX_ELBO, SVI

    svi = SVI(model, guide, numpyro.optim.Adam(1e-2), loss=RELAX_ELBO(num_particles=2))
    result = svi.run(jax.random.PRNGKey(0), 1000, data)

Guide sites of other non-reparameterized types raise ``ValueError`` naming the site (use
:class:`~numpyro_backend.infer.ScoreFunction_ELBO` for those). Known limitation: the control
variate of a site is exact only if the Categorical guide sites downstream of it do not
depend on it (Bernoulli ones are relaxed with it; see ``particles.py``).

References:
    [1] G. Tucker, A. Mnih, C. J. Maddison, D. Lawson, J. Sohl-Dickstein (2017). REBAR:
        Low-variance, unbiased gradient estimates for discrete latent variable models.
    [2] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud (2018). Backpropagation through
        the void: optimizing control variates for black-box gradient estimation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax, random

from numpyro_backend.infer.particles import (
    Particle,
    ParticleELBO,
    check_relaxable,
    control_variate_input,
    guide_sites,
    network_name,
    relaxation_kind,
    relaxed_value,
    split_param_map,
    state_name,
)

__all__ = ["REBAR_ELBO", "RELAX_ELBO", "mlp_control_variate"]


def mlp_control_variate(hidden_dim: int = 32) -> tuple[Callable, Callable]:
    """RELAX's default r_ρ: a one-hidden-layer tanh network, one scalar per element.

    Returns ``(init_fn(rng_key, event_size, dtype) -> params, apply_fn(params, x) -> value)``
    with ``x`` of shape ``batch + (event_size,)`` and ``value`` of shape ``batch``. The output
    layer starts at zero, so r_ρ starts as the zero function.
    """

    def init_fn(rng_key, event_size, dtype=jnp.float64):
        scale = 1.0 / math.sqrt(event_size)
        return {
            "w1": scale * random.normal(rng_key, (event_size, hidden_dim), dtype),
            "b1": jnp.zeros(hidden_dim, dtype),
            "w2": jnp.zeros(hidden_dim, dtype),
            "b2": jnp.zeros((), dtype),
        }

    def apply_fn(params, x):
        return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]

    return init_fn, apply_fn


class REBAR_ELBO(ParticleELBO):
    """ELBO with the REBAR estimator [1] at Bernoulli and Categorical guide sites.

    :param int num_particles: particles per step (vectorized with ``jax.vmap``).
    :param max_plate_nesting: accepted for the Pyro signature (particles are vmapped).
    :param vectorize_particles: ``True`` (vmap), ``False`` (``lax.map``) or a map callable.
    :param float temperature: initial relaxation temperature λ > 0.
    :param float eta: initial control-variate scale η.
    :param bool learn_temperature: learn log λ per site by minimizing the variance.
    :param bool learn_eta: learn η per site by minimizing the variance.
    """

    _estimator = "REBAR_ELBO"

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: float = float("inf"),
        vectorize_particles: bool = True,
        temperature: float = 0.5,
        eta: float = 1.0,
        learn_temperature: bool = True,
        learn_eta: bool = True,
    ):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        super().__init__(num_particles, max_plate_nesting, vectorize_particles)
        self.temperature = temperature
        self.eta = eta
        self.learn_temperature = learn_temperature
        self.learn_eta = learn_eta

    # -- state -----------------------------------------------------------------------------

    def _learned_names(self, site: str) -> list[str]:
        names = []
        if self.learn_eta:
            names.append(state_name(site, "eta"))
        if self.learn_temperature:
            names.append(state_name(site, "log_temperature"))
        return names

    def _network_params(self, rng_key, site: dict):
        return None

    def init_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        """η, log λ (and RELAX's network) for every discrete guide site."""
        params, _ = split_param_map(param_map)
        sites = guide_sites(rng_key, params, guide, args, kwargs)
        learned = {}
        for index, (name, site) in enumerate(sites.items()):
            if relaxation_kind(site["fn"]) is None:
                continue  # the loss raises a ValueError naming the site
            dtype = jnp.result_type(float)
            if self.learn_eta:
                learned[state_name(name, "eta")] = jnp.array(self.eta, dtype)
            if self.learn_temperature:
                learned[state_name(name, "log_temperature")] = jnp.array(
                    math.log(self.temperature), dtype
                )
            net = self._network_params(random.fold_in(rng_key, index), site)
            if net is not None:
                learned[network_name(name)] = net
        return learned, {}

    def _control_variate_params(self, phi: dict, site: str) -> dict:
        eta = phi.get(state_name(site, "eta"), self.eta)
        log_temperature = phi.get(state_name(site, "log_temperature"), math.log(self.temperature))
        return {"eta": eta, "temperature": jnp.exp(log_temperature), "net": None}

    def _network(self, net_params, kind, z, event_ndim):
        return 0.0

    # -- loss ------------------------------------------------------------------------------

    def _particle_surrogate(self, rng_key, theta, phi, model, guide, args, kwargs):
        """One particle's surrogate S (∇_θ S = ĝ) and its ELBO value."""
        particle = Particle(rng_key, theta, model, guide, args, kwargs, draw_with_noise=True)
        check_relaxable(particle.guide_trace, self._estimator)
        cv = {name: self._control_variate_params(phi, name) for name in particle.records}
        temperatures = {name: p["temperature"] for name, p in cv.items()}
        elbo = particle.elbo()
        surrogate = elbo
        for name in particle.nonreparam:
            record = particle.records[name]
            kind, z, z_tilde = record["kind"], record["z"], record["z_tilde"]
            eta, temperature = cv[name]["eta"], cv[name]["temperature"]
            event_ndim = len(particle.guide_trace[name]["fn"].event_shape)
            cost = particle.downstream_cost(name)
            cost_fn = particle.relaxed_cost_fn(name, temperatures)
            c_z = cost_fn(relaxed_value(kind, z, temperature))
            # c(z̃) twice: once differentiable in θ (through z̃), once for the score weight,
            # where only φ may carry gradient: value sg(c(z̃)), tangent in λ via a JVP.
            relaxed_tilde = relaxed_value(kind, z_tilde, temperature)
            relaxed_tilde_phi = relaxed_value(kind, lax.stop_gradient(z_tilde), temperature)
            c_tilde, c_tilde_phi = jax.jvp(
                cost_fn,
                (relaxed_tilde,),
                (relaxed_tilde_phi - lax.stop_gradient(relaxed_tilde_phi),),
            )
            weight_tilde = lax.stop_gradient(c_tilde) + c_tilde_phi
            net = cv[name]["net"]
            r_z = self._network(net, kind, z, event_ndim)
            r_tilde = self._network(net, kind, z_tilde, event_ndim)
            r_tilde_phi = self._network(net, kind, lax.stop_gradient(z_tilde), event_ndim)
            weight = cost - eta * weight_tilde - r_tilde_phi
            surrogate = (
                surrogate
                + jnp.sum(particle.log_prob(name) * weight)
                + jnp.sum(eta * (c_z - c_tilde) + r_z - r_tilde)
            )
        return surrogate, lax.stop_gradient(elbo)

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        theta, phi = split_param_map(param_map)
        sites = guide_sites(random.PRNGKey(0), theta, guide, args, kwargs)
        check_relaxable(sites, self._estimator)
        learned_names = [n for name in sites for n in self._all_learned_names(name)]
        self._require(phi, learned_names)
        phi = {k: v for k, v in phi.items() if k in learned_names}

        def surrogate_fn(theta, phi):
            surrogates, elbos = self.map_particles(
                lambda key: self._particle_surrogate(key, theta, phi, model, guide, args, kwargs),
                rng_key,
            )
            return jnp.mean(surrogates), jnp.mean(elbos)

        if not phi:
            surrogate, elbo = surrogate_fn(theta, phi)
            loss = -elbo - (surrogate - lax.stop_gradient(surrogate))
            return {"loss": loss, "mutable_state": None}
        # ĝ(φ) = ∇_θ S at fixed θ; the loss's θ-gradient is −ĝ, its φ-gradient ∇_φ Σ ĝ².
        theta_fixed = lax.stop_gradient(theta)
        (_, elbo), grad = jax.value_and_grad(surrogate_fn, has_aux=True)(theta_fixed, phi)
        linear = sum(jnp.sum(theta[k] * lax.stop_gradient(grad[k])) for k in theta if k in grad)
        second_moment = sum(jnp.sum(g**2) for g in jax.tree.leaves(grad))
        loss = (
            -elbo
            - (linear - lax.stop_gradient(linear))
            + (second_moment - lax.stop_gradient(second_moment))
        )
        return {"loss": loss, "mutable_state": None}

    def _all_learned_names(self, site: str) -> list[str]:
        return self._learned_names(site)


class RELAX_ELBO(REBAR_ELBO):
    """ELBO with the RELAX estimator [2]: REBAR's control variate plus a learned r_ρ(z).

    :param control_variate: ``None`` for :func:`mlp_control_variate` with ``hidden_dim``
        units, or a pair ``(init_fn(rng_key, event_size, dtype) -> params,
        apply_fn(params, x) -> value)`` where ``x`` (shape ``batch + (event_size,)``) is σ(z)
        of a Bernoulli site with its event dims flattened (softmax(z) for a Categorical,
        event_size = K) and ``value`` has shape ``batch``.
    :param int hidden_dim: hidden units of the default network.

    The other arguments are :class:`REBAR_ELBO`'s.
    """

    _estimator = "RELAX_ELBO"

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: float = float("inf"),
        vectorize_particles: bool = True,
        temperature: float = 0.5,
        eta: float = 1.0,
        learn_temperature: bool = True,
        learn_eta: bool = True,
        control_variate: tuple[Callable, Callable] | None = None,
        hidden_dim: int = 32,
    ):
        super().__init__(
            num_particles,
            max_plate_nesting,
            vectorize_particles,
            temperature,
            eta,
            learn_temperature,
            learn_eta,
        )
        if control_variate is None:
            control_variate = mlp_control_variate(hidden_dim)
        elif not (
            isinstance(control_variate, tuple)
            and len(control_variate) == 2
            and all(callable(f) for f in control_variate)
        ):
            raise ValueError(
                "control_variate must be None or a pair (init_fn, apply_fn) of callables, "
                f"got {control_variate!r}"
            )
        self.hidden_dim = hidden_dim
        self.control_variate = control_variate

    def _all_learned_names(self, site: str) -> list[str]:
        return self._learned_names(site) + [network_name(site)]

    def _network_params(self, rng_key, site: dict):
        fn = site["fn"]
        kind = relaxation_kind(fn)
        event_size = math.prod(fn.event_shape)
        if kind == "categorical":
            event_size = event_size * fn.logits.shape[-1]
        init_fn, _ = self.control_variate
        return init_fn(rng_key, event_size, jnp.result_type(float))

    def _control_variate_params(self, phi: dict, site: str) -> dict:
        params = super()._control_variate_params(phi, site)
        params["net"] = phi[network_name(site)]
        return params

    def _network(self, net_params, kind, z, event_ndim):
        _, apply_fn = self.control_variate
        return apply_fn(net_params, control_variate_input(kind, z, event_ndim))
