r"""The importance-weighted (IWAE) bound with DReG and VIMCO gradients, PyTorch backend.

For K particles :math:`z_k \sim q(z \mid x)` and log-weights
:math:`f_k = \log p(x, z_k) - \log q(z_k \mid x)`, the K-sample bound ([1], eq. 8) is

.. math:: \mathcal{L}_K = \mathbb{E}\Big[\log \tfrac{1}{K} \textstyle\sum_k e^{f_k}\Big]
   \le \log p(x).

Per plate element. When every site (latent and observed, model and guide) lies in a common
vectorized ``plate``, the weights factorize over its elements and the bound is formed per
element, :math:`\sum_n \log \tfrac1K \sum_k w_{nk}` with K particles per element (the
objective [1] trains VAEs with: K samples per data point), scaled by the plate's N/M under
subsampling. Otherwise (a global latent or a site outside every plate) the bound is the one
over the whole trace, with the sites' scales inside the log-weights (as Pyro's ``RenyiELBO``).

Gradients, with normalized weights :math:`\tilde w_k = e^{f_k} / \sum_j e^{f_j}` (held
constant):

- Model parameters θ: :math:`\sum_k \tilde w_k \nabla_\theta \log p(x, z_k)` ([1], eq. 14).
- Reparameterized guide sites, ``dreg=False``: the plain IWAE gradient
  :math:`\sum_k \tilde w_k \nabla_\phi f_k(z_k(\epsilon_k, \phi), \phi)` ([1], eq. 14).
- Reparameterized guide sites, ``dreg=True``: DReG ([2], section 3, the IWAE-DReG estimator),
  :math:`\sum_k \tilde w_k^2\, \partial f_k / \partial z_k \cdot \partial z_k / \partial\phi`,
  where :math:`f_k` uses :math:`\log q` with the guide's parameters stopped. Implemented as the
  surrogate :math:`\sum_k \tilde w_k^2 f^{\perp}_k(z_k) +
  \sum_k (\tilde w_k - \tilde w_k^2)\, f_k(\bar z_k)` with :math:`\bar z` the detached sample
  (the model is replayed a second time on detached values), so θ keeps the weight
  :math:`\tilde w_k` and the z-paths get :math:`\tilde w_k^2`.
- Non-reparameterized guide sites b: VIMCO ([3], section 3): the term
  :math:`\sum_k (\hat L - \hat L_{-k}) \nabla_\phi \log q(b_k)` with the leave-one-out
  geometric-mean baseline :math:`\hat L_{-k} = \log \tfrac1K (\sum_{j\ne k} e^{f_j} +
  e^{\frac{1}{K-1}\sum_{j \ne k} f_j})`, per plate element in the per-element bound, plus the
  pathwise :math:`\sum_k \tilde w_k \nabla f_k`. With K = 1 there is no other particle and the
  signal is :math:`\hat L` itself (plain score function), so ``IWAE_ELBO(1)`` estimates the
  gradient of Trace_ELBO's objective.

The loss value is :math:`-\hat{\mathcal L}_K`. Pyro's ``RenyiELBO(alpha=0)`` multiplies its score
term by α/(1 − α) = 0: non-reparameterized sites get no gradient (pyro #3289); here they get
VIMCO's. pyro #3104 reports that it treats a VAE's local latents as one global latent; Pyro
1.9.2 keeps the model's common plates (``get_dependent_plate_dims``), and its bound value then
agrees with ours (tested).

Unsupported (``ValueError`` naming the site): enumerated sites; partially reparameterized
sites (``score_parts`` with both a score and an entropy part); with ``dreg=True``, a guide whose
reparameterized site's distribution depends on another latent's value, or a
non-reparameterized site sampled after a reparameterized one (use ``dreg=False``); per-element
bounds whose sites have different scales.

References:
    [1] Y. Burda, R. Grosse, R. Salakhutdinov (2016). Importance Weighted Autoencoders. ICLR.
    [2] G. Tucker, D. Lawson, S. Gu, C. J. Maddison (2019). Doubly Reparameterized Gradient
        Estimators for Monte Carlo Objectives. ICLR.
    [3] A. Mnih, D. J. Rezende (2016). Variational Inference for Monte Carlo Objectives. ICML.
"""

