"""Data-parallel SVI on JAX: a sharded jit over forced host devices, and two processes.

The test process has initialized JAX already (one CPU device, x64), so the runs happen in
fresh interpreters, started once per module (fixtures ``mesh_runs`` and ``process_runs``),
in float64:

- ``mesh``: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``; estimators with
  running state (the optimal and decaying-average baselines) and learned state (RELAX) train
  50 steps on one device and on a 4-device mesh (batch split along its plate dim, state
  replicated) from the same key;
- ``process``: two processes joined by ``jax.distributed.initialize`` on 127.0.0.1, one CPU
  device each, each feeding its half of every minibatch.

The model is the Pyro test's with one binary latent per point (compiling RELAX's replays for
two costs twice the time): b ∈ {0,1}, x | b ~ Normal(b A, 1) in R³, N = 16 points, minibatches
of 8 through a subsampled plate, an amortized Bernoulli guide.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

NUM_DATA, BATCH, LATENT, OBSERVED = 16, 8, 1, 3
MESH_STEPS, PROCESS_STEPS = 50, 20
DTYPE = np.float64
DEVICES = 4
#: running state (optimal: two moments, decaying_avg: one average) and learned state (RELAX:
#: η, log λ and the network; REBAR is RELAX without the network)
ESTIMATORS = ("sf_optimal", "sf_decaying_avg", "relax")
PROCESS_ESTIMATORS = ("sf_optimal",)
#: data-parallel gradient estimates of the subsampled mixture, each the mean of DRAWS draws
UNBIASED_CALLS, UNBIASED_DRAWS = 30, 256


# ---- what the subprocesses run --------------------------------------------------------------


def make_estimator(name: str):
    import numpyro_backend as npb

    return {
        "sf_optimal": lambda: npb.ScoreFunction_ELBO(baseline="optimal"),
        "sf_decaying_avg": lambda: npb.ScoreFunction_ELBO(baseline="decaying_avg"),
        "rebar": lambda: npb.REBAR_ELBO(),
        "relax": lambda: npb.RELAX_ELBO(1, hidden_dim=4),
    }[name]()


def model(x):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    prior_logit = numpyro.param("prior_logit", jnp.full(LATENT, 0.3))
    weights = numpyro.param(
        "A", jnp.linspace(-1.0, 1.0, LATENT * OBSERVED).reshape(LATENT, OBSERVED)
    )
    with numpyro.plate("data", NUM_DATA, subsample_size=x.shape[0]):
        logits = jnp.broadcast_to(prior_logit, (x.shape[0], LATENT))
        b = numpyro.sample("b", dist.Bernoulli(logits=logits).to_event(1))
        numpyro.sample("x", dist.Normal(b @ weights, 1.0).to_event(1), obs=x)


def guide(x):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    encoder = numpyro.param(
        "V", jnp.linspace(0.5, -0.5, OBSERVED * LATENT).reshape(OBSERVED, LATENT)
    )
    bias = numpyro.param("c", jnp.full(LATENT, 0.1))
    with numpyro.plate("data", NUM_DATA, subsample_size=x.shape[0]):
        numpyro.sample("b", dist.Bernoulli(logits=x @ encoder + bias).to_event(1))


def minibatches(num_steps: int) -> np.ndarray:
    """(num_steps, BATCH, OBSERVED) minibatches of a fixed data set, the same everywhere."""
    rng = np.random.default_rng(1)
    data = rng.normal(size=(NUM_DATA, OBSERVED)).astype(DTYPE)
    return np.stack([data[rng.permutation(NUM_DATA)[:BATCH]] for _ in range(num_steps)])


def flat(tree, prefix: str) -> dict:
    """Leaves of a (nested) pytree as numpy arrays under readable names."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def train(name: str, num_steps: int, mesh=None, part=slice(None), record_at=()) -> dict:
    """``num_steps`` Adam steps; on ``mesh`` (data-parallel) or one device (``mesh=None``).

    Returns the final parameters, mutable state, losses and number of compilations, plus the
    parameters and state after each step count in ``record_at`` (under ``"<step>/"``).
    """
    import jax
    import numpyro

    import numpyro_backend as npb
    from numpyro_backend.infer import distributed

    batches = minibatches(num_steps)
    svi = npb.SVI(model, guide, numpyro.optim.Adam(0.05), loss=make_estimator(name))
    state = jax.jit(svi.init)(jax.random.PRNGKey(0), batches[0])  # one compilation, not eager
    if mesh is None:
        update, put = jax.jit(svi.update), jax.numpy.asarray
    else:
        state = distributed.replicate(state, mesh)
        update = distributed.data_parallel_update(svi, mesh)

        def put(batch):
            return distributed.shard_batch(batch[part], mesh)

    def snapshot(prefix: str) -> dict:
        return {
            **flat(svi.get_params(state), prefix + "param"),
            **flat(state.mutable_state or {}, prefix + "mutable"),
        }

    losses, out = [], {}
    for step, batch in enumerate(batches, 1):
        state, loss = update(state, put(batch))
        losses.append(float(loss))
        if step in record_at:
            out.update(snapshot(f"{step}/"))
    out.update(snapshot(""))
    out["losses"] = np.array(losses)
    out["compilations"] = np.array(update._cache_size())
    return out


