"""Pyro-side helpers for the estimator tests: backend arrays, parameters, gradient draws."""

from __future__ import annotations

import numpy as np
import pyro
import torch

import pyro_reparam_ext.infer as pyro_infer
from tests.infer.estimator_cases import EstimatorCase
from tests.infer.models import EstimatorModel
from tests.stats import MeanEstimate


def torch_inputs(entry: EstimatorModel) -> tuple[dict, dict]:
    """(data, init) of an entry as float64 tensors (Python ints and None left as they are).

    Copies: Pyro's param store adopts an unconstrained init tensor as the parameter itself and
    the optimizer updates it in place, which must not reach the catalogue's numpy arrays.
    """
    data = {
        k: torch.tensor(v, dtype=torch.float64) if isinstance(v, np.ndarray) else v
        for k, v in entry.make_data().items()
    }
    init = {k: torch.tensor(v, dtype=torch.float64) for k, v in entry.init_params.items()}
    return data, init


def param_leaf(name: str) -> torch.Tensor:
    return pyro.get_param_store().get_param(name).unconstrained()


def with_draws(fn, num_draws: int, dim: int):
    """Run ``fn`` inside an outermost plate of ``num_draws`` independent copies.

    Every copy is an independent draw of the estimator (its own latents, particles and
    per-element baselines), so one call yields ``num_draws`` estimates whose sum is the
    gradient of the returned loss.
    """
    return pyro.plate("draws", num_draws, dim=dim)(fn)


def gradient_batches(
    make_elbo, entry: EstimatorModel, num_calls: int, num_draws: int, names=None
) -> dict[str, np.ndarray]:
    """``num_calls`` gradient estimates of −ELBO, each the mean of ``num_draws`` draws.

    ``make_elbo(max_plate_nesting)`` builds the estimator; the draws plate sits just outside
    the entry's own plates. Returns name -> array of shape (num_calls,) + param shape, for
    ``names`` (default: the entry's reference gradients).
    """
    data, init = torch_inputs(entry)
    nesting = entry.max_plate_nesting + 1
    model = with_draws(entry.model, num_draws, -nesting)
    guide = with_draws(entry.guide, num_draws, -nesting)
    elbo = make_elbo(nesting)
    names = list(entry.exact_grads) if names is None else list(names)
    return _call_gradients(elbo, model, guide, (data, init), names, num_calls, num_draws)


def _call_gradients(elbo, model, guide, args, names, num_calls, num_draws) -> dict:
    out = {name: [] for name in names}
    for _ in range(num_calls):
        loss = elbo.differentiable_loss(model, guide, *args)
        grads = torch.autograd.grad(loss, [param_leaf(n) for n in names])
        for name, grad in zip(names, grads, strict=True):
            out[name].append(grad.detach().numpy() / num_draws)
    return {name: np.stack(values) for name, values in out.items()}


def estimates_from_batches(batches: dict[str, np.ndarray]) -> dict[str, MeanEstimate]:
    """Mean and standard error of each parameter's gradient from independent batch means."""
    return {name: MeanEstimate.from_samples(values) for name, values in batches.items()}


def perturb_estimator_state(seed: int, scale: float = 0.5) -> None:
    """Move the estimator's learned parameters (``reparam_ext.*``: REBAR/RELAX η, temperature,
    network) by N(0, scale²) noise in unconstrained space: unbiasedness must hold for every
    value, and RELAX's network leaves its zero-output start. Running baselines are left alone.
    """
    generator = torch.Generator().manual_seed(seed)
    store = pyro.get_param_store()
    with torch.no_grad():
        for name in sorted(store.keys()):
            if name.startswith("reparam_ext.") and "baseline" not in name:
                leaf = store.get_param(name).unconstrained()
                leaf.add_(scale * torch.randn(leaf.shape, generator=generator))


def case_estimates(
    case: EstimatorCase, entry: EstimatorModel, num_calls: int, num_draws: int, seed: int = 0
) -> dict[str, MeanEstimate]:
    """Mean gradient of −ELBO (with SE) for one row of the estimator case table.

    ``num_calls`` independent calls, each the mean of ``num_draws`` vectorized draws (an
    outer plate); the estimator's learned state is created by one call, then perturbed.
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    data, init = torch_inputs(entry)
    nesting = entry.max_plate_nesting + 1
    model = with_draws(entry.model, num_draws, -nesting)
    guide = with_draws(entry.guide, num_draws, -nesting)
    elbo = case.make(pyro_infer, nesting)
    elbo.differentiable_loss(model, guide, data, init)  # creates the estimator's state
    perturb_estimator_state(seed + 1)
    names = list(entry.exact_grads)
    batches = _call_gradients(elbo, model, guide, (data, init), names, num_calls, num_draws)
    return estimates_from_batches(batches)


def warm_up_control_variates(elbo, model, guide, args, steps: int, lr: float) -> None:
    """Train only the estimator's own parameters (``reparam_ext.*``) for ``steps`` steps.

    The model and guide parameters stay fixed, so a variance measured afterwards is at the
    same θ as for the other estimators. Uses the gradient the estimator gives those
    parameters (for REBAR/RELAX, ∇_φ of the single-sample variance).
    """
    optimizer = None
    for _ in range(steps):
        loss = elbo.differentiable_loss(model, guide, *args)
        store = pyro.get_param_store()
        names = [n for n in store.keys() if n.startswith("reparam_ext.") and "baseline" not in n]
        leaves = [store._params[n] for n in names]
        if optimizer is None:
            optimizer = torch.optim.Adam(leaves, lr=lr)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        for leaf, grad in zip(leaves, grads, strict=True):
            leaf.grad = grad
        optimizer.step()
        optimizer.zero_grad()
