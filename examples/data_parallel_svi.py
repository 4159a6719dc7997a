"""Data-parallel SVI: a binary-latent VAE on scikit-learn's digits, trained by several workers.

Every step draws one global minibatch (the same indices on every worker); each worker takes
its shard and the gradients are averaged, so the run is the single-worker run of the same
global batch with the work split. On this CPU machine::

    python examples/data_parallel_svi.py --backend pyro --workers 2         # 2 gloo ranks
    python examples/data_parallel_svi.py --backend numpyro --devices 2      # 2 host devices
    python examples/data_parallel_svi.py --backend numpyro --workers 2      # jax.distributed

Pyro: the classic path — ``SVI`` with the param store and
``pyro_reparam_ext.infer.distributed.DistributedOptimizer`` (parameters broadcast from rank 0
when first seen, gradients all-reduced); running baselines are averaged across ranks by the
estimators; every rank seeds its own noise (``seed_per_rank``). Workers are started with
``torch.multiprocessing`` (or launch the script with ``torchrun``: it reads ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).

NumPyro: one ``SVI.update`` jitted over a device mesh (batch split along its plate dim, state
replicated: ``numpyro_backend.infer.distributed``); ``--workers N`` runs N processes joined by
``jax.distributed`` on 127.0.0.1, each with ``--devices`` CPU devices.

Progress is printed by worker 0 only. ``--out DIR``: every worker r writes its final
parameters (estimator state included) to ``DIR/params_rank{r}.npz`` and its per-step losses
to ``DIR/losses_rank{r}.npy``. Each worker uses one CPU thread; ``--pin-cpu`` gives worker r
core r of its own (``initialize(pin_cpu=True)``; Pyro's all-reduces are then waited for by
polling), for as many workers as cores.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ExampleParser,
    add_backend_argument,
    load_binarized_digits,
    nonnegative_int,
    positive_float,
    positive_int,
)

ESTIMATORS = ("sf-optimal", "sf-decaying-avg", "rebar", "relax")


def parse_args(argv=None):
    parser = ExampleParser(description=__doc__.split("\n\n")[0])
    add_backend_argument(parser)
    parser.add_argument("--workers", type=positive_int, default=2, help="processes (default 2)")
    parser.add_argument(
        "--devices", type=positive_int, default=1, help="NumPyro: CPU devices per process"
    )
    parser.add_argument("--estimator", choices=ESTIMATORS, default="relax")
    parser.add_argument("--steps", type=positive_int, default=300)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="global minibatch")
    parser.add_argument("--latents", type=positive_int, default=8)
    parser.add_argument("--hidden", type=positive_int, default=64)
    parser.add_argument("--learning-rate", type=positive_float, default=1e-2)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for per-rank results")
    parser.add_argument(
        "--timeout", type=positive_float, default=60.0, help="seconds to wait for workers"
    )
    parser.add_argument(
        "--pin-cpu",
        action="store_true",
        help="pin worker r to CPU core r (distributed.initialize(pin_cpu=True))",
    )
    parser.add_argument("--rank", type=nonnegative_int, default=None, help="(set by launcher)")
    parser.add_argument("--coordinator", default=None, help="host:port (set by launcher)")
    args = parser.parse_args(argv)
    if args.backend == "pyro" and args.devices != 1:
        parser.error("--devices is for --backend numpyro (Pyro: one device per worker)")
    parts = args.workers * args.devices
    if args.batch_size % parts:
        parser.error(
            f"--batch-size {args.batch_size} must be a multiple of workers x devices = {parts}"
        )
    if args.rank is not None and args.rank >= args.workers:
        parser.error(f"--rank must be in [0, {args.workers}), got {args.rank}")
    return args


def minibatch_indices(args, num_data: int):
    """The global minibatch of every step: the same on every worker (one shared seed)."""
    rng = np.random.default_rng(args.seed)
    for _ in range(args.steps):
        yield rng.choice(num_data, args.batch_size, replace=False)


def report(args, rank: int, step: int, losses: list[float], times: list[float], num_data: int):
    """Worker 0: mean −ELBO per image over the last tenth of the steps, steps/s after step 1.

    ``times`` holds the wall-clock time after every step; the first step (NumPyro: the
    compilation) is left out of the speed.
    """
    every = max(1, args.steps // 10)
    if rank == 0 and (step % every == 0 or step == args.steps):
        recent = np.mean(losses[-every:]) / num_data
        speed = (step - 1) / (times[-1] - times[0]) if step > 1 else float("nan")
        print(f"step {step:5d}  loss/image {recent:7.3f}  {speed:6.1f} steps/s", flush=True)


def write_outputs(args, rank: int, params: dict, losses: list[float]) -> None:
    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / f"params_rank{rank}.npz", **params)
    np.save(args.out / f"losses_rank{rank}.npy", np.asarray(losses))


# ---- Pyro ------------------------------------------------------------------------------------


def pyro_elbo(name: str):
    import pyro_reparam_ext as pre

    options = dict(max_plate_nesting=1)
    return {
        "sf-optimal": lambda: pre.ScoreFunction_ELBO(baseline="optimal", **options),
        "sf-decaying-avg": lambda: pre.ScoreFunction_ELBO(baseline="decaying_avg", **options),
        "rebar": lambda: pre.REBAR_ELBO(**options),
        "relax": lambda: pre.RELAX_ELBO(**options),
    }[name]()


def pyro_model_and_guide(args, num_data: int):
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn

    pixels, latents, hidden = 64, args.latents, args.hidden
    encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.Tanh(), nn.Linear(hidden, latents))
    decoder = nn.Sequential(nn.Linear(latents, hidden), nn.Tanh(), nn.Linear(hidden, pixels))
    prior_logits = torch.zeros(latents)

    def model(images, idx):
        pyro.module("decoder", decoder)
        with pyro.plate("data", num_data, subsample=idx):
            z = pyro.sample("z", dist.Bernoulli(logits=prior_logits).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=images[idx])

    def guide(images, idx):
        pyro.module("encoder", encoder)
        with pyro.plate("data", num_data, subsample=idx):
            pyro.sample("z", dist.Bernoulli(logits=encoder(images[idx])).to_event(1))

    return model, guide


def run_pyro(rank: int, args, coordinator: str | None) -> None:
    import pyro
    import torch
    from pyro.infer import SVI

    from pyro_reparam_ext.infer import distributed

    torch.set_num_threads(1)
    if args.workers > 1:
        distributed.initialize(
            coordinator,
            num_processes=args.workers,
            process_id=rank,
            timeout=args.timeout,
            pin_cpu=args.pin_cpu,
        )
    train, _ = load_binarized_digits(args.seed)
    images = torch.as_tensor(train, dtype=torch.float32)
    pyro.set_rng_seed(args.seed)  # the same initial weights on every rank (broadcast anyway)
    model, guide = pyro_model_and_guide(args, len(train))
    distributed.seed_per_rank(args.seed)  # but each rank its own noise
    optim = distributed.DistributedOptimizer(pyro.optim.Adam({"lr": args.learning_rate}))
    svi = SVI(model, guide, optim, loss=pyro_elbo(args.estimator))
    shard = args.batch_size // args.workers
    losses, times = [], []
    for step, idx in enumerate(minibatch_indices(args, len(train)), 1):
        mine = torch.as_tensor(idx[rank * shard : (rank + 1) * shard])
        losses.append(svi.step(images, mine))
        times.append(time.perf_counter())
        report(args, rank, step, losses, times, len(train))
    params = {k: v.detach().numpy() for k, v in pyro.get_param_store().named_parameters()}
    write_outputs(args, rank, params, losses)
    if args.workers > 1:
        torch.distributed.destroy_process_group()


# ---- NumPyro ---------------------------------------------------------------------------------


def numpyro_elbo(name: str):
    import numpyro_backend as npb

    options = dict(max_plate_nesting=1)
    return {
        "sf-optimal": lambda: npb.ScoreFunction_ELBO(baseline="optimal", **options),
        "sf-decaying-avg": lambda: npb.ScoreFunction_ELBO(baseline="decaying_avg", **options),
        "rebar": lambda: npb.REBAR_ELBO(**options),
        "relax": lambda: npb.RELAX_ELBO(**options),
    }[name]()


def numpyro_model_and_guide(args, num_data: int):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    pixels, latents, hidden = 64, args.latents, args.hidden
    keys = jax.random.split(jax.random.PRNGKey(args.seed + 1), 4)

    def mlp(name, sizes, key_pair, x):
        """Two-layer tanh MLP with PyTorch's default initialization."""
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            bound = 1.0 / np.sqrt(fan_in)
            w_key, b_key = jax.random.split(key_pair[i])
            w = numpyro.param(
                f"{name}.w{i}", jax.random.uniform(w_key, (fan_in, fan_out), x.dtype, -bound, bound)
            )
            b = numpyro.param(
                f"{name}.b{i}", jax.random.uniform(b_key, (fan_out,), x.dtype, -bound, bound)
            )
            x = x @ w + b if i else jnp.tanh(x @ w + b)
        return x

    def model(images):
        with numpyro.plate("data", num_data, subsample_size=images.shape[0]):
            z = numpyro.sample("z", dist.Bernoulli(logits=jnp.zeros(latents)).to_event(1))
            z = jnp.asarray(z, images.dtype)
            logits = mlp("decoder", (latents, hidden, pixels), keys[:2], z)
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=images)

    def guide(images):
        with numpyro.plate("data", num_data, subsample_size=images.shape[0]):
            logits = mlp("encoder", (pixels, hidden, latents), keys[2:], images)
            numpyro.sample("z", dist.Bernoulli(logits=logits).to_event(1))

    return model, guide


