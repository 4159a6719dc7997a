r"""The importance-weighted (IWAE) bound with DReG and VIMCO gradients, NumPyro (JAX) backend.

Mirrors ``pyro_reparam_ext.infer.iwae``; the equations are repeated here. For K particles
:math:`z_k \sim q(z \mid x)` and log-weights :math:`f_k = \log p(x, z_k) - \log q(z_k \mid x)`,
the K-sample bound ([1], eq. 8) is
:math:`\mathcal{L}_K = \mathbb{E}[\log \tfrac{1}{K} \sum_k e^{f_k}] \le \log p(x)`.

Per plate element. When every site (latent and observed, model and guide) lies in a common
``plate``, the bound is formed per element, :math:`\sum_n \log \tfrac1K \sum_k w_{nk}`, scaled
by the plate's N/M under subsampling (one minibatch shared by the K particles). Otherwise (a
global latent or a site outside every plate) the bound is the one over the whole trace, with
the sites' scales inside the log-weights (as Pyro's ``RenyiELBO``).

Gradients, with normalized weights :math:`\tilde w_k` held constant:

- Model parameters θ: :math:`\sum_k \tilde w_k \nabla_\theta \log p(x, z_k)` ([1], eq. 14).
- Reparameterized guide sites, ``dreg=False``: the plain IWAE gradient
  :math:`\sum_k \tilde w_k \nabla_\phi f_k` ([1], eq. 14).
- Reparameterized guide sites, ``dreg=True``: DReG ([2], section 3, the IWAE-DReG estimator),
  :math:`\sum_k \tilde w_k^2\, \partial f_k / \partial z_k \cdot \partial z_k / \partial\phi`
  with :math:`\log q` evaluated with its distribution's parameters stopped. Surrogate
  :math:`\sum_k \tilde w_k^2 f^{\perp}_k(z_k) + \sum_k (\tilde w_k - \tilde w_k^2)
  f_k(\bar z_k)`, :math:`\bar z` the stopped sample (the model is replayed a second time).
- Non-reparameterized guide sites b: VIMCO ([3], section 3), the signal
  :math:`\hat L - \hat L_{-k}` with the leave-one-out geometric-mean baseline times
  :math:`\nabla_\phi \log q(b_k)`, per plate element in the per-element bound. With K = 1 the
  signal is :math:`\hat L` (plain score function).

The loss value is :math:`-\hat{\mathcal L}_K`. NumPyro's ``RenyiELBO`` refuses discrete latents;
this estimator gives them VIMCO's gradient. Works with :class:`numpyro_backend.infer.SVI` (and
NumPyro's own SVI: it keeps no state) under ``jit``.

Unsupported (``ValueError`` naming the site): enumerated sites; with ``dreg=True``, a
reparameterized site whose distribution depends on another latent's value, or a
non-reparameterized site sampled after a reparameterized one (use ``dreg=False``); per-element
bounds whose sites have different scales.

References:
    [1] Y. Burda, R. Grosse, R. Salakhutdinov (2016). Importance Weighted Autoencoders. ICLR.
    [2] G. Tucker, D. Lawson, S. Gu, C. J. Maddison (2019). Doubly Reparameterized Gradient
        Estimators for Monte Carlo Objectives. ICLR.
    [3] A. Mnih, D. J. Rezende (2016). Variational Inference for Monte Carlo Objectives. ICML.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax, random
from numpyro.handlers import replay, seed, substitute, trace

from numpyro_backend.infer.particles import ParticleELBO, extends_options

__all__ = ["IWAE_ELBO", "vimco_signal"]


def vimco_signal(log_weights):
    r"""VIMCO's learning signal :math:`\hat L - \hat L_{-k}` per particle ([3], section 3).

    ``log_weights`` has the particles on axis 0. The k-th log-weight is replaced by the mean
    of the others (the geometric-mean substitute); with one particle the signal is
    :math:`\hat L`.
    """
    num = log_weights.shape[0]
    bound = jax.nn.logsumexp(log_weights, 0) - math.log(num)
    if num == 1:
        return bound[None]
    others_mean = (jnp.sum(log_weights, 0, keepdims=True) - log_weights) / (num - 1)
    eye = jnp.eye(num, dtype=bool).reshape((num, num) + (1,) * (log_weights.ndim - 1))
    replaced = jnp.where(eye, others_mean[:, None], log_weights[None])
    return bound[None] - (jax.nn.logsumexp(replaced, 1) - math.log(num))


def _is_latent(site: dict) -> bool:
    return site["type"] == "sample" and not site.get("is_observed", False)


def _site_kind(site: dict) -> str:
    if site["infer"].get("enumerate"):
        raise ValueError(
            f"site '{site['name']}': IWAE_ELBO does not enumerate; remove "
            "infer={'enumerate': ...} or use TraceEnum_ELBO"
        )
    return "reparam" if site["fn"].has_rsample else "score"


def _log_prob(site: dict, fn=None):
    fn = site["fn"] if fn is None else fn
    if site.get("intermediates"):
        return fn.log_prob(site["value"], site["intermediates"])
    return fn.log_prob(site["value"])


def _element_dims(sites: list[dict]) -> tuple[int, ...]:
    """Dims of the plates that contain every site (the bound's elements)."""
    frames = None
    for site in sites:
        own = {(f.name, f.dim) for f in site["cond_indep_stack"]}
        frames = own if frames is None else frames & own
    return tuple(sorted(dim for _, dim in frames or ()))


def _common_scale(sites: list[dict]) -> float:
    """The scale shared by every site (per-element bound), or a ValueError naming a site."""
    scale = sites[0]["scale"]
    scale = 1.0 if scale is None else scale
    for site in sites[1:]:
        other = 1.0 if site["scale"] is None else site["scale"]
        if other != scale:
            raise ValueError(
                f"site '{site['name']}': IWAE_ELBO's per-element bound needs one scale (plate "
                f"subsampling factor) for every site, got {other} and {scale} at "
                f"'{sites[0]['name']}'; subsample only the outermost data plate"
            )
    return scale


def _to_elements(x, depth: int, keep: tuple[int, ...]):
    """Sum a batch-shaped log-density down to the element dims, padded to ``depth`` dims."""
    x = jnp.asarray(x)
    if x.ndim > depth:
        x = jnp.sum(x, tuple(range(x.ndim - depth)))
    x = jnp.reshape(x, (1,) * (depth - x.ndim) + x.shape)
    summed = tuple(d for d in range(-depth, 0) if d not in keep)
    return jnp.sum(x, summed, keepdims=True) if summed else x


def _inputs_reaching_outputs(build, values: dict) -> set[str]:
    """Names of ``values`` that ``build(values)``'s outputs depend on (jaxpr dataflow)."""
    closed = jax.make_jaxpr(build)(values)
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(values)[0]]
    sources = {var: {path[0].key} for var, path in zip(closed.jaxpr.invars, paths, strict=True)}
    for eqn in closed.jaxpr.eqns:
        reached = set().union(*(sources.get(v, set()) for v in eqn.invars if not hasattr(v, "val")))
        if reached:
            for out in eqn.outvars:
                sources[out] = reached
    return set().union(
        *(sources.get(v, set()) for v in closed.jaxpr.outvars if not hasattr(v, "val"))
    )