from __future__ import annotations

import copy
import math
from numbers import Number

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape

from pyro_reparam_ext.infer.particles import DiscreteLatentELBO, extends_options

__all__ = ["IWAE_ELBO", "vimco_signal"]

_PARTICLE_PLATE = "iwae_particles"


def vimco_signal(log_weights: torch.Tensor) -> torch.Tensor:
    r"""VIMCO's learning signal :math:`\hat L - \hat L_{-k}` per particle ([3], section 3).

    ``log_weights`` has the particles on dim 0. The k-th log-weight is replaced by the mean of
    the others (the geometric-mean substitute); with one particle the signal is :math:`\hat L`.
    """
    num = log_weights.shape[0]
    bound = log_weights.logsumexp(0) - math.log(num)
    if num == 1:
        return bound.unsqueeze(0)
    others_mean = (log_weights.sum(0, keepdim=True) - log_weights) / (num - 1)
    eye = torch.eye(num, dtype=torch.bool, device=log_weights.device)
    eye = eye.reshape((num, num) + (1,) * (log_weights.dim() - 1))
    replaced = torch.where(eye, others_mean.unsqueeze(1), log_weights.unsqueeze(0))
    return bound.unsqueeze(0) - (replaced.logsumexp(1) - math.log(num))


def _detach_distribution(fn):
    """A shallow copy of ``fn`` whose tensors (and nested distributions' tensors) are detached."""
    new = copy.copy(fn)
    for key, value in vars(fn).items():
        if isinstance(value, torch.Tensor):
            setattr(new, key, value.detach())
        elif isinstance(value, torch.distributions.Distribution):
            setattr(new, key, _detach_distribution(value))
        elif isinstance(value, torch.distributions.Transform):
            setattr(new, key, _detach_distribution(value))
        elif isinstance(value, (list, tuple)) and any(
            isinstance(v, torch.distributions.Transform) for v in value
        ):
            setattr(new, key, type(value)(_detach_distribution(v) for v in value))
    return new


def _is_latent(site: dict) -> bool:
    return site["type"] == "sample" and not site["is_observed"]


def _site_kind(site: dict) -> str:
    """'reparam', 'score' or a ValueError for sites this estimator cannot handle."""
    name = site["name"]
    if site["infer"].get("enumerate"):
        raise ValueError(
            f"site '{name}': IWAE_ELBO does not enumerate; remove infer={{'enumerate': ...}} "
            "or use TraceEnum_ELBO"
        )
    parts = site["score_parts"]
    if is_identically_zero(parts.score_function):
        return "reparam"
    if is_identically_zero(parts.entropy_term):
        return "score"
    raise ValueError(
        f"site '{name}': partially reparameterized distributions ({type(site['fn']).__name__}) "
        "are not supported by IWAE_ELBO; use a fully reparameterized or a non-reparameterized one"
    )


def _plate_frames(site: dict) -> set:
    return {
        (f.name, f.dim)
        for f in site["cond_indep_stack"]
        if f.vectorized and f.name != _PARTICLE_PLATE
    }


def _element_dims(sites: list[dict]) -> tuple[int, ...]:
    """Dims of the vectorized plates that contain every site (the bound's elements)."""
    frames = None
    for site in sites:
        own = _plate_frames(site)
        frames = own if frames is None else frames & own
    return tuple(sorted(dim for _, dim in frames or ()))


