"""ImplicitGamma vs the built-in Gamma gradients: time and accuracy, both backends.

    .venv/bin/python benchmarks/implicit.py            # what `make bench` runs (~1 min)
    .venv/bin/python benchmarks/implicit.py --full     # more rounds and checks (~10 min)
    .venv/bin/python benchmarks/implicit.py --quick    # 1e4 samples (smoke test)

For each concentration setting (α = 0.5, 3, 30, log-uniform in [1e-3, 1e4]), one run measures

* torch, float64 and float32: ``Gamma(α, 1).rsample()`` + backward (torch's built-in
  approximate gradient) vs ``ImplicitGamma(α, 1).rsample()`` + backward, at 1e6 samples;
* JAX, float64: ``jit(grad)`` through ``jax.random.gamma`` (XLA's ``random_gamma_grad``) vs
  ``jit(grad)`` through ``ImplicitGamma.sample``, at 5e4 samples (1e6 with ``--full``:
  XLA's gradient takes ~17 s per 1e6 draws, so 1e6 does not fit the default run; both
  methods' time is linear in the number of draws, the ratio is not affected);

each with one α per sample (so the gradient w.r.t. the α vector is the vector of per-sample
derivatives dz_i/dα_i). The methods of one setting are timed round-robin (one call of each
per round, process CPU time) and the medians compared. Accuracy: the maximum relative error
of dz/dα against mpmath (the stored reference's method) on a random subset of the draws.
Writes benchmarks/results/implicit.md and .json.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import torch

jax.config.update("jax_enable_x64", True)
torch.set_default_dtype(torch.float64)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax.numpy as jnp  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from numpyro_backend import ImplicitGamma as JaxImplicitGamma  # noqa: E402
from pyro_reparam_ext import ImplicitGamma as TorchImplicitGamma  # noqa: E402
from tests.make_implicit_reference import gamma_dz_dalpha  # noqa: E402

#: samples (torch, JAX), round-robin rounds and draws checked against mpmath per method
MODES = {
    "quick": {"torch": 10**4, "jax": 10**4, "repeats": 3, "num_check": 10},
    "default": {"torch": 10**6, "jax": 5 * 10**4, "repeats": 3, "num_check": 25},
    "full": {"torch": 10**6, "jax": 10**6, "repeats": 7, "num_check": 200},
}


class References:
    """mpmath references, each (α, x) computed once (the methods of a setting share draws)."""

    def __init__(self):
        self.cache = {}

    def __call__(self, a: float, x: float) -> float:
        key = (float(a), float(x))
        if key not in self.cache:
            self.cache[key] = gamma_dz_dalpha(*key)
        return self.cache[key]


def max_relative_error(alpha, value, grad, subset, reference) -> float:
    errors = []
    alpha = alpha.astype(value.dtype)  # the concentration the method was given
    for i in subset:
        a, x = float(alpha[i]), float(value[i])
        if x <= np.finfo(value.dtype).tiny:  # underflowed draws: no reference
            continue
        errors.append(abs(float(grad[i]) / reference(a, x) - 1))
    return float(max(errors))


#: the timer: CPU time of this process (time.process_time; all threads, XLA's included), so
#: that other jobs on a shared machine, which take the cores away but do not add to this
#: process's CPU time, disturb the ratios less than they disturb wall time
CLOCK = time.process_time


def round_robin_times(runs: list, repeats: int):
    """(median, best) seconds of each run, timed one call of each per round after one
    warm-up call each (whose results are returned), so load on a shared machine slows them
    alike."""
    results = [run() for run in runs]
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, bucket in zip(runs, times, strict=True):
            start = CLOCK()
            run()
            bucket.append(CLOCK() - start)
    return [(statistics.median(bucket), min(bucket)) for bucket in times], results


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


def settings(num: int, rng) -> dict:
    return {
        "α = 0.5": np.full(num, 0.5),
        "α = 3": np.full(num, 3.0),
        "α = 30": np.full(num, 30.0),
        "α log-uniform [1e-3, 1e4]": 10 ** rng.uniform(-3, 4, num),
    }


def setting_runs(alpha: np.ndarray, num_jax: int, jitted: dict) -> list:
    """(backend, dtype, method, samples, run) of one setting; each run returns (z, dz/dα)."""
    runs = []
    for dtype in (torch.float64, torch.float32):
        alpha_torch = torch.as_tensor(alpha, dtype=dtype)
        for method, cls in (
            ("Gamma.rsample (built-in)", torch.distributions.Gamma),
            ("ImplicitGamma.rsample", TorchImplicitGamma),
        ):
            run = functools.partial(torch_run, cls, alpha_torch, 0)
            runs.append(("torch", str(dtype)[6:], method, len(alpha), run))
    alpha_jax = jnp.asarray(alpha[:num_jax])
    key = jax.random.PRNGKey(0)
    for method, name in (
        ("grad through jax.random.gamma", "builtin"),
        ("ImplicitGamma.sample", "implicit"),
    ):

        def run(function=jitted[name]):
            grad, value = jax.block_until_ready(function(alpha_jax, key))
            return np.asarray(value), np.asarray(grad)

        runs.append(("jax", "float64", method, num_jax, run))
    return runs


def add_ratios(rows: list[dict]) -> None:
    """time and accuracy of each ImplicitGamma row against the built-in of its group."""
    for builtin, implicit in zip(rows[::2], rows[1::2], strict=True):
        implicit["time_vs_builtin"] = implicit["seconds"] / builtin["seconds"]
        implicit["best_vs_best_builtin"] = implicit["best seconds"] / builtin["best seconds"]
        implicit["accuracy_gain"] = builtin["max_rel_grad_error"] / max(
            implicit["max_rel_grad_error"], np.finfo(np.float64).eps
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="1e4 samples, for smoke tests")
    group.add_argument("--full", action="store_true", help="7 rounds, 1e6 JAX samples")
    parser.add_argument("--repeats", type=int, default=None, help="round-robin rounds")
    parser.add_argument("--num-check", type=int, default=None, help="draws checked vs mpmath")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared CPUs)"
    )
    args = parser.parse_args()
    mode = "quick" if args.quick else "full" if args.full else "default"
    config = dict(MODES[mode])
    config["repeats"] = args.repeats or config["repeats"]
    config["num_check"] = args.num_check or config["num_check"]
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    jitted = {"builtin": jax.jit(jax_builtin), "implicit": jax.jit(jax_implicit)}
    reference = References()
    rows = []
    for label, alpha in settings(config["torch"], rng).items():
        runs = setting_runs(alpha, config["jax"], jitted)
        timings, results = round_robin_times([run[-1] for run in runs], config["repeats"])
        subsets = {}
        for (backend, dtype, method, num, _), (seconds, best), (value, grad) in zip(
            runs, timings, results, strict=True
        ):
            if num not in subsets:
                subsets[num] = rng.choice(num, size=min(config["num_check"], num), replace=False)
            error = max_relative_error(alpha, value, grad, subsets[num], reference)
            row = {"setting": label, "backend": backend, "dtype": dtype, "method": method}
            row.update(samples=num, seconds=seconds, max_rel_grad_error=error)
            row["best seconds"] = best
            rows.append(row)
        add_ratios(rows[-len(runs) :])
        for row in rows[-len(runs) :]:
            print(row, flush=True)
    notes = (
        f"Mode {mode!r}. Sample + gradient of N Gamma(α, 1) draws (one α per draw), median of "
        f"{config['repeats']} round-robin rounds after one warm-up call each (one call of "
        "each method per round, process CPU time; best-of-rounds ratio: "
        f"best_vs_best_builtin), torch threads = {torch.get_num_threads()}. "
        "max_rel_grad_error: max |dz/dα / reference - 1| over "
        f"{config['num_check']} random draws of each method, reference by mpmath "
        "(40 digits, tests/make_implicit_reference.py) "
        "at the drawn value. time_vs_builtin: time of ImplicitGamma / time of the built-in "
        "of the same backend and dtype; accuracy_gain: built-in error / ImplicitGamma error. "
        "Targets (issues 3, 15): torch ≤ 1.5× time with max error ≤ 1e-10 (float64); JAX ≥ "
        f"3× faster. Wall time of this run: {time.perf_counter() - start:.0f} s."
    )
    name = "implicit_quick" if args.quick else "implicit"
    path = write_results(
        name,
        "Implicit reparameterization: ImplicitGamma vs built-in Gamma gradients",
        rows,
        [
            "setting",
            "backend",
            "dtype",
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