def run_numpyro(rank: int, args, coordinator: str | None) -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpyro

    import numpyro_backend as npb
    from numpyro_backend.infer import distributed

    if args.workers > 1:
        distributed.initialize(
            coordinator,
            num_processes=args.workers,
            process_id=rank,
            timeout=args.timeout,
            pin_cpu=args.pin_cpu,
        )
    train, _ = load_binarized_digits(args.seed)
    train = train.astype(np.float32)
    mesh = distributed.data_mesh()
    model, guide = numpyro_model_and_guide(args, len(train))
    optim = numpyro.optim.Adam(args.learning_rate)
    svi = npb.SVI(model, guide, optim, loss=numpyro_elbo(args.estimator))
    batches = minibatch_indices(args, len(train))
    first = next(batches)
    state = jax.jit(svi.init)(jax.random.PRNGKey(args.seed), train[first])  # same everywhere
    state = distributed.replicate(state, mesh)
    update = distributed.data_parallel_update(svi, mesh)
    part = args.batch_size // args.workers  # this process's rows of each global minibatch
    losses, times = [], []
    for step, idx in enumerate([first, *batches], 1):
        local = train[idx[rank * part : (rank + 1) * part]]
        state, loss = update(state, distributed.shard_batch(local, mesh))
        losses.append(float(loss))
        times.append(time.perf_counter())
        report(args, rank, step, losses, times, len(train))
    leaves = jax.tree_util.tree_flatten_with_path(svi.get_params(state))[0]
    params = {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in leaves}
    for name, value in (state.mutable_state or {}).items():
        params[name] = np.asarray(value)
    write_outputs(args, rank, params, losses)
    if args.workers > 1:
        jax.distributed.shutdown()


