"""Step time and gradient variance of the discrete-latent estimators vs Pyro's own ELBOs.

On the small binary VAE of ``tests/infer/models.py`` (8 points × 6 binary pixels, 3 Bernoulli
latents each) and, for a second shape of problem, the subsampled Categorical mixture, every
estimator runs at the same parameters and the same number of particles K, i.e. the same
number of model evaluations per gradient estimate (K = 1, 2, 4):

- step time: median wall time of one ``SVI.step`` (Adam), after warm-up steps;
- gradient variance: ``gradient_variance`` total variance of the guide-parameter gradient
  (the part estimators differ in) at fixed parameters, and its ratio to TraceGraph_ELBO with
  Pyro's decaying-average baseline (ratio > 1: lower variance than TraceGraph). Running
  baselines get 50 calls to settle; REBAR/RELAX get a 500-step control-variate warm-up at
  lr 0.005 (only η, λ, ρ move) before their variance is measured;
- for K ≥ 2 also ``DisARM_ELBO(K)`` (DisARM at K = 2, ARMS at K = 4; stick-breaking coupling
  on the Categorical model) and ``IWAE_ELBO(K)`` (VIMCO learning signals at discrete sites),
  with their variance ratio to ``ScoreFunction_ELBO(K, baseline="loo")`` at the same K
  (ratio > 1: lower variance than leave-one-out). IWAE_ELBO's gradient is that of the K-sample
  bound, a different objective from the ELBO the others estimate: its variance is comparable
  as a cost, not as an estimate of the same vector.

Trace_ELBO has no downstream credit and no baseline; TraceGraph_ELBO is configured with
``infer={"baseline": {"use_decaying_avg_baseline": True}}`` on the latent sites.

    python benchmarks/estimators.py [--quick] [--jobs N]

writes ``benchmarks/results/estimators.md`` and ``.json``. One intra-op thread (tiny tensors;
see tests/infer/conftest.py). ``--jobs`` (default 2, one per core) runs the six (model, K)
units in that many processes, costliest first; each process has its own core on a 2-core
machine, so the step times are those of a one-thread process with a core to itself.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyro
import pyroapi
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO
from pyro.optim import Adam

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_time, write_results  # noqa: E402
from pyro_reparam_ext.infer import (  # noqa: E402
    IWAE_ELBO,
    REBAR_ELBO,
    RELAX_ELBO,
    DisARM_ELBO,
    ScoreFunction_ELBO,
    gradient_variance,
)
from tests.infer.models import BINARY_VAE, CATEGORICAL_MIXTURE  # noqa: E402
from tests.infer.pyro_helpers import torch_inputs, warm_up_control_variates  # noqa: E402

GUIDE_PARAMS = {"binary_vae": ["enc_w", "enc_b"], "categorical_mixture": ["assign_logits"]}


def _decaying_avg(guide):
    return poutine.infer_config(
        guide,
        lambda site: (
            {} if site["is_observed"] else {"baseline": {"use_decaying_avg_baseline": True}}
        ),
    )


LOO = "ScoreFunction_ELBO(loo)"


def estimators(k: int, nesting: int) -> dict:
    """name -> (make_elbo, uses_decaying_avg_guide, control-variate warm-up)."""
    table = {
        "Trace_ELBO": (lambda: Trace_ELBO(k, nesting, vectorize_particles=True), False, False),
        "TraceGraph_ELBO (decaying avg)": (
            lambda: TraceGraph_ELBO(k, nesting, vectorize_particles=True),
            True,
            False,
        ),
        "ScoreFunction_ELBO(optimal)": (
            lambda: ScoreFunction_ELBO(k, max_plate_nesting=nesting, baseline="optimal"),
            False,
            False,
        ),
        LOO if k > 1 else "ScoreFunction_ELBO(decaying_avg)": (
            lambda: ScoreFunction_ELBO(
                k, max_plate_nesting=nesting, baseline="loo" if k > 1 else "decaying_avg"
            ),
            False,
            False,
        ),
        "REBAR_ELBO": (lambda: REBAR_ELBO(k, max_plate_nesting=nesting), False, True),
        "RELAX_ELBO": (lambda: RELAX_ELBO(k, max_plate_nesting=nesting), False, True),
    }
    if k > 1:  # both need K >= 2 (DisARM couples K copies; IWAE at K = 1 is Trace_ELBO)
        table["DisARM_ELBO" if k == 2 else "DisARM_ELBO (ARMS)"] = (
            lambda: DisARM_ELBO(k, max_plate_nesting=nesting),
            False,
            False,
        )
        table["IWAE_ELBO (VIMCO)"] = (lambda: IWAE_ELBO(k, max_plate_nesting=nesting), False, False)
    return table


def run(entry, k: int, quick: bool) -> list[dict]:
    data, init = torch_inputs(entry)
    nesting = entry.max_plate_nesting
    num_samples = 60 if quick else 600
    warm_steps = 20 if quick else 500
    rows = []
    reference = loo = None
    for name, (make, decaying, warm) in estimators(k, nesting).items():
        guide = _decaying_avg(entry.guide) if decaying else entry.guide
        # step time
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(entry.model, guide, Adam({"lr": 0.01}), loss=make())
        step_s = median_time(
            lambda svi=svi, data=data, init=init: svi.step(data, init), repeats=15 if quick else 60
        )
        # gradient variance at the initial parameters
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        data, init = torch_inputs(entry)  # fresh copies: the SVI steps above moved the old ones
        elbo = make()
        start = time.perf_counter()
        if warm:
            warm_up_control_variates(elbo, entry.model, guide, (data, init), warm_steps, 0.005)
        else:
            gradient_variance(elbo, entry.model, guide, data, init, num_samples=50)
        stats = gradient_variance(
            elbo,
            entry.model,
            guide,
            data,
            init,
            num_samples=num_samples,
            param_names=GUIDE_PARAMS[entry.name],
        )
        row = {
            "model": entry.name,
            "K": k,
            "estimator": name,
            "step_ms": 1e3 * step_s,
            "guide_grad_variance": stats["total_variance"],
            "variance_se": stats["total_variance_se"],
            "measure_s": time.perf_counter() - start,
        }
        if name.startswith("TraceGraph"):
            reference = row
        if name == LOO:
            loo = row
        rows.append(row)
    for row in rows:
        row["variance_ratio_vs_tracegraph"] = (
            reference["guide_grad_variance"] / row["guide_grad_variance"]
        )
        row["step_time_vs_tracegraph"] = row["step_ms"] / reference["step_ms"]
        if loo is not None:
            row["variance_ratio_vs_loo"] = loo["guide_grad_variance"] / row["guide_grad_variance"]
    return rows


MODELS = {entry.name: entry for entry in (BINARY_VAE, CATEGORICAL_MIXTURE)}
# (model, K) units, costliest first (REBAR/RELAX warm-ups dominate; binary_vae > mixture)
UNITS = [(model, k) for model in MODELS for k in (2, 4, 1)]


def run_unit(model: str, k: int, quick: bool) -> list[dict]:
    """The rows of one (model, K): every estimator at the same K (in a process of its own)."""
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        rows = run(MODELS[model], k, quick)
    for row in rows:
        print(
            f"{row['model']:20s} K={k} {row['estimator']:34s} "
            f"{row['step_ms']:7.2f} ms  var {row['guide_grad_variance']:9.4g} "
            f"ratio {row['variance_ratio_vs_tracegraph']:6.2f}",
            flush=True,
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few samples (smoke test)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (2 cores: 2)")
    args = parser.parse_args(argv)
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = {unit: pool.submit(run_unit, *unit, args.quick) for unit in UNITS}
            results = {unit: future.result() for unit, future in futures.items()}
    else:
        results = {unit: run_unit(*unit, args.quick) for unit in UNITS}
    order = [(model, k) for model in MODELS for k in (1, 2, 4)]  # the table's order
    rows = [row for unit in order for row in results[unit]]
    columns = [
        "model",
        "K",
        "estimator",
        "step_ms",
        "step_time_vs_tracegraph",
        "guide_grad_variance",
        "variance_se",
        "variance_ratio_vs_tracegraph",
        "variance_ratio_vs_loo",
    ]
    notes = (
        "step_ms: median SVI.step time. guide_grad_variance: total variance of the guide "
        "parameters' gradient at the initial parameters (± variance_se); ratio > 1 means lower "
        "variance than TraceGraph_ELBO with its decaying-average baseline at the same K; "
        "variance_ratio_vs_loo > 1: lower variance than ScoreFunction_ELBO(K, baseline='loo') "
        "at the same K (equal model evaluations). DisARM_ELBO: DisARM at K = 2, ARMS at K = 4 "
        "(stick-breaking coupling on the Categorical model). IWAE_ELBO's gradient is that of "
        "the K-sample bound (VIMCO learning signals), not of the ELBO. "
        "REBAR/RELAX after a 500-step control-variate warm-up at lr 0.005 (only η, λ, ρ trained)."
        + f" {args.jobs} process(es), one (model, K) at a time each, one torch thread each."
        + (" QUICK RUN: few samples." if args.quick else "")
    )
    path = write_results(
        "estimators", "Discrete-latent ELBO estimators (Pyro)", rows, columns, notes
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
