"""Diagnostics for ELBO gradient estimators.

The same function names as the NumPyro backend's ``diagnostics.py``: :func:`_gradient_samples`
draws the gradient estimates, :func:`_summary` summarizes them.
"""

from __future__ import annotations

import numpy as np
import pyro.poutine as poutine
import torch

from pyro_reparam_ext.infer.particles import param_leaves
from pyro_reparam_ext.infer.sites import PREFIX

__all__ = ["gradient_variance"]


def _one_gradient(elbo, model, guide, args, kwargs, param_names) -> dict:
    """One gradient estimate of −ELBO by name (``differentiable_loss`` or ``loss_and_grads``)."""
    with poutine.trace(param_only=True) as param_capture:
        if hasattr(elbo, "differentiable_loss"):
            loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        else:  # e.g. Pyro's TraceGraph_ELBO, which only has loss_and_grads
            loss = None
            elbo.loss_and_grads(model, guide, *args, **kwargs)
    leaves = param_leaves(param_capture.trace, exclude_prefix=PREFIX)
    if param_names is not None:
        missing = set(param_names) - set(leaves)
        if missing:
            raise ValueError(f"param_names {sorted(missing)} are not used by model/guide")
        leaves = {name: leaves[name] for name in param_names}
    if loss is not None:
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    else:
        grads = [leaf.grad for leaf in leaves.values()]
    out = {}
    for (name, leaf), grad in zip(leaves.items(), grads, strict=True):
        out[name] = torch.zeros_like(leaf) if grad is None else grad.detach().clone()
    if loss is None:  # leave no gradients behind
        for site in param_capture.trace.nodes.values():
            leaf = site["value"].unconstrained()
            if leaf.grad is not None:
                leaf.grad = None
    return out


def gradient_variance(
    elbo,
    model,
    guide,
    *args,
    num_samples: int = 100,
    param_names: list[str] | None = None,
    **kwargs,
) -> dict:
    """Per-coordinate mean and variance of an ELBO's gradient estimate, without stepping.

    Calls ``elbo.differentiable_loss(model, guide, *args, **kwargs)`` ``num_samples`` times
    and differentiates it with respect to the model and guide parameters (the param-store
    entries the two programs use, estimator state ``reparam_ext.*`` excluded). No optimizer
    step is taken; running-average baselines do update between calls, as in training.

    Example::

        stats = gradient_variance(RELAX_ELBO(), model, guide, data, num_samples=200)
        stats["total_variance"], stats["params"]["enc_w"]["variance"]

    :param elbo: any Pyro ELBO: one with ``differentiable_loss``, or one with only
        ``loss_and_grads`` (e.g. ``TraceGraph_ELBO``), whose ``.grad`` are read and cleared.
    :param int num_samples: number of independent gradient estimates (≥ 2).
    :param param_names: restrict to these parameters (default: all the programs use).
    :returns: ``{"params": {name: {"mean": ndarray, "variance": ndarray}},
        "total_variance": float, "total_variance_se": float, "num_samples": int}`` —
        variance is the unbiased sample variance of each coordinate; ``total_variance`` sums
        it over every coordinate of the selected parameters (the trace of the covariance of
        the estimate) and ``total_variance_se`` is its standard error.
    """
    _check_num_samples(num_samples)
    samples = _gradient_samples(elbo, model, guide, args, kwargs, num_samples, param_names)
    return _summary(samples, num_samples)


def _check_num_samples(num_samples: int) -> None:
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")


def _gradient_samples(elbo, model, guide, args, kwargs, num_samples, param_names) -> dict:
    """name -> (num_samples, *shape) gradient estimates of −ELBO, one call each."""
    samples: dict[str, list[np.ndarray]] = {}
    for _ in range(num_samples):
        for name, grad in _one_gradient(elbo, model, guide, args, kwargs, param_names).items():
            samples.setdefault(name, []).append(grad.detach().cpu().numpy())
    return {name: np.stack(values) for name, values in samples.items()}


def _summary(samples: dict, num_samples: int) -> dict:
    """gradient_variance's result from name -> (num_samples, *shape) gradient samples."""
    stats = {}
    squared_deviations = 0.0
    for name, values in samples.items():
        values = np.asarray(values, dtype=np.float64)
        mean = values.mean(axis=0)
        stats[name] = {"mean": mean, "variance": values.var(axis=0, ddof=1)}
        deviation = (values - mean).reshape(num_samples, -1)
        squared_deviations = squared_deviations + (deviation**2).sum(axis=1)
    # total variance = mean squared distance of the samples to their mean (× n/(n−1)); its
    # standard error follows from the spread of those distances
    correction = num_samples / (num_samples - 1)
    return {
        "params": stats,
        "total_variance": float(np.mean(squared_deviations) * correction),
        "total_variance_se": float(
            np.std(squared_deviations, ddof=1) / np.sqrt(num_samples) * correction
        ),
        "num_samples": num_samples,
    }
