"""Backend-agnostic test models for the ELBO estimators (pyroapi imports only).

One catalogue drives the estimator tests of both backends: every entry is written with
``pyroapi`` primitives, so the same model and guide run under
``pyro_backend("pyro_reparam_ext")`` and ``pyro_backend("numpyro_backend")``, and the same
exact reference values (computed once in float64 by ``tests/infer/make_reference.py`` and
stored in ``tests/data/estimator_reference.json``) check both.

Conventions shared by every entry (a test converts arrays to its backend first):

- ``entry.model(data, init)`` and ``entry.guide(data, init)``: ``data`` is
  ``entry.make_data()`` with every numpy array converted to a backend array (Python ints and
  ``None`` are left as they are); ``init`` is ``entry.init_params`` converted the same way.
  Every learnable parameter is an *unconstrained* ``pyro.param(name, init[name])`` (logits,
  locations, log-scales), so both backends start from identical values and a gradient means
  the same thing on both.
- ``entry.exact_loss`` is the exact −ELBO and ``entry.exact_grads[name]`` the exact gradient of
  −ELBO with respect to parameter ``name`` (float64 numpy arrays), on the *full* data: under
  ``plate`` subsampling the estimator's expectation over both the latents and the subsample
  indices equals this value.
- ``entry.max_plate_nesting`` is what an ELBO needs for vectorized particles.

References for the toy: [1] W. Grathwohl, D. Choi, Y. Wu, G. Roeder, D. Duvenaud (2018).
Backpropagation through the void, section 6.1 (f(b) = (b − 0.499)²).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from pyroapi import distributions as dist
from pyroapi import handlers, ops, pyro

REFERENCE_PATH = Path(__file__).resolve().parents[1] / "data" / "estimator_reference.json"


@dataclass(frozen=True)
class EstimatorModel:
    """One catalogue entry: model, guide, data, initial parameters and exact reference."""

    name: str
    model: Callable
    guide: Callable
    make_data: Callable[[], dict]
    init_params: dict[str, np.ndarray]
    max_plate_nesting: int
    discrete_sites: tuple[str, ...]
    description: str = ""
    notes: dict = field(default_factory=dict)
    #: computes ``{"loss": ..., "grads": {...}}`` instead of reading the stored reference
    reference_fn: Callable[[], dict] | None = None

    @cached_property
    def _reference(self) -> dict:
        if self.reference_fn is not None:
            return self.reference_fn()
        return json.loads(REFERENCE_PATH.read_text())[self.name]

    @property
    def exact_loss(self) -> float:
        return float(self._reference["loss"])

    @property
    def exact_grads(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self._reference["grads"].items()}


# ---------------------------------------------------------------------------------------------
# 1. Several Bernoulli latents (one conditioned on another in the guide), nonlinear likelihood.


def _bernoulli_nonlinear_model(data, init):
    w = pyro.param("w", init["w"])
    b0 = pyro.sample("b0", dist.Bernoulli(probs=data["prior_probs"][0]))
    b1 = pyro.sample("b1", dist.Bernoulli(probs=data["prior_probs"][1]))
    b2 = pyro.sample("b2", dist.Bernoulli(probs=data["prior_probs"][2]))
    mean = 2.0 * ops.tanh(w[0] * b0 - w[1] * b1 + w[2] * b0 * b2)
    with pyro.plate("obs", data["x"].shape[-1]):
        pyro.sample("x", dist.Normal(mean, 0.5), obs=data["x"])


def _bernoulli_nonlinear_guide(data, init):
    logits = pyro.param("q_logits", init["q_logits"])
    coupling = pyro.param("q_coupling", init["q_coupling"])
    b0 = pyro.sample("b0", dist.Bernoulli(logits=logits[0]))
    pyro.sample("b1", dist.Bernoulli(logits=logits[1] + coupling * b0))
    pyro.sample("b2", dist.Bernoulli(logits=logits[2]))


def _bernoulli_nonlinear_data() -> dict:
    return {
        "x": np.array([1.3, 0.9, 1.7, 1.1, 0.4]),
        "prior_probs": np.array([0.3, 0.6, 0.5]),
    }


BERNOULLI_NONLINEAR = EstimatorModel(
    name="bernoulli_nonlinear",
    model=_bernoulli_nonlinear_model,
    guide=_bernoulli_nonlinear_guide,
    make_data=_bernoulli_nonlinear_data,
    init_params={
        "w": np.array([1.2, -0.4, 0.8]),
        "q_logits": np.array([0.3, -0.5, 0.2]),
        "q_coupling": np.array(0.7),
    },
    max_plate_nesting=1,
    discrete_sites=("b0", "b1", "b2"),
    description="3 Bernoulli latents, b1 | b0 in the guide, x ~ N(2 tanh(w·features(b)), 0.5)",
)


# ---------------------------------------------------------------------------------------------
# 2. Categorical mixture inside a subsampled plate (12 points, subsample 4, 3 components).


def _mixture_model(data, init):
    locs = pyro.param("locs", init["locs"])
    mix_logits = pyro.param("mix_logits", init["mix_logits"])
    n = data["x"].shape[0]
    with pyro.plate("data", n, subsample_size=data["subsample_size"]) as idx:
        z = pyro.sample("z", dist.Categorical(logits=mix_logits))
        pyro.sample("x", dist.Normal(locs[z], 0.7), obs=data["x"][idx])


def _mixture_guide(data, init):
    assign_logits = pyro.param("assign_logits", init["assign_logits"])
    n = data["x"].shape[0]
    with pyro.plate("data", n, subsample_size=data["subsample_size"]) as idx:
        pyro.sample("z", dist.Categorical(logits=assign_logits[idx]))


def _mixture_data() -> dict:
    rng = np.random.RandomState(5)
    x = np.concatenate([rng.normal(-2.0, 0.7, 4), rng.normal(0.5, 0.7, 4), rng.normal(2.5, 0.7, 4)])
    return {"x": x, "subsample_size": 4}


_mixture_assign = np.random.RandomState(6).normal(0.0, 0.5, (12, 3))

CATEGORICAL_MIXTURE = EstimatorModel(
    name="categorical_mixture",
    model=_mixture_model,
    guide=_mixture_guide,
    make_data=_mixture_data,
    init_params={
        "locs": np.array([-1.5, 0.0, 1.5]),
        "mix_logits": np.array([0.1, -0.2, 0.3]),
        "assign_logits": _mixture_assign,
    },
    max_plate_nesting=1,
    discrete_sites=("z",),
    description="3-component Gaussian mixture, Categorical z in a plate of 12 subsampled to 4",
)


# ---------------------------------------------------------------------------------------------
# 3. A guide mixing a Bernoulli and a Normal whose location depends on it. The expectation over
#    the Normal is analytic (linear-Gaussian likelihood), so the exact gradient is exact.


def _mixed_model(data, init):
    shift = pyro.param("shift", init["shift"])
    c = pyro.sample("c", dist.Bernoulli(probs=0.4))
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    with pyro.plate("obs", data["x"].shape[-1]):
        pyro.sample("x", dist.Normal(z + shift * c, 0.8), obs=data["x"])


def _mixed_guide(data, init):
    c_logit = pyro.param("q_c_logit", init["q_c_logit"])
    z_loc = pyro.param("q_z_loc", init["q_z_loc"])
    z_shift = pyro.param("q_z_shift", init["q_z_shift"])
    z_log_scale = pyro.param("q_z_log_scale", init["q_z_log_scale"])
    c = pyro.sample("c", dist.Bernoulli(logits=c_logit))
    pyro.sample("z", dist.Normal(z_loc + z_shift * c, ops.exp(z_log_scale)))


def _mixed_data() -> dict:
    return {"x": np.array([1.9, 2.4, 1.2, 2.8])}


BERNOULLI_NORMAL = EstimatorModel(
    name="bernoulli_normal",
    model=_mixed_model,
    guide=_mixed_guide,
    make_data=_mixed_data,
    init_params={
        "shift": np.array(1.0),
        "q_c_logit": np.array(-0.3),
        "q_z_loc": np.array(0.5),
        "q_z_shift": np.array(0.8),
        "q_z_log_scale": np.array(-0.5),
    },
    max_plate_nesting=1,
    discrete_sites=("c",),
    description="guide c ~ Bernoulli, z | c ~ Normal(a + d c, s); x ~ N(z + shift c, 0.8)",
)


# ---------------------------------------------------------------------------------------------
# 4. A small binary-latent VAE: 8 binary data points of dimension 6, 3 Bernoulli latents each.


def _vae_model(data, init):
    dec_w = pyro.param("dec_w", init["dec_w"])
    dec_b = pyro.param("dec_b", init["dec_b"])
    x = data["x"]
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(logits=data["prior_logits"]).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=z @ dec_w + dec_b).to_event(1), obs=x)


def _vae_guide(data, init):
    enc_w = pyro.param("enc_w", init["enc_w"])
    enc_b = pyro.param("enc_b", init["enc_b"])
    x = data["x"]
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Bernoulli(logits=x @ enc_w + enc_b).to_event(1))


def _vae_data() -> dict:
    rng = np.random.RandomState(7)
    prototypes = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0], [1, 0, 0, 0, 1, 1]], float)
    rows = prototypes[rng.randint(0, 3, 8)]
    flips = rng.uniform(size=rows.shape) < 0.1
    return {"x": np.where(flips, 1.0 - rows, rows), "prior_logits": np.zeros(3)}


_vae_rng = np.random.RandomState(8)
BINARY_VAE = EstimatorModel(
    name="binary_vae",
    model=_vae_model,
    guide=_vae_guide,
    make_data=_vae_data,
    init_params={
        "enc_w": _vae_rng.normal(0.0, 0.5, (6, 3)),
        "enc_b": np.zeros(3),
        "dec_w": _vae_rng.normal(0.0, 0.5, (3, 6)),
        "dec_b": np.zeros(6),
    },
    max_plate_nesting=1,
    discrete_sites=("z",),
    description="binary VAE: 8 points x 6 binary pixels, z ~ Bernoulli(1/2)^3, linear decoder",
)


# ---------------------------------------------------------------------------------------------
# 6. Sites with several decisions per element (event dims), for the coordinate-wise control
#    variates of REBAR/RELAX: z = two one-hot decisions over 3 categories (to_event), then two
#    Bernoulli decisions c whose guide logits depend on z.


def _event_model(data, init):
    locs = pyro.param("locs", init["locs"])
    w = pyro.param("w", init["w"])
    z = pyro.sample("z", dist.OneHotCategorical(logits=data["prior_z_logits"]).to_event(1))
    c = pyro.sample("c", dist.Bernoulli(logits=data["prior_c_logits"]).to_event(1))
    h = z @ locs  # one value per decision: (..., 2)
    mean = ops.tanh(h[..., 0] - 0.5 * h[..., 1] + (c * w).sum(-1) * h[..., 0])
    with pyro.plate("obs", data["x"].shape[-1]):
        pyro.sample("x", dist.Normal(mean, 0.5), obs=data["x"])


def _event_guide(data, init):
    z_logits = pyro.param("q_z_logits", init["q_z_logits"])
    c_logits = pyro.param("q_c_logits", init["q_c_logits"])
    coupling = pyro.param("q_coupling", init["q_coupling"])
    z = pyro.sample("z", dist.OneHotCategorical(logits=z_logits).to_event(1))
    pyro.sample("c", dist.Bernoulli(logits=c_logits + z @ coupling).to_event(1))


EVENT_SITES = EstimatorModel(
    name="event_sites",
    model=_event_model,
    guide=_event_guide,
    make_data=lambda: {
        "x": np.array([0.9, -0.3, 0.6]),
        "prior_z_logits": np.array([[0.2, -0.3, 0.1], [0.0, 0.4, -0.2]]),
        "prior_c_logits": np.array([0.3, -0.6]),
    },
    init_params={
        "locs": np.array([-1.0, 0.5, 2.0]),
        "w": np.array([0.8, -0.6]),
        "q_z_logits": np.array([[0.3, -0.4, 0.2], [-0.1, 0.5, 0.0]]),
        "q_c_logits": np.array([0.2, -0.3]),
        "q_coupling": np.array([0.7, -0.5, 0.3]),
    },
    max_plate_nesting=1,
    discrete_sites=("z", "c"),
    description="z: 2 one-hot decisions (to_event), c | z: 2 Bernoulli decisions (to_event)",
)


# ---------------------------------------------------------------------------------------------
# 5. The RELAX toy [1]: minimise E_{b ~ Bernoulli(θ)}[(b − 0.499)²]; optimum θ → 0.
#    As an ELBO: an observation N(0.499 | b, 1/√2) contributes −(b − 0.499)² − ½ log π, and
#    the latent b (prior Bernoulli(1/2)) sits under ``handlers.scale(KL_SCALE)`` in model and
#    guide, so −ELBO = E[(b − 0.499)²] + ½ log π + 1e-4·KL(Bernoulli(θ) ‖ Bernoulli(1/2)).
#    The scaled KL moves the optimum only to logit θ* = −0.002 / 1e-4 = −20 (θ* ≈ 2e-9);
#    the cost keeps the paper's magnitude (≈ 0.25) and signal (f(1) − f(0) = 0.002).

KL_SCALE = 1.0e-4


def _toy_model(data, init):
    with handlers.scale(scale=KL_SCALE):
        b = pyro.sample("b", dist.Bernoulli(probs=0.5))
    pyro.sample("f", dist.Normal(b, 0.5**0.5), obs=data["target"])


def _toy_guide(data, init):
    theta_logit = pyro.param("theta_logit", init["theta_logit"])
    with handlers.scale(scale=KL_SCALE):
        pyro.sample("b", dist.Bernoulli(logits=theta_logit))


RELAX_TOY = EstimatorModel(
    name="relax_toy",
    model=_toy_model,
    guide=_toy_guide,
    make_data=lambda: {"target": np.array(0.499)},
    init_params={"theta_logit": np.array(0.0)},
    max_plate_nesting=0,
    discrete_sites=("b",),
    description="RELAX toy: -ELBO = E[(b - 0.499)^2] + ½ log π + 1e-4 KL(q || Bernoulli(1/2))",
)


# ---------------------------------------------------------------------------------------------
# 7. A masked site: 4 data points with 2 Bernoulli decisions each (to_event); point 1 is
#    masked out in model and guide (``.mask``), so its logits' exact gradient is 0.


def _masked_model(data, init):
    w = pyro.param("w", init["w"])
    observed = data["observed"] > 0.5
    with pyro.plate("data", data["x"].shape[0]):
        prior = dist.Bernoulli(logits=data["prior_logits"]).to_event(1)
        z = pyro.sample("z", prior.mask(observed))
        mean = 2.0 * ops.tanh((z * w).sum(-1) - 0.3)
        pyro.sample("x", dist.Normal(mean, 0.5).mask(observed), obs=data["x"])


def _masked_guide(data, init):
    logits = pyro.param("q_logits", init["q_logits"])
    observed = data["observed"] > 0.5
    with pyro.plate("data", data["x"].shape[0]):
        pyro.sample("z", dist.Bernoulli(logits=logits).to_event(1).mask(observed))


MASKED_BERNOULLI = EstimatorModel(
    name="masked_bernoulli",
    model=_masked_model,
    guide=_masked_guide,
    make_data=lambda: {
        "x": np.array([1.1, -0.4, 0.3, 1.6]),
        "observed": np.array([1.0, 0.0, 1.0, 1.0]),
        "prior_logits": np.array([0.2, -0.4]),
    },
    init_params={
        "w": np.array([1.3, -0.7]),
        "q_logits": np.array([[0.4, -0.2], [0.1, 0.3], [-0.5, 0.6], [0.2, 0.0]]),
    },
    max_plate_nesting=1,
    discrete_sites=("z",),
    description="plate of 4, z: 2 Bernoulli decisions (to_event), point 1 masked in p and q",
)


# 7b. A site masked where its cost still depends on it: MASKED_BERNOULLI with the likelihood
#     unmasked, z's prior masked by ``.mask`` and the guide's z by ``handlers.mask``. Point 1's
#     logits then have a nonzero exact gradient (its x depends on its z, sampled from the
#     unmasked q): a masked decision must keep its true score term. Not in :data:`MODELS`;
#     its exact reference is computed on use (4 values per point, enumerated in torch).


def _masked_likelihood_model(data, init):
    w = pyro.param("w", init["w"])
    observed = data["observed"] > 0.5
    with pyro.plate("data", data["x"].shape[0]):
        prior = dist.Bernoulli(logits=data["prior_logits"]).to_event(1)
        z = pyro.sample("z", prior.mask(observed))
        mean = 2.0 * ops.tanh((z * w).sum(-1) - 0.3)
        pyro.sample("x", dist.Normal(mean, 0.5), obs=data["x"])


def _masked_likelihood_guide(data, init):
    logits = pyro.param("q_logits", init["q_logits"])
    observed = data["observed"] > 0.5
    with pyro.plate("data", data["x"].shape[0]), handlers.mask(mask=observed):
        pyro.sample("z", dist.Bernoulli(logits=logits).to_event(1))


def _masked_likelihood_reference() -> dict:
    """Exact −ELBO of :data:`MASKED_LIKELIHOOD` and its gradient: every point's 2² values of z
    weighted by the unmasked q, the masked point's log p(z) − log q(z) left out, its
    log p(x | z) kept."""
    import torch

    data = {
        k: torch.tensor(v, dtype=torch.float64) for k, v in MASKED_BERNOULLI.make_data().items()
    }
    init = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for k, v in MASKED_BERNOULLI.init_params.items()
    }
    configs = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    z = configs[:, None, :]  # (4 values, 4 points, 2 decisions)

    def bernoulli(logits):
        return (z * torch.nn.functional.logsigmoid(logits)).sum(-1) + (
            (1.0 - z) * torch.nn.functional.logsigmoid(-logits)
        ).sum(-1)

    log_q, log_prior = bernoulli(init["q_logits"]), bernoulli(data["prior_logits"])
    mean = 2.0 * torch.tanh((z * init["w"]).sum(-1) - 0.3)
    log_lik = -0.5 * ((data["x"] - mean) / 0.5) ** 2 - math.log(0.5 * math.sqrt(2 * math.pi))
    cost = data["observed"] * (log_prior - log_q) + log_lik
    loss = -(log_q.exp() * cost).sum()
    grads = torch.autograd.grad(loss, list(init.values()))
    return {
        "loss": float(loss.detach()),
        "grads": {k: g.numpy() for k, g in zip(init, grads, strict=True)},
    }


MASKED_LIKELIHOOD = EstimatorModel(
    name="masked_likelihood",
    model=_masked_likelihood_model,
    guide=_masked_likelihood_guide,
    make_data=MASKED_BERNOULLI.make_data,
    init_params=MASKED_BERNOULLI.init_params,
    max_plate_nesting=1,
    discrete_sites=("z",),
    description="MASKED_BERNOULLI with x unmasked; z masked by .mask (p) and handlers.mask (q)",
    reference_fn=_masked_likelihood_reference,
)


# ---------------------------------------------------------------------------------------------
# 8. A Categorical site whose guide logits depend on an earlier Bernoulli site.


def _dependent_categorical_model(data, init):
    w = pyro.param("w", init["w"])
    c = pyro.sample("c", dist.Bernoulli(probs=0.4))
    z = pyro.sample("z", dist.Categorical(logits=data["prior_z_logits"]))
    loc = data["locs"][z]
    with pyro.plate("obs", data["x"].shape[-1]):
        pyro.sample("x", dist.Normal(loc + w[0] * c + w[1] * c * loc, 0.6), obs=data["x"])


def _dependent_categorical_guide(data, init):
    q_c = pyro.param("q_c", init["q_c"])
    q_z = pyro.param("q_z", init["q_z"])
    c = pyro.sample("c", dist.Bernoulli(logits=q_c))
    # q_z[c] written without integer indexing (c is a float 0/1 on both backends)
    pyro.sample("z", dist.Categorical(logits=q_z[0] + c[..., None] * (q_z[1] - q_z[0])))


DEPENDENT_CATEGORICAL = EstimatorModel(
    name="dependent_categorical",
    model=_dependent_categorical_model,
    guide=_dependent_categorical_guide,
    make_data=lambda: {
        "x": np.array([0.4, 1.9, -0.6]),
        "locs": np.array([-1.0, 0.0, 1.5]),
        "prior_z_logits": np.array([0.1, 0.3, -0.2]),
    },
    init_params={
        "w": np.array([0.8, -0.5]),
        "q_c": np.array(0.2),
        "q_z": np.array([[0.3, -0.1, 0.2], [-0.4, 0.5, 0.1]]),
    },
    max_plate_nesting=1,
    discrete_sites=("c", "z"),
    description="c ~ Bernoulli, then z | c ~ Categorical (guide logits depend on c)",
)


# ---------------------------------------------------------------------------------------------
# 9. OneHotCategorical sites (the pyroapi alias's on NumPyro) in a plate of 2, tanh likelihood.


def _one_hot_model(data, init):
    locs = pyro.param("locs", init["locs"])
    with pyro.plate("data", data["x"].shape[0]):
        z = pyro.sample("z", dist.OneHotCategorical(logits=data["prior_logits"]))
        pyro.sample("x", dist.Normal(2.0 * ops.tanh(z @ locs), 0.5), obs=data["x"])


def _one_hot_guide(data, init):
    logits = pyro.param("q_logits", init["q_logits"])
    with pyro.plate("data", data["x"].shape[0]):
        pyro.sample("z", dist.OneHotCategorical(logits=logits))


ONE_HOT = EstimatorModel(
    name="one_hot",
    model=_one_hot_model,
    guide=_one_hot_guide,
    make_data=lambda: {"x": np.array([1.2, -0.3]), "prior_logits": np.array([0.2, -0.1, 0.4])},
    init_params={
        "locs": np.array([-1.0, 0.5, 2.0]),
        "q_logits": np.array([[0.1, 0.3, -0.2], [0.5, -0.4, 0.2]]),
    },
    max_plate_nesting=1,
    discrete_sites=("z",),
    description="plate of 2, z ~ OneHotCategorical(3), x ~ N(2 tanh(z · locs), 0.5)",
)


#: Every entry, by name (``tests/infer/estimator_cases.py`` runs every estimator on them).
MODELS = {
    m.name: m
    for m in [
        BERNOULLI_NONLINEAR,
        CATEGORICAL_MIXTURE,
        BERNOULLI_NORMAL,
        BINARY_VAE,
        RELAX_TOY,
        EVENT_SITES,
        MASKED_BERNOULLI,
        DEPENDENT_CATEGORICAL,
        ONE_HOT,
    ]
}