def flatten(results: dict) -> dict:
    return {
        f"{run}|{key}": value for run, arrays in results.items() for key, value in arrays.items()
    }


def mixture_gradients(mesh) -> dict:
    """Data-parallel gradients of the catalogue's subsampled Categorical mixture on ``mesh``.

    Every device is a rank with its own subsample of the catalogue's size (4 of the 12
    points, drawn on the host), so the global minibatch is one subsample per device (the
    plate's scale 12 / global size makes the mean over ranks); an outer plate holds
    UNBIASED_DRAWS independent draws; the optimal baseline's running moments are carried
    from call to call. One SGD(lr=1) step of ``data_parallel_update`` from the catalogue's
    initial values: minus the parameter change is the gradient.
    """
    import jax
    import jax.numpy as jnp
    import numpyro
    import pyroapi
    from numpyro.handlers import substitute

    import numpyro_backend as npb
    from numpyro_backend.infer import distributed
    from tests.infer.models import CATEGORICAL_MIXTURE as entry

    ranks = mesh.devices.size
    data = {
        k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in entry.make_data().items()
    }
    subsample = data["subsample_size"]
    data["subsample_size"] = ranks * subsample
    init = {k: jnp.asarray(v) for k, v in entry.init_params.items()}
    num_data = data["x"].shape[0]
    rng = np.random.default_rng(0)

    def indices():
        parts = [rng.choice(num_data, subsample, replace=False) for _ in range(ranks)]
        return distributed.shard_batch(np.concatenate(parts), mesh)

    def drawn(fn):
        def program(idx):  # the plate's subsample is this call's sharded indices
            with numpyro.plate("draws", UNBIASED_DRAWS, dim=-2):
                substitute(fn, data={"data": idx})(data, init)

        return program

    with pyroapi.pyro_backend("numpyro_backend"):
        loss = npb.ScoreFunction_ELBO()
        svi = npb.SVI(drawn(entry.model), drawn(entry.guide), numpyro.optim.SGD(1.0), loss=loss)
        start = distributed.replicate(jax.jit(svi.init)(jax.random.PRNGKey(0), indices()), mesh)
        update = distributed.data_parallel_update(svi, mesh)
        initial, state = svi.get_params(start), start
        grads = {name: [] for name in entry.exact_grads}
        for _ in range(UNBIASED_CALLS):
            state, _ = update(state, indices())
            params = svi.get_params(state)
            for name, values in grads.items():
                values.append(np.asarray(initial[name] - params[name]) / UNBIASED_DRAWS)
            state = state._replace(optim_state=start.optim_state)  # back to the initial values
    return {name: np.stack(values) for name, values in grads.items()}


def run_mesh(path: str) -> None:
    import jax

    from numpyro_backend.infer import distributed

    assert jax.device_count() == DEVICES
    mesh = distributed.data_mesh()
    results = {}
    for name in ESTIMATORS:
        results[f"{name}/single"] = train(name, MESH_STEPS, record_at=(PROCESS_STEPS,))
        results[f"{name}/mesh"] = train(name, MESH_STEPS, mesh)
    results["unbiasedness"] = mixture_gradients(mesh)
    np.savez(path, **flatten(results))


