"""Data-parallel SVI on torch.distributed: two gloo ranks on 127.0.0.1, started once.

One ``torch.multiprocessing.spawn`` of two workers (module fixture ``runs``) runs every
scenario and saves what each rank holds; the tests compare the ranks with each other and with
a single-process reference computed here. The model: a binary latent b ∈ {0,1}² per data
point, x | b ~ Normal(b A, 1) in a subsampled plate (N = 16, a minibatch of 8 split 4 + 4),
an amortized Bernoulli guide. Its exact −ELBO is a sum over the 4 values of b per point.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pyroapi
import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp
from pyro.infer import SVI

import pyro_reparam_ext as pre
from pyro_reparam_ext.infer import distributed
from tests.infer.models import CATEGORICAL_MIXTURE
from tests.infer.pyro_helpers import param_leaf, torch_inputs, with_draws
from tests.stats import MeanEstimate, max_abs_z, num_coordinates, z_threshold

NUM_DATA, SHARD, LATENT, OBSERVED = 16, 4, 2, 3
WORLD = 2
STEPS = 20
DECAY = 0.5
#: data-parallel gradient estimates of the subsampled mixture, each the mean of DRAWS draws
UNBIASED_CALLS, UNBIASED_DRAWS = 30, 256
ESTIMATORS = {
    "sf_optimal": lambda: pre.ScoreFunction_ELBO(baseline="optimal"),
    "sf_decaying_avg": lambda: pre.ScoreFunction_ELBO(baseline="decaying_avg"),
    "rebar": lambda: pre.REBAR_ELBO(),
    "relax": lambda: pre.RELAX_ELBO(2, hidden_dim=4),
}


def make_data() -> torch.Tensor:
    return torch.randn(NUM_DATA, OBSERVED, generator=torch.Generator().manual_seed(1))


def minibatch(step: int) -> torch.Tensor:
    """The step's minibatch indices (the same on every rank): 8 of the N points."""
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randperm(NUM_DATA, generator=generator)[: WORLD * SHARD]


def model(x, idx):
    prior_logit = pyro.param("prior_logit", lambda: 0.1 * torch.randn(LATENT))
    weights = pyro.param("A", lambda: torch.randn(LATENT, OBSERVED))
    with pyro.plate("data", NUM_DATA, subsample=idx):
        logits = prior_logit.expand(len(idx), LATENT)
        b = pyro.sample("b", dist.Bernoulli(logits=logits).to_event(1))
        pyro.sample("x", dist.Normal(b @ weights, 1.0).to_event(1), obs=x[idx])


def guide(x, idx):
    encoder = pyro.param("V", lambda: 0.1 * torch.randn(OBSERVED, LATENT))
    bias = pyro.param("c", lambda: torch.zeros(LATENT))
    with pyro.plate("data", NUM_DATA, subsample=idx):
        pyro.sample("b", dist.Bernoulli(logits=x[idx] @ encoder + bias).to_event(1))


def fixed_init() -> None:
    """Deterministic parameter values, identical on every rank and in the reference."""
    pyro.param("prior_logit", torch.tensor([0.3, -0.2]))
    pyro.param("A", torch.linspace(-1.0, 1.0, LATENT * OBSERVED).reshape(LATENT, OBSERVED))
    pyro.param("V", torch.linspace(0.5, -0.5, OBSERVED * LATENT).reshape(OBSERVED, LATENT))
    pyro.param("c", torch.tensor([0.1, -0.1]))


def exact_loss(params: dict, x: torch.Tensor) -> float:
    """−ELBO on all N points by enumerating b ∈ {0,1}² (the tests' noise-free yardstick)."""
    total = 0.0
    q_logits = x @ params["V"] + params["c"]
    for b in itertools.product([0.0, 1.0], repeat=LATENT):
        b = torch.tensor(b)
        log_q = dist.Bernoulli(logits=q_logits).log_prob(b).sum(-1)
        log_p = dist.Bernoulli(logits=params["prior_logit"]).log_prob(b).sum(-1)
        log_p = log_p + dist.Normal(b @ params["A"], 1.0).log_prob(x).sum(-1)
        total = total + (log_q.exp() * (log_p - log_q)).sum()
    return -float(total)


