"""Straight-through estimators: gradient bias, variance and speed (PyTorch backend).

Problem: D ~ Categorical(softmax(θ)) one-hot over 8 classes, f(y) = Σ_i w_i (y_i − t_i)² +
⟨a, y⟩², a smooth function of the one-hot vector. The exact gradient of E[f(D)] is
J(π) [f(e_c)]_c with J(π) = diag(π) − ππᵀ; each estimator's mean over n draws is compared with
it (relative bias ‖mean − exact‖ / ‖exact‖, cosine), with the total variance of one draw and
the time of one forward + backward on a batch of 1024 rows. Compared: straight-through
Gumbel-softmax (``ConcreteStraightThrough``), ReinMax ([1]; also the published ``reinmax``
package when it is importable: ``pip install reinmax``, the optional ``bench`` extra) and
Gumbel-Rao ([2]) with S = 1, 10, 100 conditional samples. All three are biased by design.

    [1] L. Liu et al. (2023). Bridging Discrete and Backpropagation: Straight-Through and Beyond.
    [2] M. B. Paulus, C. J. Maddison, A. Krause (2021). Rao-Blackwellizing the Straight-Through
        Gumbel-Softmax Gradient Estimator.

Usage: ``python benchmarks/straight_through.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_time, write_results  # noqa: E402
from pyro_reparam_ext.distributions import (  # noqa: E402
    ConcreteStraightThrough,
    GumbelRaoStraightThrough,
    ReinMaxStraightThrough,
)

NUM_CLASSES = 8


def problem():
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(NUM_CLASSES, generator=gen, dtype=torch.float64)
    weights = torch.rand(NUM_CLASSES, generator=gen, dtype=torch.float64) + 0.5
    target = torch.rand(NUM_CLASSES, generator=gen, dtype=torch.float64)
    direction = torch.randn(NUM_CLASSES, generator=gen, dtype=torch.float64)

    def f(y):
        return (weights * (y - target) ** 2).sum(-1) + (y * direction).sum(-1) ** 2

    probs = torch.softmax(theta, -1)
    values = f(torch.eye(NUM_CLASSES, dtype=torch.float64))
    exact = (torch.diag(probs) - torch.outer(probs, probs)) @ values
    return theta, f, exact


def estimators():
    out = {
        "ST Gumbel-softmax τ=0.5": lambda th: ConcreteStraightThrough(
            torch.tensor(0.5, dtype=th.dtype), logits=th
        ).rsample(),
        "ReinMax τ=1": lambda th: ReinMaxStraightThrough(
            torch.tensor(1.0, dtype=th.dtype), logits=th
        ).rsample(),
        "ReinMax τ=2": lambda th: ReinMaxStraightThrough(
            torch.tensor(2.0, dtype=th.dtype), logits=th
        ).rsample(),
    }
    for s in (1, 10, 100):
        out[f"Gumbel-Rao τ=0.5 S={s}"] = lambda th, s=s: GumbelRaoStraightThrough(
            torch.tensor(0.5, dtype=th.dtype), logits=th, num_samples=s
        ).rsample()
    try:
        from reinmax import reinmax  # optional: the published implementation of [1]

        out["reinmax package τ=1"] = lambda th: reinmax(th, 1.0)[0]
        out["reinmax package τ=2"] = lambda th: reinmax(th, 2.0)[0]
    except ImportError:
        pass
    return out


def measure(sample, theta, f, exact, num, chunk=20_000):
    """Mean and variance of the per-draw gradient, accumulated over chunks of draws (Gumbel-Rao
    with S = 100 would otherwise hold num × S × 8 doubles at once)."""
    total = torch.zeros_like(exact)
    total_sq = torch.zeros_like(exact)
    for start in range(0, num, chunk):
        rows = theta.expand(min(chunk, num - start), NUM_CLASSES).clone().requires_grad_(True)
        (grads,) = torch.autograd.grad(f(sample(rows)).sum(), [rows])
        total += grads.sum(0)
        total_sq += (grads**2).sum(0)
    mean = total / num
    variance = (total_sq / num - mean**2) * num / (num - 1)
    bias = (mean - exact).norm() / exact.norm()
    # SE of the relative bias from the per-coordinate SEs of the mean (delta method bound)
    bias_se = (variance / num).sum().sqrt() / exact.norm()
    cosine = torch.dot(mean, exact) / (mean.norm() * exact.norm())
    return {
        "relative bias": float(bias),
        "bias SE": float(bias_se),
        "cosine": float(cosine),
        "variance": float(variance.sum()),
    }


def timing(sample, theta, f, repeats):
    rows = theta.float().expand(1024, NUM_CLASSES).clone().requires_grad_(True)

    def step():
        torch.autograd.grad(f(sample(rows).double()).sum(), [rows])

    return median_time(step, repeats=repeats)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    num = 20_000 if args.quick else 200_000
    theta, f, exact = problem()
    results = []
    baseline_time = None
    for name, sample in estimators().items():
        row = {"estimator": name, **measure(sample, theta, f, exact, num)}
        row["ms / call"] = 1e3 * timing(sample, theta, f, 5 if args.quick else 31)
        baseline_time = baseline_time or row["ms / call"]
        row["time vs ST-GS"] = row["ms / call"] / baseline_time
        results.append(row)
        print(row, flush=True)
    columns = [
        "estimator",
        "relative bias",
        "bias SE",
        "cosine",
        "variance",
        "ms / call",
        "time vs ST-GS",
    ]
    notes = (
        f"{num} draws per estimator; exact gradient norm {float(exact.norm()):.4g}. Relative "
        "bias = ‖E[ĝ] − ∇E f‖ / ‖∇E f‖; 'bias SE' is its Monte Carlo standard error. Time: "
        "one forward + backward on 1024 rows, float32, one thread."
    )
    if not any(r["estimator"].startswith("reinmax package") for r in results):
        notes += " The `reinmax` package is not installed: no comparison with it in this run."
    write_results("straight_through", "Straight-through estimators", results, columns, notes)
    return 0 if all(math.isfinite(r["relative bias"]) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