def _common_scale(sites: list[dict]):
    """The scale shared by every site (per-element bound), or a ValueError naming a site."""
    scale = sites[0]["scale"]
    for site in sites[1:]:
        same = (
            scale == site["scale"]
            if isinstance(scale, Number) and isinstance(site["scale"], Number)
            else site["scale"] is scale
        )
        if not same:
            raise ValueError(
                f"site '{site['name']}': IWAE_ELBO's per-element bound needs one scale (plate "
                f"subsampling factor) for every site, got {site['scale']} and {scale} at "
                f"'{sites[0]['name']}'; subsample only the outermost data plate"
            )
    return scale


def _to_elements(x: torch.Tensor, depth: int, keep: tuple[int, ...]) -> torch.Tensor:
    """Sum a batch-shaped log-density down to the kept dims (particle + element dims)."""
    if x.dim() > depth:
        x = x.sum(tuple(range(x.dim() - depth)))
    x = x.reshape((1,) * (depth - x.dim()) + x.shape)
    summed = [d for d in range(-depth, 0) if d not in keep]
    return x.sum(summed, keepdim=True) if summed else x


def _check_dreg_structure(guide_trace) -> None:
    """DReG's stopped log q is exact only when no latent's distribution depends on a latent."""
    reparam_values = []
    for name, site in guide_trace.nodes.items():
        if not _is_latent(site):
            continue
        if site["kind"] == "score":
            if reparam_values:
                raise ValueError(
                    f"site '{name}': with dreg=True a non-reparameterized site may not follow a "
                    f"reparameterized one ('{reparam_values[0][0]}') in the guide; use dreg=False"
                )
            continue
        upstream = [(n, v) for n, v in reparam_values if v.requires_grad]
        log_q = site["fn"].log_prob(site["value"].detach())
        if upstream and log_q.requires_grad:
            grads = torch.autograd.grad(
                log_q.sum(), [v for _, v in upstream], allow_unused=True, retain_graph=True
            )
            for (other, _), grad in zip(upstream, grads, strict=True):
                if grad is not None:
                    raise ValueError(
                        f"site '{name}': its distribution depends on the value of '{other}'; "
                        "DReG with the guide's parameters stopped needs each reparameterized "
                        "site's distribution to depend on parameters and data only (mean-field "
                        "or amortized guides); use dreg=False"
                    )
        reparam_values.append((name, site["value"]))