def run_process(path: str, port: int, rank: int) -> None:
    import jax

    from numpyro_backend.infer import distributed

    distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=rank, timeout=60)
    mesh = distributed.data_mesh()
    assert mesh.devices.size == 2 and jax.process_count() == 2
    part = slice(rank * BATCH // 2, (rank + 1) * BATCH // 2)
    results = {name: train(name, PROCESS_STEPS, mesh, part) for name in PROCESS_ESTIMATORS}
    np.savez(path, **flatten(results))
    jax.distributed.shutdown()


# ---- fixtures: start the subprocesses -------------------------------------------------------


ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "data_parallel_svi.py"


def environment(devices: int) -> dict:
    env = dict(os.environ)
    env.update(
        # level 0: compiles 2x faster; every run of a test compiles the same way
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
        "--xla_backend_optimization_level=0",
        JAX_PLATFORMS="cpu",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    env["JAX_ENABLE_X64"] = "1" if DTYPE == np.float64 else "0"
    return env


def start(*args: str, devices: int) -> subprocess.Popen:
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    return subprocess.Popen(
        command, env=environment(devices), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> None:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output.decode()[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(path) -> dict:
    with np.load(path) as arrays:
        out: dict = {}
        for key in arrays.files:
            run, name = key.split("|")
            out.setdefault(run, {})[name] = arrays[key]
        return out


@pytest.fixture(scope="module")
def mesh_runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("mesh") / "runs.npz"
    finish(start("mesh", str(path), devices=DEVICES))
    return load(path)


@pytest.fixture(scope="module")
def process_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("processes")
    port = str(free_port())
    workers = [
        start("process", str(folder / f"rank{r}.npz"), port, str(r), devices=1) for r in (0, 1)
    ]
    for worker in workers:
        finish(worker)
    return [load(folder / f"rank{r}.npz") for r in (0, 1)]


# ---- the tests ------------------------------------------------------------------------------


def assert_close_relative(actual: dict, expected: dict, rtol: float) -> None:
    for key in expected:
        scale = np.maximum(np.abs(expected[key]), 1.0)  # relative, absolute near zero
        error = np.max(np.abs(actual[key] - expected[key]) / scale)
        assert error <= rtol, (key, error)


def state_of(run: dict, prefix: str = "") -> dict:
    """Parameters and mutable state of a run (after ``prefix`` steps if given)."""
    return {
        key[len(prefix) :]: value
        for key, value in run.items()
        if key.startswith(prefix + "param") or key.startswith(prefix + "mutable")
    }


@pytest.mark.parametrize("name", ESTIMATORS)
def test_mesh_run_equals_single_device_run(mesh_runs, name):
    # Same global batch, same key: the sharded program computes the single-device function;
    # only the order of the float64 sums over the plate differs. Measured after 50 steps:
    # at most 1e-15 (float32 runs of this test: at most 6.1e-7). Anything the partition
    # could change for real — a shard's noise, a per-shard baseline, a missing N/M scale —
    # moves the parameters by 1e-3 or more; 1e-10 lies between the two by 5 orders.
    single, mesh = mesh_runs[f"{name}/single"], mesh_runs[f"{name}/mesh"]
    assert state_of(single).keys() == state_of(mesh).keys()
    assert_close_relative(state_of(mesh), state_of(single), rtol=1e-10)
    assert_close_relative({"losses": mesh["losses"]}, {"losses": single["losses"]}, rtol=1e-10)
    if name.startswith("sf"):  # the running baseline is in the state and was updated
        running = [k for k in mesh if k.startswith("mutable['reparam_ext.b.baseline")]
        assert running and all(np.any(mesh[k] != 0) for k in running)
    else:
        assert "param['reparam_ext.b.eta']" in mesh


@pytest.mark.parametrize("name", ESTIMATORS)
def test_mesh_update_compiles_once(mesh_runs, name):
    assert int(mesh_runs[f"{name}/mesh"]["compilations"]) == 1


@pytest.mark.parametrize("name", ESTIMATORS)
def test_training_decreases_the_loss(mesh_runs, name):
    # −ELBO estimates of single minibatches are noisy (sd ≈ 2-4 nats here); the mean of the
    # last 10 steps against the first 10 (measured drop: see the assertion message) must
    # fall by more than 3 such standard errors (3 · 4 / √10 ≈ 4 nats).
    losses = mesh_runs[f"{name}/mesh"]["losses"]
    first, last = losses[:10].mean(), losses[-10:].mean()
    assert last < first - 4.0, (first, last)


def test_data_parallel_gradient_is_unbiased_on_the_subsampled_mixture(mesh_runs):
    # 30 independent estimates on the 4-device mesh (each device its own subsample of 4 of
    # the 12 points, 256 draws; the running baseline depends only on earlier calls, so the
    # deviations are martingale differences) against the catalogue's exact full-data
    # gradient. Threshold: Bonferroni over the 18 coordinates on t with 29 degrees of freedom
    # at a false-alarm rate of 1e-3 (tests/stats.py) — about 5 SE.
    from tests.infer.models import CATEGORICAL_MIXTURE
    from tests.stats import MeanEstimate, max_abs_z, num_coordinates, z_threshold

    estimates = mesh_runs["unbiasedness"]
    means = {name: MeanEstimate.from_samples(values) for name, values in estimates.items()}
    assert set(means) == set(CATEGORICAL_MIXTURE.exact_grads)
    threshold = z_threshold(num_coordinates(means), UNBIASED_CALLS - 1)
    z, where = max_abs_z(means, CATEGORICAL_MIXTURE.exact_grads)
    assert z < threshold, f"|z| = {z:.2f} at {where} (threshold {threshold:.2f})"


@pytest.mark.parametrize("name", PROCESS_ESTIMATORS)
def test_processes_hold_bitwise_equal_state(process_runs, name):
    ranks = [process_runs[r][name] for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)


@pytest.mark.parametrize("name", PROCESS_ESTIMATORS)
def test_two_processes_equal_one_device(process_runs, mesh_runs, name):
    # each process fed half of every minibatch; the global program is the one-device one
    # (tolerance: as in test_mesh_run_equals_single_device_run)
    single = state_of(mesh_runs[f"{name}/single"], f"{PROCESS_STEPS}/")
    assert_close_relative(state_of(process_runs[0][name]), single, rtol=1e-10)


def test_example_with_two_workers_ends_with_bitwise_equal_parameters(tmp_path):
    # the example end to end from the command line: 2 jax.distributed processes, a few steps, --out
    # (--pin-cpu: each process pinned to its own core, initialize(pin_cpu=True))
    command = [sys.executable, str(EXAMPLE), "--backend", "numpyro", "--workers", "2"]
    command += ["--estimator", "sf-optimal", "--steps", "3", "--hidden", "16", "--pin-cpu"]
    # XLA's optimizations off: compiling dominates these 3 steps (as in ``environment``)
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_backend_optimization_level=0",
    )
    done = subprocess.run(
        [*command, "--out", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("step ") == 3  # progress from rank 0 only
    ranks = [np.load(tmp_path / f"params_rank{r}.npz") for r in (0, 1)]
    assert ranks[0].files == ranks[1].files
    assert {"reparam_ext.z.baseline_fs2", "reparam_ext.z.baseline_s2"} <= set(ranks[0].files)
    for name in ranks[0].files:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=name)
    for r in (0, 1):
        losses = np.load(tmp_path / f"losses_rank{r}.npy")
        assert losses.shape == (3,) and np.all(np.isfinite(losses))


def test_shard_batch_checks_its_arguments():
    import jax

    from numpyro_backend.infer import distributed

    mesh = distributed.data_mesh()  # this process: one device
    batch = distributed.shard_batch({"x": np.zeros((3, 2))}, mesh)
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    with pytest.raises(ValueError, match="axis"):
        distributed.shard_batch(np.zeros(3), mesh, axis=1)
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=-1)
    with pytest.raises(ValueError, match="coordinator_address"):
        distributed.initialize("127.0.0.1", num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="devices"):
        distributed.data_mesh([])
    with pytest.raises(ValueError, match="index"):
        distributed.pin_to_cpu(-1)


def test_launch_errors_are_one_line_and_do_not_hang():
    # Both fail in the Python rendezvous that precedes jax.distributed.initialize (which
    # would abort the process with a C++ stack trace), so they are safe in the test process.
    import threading

    from numpyro_backend.infer import distributed

    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError, match="1 of 2 processes arrived") as info:
        distributed.initialize(address, num_processes=2, process_id=0, timeout=0.5)
    assert "\n" not in str(info.value)

    errors = {}

    def join(num_processes, process_id):
        try:
            distributed.initialize(
                address, num_processes=num_processes, process_id=process_id, timeout=10
            )
        except RuntimeError as error:
            errors[process_id] = str(error)

    threads = [threading.Thread(target=join, args=args) for args in ((2, 0), (3, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(errors) == [0, 1]
    assert all("num_processes=3" in message for message in errors.values())


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "mesh":
        run_mesh(rest[0])
    else:
        run_process(rest[0], int(rest[1]), int(rest[2]))
