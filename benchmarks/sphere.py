"""Speed of VonMisesFisher and PowerSpherical rsample + backward, relative to a Gaussian and to
the public alternatives, both backends.

For each dtype (float32, float64), concentration κ ∈ {1, 10, 50, 1000} and ambient dimension
d ∈ {3, 16, 128, 1024}, one step draws ``--num-samples`` samples, evaluates f = Σ aᵀz and
back-propagates to the parameters (loc and concentration; for the Gaussian, loc and scale of a
diagonal Normal with the same event size d). Measured in the same run, one torch thread:

* ``Gaussian``: the reference every ratio is taken against (same backend, same process);
* ``VonMisesFisher``, ``PowerSpherical``: this library;
* ``power_spherical package``: De Cao & Aziz's ``PowerSpherical`` (PyPI ``power-spherical``,
  the ``bench`` extra; torch only), with the same step;
* ``... (before)``: this library at the git revision ``--before`` (e.g. the last commit
  before the sphere speed work, ``BEFORE_REVISION``), extracted with ``git archive`` and
  imported in the same process under its own module objects (:func:`load_revision`).

All steps of one (backend, κ, d) cell are timed round-robin (one call of each per round), so
a busy machine slows them alike and the ratios stay comparable.

s-vae-pytorch (Davidson et al.) is not published on the package index, so it is not run here.
NumPyro steps are ``jax.jit``-compiled ``value_and_grad``.

Run: ``python benchmarks/sphere.py`` (what ``make bench`` runs: the whole grid, 21 rounds per
cell after 2 warm-up calls of each step; with 7 rounds single cells moved by about ±10 % from
run to run; ``--before REV`` adds the ``(before)`` columns, ``--repeats`` sets the rounds,
``--quick`` is a 3-round smoke test). Writes ``benchmarks/results/sphere.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as ndist  # noqa: E402
import torch  # noqa: E402

import numpyro_backend as npb  # noqa: E402
import pyro_reparam_ext as prx  # noqa: E402
from benchmarks.common import write_results  # noqa: E402

DIMS = [3, 16, 128, 1024]
CONCENTRATIONS = [1.0, 10.0, 50.0, 1000.0]
DTYPES = ["float32", "float64"]
#: the last commit before the sphere speed work (issue 15)
BEFORE_REVISION = "9211e53"


def _unit(dim, seed):
    v = np.random.default_rng(seed).standard_normal(dim)
    return v / np.linalg.norm(v)


def _power_spherical_package():
    try:
        import power_spherical
    except ImportError:
        return None
    return power_spherical.PowerSpherical


def torch_steps(dim, kappa_value, num_samples, before, dtype_name):
    """Closures doing one rsample + backward for each family."""
    dtype = getattr(torch, dtype_name)
    a = torch.tensor(_unit(dim, 1), dtype=dtype)
    raw_loc = torch.tensor(_unit(dim, 0), dtype=dtype, requires_grad=True)
    kappa = torch.tensor(kappa_value, dtype=dtype, requires_grad=True)
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

    steps = {
        "Gaussian": gaussian,
        "VonMisesFisher": sphere(prx.VonMisesFisher),
        "PowerSpherical": sphere(prx.PowerSpherical),
    }
    if before is not None:
        steps["VonMisesFisher (before)"] = sphere(before.pyro.VonMisesFisher)
        steps["PowerSpherical (before)"] = sphere(before.pyro.PowerSpherical)
    package = _power_spherical_package()
    if package is not None:
        steps["power_spherical package"] = sphere(package)
    return steps


#: compiled JAX steps by (family, library, d, dtype, samples): κ is an argument of the compiled
#: function, so one compilation serves every κ of a (d, dtype)
_JAX_COMPILED: dict = {}


def _jax_compiled(name, library, dim, dtype_name, num_samples):
    key = (name, id(library), dim, dtype_name, num_samples)
    if key not in _JAX_COMPILED:
        dtype = getattr(jnp, dtype_name)
        a = jnp.asarray(_unit(dim, 1), dtype=dtype)
        if name == "Gaussian":

            def loss(params, key):
                loc, scale = params
                return (ndist.Normal(loc, scale).rsample(key, (num_samples,)) @ a).sum()

        else:
            dist_class = getattr(library, name.split()[0])

            def loss(params, key):
                raw, conc = params
                z = dist_class(raw / jnp.linalg.norm(raw), conc).sample(key, (num_samples,))
                return (z @ a).sum()

        _JAX_COMPILED[key] = jax.jit(jax.value_and_grad(loss))
    return _JAX_COMPILED[key]


def jax_steps(dim, kappa_value, num_samples, before, dtype_name):
    dtype = getattr(jnp, dtype_name)
    raw_loc = jnp.asarray(_unit(dim, 0), dtype=dtype)
    kappa = jnp.asarray(kappa_value, dtype=dtype)
    key = jax.random.PRNGKey(0)
    assert raw_loc.dtype == dtype, "float64 needs jax_enable_x64 (set in main)"

    def step(name, library, params):
        compiled = _jax_compiled(name, library, dim, dtype_name, num_samples)

        def run():
            jax.block_until_ready(compiled(params, key))

        return run

    families = {"VonMisesFisher": npb, "PowerSpherical": npb}
    if before is not None:
        families.update({"VonMisesFisher (before)": before.numpyro})
        families.update({"PowerSpherical (before)": before.numpyro})
    gaussian_params = (jnp.zeros(dim, dtype), jnp.ones(dim, dtype))
    steps = {"Gaussian": step("Gaussian", None, gaussian_params)}
    for name, library in families.items():
        steps[name] = step(name, library, (raw_loc, kappa))
    return steps


#: the timer: CPU time of this process (time.process_time; all threads, XLA's included), so
#: that other jobs on a shared machine, which take the cores away but do not add to this
#: process's CPU time, disturb the ratios less than they disturb wall time
CLOCK = time.process_time


def round_robin_times(steps: dict, repeats: int, warmup: int) -> dict:
    """(median, best) seconds of each step, timed one call of each per round."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            start = CLOCK()
            fn()
            times[name].append(CLOCK() - start)
    return {name: (statistics.median(values), min(values)) for name, values in times.items()}


