"""Diagnostics for ELBO gradient estimators."""

from __future__ import annotations

import numpy as np
import pyro.poutine as poutine
import torch

from pyro_reparam_ext.infer.particles import PARAM_PREFIX, param_leaves

__all__ = ["gradient_variance"]


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

    :param elbo: any object with ``differentiable_loss`` (stock Pyro ELBOs included).
    :param int num_samples: number of independent gradient estimates (≥ 2).
    :param param_names: restrict to these parameters (default: all the programs use).
    :returns: ``{"params": {name: {"mean": ndarray, "variance": ndarray}},
        "total_variance": float, "num_samples": int}`` — variance is the unbiased sample
        variance of each coordinate; ``total_variance`` sums it over every coordinate of the
        selected parameters (the trace of the covariance of the estimate).
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    samples: dict[str, list[np.ndarray]] = {}
    for _ in range(num_samples):
        with poutine.trace(param_only=True) as param_capture:
            loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        leaves = param_leaves(param_capture.trace, exclude_prefix=PARAM_PREFIX)
        if param_names is not None:
            missing = set(param_names) - set(leaves)
            if missing:
                raise ValueError(f"param_names {sorted(missing)} are not used by model/guide")
            leaves = {name: leaves[name] for name in param_names}
        names = list(leaves)
        grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
        for name, grad, leaf in zip(names, grads, (leaves[n] for n in names), strict=True):
            grad = torch.zeros_like(leaf) if grad is None else grad
            samples.setdefault(name, []).append(grad.detach().cpu().numpy())
    params = {}
    total = 0.0
    for name, values in samples.items():
        stacked = np.stack(values)
        variance = stacked.var(axis=0, ddof=1)
        params[name] = {"mean": stacked.mean(axis=0), "variance": variance}
        total += float(variance.sum())
    return {"params": params, "total_variance": total, "num_samples": num_samples}