# ---- the workers ----------------------------------------------------------------------------


def shard(idx: torch.Tensor, rank: int) -> torch.Tensor:
    return idx[rank * SHARD : (rank + 1) * SHARD]


def store_values() -> dict:
    return {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}


def run_gradient_check(rank: int, x) -> dict:
    """One SGD(lr=1) step from fixed values: the parameter change is minus the averaged gradient."""
    pyro.clear_param_store()
    fixed_init()
    before = store_values()
    distributed.seed_per_rank(0)
    traced_guide = poutine.trace(guide)
    loss = pre.ScoreFunction_ELBO(baseline="decaying_avg", baseline_decay=DECAY)
    optim = distributed.DistributedOptimizer(pyro.optim.SGD({"lr": 1.0}))
    SVI(model, traced_guide, optim, loss=loss).step(x, shard(minibatch(0), rank))
    after = store_values()
    return {
        "grads": {k: before[k] - after[k] for k in ("prior_logit", "A", "V", "c")},
        "b": traced_guide.trace.nodes["b"]["value"].clone(),
        "baseline": after["reparam_ext.b.baseline_avg"],
    }


def run_estimator(rank: int, x, name: str) -> dict:
    """20 Adam steps with random, rank-dependent initial values (broadcast when first seen)."""
    pyro.clear_param_store()
    distributed.seed_per_rank(1)
    idx = shard(minibatch(0), rank)
    with poutine.block():  # create the parameters here, each rank with its own values
        guide(x, idx)
        model(x, idx)
    initial = store_values()
    optim = distributed.DistributedOptimizer(pyro.optim.Adam({"lr": 0.05}))
    svi = SVI(model, guide, optim, loss=ESTIMATORS[name]())
    losses = [svi.step(x, shard(minibatch(step), rank)) for step in range(STEPS)]
    return {"initial": initial, "final": store_values(), "losses": losses}


def run_module(rank: int, x, name: str, use_ddp: bool) -> dict:
    """The module path: ELBOModule + DistributedDataParallel or the explicit all-reduce."""
    pyro.clear_param_store()
    distributed.seed_per_rank(2)
    with pyro.settings.context(module_local_params=True):
        loss_fn = ESTIMATORS[name]()(model, guide)
        loss_fn(x, shard(minibatch(0), rank))  # creates the lazily initialized state
        if use_ddp:
            trainer = torch.nn.parallel.DistributedDataParallel(loss_fn)
        else:
            distributed.broadcast_module(loss_fn)
            trainer = loss_fn
        optim = torch.optim.Adam(loss_fn.parameters(), lr=0.05)
        for step in range(STEPS):
            optim.zero_grad()
            trainer(x, shard(minibatch(step), rank)).backward()
            if not use_ddp:
                distributed.all_reduce_gradients(loss_fn.parameters())
            optim.step()
    return {
        "parameters": [n for n, _ in loss_fn.named_parameters()],
        "buffers": [n for n, _ in loss_fn.named_buffers()],
        "state": {k: v.detach().clone() for k, v in loss_fn.state_dict().items()},
        "global_store": list(pyro.get_param_store().keys()),
    }


