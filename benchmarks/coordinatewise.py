"""SVI step time of REBAR/RELAX with coordinate-wise control variates vs TraceGraph_ELBO (Pyro).

A binary VAE on 128 points × 24 binary pixels with D ∈ {16, 32} Bernoulli latents per point
(one ``to_event(1)`` site, linear encoder and decoder), K = 2 vectorized particles. With
``coordinatewise=True`` (the default) each point's D decisions get their own control variate:
2·D relaxed replays of the model, done in one vectorized replay with an extra batch dimension
for the D decisions; φ = (η, λ, ρ) is trained from the variance of one randomly chosen
decision's estimate per element (``relax.VARIANCE_DECISIONS``), differentiated in the same
backward pass. Reported: the median ``SVI.step`` time (Adam) of each estimator and its
ratio to TraceGraph_ELBO's (with Pyro's decaying-average baseline) in the same run, one
intra-op thread, timed round-robin. Times are CPU time of this process
(``time.process_time``): on a shared machine wall time mostly measures the other processes,
while one-thread CPU time does not. Also reported: the median number of minor page faults
per step (``getrusage``). The step's large temporaries (the model at the 2·D relaxed copies)
come from the heap, which glibc may give back to the system at the end of a step and fault
in again on the next, or not, depending on the process's heap layout: a process lands in one
regime or the other (e.g. about 2,000 faults per D = 32 REBAR step against about 1), and the
step time with it (about 10% at D = 32), whatever the estimator's code.

    python benchmarks/coordinatewise.py [--quick] [--latents 32]

writes ``benchmarks/results/coordinatewise.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, TraceGraph_ELBO
from pyro.optim import Adam

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from pyro_reparam_ext.infer import REBAR_ELBO, RELAX_ELBO, ScoreFunction_ELBO  # noqa: E402

NUM_POINTS, NUM_PIXELS, NUM_PARTICLES = 128, 24, 2


def make_vae(num_latents: int):
    """(model, guide, data) of the benchmark VAE with ``num_latents`` binary latents."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(NUM_POINTS, NUM_PIXELS, generator=generator) < 0.3).double()
    enc_init = 0.1 * torch.randn(NUM_PIXELS, num_latents, generator=generator)
    dec_init = 0.1 * torch.randn(num_latents, NUM_PIXELS, generator=generator)

    def model(x):
        dec_w = pyro.param("dec_w", dec_init.clone())
        dec_b = pyro.param("dec_b", torch.zeros(NUM_PIXELS))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=torch.zeros(num_latents)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z @ dec_w + dec_b).to_event(1), obs=x)

    def guide(x):
        enc_w = pyro.param("enc_w", enc_init.clone())
        enc_b = pyro.param("enc_b", torch.zeros(num_latents))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=x @ enc_w + enc_b).to_event(1))

    return model, guide, x


def _decaying_avg(guide):
    return poutine.infer_config(
        guide,
        lambda site: (
            {} if site["is_observed"] else {"baseline": {"use_decaying_avg_baseline": True}}
        ),
    )


ESTIMATORS = {
    "TraceGraph_ELBO (decaying avg)": lambda: TraceGraph_ELBO(
        NUM_PARTICLES, max_plate_nesting=1, vectorize_particles=True
    ),
    "ScoreFunction_ELBO(optimal)": lambda: ScoreFunction_ELBO(NUM_PARTICLES, max_plate_nesting=1),
    "REBAR_ELBO": lambda: REBAR_ELBO(NUM_PARTICLES, max_plate_nesting=1),
    "RELAX_ELBO": lambda: RELAX_ELBO(NUM_PARTICLES, max_plate_nesting=1),
    "REBAR_ELBO(coordinatewise=False)": lambda: REBAR_ELBO(
        NUM_PARTICLES, max_plate_nesting=1, coordinatewise=False
    ),
    "RELAX_ELBO(coordinatewise=False)": lambda: RELAX_ELBO(
        NUM_PARTICLES, max_plate_nesting=1, coordinatewise=False
    ),
}


def cpu_time(fn) -> tuple[float, int]:
    """CPU time in seconds of one call of ``fn()`` (this process, one thread) and the minor
    page faults it took."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.process_time()
    fn()
    elapsed = time.process_time() - start
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def run(num_latents: int, repeats: int, warmup: int = 2) -> list[dict]:
    """Median step time of every estimator, timed round-robin (one step of each in turn, so
    a change of machine load hits all of them alike)."""
    model, guide, x = make_vae(num_latents)
    steps = {}
    for name, make in ESTIMATORS.items():
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        run_guide = _decaying_avg(guide) if name.startswith("TraceGraph") else guide
        with pyro.get_param_store().scope() as state:
            svi = SVI(model, run_guide, Adam({"lr": 0.01}), loss=make())
            for _ in range(warmup):
                svi.step(x)
        steps[name] = (svi, state)
    times = {name: [] for name in steps}
    faults = {name: [] for name in steps}
    for _ in range(repeats):
        for name, (svi, state) in steps.items():
            with pyro.get_param_store().scope(state) as state:
                elapsed, step_faults = cpu_time(lambda svi=svi: svi.step(x))
            times[name].append(elapsed)
            faults[name].append(step_faults)
            steps[name] = (svi, state)
    rows = [
        {
            "latents": num_latents,
            "estimator": name,
            "step_ms": 1e3 * statistics.median(t),
            "page_faults_per_step": statistics.median(faults[name]),
        }
        for name, t in times.items()
    ]
    reference = rows[0]["step_ms"]
    for row in rows:
        row["step_time_vs_tracegraph"] = row["step_ms"] / reference
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke test)")
    parser.add_argument(
        "--latents",
        type=int,
        nargs="+",
        default=[16, 32],
        help="numbers of latents D to run (default: 16 32)",
    )
    args = parser.parse_args(argv)
    if any(d < 1 for d in args.latents):
        parser.error(f"--latents must be >= 1, got {args.latents}")
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    rows = []
    load_before = os.getloadavg()[0]
    for num_latents in args.latents:
        rows += run(num_latents, repeats=5 if args.quick else 21)
    load = f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    path = write_results(
        "coordinatewise",
        "Coordinate-wise REBAR/RELAX step time vs TraceGraph_ELBO (Pyro, 128-point binary VAE)",
        rows,
        ["latents", "estimator", "step_ms", "step_time_vs_tracegraph", "page_faults_per_step"],
        notes=(
            f"{NUM_POINTS} points x {NUM_PIXELS} pixels, K = {NUM_PARTICLES} vectorized "
            "particles, float64, one thread; step_ms: median SVI.step CPU time, estimators "
            "timed round-robin (one step of each in turn); page_faults_per_step: median minor "
            f"page faults of a step (getrusage); {load} (2-core shared machine)."
        ),
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