class IWAE_ELBO(ELBO):
    r"""Importance-weighted bound ([1]) with DReG ([2]) and VIMCO ([3]) gradients.

    See the module docstring for the equations. The loss is :math:`-\hat{\mathcal L}_K`, the
    negative K-sample bound, per plate element for local latents.

    Example::

        svi = SVI(model, guide, Adam({"lr": 1e-3}), loss=IWAE_ELBO(8))

    :param int num_particles: K, the number of importance samples (per plate element).
    :param bool dreg: DReG gradient for reparameterized guide sites (default) instead of the
        plain IWAE gradient.

    Pyro's ELBO options ``max_plate_nesting``, ``vectorize_particles`` (default True here),
    ``retain_graph``, ``strict_enumeration_warning`` and ``ignore_jit_warnings``: as in
    :class:`pyro.infer.ELBO`;
    with ``vectorize_particles=False`` the K particles run in a Python loop and the first
    particle's minibatch is replayed into the others.
    """

    @extends_options(DiscreteLatentELBO.__init__)
    def __init__(self, num_particles: int = 8, *, dreg: bool = True, **elbo_options):
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
        if not isinstance(dreg, bool):
            raise ValueError(f"dreg must be True or False, got {dreg!r}")
        elbo_options.setdefault("vectorize_particles", True)  # pyro.infer.ELBO's default: False
        super().__init__(num_particles=num_particles, **elbo_options)
        if self.vectorize_particles and num_particles == 1:
            self.max_plate_nesting += 1  # our particle plate is there even for K = 1
        self.dreg = dreg

    # -- traces --------------------------------------------------------------------------------

    def _guess_max_plate_nesting(self, model, guide, args, kwargs):
        super()._guess_max_plate_nesting(model, guide, args, kwargs)
        if self.vectorize_particles and self.num_particles == 1:
            self.max_plate_nesting += 1

    def _get_trace(self, model, guide, args, kwargs):
        """Unpruned guide trace (for the DReG replay), pruned model and guide traces."""
        full_guide = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=full_guide)).get_trace(
            *args, **kwargs
        )
        if is_validation_enabled():
            check_model_guide_match(model_trace, full_guide, self.max_plate_nesting)
        guide_trace = prune_subsample_sites(full_guide)
        model_trace = prune_subsample_sites(model_trace)
        model_trace.compute_log_prob()
        guide_trace.compute_score_parts()
        if is_validation_enabled():
            for site in list(model_trace.nodes.values()) + list(guide_trace.nodes.values()):
                if site["type"] == "sample":
                    check_site_shape(site, self.max_plate_nesting)
        return full_guide, model_trace, guide_trace

    def _particle_traces(self, model, guide, args, kwargs):
        """[(full guide trace, model trace, guide trace)], the particle plate's wrappers."""
        if not self.vectorize_particles:  # one minibatch for all particles: replay it
            first = self._get_trace(model, guide, args, kwargs)
            minibatch = poutine.Trace()
            for name, site in first[0].nodes.items():
                if site_is_subsample(site):
                    minibatch.add_node(name, **site)
            guide = poutine.replay(guide, trace=minibatch)
            rest = [
                self._get_trace(model, guide, args, kwargs) for _ in range(self.num_particles - 1)
            ]
            return [first, *rest]
        if self.max_plate_nesting == float("inf"):
            self._guess_max_plate_nesting(model, guide, args, kwargs)
        plate = pyro.plate(_PARTICLE_PLATE, self.num_particles, dim=-self.max_plate_nesting)
        return [self._get_trace(plate(model), plate(guide), args, kwargs)]

    # -- log-weights ---------------------------------------------------------------------------

    def _weight_terms(self, model, guide, args, kwargs, gradient: bool) -> dict:
        """Element-shaped log-weight pieces of every particle, stacked on dim 0."""
        traces = self._particle_traces(model, guide, args, kwargs)
        pieces = [self._trace_terms(model, args, kwargs, gradient, *t) for t in traces]
        if len(pieces) == 1:
            return pieces[0]
        depth = max(p["depth"] for p in pieces)
        out = dict(pieces[0])
        for key in ("model", "guide", "guide_stopped", "score", "score_weight", "model_stopped"):
            tensors = [p[key] for p in pieces]
            if all(t is None for t in tensors):
                continue
            tensors = [t.reshape((1,) * (depth - t.dim()) + t.shape) for t in tensors]
            out[key] = torch.cat(torch.broadcast_tensors(*tensors), 0)
        return out

    def _trace_terms(
        self, model, args, kwargs, gradient, full_guide, model_trace, guide_trace
    ) -> dict:
        model_sites = [s for s in model_trace.nodes.values() if s["type"] == "sample"]
        guide_sites = [s for s in guide_trace.nodes.values() if _is_latent(s)]
        for site in guide_sites:
            site["kind"] = _site_kind(site)
        sites = model_sites + guide_sites
        element_dims = _element_dims(sites)
        scale = _common_scale(sites) if element_dims else 1.0
        if self.vectorize_particles:  # the particle plate is the outermost dim, -depth
            depth = self.max_plate_nesting
        else:  # a particle dim (of size 1) left of the deepest plate; particles cat on it
            dims = [f.dim for s in sites for f in s["cond_indep_stack"] if f.vectorized]
            depth = (-min(dims) if dims else 0) + 1
        keep = (-depth,) + element_dims

        def lp(site, log_prob, scaled=True):
            """Masked log-density, with its site's scale inside the whole-trace bound only."""
            site_scale = site["scale"] if scaled and not element_dims else 1.0
            return _to_elements(scale_and_mask(log_prob, site_scale, site["mask"]), depth, keep)

        reparam = [s for s in guide_sites if s["kind"] == "reparam"]
        score = [s for s in guide_sites if s["kind"] == "score"]
        use_dreg = gradient and self.dreg and bool(reparam)
        terms = {
            "model": sum(lp(s, s["unscaled_log_prob"]) for s in model_sites),
            "guide": sum(lp(s, s["unscaled_log_prob"]) for s in guide_sites),
            # VIMCO multiplies the *unscaled* log q(b) (the density b is drawn from)
            "score": sum(lp(s, s["unscaled_log_prob"], False) for s in score) if score else None,
            "score_weight": sum(lp(s, s["unscaled_log_prob"]) for s in score) if score else None,
            "guide_stopped": None,
            "model_stopped": None,
            "scale": scale,
            "depth": depth,
        }
        if use_dreg:
            _check_dreg_structure(guide_trace)
            stopped = [lp(s, _detach_distribution(s["fn"]).log_prob(s["value"])) for s in reparam]
            terms["guide_stopped"] = sum(stopped) + sum(
                (lp(s, s["unscaled_log_prob"]) for s in score), 0.0
            )
            terms["model_stopped"] = self._model_at_detached(
                model, args, kwargs, full_guide, model_trace, lp
            )
        return terms

    def _model_at_detached(self, model, args, kwargs, full_guide, model_trace, lp):
        """Σ log p(x, z̄) with the guide's values detached: the θ-part of DReG's surrogate."""
        detached = full_guide.copy()
        for name, site in full_guide.nodes.items():
            if site["type"] == "sample" and torch.is_tensor(site["value"]):
                detached.nodes[name] = dict(site, value=site["value"].detach())
        if self.vectorize_particles:
            plate = pyro.plate(_PARTICLE_PLATE, self.num_particles, dim=-self.max_plate_nesting)
            model = plate(model)
        rerun = poutine.trace(poutine.replay(model, trace=detached)).get_trace(*args, **kwargs)
        rerun = prune_subsample_sites(rerun)
        rerun.compute_log_prob()
        return sum(
            lp(s, s["unscaled_log_prob"]) for s in rerun.nodes.values() if s["type"] == "sample"
        )

    # -- bound and surrogate -------------------------------------------------------------------

    def _bound_and_surrogate(self, model, guide, args, kwargs):
        terms = self._weight_terms(model, guide, args, kwargs, gradient=True)
        scale, num = terms["scale"], self.num_particles
        log_weights = terms["model"] - terms["guide"]
        log_weights = log_weights.expand((num,) + log_weights.shape[1:])  # particles on dim 0
        flat = log_weights.detach()
        bound = scale * (flat.logsumexp(0) - math.log(num)).sum()
        if terms["guide_stopped"] is None:
            surrogate = log_weights.logsumexp(0).sum()
        else:
            weights = torch.softmax(flat, 0)
            stopped = terms["model"] - terms["guide_stopped"]
            at_detached = terms["model_stopped"] - (
                terms["score_weight"] if terms["score"] is not None else 0.0
            )
            surrogate = (weights**2 * stopped).sum() + ((weights - weights**2) * at_detached).sum()
        if terms["score"] is not None:
            surrogate = surrogate + (vimco_signal(flat) * terms["score"]).sum()
        return bound, scale * surrogate

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """−(K-sample bound) whose gradient is the DReG / IWAE / VIMCO estimate."""
        bound, surrogate = self._bound_and_surrogate(model, guide, args, kwargs)
        return -(bound + (surrogate - surrogate.detach()))

    def loss(self, model, guide, *args, **kwargs):
        """−(K-sample bound) as a float."""
        with torch.no_grad():
            terms = self._weight_terms(model, guide, args, kwargs, gradient=False)
            log_weights = terms["model"] - terms["guide"]
            log_weights = log_weights.expand((self.num_particles,) + log_weights.shape[1:])
            bound = (log_weights.logsumexp(0) - math.log(self.num_particles)).sum()
            return -torch_item(terms["scale"] * bound)

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """−(K-sample bound) as a float; gradients accumulated into the parameters."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return torch_item(loss)
