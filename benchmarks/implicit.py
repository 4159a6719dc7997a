"""ImplicitGamma vs the built-in Gamma gradients: time and accuracy, both backends.

    .venv/bin/python benchmarks/implicit.py            # 1e6 samples (a few minutes)
    .venv/bin/python benchmarks/implicit.py --quick    # 1e4 samples (smoke test)

For each concentration setting, one run measures

* torch: ``Gamma(α, 1).rsample()`` + backward (torch's built-in approximate gradient) vs
  ``ImplicitGamma(α, 1).rsample()`` + backward;
* JAX: ``jit(grad)`` through ``jax.random.gamma`` (XLA's ``random_gamma_grad``) vs ``jit(grad)``
  through ``ImplicitGamma.sample``;

each at N samples with one α per sample (so the gradient w.r.t. the α vector is the vector of
per-sample derivatives dz_i/dα_i), float64. Accuracy: the maximum relative error of dz/dα
against mpmath (the stored reference's method) on a random subset of the N draws.
Writes benchmarks/results/implicit.md and .json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import mpmath as mp
import numpy as np
import torch

jax.config.update("jax_enable_x64", True)
torch.set_default_dtype(torch.float64)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax.numpy as jnp  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from numpyro_backend import ImplicitGamma as JaxImplicitGamma  # noqa: E402
from pyro_reparam_ext import ImplicitGamma as TorchImplicitGamma  # noqa: E402

mp.mp.dps = 30


def reference_dz_dalpha(a: float, x: float) -> float:
    """-(∂P(α, x)/∂α) / p(x; α) at 30 digits (as tests/make_implicit_reference.py)."""
    a, x = mp.mpf(a), mp.mpf(x)
    if x < a:
        dp_da = mp.diff(lambda s: mp.gammainc(s, 0, x, regularized=True), a)
    else:
        dp_da = -mp.diff(lambda s: mp.gammainc(s, x, mp.inf, regularized=True), a)
    return float(-dp_da / mp.exp((a - 1) * mp.log(x) - x - mp.loggamma(a)))


def max_relative_error(alpha, value, grad, subset) -> float:
    errors = []
    for i in subset:
        if value[i] <= np.finfo(np.float64).tiny:  # underflowed draws: no reference
            continue
        expected = reference_dz_dalpha(alpha[i], value[i])
        errors.append(abs(grad[i] / expected - 1))
    return float(max(errors))


#: the timer: CPU time of this process (time.process_time; all threads, XLA's included), so
#: that other jobs on a shared machine, which take the cores away but do not add to this
#: process's CPU time, disturb the ratios less than they disturb wall time
CLOCK = time.process_time


def round_robin_times(runs: list, repeats: int) -> list[tuple[float, float]]:
    """(median, best) seconds of each run, timed one call of each per round after one
    warm-up call each, so load on a shared machine slows them alike."""
    for run in runs:
        run()
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, bucket in zip(runs, times, strict=True):
            start = CLOCK()
            run()
            bucket.append(CLOCK() - start)
    return [(statistics.median(bucket), min(bucket)) for bucket in times]


def torch_run(cls, alpha: torch.Tensor, seed: int):
    torch.manual_seed(seed)
    concentration = alpha.clone().requires_grad_()
    z = cls(concentration, torch.ones_like(alpha)).rsample()
    (grad,) = torch.autograd.grad(z.sum(), (concentration,))
    return z.detach().numpy(), grad.numpy()


def jax_builtin(alpha, key):
    def total(a):
        z = jax.random.gamma(key, a)
        return z.sum(), z

    return jax.grad(total, has_aux=True)(alpha)


def jax_implicit(alpha, key):
    def total(a):
        z = JaxImplicitGamma(a, 1.0).sample(key)
        return z.sum(), z

    return jax.grad(total, has_aux=True)(alpha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e4 samples, for smoke tests")
    parser.add_argument("--repeats", type=int, default=7, help="round-robin rounds")
    parser.add_argument("--num-check", type=int, default=200, help="draws checked vs mpmath")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared CPUs)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num = 10**4 if args.quick else 10**6
    repeats = 3 if args.quick else args.repeats
    rng = np.random.default_rng(0)
    settings = {
        "α = 0.5": np.full(num, 0.5),
        "α = 3": np.full(num, 3.0),
        "α = 30": np.full(num, 30.0),
        "α log-uniform [1e-3, 1e4]": 10 ** rng.uniform(-3, 4, num),
    }
    jit_builtin = jax.jit(jax_builtin)
    jit_implicit = jax.jit(jax_implicit)
    rows = []
    for label, alpha in settings.items():
        subset = rng.choice(num, size=min(args.num_check, num), replace=False)
        alpha_torch = torch.as_tensor(alpha)
        alpha_jax = jnp.asarray(alpha)
        key = jax.random.PRNGKey(0)
        runs = [
            (
                "torch",
                "Gamma.rsample (built-in)",
                lambda alpha_torch=alpha_torch: torch_run(
                    torch.distributions.Gamma, alpha_torch, 0
                ),
            ),
            (
                "torch",
                "ImplicitGamma.rsample",
                lambda alpha_torch=alpha_torch: torch_run(TorchImplicitGamma, alpha_torch, 0),
            ),
            (
                "jax",
                "grad through jax.random.gamma",
                lambda alpha_jax=alpha_jax, key=key: jax.block_until_ready(
                    jit_builtin(alpha_jax, key)
                ),
            ),
            (
                "jax",
                "ImplicitGamma.sample",
                lambda alpha_jax=alpha_jax, key=key: jax.block_until_ready(
                    jit_implicit(alpha_jax, key)
                ),
            ),
        ]
        timings = round_robin_times([run for _, _, run in runs], repeats)
        for (backend, method, run), (seconds, best) in zip(runs, timings, strict=True):
            result = run()
            if backend == "torch":
                value, grad = result
            else:
                grad, value = (np.asarray(r) for r in result)
            error = max_relative_error(alpha, value, grad, subset)
            rows.append(
                {
                    "setting": label,
                    "backend": backend,
                    "method": method,
                    "samples": num,
                    "seconds": seconds,
                    "best seconds": best,
                    "max_rel_grad_error": error,
                }
            )
            print(rows[-1], flush=True)
        # ratios against the built-in of the same backend
        for backend in ("torch", "jax"):
            builtin, implicit = (r for r in rows[-4:] if r["backend"] == backend)
            implicit["time_vs_builtin"] = implicit["seconds"] / builtin["seconds"]
            implicit["best_vs_best_builtin"] = implicit["best seconds"] / builtin["best seconds"]
            implicit["accuracy_gain"] = builtin["max_rel_grad_error"] / max(
                implicit["max_rel_grad_error"], np.finfo(np.float64).eps
            )
    notes = (
        "Sample + gradient of N Gamma(α, 1) draws (one α per draw), float64, median of "
        f"{repeats} round-robin rounds (one call of each method per round, process CPU "
        "time; best-of-rounds ratio: best_vs_best_builtin), torch threads = "
        f"{torch.get_num_threads()}. "
        "max_rel_grad_error: "
        "max |dz/dα / reference - 1| over "
        f"{args.num_check} random draws, reference by mpmath (30 digits). time_vs_builtin: "
        "time of ImplicitGamma / time of the built-in of the same backend; accuracy_gain: "
        "built-in error / ImplicitGamma error. Targets (issues 3, 15): torch ≤ 1.5× time with "
        "max error ≤ 1e-10; JAX ≥ 3× faster at equal accuracy."
    )
    name = "implicit_quick" if args.quick else "implicit"
    path = write_results(
        name,
        "Implicit reparameterization: ImplicitGamma vs built-in Gamma gradients",
        rows,
        [
            "setting",
            "backend",
            "method",
            "samples",
            "seconds",
            "max_rel_grad_error",
            "time_vs_builtin",
            "best_vs_best_builtin",
            "accuracy_gain",
        ],
        notes,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
