"""SVI steps per second of one backend-agnostic model and estimator on Pyro vs NumPyro (CPU).

The model is the discrete VAE of ``examples/backend_agnostic.py`` (pyroapi imports only:
32 points × 12 binary pixels, 3 Bernoulli latents each); the estimator line is the same on
both backends. Three timings per estimator:

- Pyro: ``svi.step(data)`` (eager PyTorch, one intra-op thread: the tensors are tiny);
- NumPyro ``step()``: the same pyroapi ``svi.step(data)`` loop (one jit-compiled update per
  Python call, loss and param store synchronised every step);
- NumPyro ``scan``: ``SVI.update`` steps inside one jit-compiled ``lax.scan`` (what
  ``SVI.run`` does), the way a NumPyro user trains.

    python benchmarks/backends.py [--quick]

writes ``benchmarks/results/backends.md`` and ``.json``. Compile time is reported apart and
excluded from steps/s. ``infer.TraceGraph_ELBO`` is Pyro's on Pyro and, under the
``numpyro_backend`` alias, the Pyro-semantics one of ``numpyro_backend/backend/infer.py``
(plate-aware score terms without baseline).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import jax
import pyroapi
import torch
from jax import lax
from numpyro.optim import Adam
from pyroapi import infer, optim, pyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_time, write_results  # noqa: E402
from numpyro_backend.infer import SVI as NumPyroSVI  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "backend_agnostic", ROOT / "examples" / "backend_agnostic.py"
)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

LR = 0.01
ESTIMATORS = {
    "TraceGraph_ELBO": lambda: infer.TraceGraph_ELBO(num_particles=2, max_plate_nesting=1),
    "ScoreFunction_ELBO(optimal)": lambda: infer.ScoreFunction_ELBO(
        num_particles=2, max_plate_nesting=1
    ),
    "REBAR_ELBO": lambda: infer.REBAR_ELBO(num_particles=2, max_plate_nesting=1),
    "RELAX_ELBO": lambda: infer.RELAX_ELBO(num_particles=2, max_plate_nesting=1),
}


def _setup(seed=0):
    data = example.make_data(32, 12, seed)
    model, guide = example.make_model(3, 12, seed)
    return data, model, guide


def pyro_step_rate(name: str, steps: int, repeats: int) -> float:
    data_np, model, guide = _setup()
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        pyro.clear_param_store()
        data = torch.as_tensor(data_np)
        svi = infer.SVI(model, guide, optim.Adam({"lr": LR}), ESTIMATORS[name]())

        def block():
            for _ in range(steps):
                svi.step(data)

        seconds = median_time(block, repeats=repeats, warmup=1)
        pyro.clear_param_store()
    return steps / seconds


def numpyro_step_rate(name: str, steps: int, repeats: int) -> tuple[float, float]:
    """(steps/s of the pyroapi step loop, seconds of the first step: compile)."""
    data_np, model, guide = _setup()
    with pyroapi.pyro_backend("numpyro_backend"):
        pyro.clear_param_store()
        data = jax.numpy.asarray(data_np)
        svi = infer.SVI(model, guide, optim.Adam({"lr": LR}), ESTIMATORS[name]())
        start = time.perf_counter()
        svi.step(data)
        compile_seconds = time.perf_counter() - start

        def block():
            for _ in range(steps):
                svi.step(data)

        seconds = median_time(block, repeats=repeats, warmup=1)
        pyro.clear_param_store()
    return steps / seconds, compile_seconds


def numpyro_scan_rate(name: str, steps: int, repeats: int) -> float:
    data_np, model, guide = _setup()
    with pyroapi.pyro_backend("numpyro_backend"):
        pyro.clear_param_store()
        data = jax.numpy.asarray(data_np)
        svi = NumPyroSVI(model, guide, Adam(LR), ESTIMATORS[name]())
        state = svi.init(jax.random.PRNGKey(0), data)
        run = jax.jit(lambda s: lax.scan(lambda s, _: svi.update(s, data), s, None, length=steps))

        def block():
            jax.block_until_ready(run(state))

        seconds = median_time(block, repeats=repeats, warmup=1)
        pyro.clear_param_store()
    return steps / seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps, repeats = (20, 3) if args.quick else (100, 3)
    rows = []
    for name in ESTIMATORS:
        pyro_rate = pyro_step_rate(name, steps, repeats)
        step_rate, compile_seconds = numpyro_step_rate(name, steps, repeats)
        scan_rate = numpyro_scan_rate(name, steps * 5, repeats)
        row = {
            "estimator": name,
            "pyro steps/s": pyro_rate,
            "numpyro step() steps/s": step_rate,
            "numpyro scan steps/s": scan_rate,
            "speedup step()": step_rate / pyro_rate,
            "speedup scan": scan_rate / pyro_rate,
            "numpyro compile s": compile_seconds,
        }
        print(row, flush=True)
        rows.append(row)
    notes = (
        "Discrete VAE of examples/backend_agnostic.py (32 points, 12 pixels, 3 latents), "
        f"num_particles=2, Adam lr={LR}; {steps} steps per timing block (scan: {steps * 5}), "
        f"median of {repeats} blocks; torch with one intra-op thread. Speedup = NumPyro "
        "steps/s / Pyro steps/s; compile time (first step) excluded. TraceGraph_ELBO under "
        "the numpyro_backend alias has Pyro's semantics (ScoreFunction_ELBO, baseline none)."
    )
    path = write_results(
        "backends", "SVI steps per second: Pyro vs NumPyro (jit)", rows, list(rows[0]), notes
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
