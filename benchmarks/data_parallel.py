"""Data-parallel SVI throughput: samples/s at 1 and 2 workers on each backend, and the ratio.

The binary VAE on the digits of ``examples/data_parallel_svi.py`` (64 pixels, 8 Bernoulli
latents, tanh MLPs with 64 hidden units, Adam), one global minibatch per step split over the
workers, gradients averaged:

- Pyro: 1 vs 2 gloo ranks (one torch thread per rank), ``SVI`` +
  ``pyro_reparam_ext.infer.distributed.DistributedOptimizer`` (one all-reduce of the gradients
  and running baselines per step). All in one ``torch.multiprocessing.spawn`` of 2 processes:
  rank 0 first trains alone while rank 1 sleeps on an event, then both form the gloo group
  (default settings), then form it again with ``initialize(pin_cpu=True)`` (rank r's threads
  on core r, all-reduces waited for by polling). Every rank also records its CPU time
  (``time.process_time``: all its threads, gloo's included) per step;
- NumPyro: 1 vs 2 host CPU devices in one process (a subprocess started with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2``), one ``SVI.update`` jitted over a
  ``numpyro_backend.infer.distributed.data_mesh`` of the first device or of both.

Samples/s = global batch × steps / seconds (median of timing blocks, after warm-up steps:
compilation excluded). Minibatch indices are drawn with replacement from the 1437 training
images stacked twice (2874 rows; 6 times, 8622 rows, for the global batch of 8192), so the
plate size exceeds the global batch. The batch-8192 row is the compute-bound case (a step's
fixed cost, Pyro's tracing and per-parameter optimizers plus the all-reduce, is small next to
its compute); the smaller batches are dominated by fixed costs. The machine is shared: every
row records the 1-minute load average before and after it.

    python benchmarks/data_parallel.py [--quick] [--backend pyro|numpyro]

writes ``benchmarks/results/data_parallel.md`` and ``.json`` (``--quick``:
``data_parallel_quick.*``, left out of the README tables).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from benchmarks.common import median_time, write_results  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "data_parallel_svi", ROOT / "examples" / "data_parallel_svi.py"
)
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

# (estimator, global batch, steps per timing block): blocks of >~ 0.2 s
ROWS = [
    ("sf-optimal", 512, 120),
    ("relax", 512, 30),
    ("sf-optimal", 2048, 120),
    ("relax", 2048, 30),
    ("sf-optimal", 8192, 30),
]
# --quick (make bench): the score-function estimator at batch 512 only, 3 blocks (with the
# batch-8192 row the quick run took ~69 s instead of ~21 s; the full table has it)
QUICK_ROWS = [("sf-optimal", 512, 60)]
QUICK_NUMPYRO_BATCHES = (512,)
TRAINING_IMAGES = 1437


def example_args(backend: str, workers: int, estimator: str, batch: int):
    """The example's settings (its defaults for the model sizes and learning rate)."""
    argv = ["--backend", backend, "--workers", str(workers), "--estimator", estimator]
    return example.parse_args(argv + ["--batch-size", str(batch), "--seed", "0"])