def measure(dims, kappas, dtypes, num_samples, repeats, warmup, before):
    """Rows for every backend, dtype, κ, d and family."""
    rows = []
    for backend, make_steps in [("pyro", torch_steps), ("numpyro", jax_steps)]:
        for dtype in dtypes:
            for kappa in kappas:
                for dim in dims:
                    steps = make_steps(dim, kappa, num_samples, before, dtype)
                    seconds = round_robin_times(steps, repeats, warmup)
                    gaussian, gaussian_best = seconds["Gaussian"]
                    for name, (median, best) in seconds.items():
                        rows.append(
                            {
                                "backend": backend,
                                "dtype": dtype,
                                "kappa": kappa,
                                "d": dim,
                                "distribution": name,
                                "CPU ms per step": 1e3 * median,
                                "time / Gaussian": median / gaussian,
                                "best / best Gaussian": best / gaussian_best,
                            }
                        )
                    print(rows[-len(seconds) :], flush=True)
    return rows


#: short column names of the markdown table (one row per backend, dtype, κ, d)
SHORT_NAMES = {
    "VonMisesFisher": "vMF",
    "VonMisesFisher (before)": "vMF (before)",
    "PowerSpherical": "PS",
    "PowerSpherical (before)": "PS (before)",
    "power_spherical package": "PS package",
}


def pivot(rows: list[dict]) -> list[dict]:
    """One row per (backend, dtype, κ, d): the Gaussian's ms and each family's median ratio."""
    table = {}
    for r in rows:
        key = (r["backend"], r["dtype"], r["kappa"], r["d"])
        row = table.setdefault(
            key, {"backend": key[0], "dtype": key[1], "kappa": key[2], "d": key[3]}
        )
        if r["distribution"] == "Gaussian":
            row["Gaussian CPU ms"] = r["CPU ms per step"]
        else:
            row[SHORT_NAMES[r["distribution"]]] = r["time / Gaussian"]
    return list(table.values())


def load_revision(revision: str, tree: str) -> SimpleNamespace:
    """Both packages as of git ``revision``, extracted into ``tree`` and imported as separate
    module objects: the current modules are set aside in ``sys.modules`` while the old ones
    import, then restored (the old functions keep their own module globals)."""
    archive = subprocess.run(
        ["git", "archive", revision, "pyro_reparam_ext", "numpyro_backend"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    names = ("pyro_reparam_ext", "numpyro_backend")

    def ours(name):
        return name.split(".")[0] in names

    current = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in current:
        del sys.modules[name]
    sys.path.insert(0, tree)
    try:
        import numpyro_backend as old_numpyro
        import pyro_reparam_ext as old_pyro
    finally:
        sys.path.remove(tree)
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(current)
    return SimpleNamespace(pyro=old_pyro, numpyro=old_numpyro)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the whole grid with few rounds and without the '(before)' columns (make bench)",
    )
    parser.add_argument("--num-samples", type=int, default=1024)
    parser.add_argument(
        "--repeats", type=int, default=21, help="round-robin rounds per cell (--quick: 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: stable on shared CPUs)"
    )
    parser.add_argument(
        "--before",
        default="",
        help=f"git revision to compare with, e.g. {BEFORE_REVISION} (default: none)",
    )
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    jax.config.update("jax_enable_x64", True)  # float64 cells; float32 arrays stay float32
    # the default run (what `make bench` runs) covers every κ, d, dtype and backend of the
    # targets; --quick is a 3-round smoke test without the '(before)' columns
    repeats, warmup = (3, 1) if args.quick else (args.repeats, 2)
    if args.quick:
        args.before = ""
    dtypes = args.dtypes.split(",")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tree:
        before = load_revision(args.before, tree) if args.before else None
        rows = measure(DIMS, CONCENTRATIONS, dtypes, args.num_samples, repeats, warmup, before)
    table = pivot(rows)
    columns = ["backend", "dtype", "kappa", "d", "Gaussian CPU ms"]
    columns += [name for name in SHORT_NAMES.values() if any(name in r for r in table)]
    before_note = (
        f"'(before)': this library at git revision {args.before}, same process. "
        if args.before
        else ""
    )
    notes = (
        f"Ratio of the median time of one step to the Gaussian's median in the same cell. One "
        f"step = rsample of {args.num_samples} samples + backward of Σ aᵀz to all parameters "
        f"(CPU, torch threads = {torch.get_num_threads()}); medians of {repeats} round-robin "
        "rounds (one call of each step per round; process CPU time, not wall time, so that "
        "other jobs on a shared machine disturb the ratios less; load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        "best-of-rounds ratios and ms per step of every family are in sphere_rows.json). "
        + before_note
        + "'PS package': PyPI power-spherical (De Cao & Aziz; torch only). vMF and PS: this "
        "library. Targets (issue 15): vMF ≤ 5× and PS ≤ 3× the Gaussian, PS no slower than "
        "the package."
    )
    path = write_results(
        "sphere" + ("_quick" if args.quick else ""),
        "Sphere distributions: rsample + backward time relative to a Gaussian",
        table,
        columns,
        notes,
    )
    (path.parent / (path.stem + "_rows.json")).write_text(json.dumps(rows, indent=1) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
