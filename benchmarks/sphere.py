"""Speed of VonMisesFisher and PowerSpherical rsample + backward, relative to a Gaussian.

For each ambient dimension d ∈ {3, 16, 128, 1024}, one step draws ``--num-samples`` samples,
evaluates f = Σ aᵀz and back-propagates to the parameters (loc and concentration; for the
Gaussian, loc and scale of a diagonal Normal with the same event size d). The reported number
is samples-with-gradients per second and the time ratio to the Gaussian step measured in the
same run, on both backends (NumPyro steps are ``jax.jit``-compiled ``value_and_grad``).

Run: ``python benchmarks/sphere.py`` (``--quick`` for a smoke test). Writes
``benchmarks/results/sphere.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as ndist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpyro_backend as npb  # noqa: E402
import pyro_reparam_ext as prx  # noqa: E402
from benchmarks.common import median_time, write_results  # noqa: E402

DIMS = [3, 16, 128, 1024]
CONCENTRATION = 50.0


def _unit(dim, seed):
    v = np.random.default_rng(seed).standard_normal(dim)
    return v / np.linalg.norm(v)


def torch_steps(dim, num_samples):
    """Closures doing one rsample + backward for each family (float32, the training dtype)."""
    dtype = torch.float32
    a = torch.tensor(_unit(dim, 1), dtype=dtype)
    raw_loc = torch.tensor(_unit(dim, 0), dtype=dtype, requires_grad=True)
    kappa = torch.tensor(CONCENTRATION, dtype=dtype, requires_grad=True)
    normal_loc = torch.zeros(dim, dtype=dtype, requires_grad=True)
    normal_scale = torch.ones(dim, dtype=dtype, requires_grad=True)

    def gaussian():
        z = torch.distributions.Normal(normal_loc, normal_scale).rsample((num_samples,))
        (z @ a).sum().backward()

    def sphere(dist_class):
        def step():
            loc = raw_loc / raw_loc.norm()
            z = dist_class(loc, kappa).rsample((num_samples,))
            (z @ a).sum().backward()

        return step

    return {
        "Gaussian": gaussian,
        "VonMisesFisher": sphere(prx.VonMisesFisher),
        "PowerSpherical": sphere(prx.PowerSpherical),
    }


def jax_steps(dim, num_samples):
    dtype = jnp.float32
    a = jnp.asarray(_unit(dim, 1), dtype=dtype)
    raw_loc = jnp.asarray(_unit(dim, 0), dtype=dtype)
    kappa = jnp.asarray(CONCENTRATION, dtype=dtype)
    key = jax.random.PRNGKey(0)

    def gaussian_loss(params, key):
        loc, scale = params
        return (ndist.Normal(loc, scale).rsample(key, (num_samples,)) @ a).sum()

    def sphere_loss(dist_class):
        def loss(params, key):
            raw, conc = params
            z = dist_class(raw / jnp.linalg.norm(raw), conc).sample(key, (num_samples,))
            return (z @ a).sum()

        return loss

    def step(loss, params):
        compiled = jax.jit(jax.value_and_grad(loss))

        def run():
            jax.block_until_ready(compiled(params, key))

        return run

    return {
        "Gaussian": step(gaussian_loss, (jnp.zeros(dim, dtype), jnp.ones(dim, dtype))),
        "VonMisesFisher": step(sphere_loss(npb.VonMisesFisher), (raw_loc, kappa)),
        "PowerSpherical": step(sphere_loss(npb.PowerSpherical), (raw_loc, kappa)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: few repeats")
    parser.add_argument("--num-samples", type=int, default=1024)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared CPUs)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, warmup = (3, 1) if args.quick else (15, 3)
    num_samples = 64 if args.quick else args.num_samples
    dims = DIMS[:2] if args.quick else DIMS
    rows = []
    for backend, make_steps in [("pyro", torch_steps), ("numpyro", jax_steps)]:
        for dim in dims:
            steps = make_steps(dim, num_samples)
            seconds = {name: median_time(fn, repeats, warmup) for name, fn in steps.items()}
            for name in ["VonMisesFisher", "PowerSpherical", "Gaussian"]:
                rows.append(
                    {
                        "backend": backend,
                        "d": dim,
                        "distribution": name,
                        "ms per step": 1e3 * seconds[name],
                        "samples+grad / s": num_samples / seconds[name],
                        "time / Gaussian": seconds[name] / seconds["Gaussian"],
                    }
                )
            print(rows[-3:-1], flush=True)
    notes = (
        f"One step = rsample of {num_samples} samples + backward of Σ aᵀz to all parameters "
        f"(κ = {CONCENTRATION}, float32, CPU, torch threads = {torch.get_num_threads()}). "
        "Target from the issue: VonMisesFisher within 5× of the Gaussian."
    )
    path = write_results(
        "sphere",
        "Sphere distributions: rsample + backward speed relative to a Gaussian",
        rows,
        ["backend", "d", "distribution", "ms per step", "samples+grad / s", "time / Gaussian"],
        notes,
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