def training_images(batch: int) -> np.ndarray:
    """The example's 1437 training images, stacked twice (2874 rows), or as often as it takes
    to hold ``batch`` rows."""
    train, _ = example.load_binarized_digits(0)
    return np.tile(train, (max(2, -(-batch // len(train))), 1))


def batches(batch: int, num_data: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` global minibatches of indices, the same on every worker (shared seed)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, num_data, batch) for _ in range(count)]


# ---- Pyro ------------------------------------------------------------------------------------


def _pyro_training(rank: int, workers: int, settings: dict):
    """SVI on ``workers`` ranks (this one ``rank``) and a function running one timing block."""
    import pyro
    import torch
    from pyro.infer import SVI

    from pyro_reparam_ext.infer import distributed

    args = example_args("pyro", workers, settings["estimator"], settings["batch"])
    train = training_images(settings["batch"])
    images = torch.as_tensor(train, dtype=torch.float32)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = example.pyro_model_and_guide(args, len(train))
    distributed.seed_per_rank(0)
    optim = distributed.DistributedOptimizer(pyro.optim.Adam({"lr": args.learning_rate}))
    svi = SVI(model, guide, optim, loss=example.pyro_elbo(args.estimator))
    shard = args.batch_size // workers
    pool = [
        torch.as_tensor(i[rank * shard : (rank + 1) * shard])
        for i in batches(args.batch_size, len(train), 16)
    ]

    def block():
        for step in range(settings["steps"]):
            svi.step(images, pool[step % len(pool)])

    return block


def _timed_blocks(block, repeats: int) -> dict:
    """Median wall seconds and median CPU seconds (this process) per block, after one warm-up."""
    block()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        block()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}


def _pyro_worker(rank: int, settings: dict, coordinators: list, out: str, ready, go) -> None:
    """One of 2 processes. Rank 0 first times one worker alone (rank 1 waits on ``go``, asleep),
    then both join a gloo group and time 2 workers, then join again with ``pin_cpu=True`` and
    time 2 pinned workers; each rank writes its median seconds per block to ``out`` + rank.
    """
    import torch

    from pyro_reparam_ext.infer import distributed

    torch.set_num_threads(1)
    seconds = {}
    if rank == 0:
        ready.wait()  # rank 1 has started up: it sleeps from now on
        seconds["1"] = _timed_blocks(_pyro_training(0, 1, settings), settings["repeats"])
        go.set()
    else:
        ready.set()
        go.wait()
    for name, coordinator, pin in (
        ("2", coordinators[0], False),
        ("2 pinned", coordinators[1], True),
    ):
        distributed.initialize(
            coordinator, num_processes=2, process_id=rank, timeout=60, pin_cpu=pin
        )
        seconds[name] = _timed_blocks(_pyro_training(rank, 2, settings), settings["repeats"])
        torch.distributed.destroy_process_group()
    Path(f"{out}{rank}").write_text(json.dumps(seconds))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pyro_seconds(settings: dict) -> list[dict]:
    """Per rank: median wall and CPU seconds per block of ``settings['steps']`` steps on 1 rank
    (rank 0 only), on 2 ranks, and on 2 pinned ranks."""
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    ready, go = context.Event(), context.Event()
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "seconds_rank")
        coordinators = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        mp.spawn(_pyro_worker, args=(settings, coordinators, out, ready, go), nprocs=2, join=True)
        return [json.loads(Path(f"{out}{r}").read_text()) for r in range(2)]


# ---- NumPyro ---------------------------------------------------------------------------------


def numpyro_worker(settings: dict) -> dict:
    """In a process with 2 host devices: seconds per block on a mesh of 1 and of 2 devices."""
    import jax
    import numpyro

    import numpyro_backend as npb
    from numpyro_backend.infer import distributed

    args = example_args("numpyro", 1, settings["estimator"], settings["batch"])
    train = training_images(settings["batch"]).astype(np.float32)
    pool = [train[i] for i in batches(args.batch_size, len(train), 16)]
    model, guide = example.numpyro_model_and_guide(args, len(train))
    svi = npb.SVI(
        model,
        guide,
        numpyro.optim.Adam(args.learning_rate),
        loss=example.numpyro_elbo(args.estimator),
    )
    init = jax.jit(svi.init)(jax.random.PRNGKey(0), pool[0])
    seconds = {}
    for devices in (1, 2):
        mesh = distributed.data_mesh(jax.devices()[:devices])
        update = distributed.data_parallel_update(svi, mesh)
        sharded = [distributed.shard_batch(b, mesh) for b in pool]
        state = [distributed.replicate(init, mesh)]

        def block(update=update, sharded=sharded, state=state):
            s = state[0]
            for step in range(settings["steps"]):  # wait for every step, as the example does
                s, loss = update(s, sharded[step % len(sharded)])
                loss.block_until_ready()  # (queued steps can stall XLA's CPU collectives)
            state[0] = jax.block_until_ready(s)

        seconds[devices] = median_time(block, repeats=settings["repeats"], warmup=1)
    return seconds


def numpyro_seconds(settings: dict) -> dict:
    """Run :func:`numpyro_worker` in a subprocess that sees 2 forced host CPU devices."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = dict(
        os.environ,
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        OMP_NUM_THREADS="1",
    )
    command = [sys.executable, __file__, "--numpyro-worker", json.dumps(settings)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"NumPyro worker failed:\n{done.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


# ---- main ------------------------------------------------------------------------------------


def row(backend: str, estimator: str, batch: int, steps: int, seconds, load) -> dict:
    """A result row. ``seconds``: NumPyro, ``{n: median seconds per block}`` for n devices;
    Pyro, :func:`pyro_seconds`' per-rank dicts (adds the pinned run and the time per step)."""
    if backend == "numpyro":
        wall = {"1": seconds[1], "2": seconds[2]}
    else:
        wall = {name: timing["wall"] for name, timing in seconds[0].items()}
    rate = {name: batch * steps / s for name, s in wall.items()}
    result = {
        "backend": backend,
        "estimator": estimator,
        "global batch": batch,
        "1 worker samples/s": rate["1"],
        "2 workers samples/s": rate["2"],
        "scaling (2 / 1)": rate["2"] / rate["1"],
    }
    if backend == "pyro":
        runs = ("1", "2", "2 pinned")
        result["2 pinned workers samples/s"] = rate["2 pinned"]
        result["scaling pinned (2 / 1)"] = rate["2 pinned"] / rate["1"]
        # CPU time per step: the mean over the ranks that ran (rank 0 alone for 1 worker)
        cpu = {n: statistics.mean(r[n]["cpu"] for r in seconds if n in r) for n in runs}
        result["CPU ms/step: 1 / 2 / 2 pinned"] = " / ".join(
            f"{1e3 * cpu[n] / steps:.2f}" for n in runs
        )
        result["wall ms/step: 1 / 2 / 2 pinned"] = " / ".join(
            f"{1e3 * wall[n] / steps:.2f}" for n in runs
        )
    result["load before / after"] = f"{load[0]:.1f} / {os.getloadavg()[0]:.1f}"
    return result


COLUMNS = [
    "backend",
    "estimator",
    "global batch",
    "1 worker samples/s",
    "2 workers samples/s",
    "scaling (2 / 1)",
    "2 pinned workers samples/s",
    "scaling pinned (2 / 1)",
    "CPU ms/step: 1 / 2 / 2 pinned",
    "wall ms/step: 1 / 2 / 2 pinned",
    "load before / after",
]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one batch size, few steps")
    parser.add_argument("--backend", choices=("pyro", "numpyro"), default=None, help="only one")
    parser.add_argument("--numpyro-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.numpyro_worker is not None:
        print(json.dumps(numpyro_worker(json.loads(args.numpyro_worker))), flush=True)
        return
    if args.quick:  # the cheap estimator only (NumPyro compiles RELAX for ~15 s per mesh)
        specs, repeats = QUICK_ROWS, 3
    else:
        specs, repeats = ROWS, 5
    rows = []
    for estimator, batch, num_steps in specs:
        settings = dict(estimator=estimator, batch=batch, steps=num_steps, repeats=repeats)
        if args.backend in (None, "pyro"):
            load = os.getloadavg()
            pyro = pyro_seconds(settings)
            rows.append(row("pyro", estimator, batch, num_steps, pyro, load))
            print(rows[-1], flush=True)
        if args.backend in (None, "numpyro") and (not args.quick or batch in QUICK_NUMPYRO_BATCHES):
            load = os.getloadavg()
            numpyro = numpyro_seconds(settings)
            rows.append(row("numpyro", estimator, batch, num_steps, numpyro, load))
            print(rows[-1], flush=True)
    notes = (
        "Binary VAE of examples/data_parallel_svi.py on the digits (64 pixels, 8 latents, "
        "64 hidden units, Adam lr 1e-2), one particle. Pyro: 1 vs 2 gloo ranks "
        "(torch.multiprocessing, torch.set_num_threads(1) per rank; one spawn of 2 processes "
        "per row: rank 0 times 1 worker while rank 1 sleeps on an event, then both time 2 "
        "workers with distributed.initialize's defaults, then 2 workers with "
        "initialize(pin_cpu=True): rank r's threads, gloo's included, pinned to core r and "
        "all-reduces waited for by polling), DistributedOptimizer (one all-reduce per step: "
        "gradients, running baselines, and the flag that replaces the per-step parameter "
        "check). CPU ms/step: time.process_time of a rank (all its threads) per step, the mean "
        "over the ranks; wall ms/step minus CPU ms/step is time a rank spent neither computing "
        "nor in gloo's threads (waiting, or preempted by other jobs); pinned ranks poll, so "
        "their waiting counts as CPU time. "
        "NumPyro: 1 vs 2 forced host CPU devices in one process, SVI.update jitted over the "
        "mesh (XLA's default CPU threading), each step waited for (like the example's "
        "float(loss); without it 120 queued steps stalled an all-gather of the 2-device "
        "program). Samples/s = global batch × steps / seconds; (estimator, global batch, "
        f"steps per timing block) {specs}, median of {repeats} blocks after one warm-up block "
        "(compilation excluded); minibatches drawn with replacement from the 1437 training "
        "images stacked twice (plate size 2874; for the global batch 8192 six times, 8622). "
        "Batches 512 and 2048 are dominated by each step's fixed cost (Pyro's tracing and "
        "per-parameter optimizers, the all-reduce), which a second worker does not split; "
        "batch 8192 is the compute-bound case. 2-core machine shared with other jobs: "
        "load = 1-minute load average before / after each row (2 = both cores busy)."
        + (
            " QUICK RUN: sf-optimal only, 3 blocks; NumPyro at batch 512 only."
            if args.quick
            else ""
        )
    )
    name = "data_parallel_quick" if args.quick else "data_parallel"
    if args.backend is not None:
        name += f"_{args.backend}"
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    path = write_results(
        name, "Data-parallel SVI: samples/s at 1 and 2 workers", rows, columns, notes
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