# ---- launching -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pyro_spawned(rank: int, args, coordinator: str) -> None:
    try:
        run_pyro(rank, args, coordinator)
    except (RuntimeError, ValueError) as error:
        print_error(error)
        raise SystemExit(1) from None


def print_error(error: Exception) -> None:
    message = " ".join(str(error).split())
    print(f"{Path(__file__).name}: error: {message}", file=sys.stderr, flush=True)


def launch_numpyro(args, argv: list[str], coordinator: str) -> int:
    """Start the N worker processes of this script; stop them all if one fails."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    workers = [
        subprocess.Popen([*command, "--rank", str(r), "--coordinator", coordinator], env=env)
        for r in range(args.workers)
    ]
    try:
        codes = [w.wait() for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    return max(codes)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run = run_pyro if args.backend == "pyro" else run_numpyro
    rank, coordinator = args.rank, args.coordinator
    if rank is None and "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun
        rank, args.workers = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        coordinator = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        if rank is not None or args.workers == 1:
            run(rank or 0, args, coordinator)
            return 0
        coordinator = f"127.0.0.1:{free_port()}"
        if args.backend == "numpyro":
            return launch_numpyro(args, argv, coordinator)
        import torch.multiprocessing as mp

        try:
            mp.spawn(_pyro_spawned, args=(args, coordinator), nprocs=args.workers, join=True)
        except mp.ProcessExitedException:  # the worker printed its one-line error
            return 1
        return 0
    except (RuntimeError, ValueError) as error:
        print_error(error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
