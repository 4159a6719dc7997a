"""Pyro-side helpers for the estimator tests: backend arrays, parameters, gradient draws."""

from __future__ import annotations

import numpy as np
import pyro
import torch

from tests.infer.models import EstimatorModel


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
    out = {name: [] for name in names}
    for _ in range(num_calls):
        loss = elbo.differentiable_loss(model, guide, data, init)
        grads = torch.autograd.grad(loss, [param_leaf(n) for n in names])
        for name, grad in zip(names, grads, strict=True):
            out[name].append(grad.detach().numpy() / num_draws)
    return {name: np.stack(values) for name, values in out.items()}


def max_abs_z(batches: dict[str, np.ndarray], exact: dict[str, np.ndarray]) -> tuple[float, str]:
    """Largest |mean − exact| / standard error over all coordinates, and where it occurs."""
    worst, where = 0.0, ""
    for name, values in batches.items():
        mean = values.mean(0)
        se = values.std(0, ddof=1) / np.sqrt(values.shape[0])
        z = np.abs(mean - exact[name]) / se
        idx = np.unravel_index(np.argmax(z), z.shape) if z.ndim else ()
        if z.max() > worst:
            worst, where = float(z.max()), f"{name}{list(idx)}"
    return worst, where


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
