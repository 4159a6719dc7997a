"""Compute the exact −ELBO and its gradients for tests/infer/models.py (float64, run once).

    .venv/bin/python -m tests.infer.make_reference

writes ``tests/data/estimator_reference.json``. Methods, one per model:

- ``bernoulli_nonlinear``, ``categorical_mixture``: Pyro's ``TraceEnum_ELBO`` with every guide
  site enumerated in parallel (exact), on the full data (no subsampling); cross-checked here
  against explicit enumeration over all joint configurations.
- ``binary_vae``: explicit enumeration of the 2³ latent configurations of every data point
  (points are independent given the parameters).
- ``bernoulli_normal``: enumeration of c with the Gaussian expectation over z in closed form;
  cross-checked here against ``TraceEnum_ELBO`` (c enumerated, z sampled with 200k particles)
  within 5 standard errors.
- ``relax_toy``: closed form (two terms).
- ``event_sites``: explicit enumeration of the 3² one-hot values of z and the 2² values of c.
- ``masked_bernoulli``, ``one_hot``: enumeration of every element's few values (a masked
  element's terms are 0 whatever its value); ``one_hot`` cross-checked against
  ``TraceEnum_ELBO``.
- ``dependent_categorical``: ``TraceEnum_ELBO`` (both guide sites enumerated), cross-checked
  against explicit enumeration of the 2 × 3 joint configurations.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pyroapi
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

import pyro_reparam_ext  # noqa: F401  (registers the pyroapi backend)
from tests.infer.models import KL_SCALE, MODELS, REFERENCE_PATH


def _torch_inputs(entry, full_data: bool = True):
    data = {
        k: torch.as_tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) else v
        for k, v in entry.make_data().items()
    }
    if full_data and "subsample_size" in data:
        data["subsample_size"] = None
    init = {
        k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
        for k, v in entry.init_params.items()
    }
    return data, init


def _model_and_guide(entry):
    # Parameters come straight from ``init`` (leaf tensors we differentiate), not the store.
    def run(fn):
        def wrapped(data, init):
            pyro.clear_param_store()
            with poutine.block(hide_types=["param"]):
                return fn(data, init)

        return wrapped

    return run(entry.model), run(entry.guide)


def _grads(loss, init) -> dict:
    grads = torch.autograd.grad(loss, list(init.values()))
    return {k: g.detach().numpy().tolist() for k, g in zip(init, grads, strict=True)}


def enum_reference(entry):
    data, init = _torch_inputs(entry)
    model, guide = _model_and_guide(entry)
    elbo = TraceEnum_ELBO(max_plate_nesting=entry.max_plate_nesting)
    loss = elbo.differentiable_loss(model, config_enumerate(guide, "parallel"), data, init)
    return loss, init


def brute_force_reference(entry, site_values: dict):
    """Σ over joint guide configurations of q(config) · (log q − log p); no plates allowed."""
    data, init = _torch_inputs(entry)
    model, guide = _model_and_guide(entry)
    names = list(site_values)
    total = 0.0
    for values in itertools.product(*(site_values[n] for n in names)):
        # float values stay float64, Categorical indices int64
        cond = {n: torch.tensor(v) for n, v in zip(names, values, strict=True)}
        guide_tr = poutine.trace(poutine.condition(guide, cond)).get_trace(data, init)
        model_tr = poutine.trace(poutine.condition(model, cond)).get_trace(data, init)
        log_q = guide_tr.log_prob_sum()
        total = total + log_q.exp() * (log_q - model_tr.log_prob_sum())
    return total, init


def local_enumeration_reference(entry, site: str, configs: torch.Tensor):
    """Exact −ELBO when each plate element has an independent latent with few values.

    ``configs`` (C, event...) are all values of one element's latent; conditioning the site on
    ``configs[:, None]`` (C, N, event...) evaluates every element at every value at once.
    """
    data, init = _torch_inputs(entry)
    model, guide = _model_and_guide(entry)
    n = data["x"].shape[0]
    value = configs[:, None].expand((configs.shape[0], n) + configs.shape[1:])
    cond = poutine.condition(guide, {site: value})
    guide_tr = poutine.trace(cond).get_trace(data, init)
    model_tr = poutine.trace(poutine.condition(model, {site: value})).get_trace(data, init)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    log_q = sum(s["log_prob"] for s in guide_tr.nodes.values() if s["type"] == "sample")
    log_p = sum(s["log_prob"] for s in model_tr.nodes.values() if s["type"] == "sample")
    return (log_q.exp() * (log_q - log_p)).sum(), init


def bernoulli_normal_reference(entry):
    """Enumerate c; E over z ~ N(m_c, s²) of the Gaussian terms in closed form."""
    data, init = _torch_inputs(entry)
    x, shift = data["x"], init["shift"]
    log_q_c1 = torch.nn.functional.logsigmoid(init["q_c_logit"])
    log_q_c0 = torch.nn.functional.logsigmoid(-init["q_c_logit"])
    s = init["q_z_log_scale"].exp()
    sigma = 0.8
    loss = 0.0
    for c, log_q_c, log_p_c in ((0.0, log_q_c0, math.log(0.6)), (1.0, log_q_c1, math.log(0.4))):
        m = init["q_z_loc"] + init["q_z_shift"] * c
        e_log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * (m**2 + s**2)
        e_log_lik = (
            -0.5 * math.log(2 * math.pi * sigma**2)
            - ((x - m - shift * c) ** 2 + s**2) / (2 * sigma**2)
        ).sum()
        entropy_z = 0.5 * math.log(2 * math.pi * math.e) + init["q_z_log_scale"]
        elbo_c = log_p_c - log_q_c + e_log_prior + e_log_lik + entropy_z
        loss = loss - log_q_c.exp() * elbo_c
    return loss, init


def relax_toy_reference(entry):
    """Σ_b q(b) [ε (log q(b) − log ½) − log N(0.499 | b, 1/√2)], ε = KL_SCALE."""
    data, init = _torch_inputs(entry)
    p = torch.sigmoid(init["theta_logit"])
    loss = 0.0
    for b, q_b in ((1.0, p), (0.0, 1 - p)):
        log_lik = -((0.499 - b) ** 2) - 0.5 * math.log(math.pi)
        loss = loss + q_b * (KL_SCALE * (torch.log(q_b) - math.log(0.5)) - log_lik)
    return loss, init


def _check_bernoulli_normal_by_sampling(entry, exact: dict, num_particles: int = 200_000):
    data, init = _torch_inputs(entry)
    model, guide = _model_and_guide(entry)
    elbo = TraceEnum_ELBO(
        max_plate_nesting=2, num_particles=num_particles, vectorize_particles=True
    )
    pyro.set_rng_seed(0)
    guide_enum = config_enumerate(guide, "parallel", expand=False)
    # per-particle gradients are not available from TraceEnum; use batches for the SE
    grads = []
    for _ in range(10):
        loss = elbo.differentiable_loss(model, guide_enum, data, init)
        grads.append(
            torch.stack([g.reshape(()) for g in torch.autograd.grad(loss, list(init.values()))])
        )
    grads = torch.stack(grads)
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(len(grads))
    exact_vec = torch.tensor([float(exact[k]) for k in init])
    z = ((mean - exact_vec) / se).abs().max().item()
    print(f"bernoulli_normal: max |z| of TraceEnum sampling vs closed form = {z:.2f}")
    assert z < 5, z


def main():
    torch.set_default_dtype(torch.float64)
    pyro.enable_validation(True)
    out = {}
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        for name, entry in MODELS.items():
            if name in ("bernoulli_nonlinear", "categorical_mixture", "dependent_categorical"):
                loss, init = enum_reference(entry)
            elif name == "binary_vae":
                configs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
                loss, init = local_enumeration_reference(entry, "z", configs)
            elif name == "bernoulli_normal":
                loss, init = bernoulli_normal_reference(entry)
            elif name == "relax_toy":
                loss, init = relax_toy_reference(entry)
            elif name == "event_sites":
                one_hots = torch.eye(3).tolist()
                z_values = [[a, b] for a in one_hots for b in one_hots]
                c_values = [[a, b] for a in (0.0, 1.0) for b in (0.0, 1.0)]
                loss, init = brute_force_reference(entry, {"z": z_values, "c": c_values})
            elif name == "masked_bernoulli":
                configs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=2)))
                loss, init = local_enumeration_reference(entry, "z", configs)
            elif name == "one_hot":
                loss, init = local_enumeration_reference(entry, "z", torch.eye(3))
            out[name] = {"loss": loss.item(), "grads": _grads(loss, init)}
            print(name, out[name]["loss"])

        # cross-checks of the enumeration methods
        brute_loss, _ = brute_force_reference(
            MODELS["bernoulli_nonlinear"], {"b0": [0.0, 1.0], "b1": [0.0, 1.0], "b2": [0.0, 1.0]}
        )
        assert abs(brute_loss.item() - out["bernoulli_nonlinear"]["loss"]) < 1e-10
        local_loss, local_init = local_enumeration_reference(
            MODELS["categorical_mixture"], "z", torch.arange(3)
        )
        assert abs(local_loss.item() - out["categorical_mixture"]["loss"]) < 1e-10
        for k, g in _grads(local_loss, local_init).items():
            np.testing.assert_allclose(g, out["categorical_mixture"]["grads"][k], atol=1e-10)
        for name, site_values in [
            ("dependent_categorical", {"c": [0.0, 1.0], "z": [0, 1, 2]}),
            ("one_hot", None),
        ]:
            if site_values is None:
                check_loss, check_init = enum_reference(MODELS[name])
            else:
                check_loss, check_init = brute_force_reference(MODELS[name], site_values)
            assert abs(check_loss.item() - out[name]["loss"]) < 1e-10, name
            for k, g in _grads(check_loss, check_init).items():
                np.testing.assert_allclose(g, out[name]["grads"][k], atol=1e-10)
        exact_bn = {k: np.asarray(v) for k, v in out["bernoulli_normal"]["grads"].items()}
        _check_bernoulli_normal_by_sampling(MODELS["bernoulli_normal"], exact_bn)

    REFERENCE_PATH.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_PATH.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", REFERENCE_PATH)


if __name__ == "__main__":
    main()