def _check_dreg_structure(guide, params, args, kwargs, guide_trace: dict) -> None:
    """DReG's stopped log q is exact only when no latent's distribution depends on a latent."""
    reparam = []
    for name, site in guide_trace.items():
        if not _is_latent(site):
            continue
        if site["kind"] == "score":
            if reparam:
                raise ValueError(
                    f"site '{name}': with dreg=True a non-reparameterized site may not follow a "
                    f"reparameterized one ('{reparam[0]}') in the guide; use dreg=False"
                )
            continue
        if reparam:

            def build(values, name=name):
                tr = trace(
                    seed(substitute(substitute(guide, data=params), data=values), 0)
                ).get_trace(*args, **kwargs)
                return jax.tree.leaves(tr[name]["fn"])

            upstream = {other: guide_trace[other]["value"] for other in reparam}
            reached = _inputs_reaching_outputs(build, upstream)
            if reached:
                raise ValueError(
                    f"site '{name}': its distribution depends on the value of "
                    f"'{sorted(reached)[0]}'; DReG with the guide's parameters stopped needs each "
                    "reparameterized site's distribution to depend on parameters and data only "
                    "(mean-field or amortized guides); use dreg=False"
                )
        reparam.append(name)


class IWAE_ELBO(ParticleELBO):
    r"""Importance-weighted bound ([1]) with DReG ([2]) and VIMCO ([3]) gradients.

    See the module docstring for the equations. The loss is :math:`-\hat{\mathcal L}_K`, the
    negative K-sample bound, per plate element for local latents.

    Example::

        svi = SVI(model, guide, numpyro.optim.Adam(1e-3), loss=IWAE_ELBO(8))

    :param int num_particles: K, the number of importance samples (per plate element).
    :param bool dreg: DReG gradient for reparameterized guide sites (default) instead of the
        plain IWAE gradient.

    Pyro's ELBO options ``max_plate_nesting``, ``vectorize_particles``, ``retain_graph``,
    ``strict_enumeration_warning`` and ``ignore_jit_warnings`` are accepted for Pyro's
    signature; only ``vectorize_particles`` acts: ``True`` (``jax.vmap``, default), ``False``
    (``lax.map``) or a map callable.
    """

    @extends_options(ParticleELBO.__init__)
    def __init__(self, num_particles: int = 8, *, dreg: bool = True, **elbo_options):
        if not isinstance(dreg, bool):
            raise ValueError(f"dreg must be True or False, got {dreg!r}")
        super().__init__(num_particles, **elbo_options)
        self.dreg = dreg

    # -- static plan from one trace ------------------------------------------------------------

    def _plan(self, rng_key, params, model, guide, args, kwargs) -> dict:
        """Site kinds, element dims, scale, depth; the minibatch shared by all particles."""
        guide_trace = trace(seed(substitute(guide, data=params), rng_key)).get_trace(
            *args, **kwargs
        )
        model_trace = trace(
            seed(replay(substitute(model, data=params), guide_trace), rng_key)
        ).get_trace(*args, **kwargs)
        model_sites = [s for s in model_trace.values() if s["type"] == "sample"]
        guide_sites = [s for s in guide_trace.values() if _is_latent(s)]
        for site in guide_sites:
            site["kind"] = _site_kind(site)
        sites = model_sites + guide_sites
        element_dims = _element_dims(sites)
        dims = [f.dim for s in sites for f in s["cond_indep_stack"]]
        use_dreg = self.dreg and any(s["kind"] == "reparam" for s in guide_sites)
        if use_dreg:
            _check_dreg_structure(guide, params, args, kwargs, guide_trace)
        return {
            "kinds": {s["name"]: s["kind"] for s in guide_sites},
            "element_dims": element_dims,
            "scale": _common_scale(sites) if element_dims else 1.0,
            "depth": -min(dims) if dims else 0,
            "use_dreg": use_dreg,
            "plates": {n: s for n, s in guide_trace.items() if s["type"] == "plate"},
        }

    # -- one particle --------------------------------------------------------------------------

    def _particle(self, rng_key, params, model, guide, args, kwargs, plan) -> dict:
        guide_key, model_key = random.split(rng_key)
        guide = replay(substitute(guide, data=params), trace=plan["plates"])
        guide_trace = trace(seed(guide, guide_key)).get_trace(*args, **kwargs)
        model = substitute(model, data=params)
        model_trace = trace(seed(replay(model, guide_trace), model_key)).get_trace(*args, **kwargs)
        depth, element_dims = plan["depth"], plan["element_dims"]

        def lp(site, log_prob, scaled=True):
            """Log-density summed to the elements; site scale inside the whole-trace bound."""
            scale = site["scale"] if scaled and not element_dims else None
            log_prob = log_prob if scale is None else scale * log_prob
            return _to_elements(log_prob, depth, element_dims)

        model_sites = [s for s in model_trace.values() if s["type"] == "sample"]
        guide_sites = [s for s in guide_trace.values() if _is_latent(s)]
        score = [s for s in guide_sites if plan["kinds"][s["name"]] == "score"]
        zero = jnp.zeros((1,) * depth)
        terms = {
            "model": sum((lp(s, _log_prob(s)) for s in model_sites), zero),
            "guide": sum((lp(s, _log_prob(s)) for s in guide_sites), zero),
            # VIMCO multiplies the *unscaled* log q(b) (the density b is drawn from)
            "score": sum((lp(s, _log_prob(s), False) for s in score), zero),
            "score_weight": sum((lp(s, _log_prob(s)) for s in score), zero),
        }
        if plan["use_dreg"]:
            stopped = [
                lp(s, _log_prob(s, jax.tree.map(lax.stop_gradient, s["fn"])))
                for s in guide_sites
                if plan["kinds"][s["name"]] == "reparam"
            ]
            terms["guide_stopped"] = sum(stopped, terms["score_weight"])
            detached = {
                n: dict(s, value=lax.stop_gradient(s["value"])) if s["type"] == "sample" else s
                for n, s in guide_trace.items()
            }
            rerun = trace(seed(replay(model, detached), model_key)).get_trace(*args, **kwargs)
            terms["model_stopped"] = sum(
                (lp(s, _log_prob(s)) for s in rerun.values() if s["type"] == "sample"), zero
            )
        return terms

    # -- loss ----------------------------------------------------------------------------------

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        return self.loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)[
            "loss"
        ]

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        """−(K-sample bound) whose gradient is the DReG / IWAE / VIMCO estimate."""
        plan_key, particle_key = random.split(rng_key)
        plan = self._plan(plan_key, param_map, model, guide, args, kwargs)
        num = self.num_particles
        terms = self.vectorize_particles_fn(
            lambda key: self._particle(key, param_map, model, guide, args, kwargs, plan),
            random.split(particle_key, num),
        )
        log_weights = terms["model"] - terms["guide"]
        flat = lax.stop_gradient(log_weights)
        bound = jnp.sum(jax.nn.logsumexp(flat, 0) - math.log(num))
        if plan["use_dreg"]:
            weights = jax.nn.softmax(flat, 0)
            stopped = terms["model"] - terms["guide_stopped"]
            at_detached = terms["model_stopped"] - terms["score_weight"]
            surrogate = jnp.sum(weights**2 * stopped) + jnp.sum(
                (weights - weights**2) * at_detached
            )
        else:
            surrogate = jnp.sum(jax.nn.logsumexp(log_weights, 0))
        if "score" in plan["kinds"].values():
            surrogate = surrogate + jnp.sum(vimco_signal(flat) * terms["score"])
        scale = plan["scale"]
        loss = -scale * (bound + surrogate - lax.stop_gradient(surrogate))
        return {"loss": loss, "mutable_state": None}