def run_resume(rank: int, x, path: str) -> dict:
    """Rank 0 saves the param store and optimizer after 10 steps; both ranks resume from it."""
    pyro.clear_param_store()
    distributed.seed_per_rank(3)
    optim = distributed.DistributedOptimizer(pyro.optim.Adam({"lr": 0.05}))
    # an explicit max_plate_nesting: guessing it runs the guide, which would draw noise
    svi = SVI(model, guide, optim, loss=pre.ScoreFunction_ELBO(max_plate_nesting=1))
    for step in range(STEPS // 2):
        svi.step(x, shard(minibatch(step), rank))
    if rank == 0:
        pyro.get_param_store().save(f"{path}/store.pt")
        optim.save(f"{path}/optim.pt")
    rng_state = torch.get_rng_state()  # this rank's noise stream (the model draws with torch)
    torch.distributed.barrier()  # the files are written
    for step in range(STEPS // 2, STEPS):
        svi.step(x, shard(minibatch(step), rank))
    uninterrupted = store_values()

    pyro.clear_param_store()
    pyro.get_param_store().load(f"{path}/store.pt")
    optim = distributed.DistributedOptimizer(pyro.optim.Adam({"lr": 0.05}))
    optim.load(f"{path}/optim.pt")
    torch.set_rng_state(rng_state)
    svi = SVI(model, guide, optim, loss=pre.ScoreFunction_ELBO(max_plate_nesting=1))
    for step in range(STEPS // 2, STEPS):
        svi.step(x, shard(minibatch(step), rank))
    return {"uninterrupted": uninterrupted, "resumed": store_values()}


def run_mismatch(rank: int) -> str:
    """Rank 1 steps one parameter more than rank 0: both ranks must raise, not hang."""
    pyro.clear_param_store()
    params = [pyro.param("shared", torch.zeros(2))]
    if rank == 1:
        params.append(pyro.param("extra", torch.zeros(2)))
    for p in params:
        p.unconstrained().grad = torch.ones(2)
    optim = distributed.DistributedOptimizer(pyro.optim.SGD({"lr": 1.0}))
    try:
        optim([p.unconstrained() for p in params])
    except ValueError as error:
        return str(error)
    return ""


def run_layout_changes(rank: int) -> dict:
    """Steps of a bare DistributedOptimizer whose parameters change between steps.

    Every rank starts each parameter at its own value (its rank). Step 1 is checked and
    broadcasts; step 2 is one all-reduce; step 3 adds the parameter "late" on both ranks, so it
    is checked afresh and "late" is broadcast; at step 4 only rank 1 adds "extra".
    """
    pyro.clear_param_store()
    optim = distributed.DistributedOptimizer(pyro.optim.SGD({"lr": 1.0}))

    def step(*names):
        params = [
            pyro.param(n, lambda: torch.full((2,), float(rank))).unconstrained() for n in names
        ]
        for p in params:
            p.grad = torch.ones(2)
        return count_collectives(lambda: optim(params))

    counts = [step("shared"), step("shared"), step("shared", "late")]
    values = store_values()
    try:
        step("shared", "late", *(["extra"] if rank == 1 else []))
        mismatch = ""
    except ValueError as error:
        mismatch = str(error)
    return {"counts": counts, "values": values, "mismatch": mismatch}


def run_unbiasedness(rank: int) -> dict:
    """Data-parallel gradients of the catalogue's subsampled Categorical mixture.

    Each rank runs the catalogue's model and guide (a plate of 12 points subsampled to 4: every
    rank draws its own subsample and its own latents) inside an outer plate of UNBIASED_DRAWS
    independent draws, with the optimal baseline (running moments, averaged across ranks).
    One DistributedOptimizer SGD(lr=1) step from the catalogue's initial values: minus the
    parameter change is the ranks' averaged gradient; the parameters are then reset, the
    running moments carried on as in training.
    """
    entry = CATEGORICAL_MIXTURE
    pyro.clear_param_store()
    distributed.seed_per_rank(4)
    data, init = torch_inputs(entry)
    start = {name: value.clone() for name, value in init.items()}  # the store adopts ``init``
    nesting = entry.max_plate_nesting + 1
    model = with_draws(entry.model, UNBIASED_DRAWS, -nesting)
    guide = with_draws(entry.guide, UNBIASED_DRAWS, -nesting)
    optim = distributed.DistributedOptimizer(pyro.optim.SGD({"lr": 1.0}))
    loss = pre.ScoreFunction_ELBO(max_plate_nesting=nesting)
    grads = {name: [] for name in entry.exact_grads}
    with pyroapi.pyro_backend("pyro_reparam_ext"):
        svi = SVI(model, guide, optim, loss=loss)
        for _ in range(UNBIASED_CALLS):
            svi.step(data, init)
            for name, values in grads.items():
                leaf = param_leaf(name)
                values.append((start[name] - leaf.detach()).numpy() / UNBIASED_DRAWS)
                with torch.no_grad():
                    leaf.copy_(start[name])
    return {name: np.stack(values) for name, values in grads.items()}


def count_collectives(fn) -> dict:
    """Run ``fn()`` and count the torch.distributed collectives it calls, by kind."""
    counts = {}
    originals = {
        n: getattr(torch.distributed, n) for n in ("all_reduce", "all_gather", "broadcast")
    }

    def counting(name):
        def call(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return originals[name](*args, **kwargs)

        return call

    try:
        for name in originals:
            setattr(torch.distributed, name, counting(name))
        fn()
    finally:
        for name, original in originals.items():
            setattr(torch.distributed, name, original)
    return counts


def run_collective_counts(rank: int, x) -> dict:
    """Collectives in one SVI step after the first, and in one module forward (sf-optimal).

    The loss updates two running statistics (the optimal baseline's moments); they must ride
    in the optimizer's gradient all-reduce, resp. one all-reduce at the end of the forward.
    """
    pyro.clear_param_store()
    fixed_init()
    optim = distributed.DistributedOptimizer(pyro.optim.Adam({"lr": 0.05}))
    svi = SVI(model, guide, optim, loss=pre.ScoreFunction_ELBO(baseline="optimal"))
    svi.step(x, shard(minibatch(0), rank))
    svi_step = count_collectives(lambda: svi.step(x, shard(minibatch(1), rank)))
    pyro.clear_param_store()
    with pyro.settings.context(module_local_params=True):
        loss_fn = pre.ScoreFunction_ELBO(baseline="optimal")(model, guide)
        loss_fn(x, shard(minibatch(0), rank))
        forward = count_collectives(lambda: loss_fn(x, shard(minibatch(1), rank)))
    return {"svi_step": svi_step, "module_forward": forward}


def thread_cores() -> list[set]:
    """The cores each thread of this process may run on."""
    return [os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")]


def run_pinned(rank: int, x, port: int) -> dict:
    """A fresh process group with ``pin_cpu=True`` (threads pinned, all-reduces polled): the
    sf-optimal run of ``run_estimator`` again, and every thread's cores."""
    torch.distributed.destroy_process_group()
    distributed.initialize(f"127.0.0.1:{port}", num_processes=WORLD, process_id=rank, pin_cpu=True)
    return {"estimator": run_estimator(rank, x, "sf_optimal"), "cores": thread_cores()}


def worker(rank: int, port: int, path: str, pinned_port: int) -> None:
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    pyro.enable_validation(True)
    distributed.initialize(f"127.0.0.1:{port}", num_processes=WORLD, process_id=rank, timeout=60)
    x = make_data()
    distributed.seed_per_rank(0)
    out = {"noise": torch.rand(8), "gradient_check": run_gradient_check(rank, x)}
    out["estimators"] = {name: run_estimator(rank, x, name) for name in ESTIMATORS}
    out["module"] = {
        "sf_optimal_ddp": run_module(rank, x, "sf_optimal", use_ddp=True),
        "relax_all_reduce": run_module(rank, x, "relax", use_ddp=False),
        "relax_ddp": run_module(rank, x, "relax", use_ddp=True),
    }
    out["resume"] = run_resume(rank, x, path)
    out["mismatch"] = run_mismatch(rank)
    out["layout_changes"] = run_layout_changes(rank)
    out["collectives"] = run_collective_counts(rank, x)
    out["unbiasedness"] = run_unbiasedness(rank)
    out["pinned"] = run_pinned(rank, x, pinned_port)
    torch.save(out, f"{path}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("distributed_pyro")
    mp.spawn(worker, args=(free_port(), str(path), free_port()), nprocs=WORLD, join=True)
    return [torch.load(path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ---- the tests ------------------------------------------------------------------------------


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_gradient_equals_full_batch_gradient_with_the_same_noise(runs):
    # Reference: one process, the whole minibatch of 8, the ranks' sampled b replayed. With
    # decaying_avg's zero initial state the estimate is a deterministic function of b, so the
    # averaged shard gradients must equal it up to rounding (float64).
    for r in range(WORLD):
        assert_bitwise_equal(runs[r]["gradient_check"]["grads"], runs[0]["gradient_check"]["grads"])
    b = torch.cat([runs[r]["gradient_check"]["b"] for r in range(WORLD)])
    replayed = poutine.Trace()
    replayed.add_node("b", name="b", type="sample", value=b, is_observed=False, infer={})
    fixed_init()
    loss = pre.ScoreFunction_ELBO(baseline="decaying_avg", baseline_decay=DECAY)
    loss.loss_and_grads(model, poutine.replay(guide, trace=replayed), make_data(), minibatch(0))
    store = pyro.get_param_store()
    for name, grad in runs[0]["gradient_check"]["grads"].items():
        expected = store.get_param(name).unconstrained().grad
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    # running state: every rank holds (1 − d)·(mean over ranks of its per-point reward). A
    # rank's rewards carry the plate scale N/4, the reference's N/8, so the ranks' state is
    # 2 · ½ · (sum of the two halves of the reference's per-point state)
    reference = store.get_param("reparam_ext.b.baseline_avg").detach()
    expected = reference[:SHARD] + reference[SHARD:]
    for r in range(WORLD):
        torch.testing.assert_close(
            runs[r]["gradient_check"]["baseline"], expected, rtol=1e-12, atol=0
        )


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_parameters_and_running_state_bitwise_equal_across_ranks(runs, name):
    ranks = [runs[r]["estimators"][name] for r in range(WORLD)]
    # the ranks started from different random values: the broadcast made them agree
    assert not torch.equal(ranks[0]["initial"]["A"], ranks[1]["initial"]["A"])
    assert_bitwise_equal(ranks[0]["final"], ranks[1]["final"])
    state = set(ranks[0]["final"])
    if name.startswith("sf"):
        running = "baseline_avg" if name == "sf_decaying_avg" else "baseline_fs2"
        assert f"reparam_ext.b.{running}" in state
    else:
        assert {"reparam_ext.b.eta", "reparam_ext.b.log_temperature"} <= state
    # the estimator state moved (it is trained / updated, not left at its initial value)
    moved = [k for k in state if k.startswith("reparam_ext.") and k in ranks[0]["initial"]]
    assert all(not torch.equal(ranks[0]["final"][k], ranks[0]["initial"][k]) for k in moved)


def test_data_parallel_gradient_is_unbiased_on_the_subsampled_mixture(runs):
    # 30 independent data-parallel estimates (2 ranks, each its own subsample of 4 of the 12
    # points and 256 draws; the running baseline depends only on earlier calls, so the
    # deviations are martingale differences) against the exact full-data gradient of the
    # catalogue. Threshold: Bonferroni over the 18 coordinates on t with 29 degrees of freedom
    # at a false-alarm rate of 1e-3 (tests/stats.py) — about 5 SE.
    estimates = runs[0]["unbiasedness"]
    for r in range(WORLD):  # the averaged gradient is the same on every rank
        for name, values in runs[r]["unbiasedness"].items():
            np.testing.assert_array_equal(values, estimates[name])
    means = {name: MeanEstimate.from_samples(values) for name, values in estimates.items()}
    threshold = z_threshold(num_coordinates(means), UNBIASED_CALLS - 1)
    z, where = max_abs_z(means, CATEGORICAL_MIXTURE.exact_grads)
    assert z < threshold, f"|z| = {z:.2f} at {where} (threshold {threshold:.2f})"


def test_noise_differs_per_rank(runs):
    assert not torch.equal(runs[0]["noise"], runs[1]["noise"])
    assert not torch.equal(runs[0]["gradient_check"]["b"], runs[1]["gradient_check"]["b"])


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_training_decreases_the_exact_loss(runs, name):
    # Exact −ELBO on all 16 points (enumeration, no noise) before and after 20 steps. The
    # initial A ~ N(0, 1) is far from the data's, so the drop is large (measured 3-12 nats,
    # see the numbers in the assertion message) next to the 1-nat margin required.
    x = make_data()
    ranks = runs[0]["estimators"][name]
    start = {k: v for k, v in runs[0]["estimators"][name]["initial"].items()}
    before, after = exact_loss(start, x), exact_loss(ranks["final"], x)
    assert after < before - 1.0, (before, after)


def test_module_path_owns_the_estimator_state(runs):
    relax = runs[0]["module"]["relax_all_reduce"]
    state = "estimator_state."
    assert {state + "reparam_ext_b_eta", state + "reparam_ext_b_log_temperature"} <= set(
        relax["parameters"]
    )
    assert any(n.startswith(state + "reparam_ext_relax_b") for n in relax["parameters"])
    assert {state + n for n in ("A", "V", "c", "prior_logit")} <= set(relax["parameters"])
    score = runs[0]["module"]["sf_optimal_ddp"]
    assert {state + "reparam_ext_b_baseline_fs2", state + "reparam_ext_b_baseline_s2"} == set(
        score["buffers"]
    )
    assert score["global_store"] == relax["global_store"] == []  # nothing leaked


@pytest.mark.parametrize("case", ["sf_optimal_ddp", "relax_all_reduce", "relax_ddp"])
def test_module_path_state_bitwise_equal_across_ranks(runs, case):
    assert_bitwise_equal(runs[0]["module"][case]["state"], runs[1]["module"][case]["state"])


def test_relax_under_ddp_matches_the_explicit_all_reduce(runs):
    # Our REBAR/RELAX take the variance gradient inside the loss (torch.autograd.grad) and
    # return a first-order loss, so DDP's single backward suffices. DDP pre-divides each
    # gradient by the world size before summing, the explicit all-reduce divides the sum:
    # equal up to rounding, which 20 Adam steps keep at the 1e-12 level.
    explicit = runs[0]["module"]["relax_all_reduce"]["state"]
    ddp = runs[0]["module"]["relax_ddp"]["state"]
    for key in explicit:
        torch.testing.assert_close(ddp[key], explicit[key], rtol=1e-9, atol=1e-12)


def test_resuming_from_rank_0_checkpoint_continues_identically(runs):
    # the saved param store holds the running baselines too; the optimizer state and each
    # rank's random state are restored, so the resumed run is bitwise the uninterrupted one
    for r in range(WORLD):
        assert any(".baseline_" in k for k in runs[r]["resume"]["resumed"])
        assert_bitwise_equal(runs[r]["resume"]["resumed"], runs[r]["resume"]["uninterrupted"])
    assert_bitwise_equal(runs[0]["resume"]["resumed"], runs[1]["resume"]["resumed"])


def test_running_statistics_ride_in_one_all_reduce(runs):
    # one SVI step after the first: one all-reduce holding the gradients, both running moments
    # and the flag that replaces the parameter check; one module forward: one all-reduce for
    # both moments
    for r in range(WORLD):
        assert runs[r]["collectives"]["svi_step"] == {"all_reduce": 1}
        assert runs[r]["collectives"]["module_forward"] == {"all_reduce": 1}


def test_pinned_ranks_poll_and_step_exactly_as_unpinned(runs):
    # initialize(pin_cpu=True): every thread of rank r (gloo's included) on core r (mod the
    # cores available), and the polled all-reduces change nothing: the same 20 steps from the
    # same seeds end bitwise where the default run ended
    cores = sorted(os.sched_getaffinity(0))
    for r in range(WORLD):
        pinned = runs[r]["pinned"]
        assert all(c == {cores[r % len(cores)]} for c in pinned["cores"]), pinned["cores"]
        assert_bitwise_equal(
            pinned["estimator"]["final"], runs[r]["estimators"]["sf_optimal"]["final"]
        )


def test_mismatched_parameters_raise_on_every_rank(runs):
    for r in range(WORLD):
        assert "the ranks step different parameters" in runs[r]["mismatch"]


def test_changed_parameters_are_checked_and_broadcast_again(runs):
    # step 1: check, broadcast, all-reduce; step 2: one all-reduce; step 3 ("late" added on both
    # ranks): the flagged all-reduce of step 2's sizes, check, broadcast, all-reduce
    first = {"all_gather": 1, "broadcast": 1, "all_reduce": 1}
    for r in range(WORLD):
        changes = runs[r]["layout_changes"]
        assert changes["counts"] == [first, {"all_reduce": 1}, dict(first, all_reduce=2)]
        # rank 0's initial values everywhere (0), then SGD(lr=1) steps on gradients of 1
        expected = {"shared": torch.full((2,), -3.0), "late": torch.full((2,), -1.0)}
        assert_bitwise_equal(changes["values"], expected)
        # step 4: only rank 1 adds "extra": a ValueError on both ranks, no abort
        assert "the ranks step different parameters" in changes["mismatch"]


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data_parallel_svi.py"


def test_example_with_two_workers_ends_with_bitwise_equal_parameters(tmp_path):
    # the example end to end from the command line: 2 gloo ranks, a few steps, --out
    command = [sys.executable, str(EXAMPLE), "--backend", "pyro", "--workers", "2"]
    command += ["--estimator", "sf-optimal", "--steps", "3", "--hidden", "16"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
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


def test_bad_launch_settings():
    with pytest.raises(ValueError, match="process_id"):
        distributed.initialize("127.0.0.1:1", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="num_processes"):
        distributed.initialize("127.0.0.1:1", num_processes=0, process_id=0)
    with pytest.raises(ValueError, match="coordinator_address"):
        distributed.initialize("localhost", num_processes=1, process_id=0)
    with pytest.raises(ValueError, match="pyro_optim"):
        distributed.DistributedOptimizer(torch.optim.SGD)
    with pytest.raises(ValueError, match="index"):
        distributed.pin_to_cpu(-1)


def test_rendezvous_timeout_is_one_line_error():
    with pytest.raises(RuntimeError, match="could not join the process group") as info:
        distributed.initialize(f"127.0.0.1:{free_port()}", num_processes=2, process_id=0, timeout=1)
    assert "\n" not in str(info.value)
    assert not torch.distributed.is_initialized()


def test_single_process_is_a_no_op():
    # without torch.distributed the helpers change nothing and the optimizer is the wrapped one
    state = torch.tensor([1.0, 2.0])
    distributed.average_running_state(state)
    assert torch.equal(state, torch.tensor([1.0, 2.0]))
    assert not distributed.is_distributed()
    p = pyro.param("p", torch.tensor([1.0, -1.0])).unconstrained()
    p.grad = torch.tensor([0.5, 0.25])
    distributed.DistributedOptimizer(pyro.optim.SGD({"lr": 1.0}))([p])
    assert torch.equal(p.detach(), torch.tensor([0.5, -1.25]))
