"""The DisARM benchmark protocol, scaled to this machine, for every estimator on both backends.

Protocol (after google-research ``disarm/binary``, Dong et al. 2020, scaled down): binarized
scikit-learn digits (64 pixels, the examples' fixed train/test split: 1437 / 359 images), three
variational autoencoders, batch 50, Adam:

- ``linear``: D = 32 Bernoulli latents, one linear layer each way;
- ``nonlinear``: D = 32 Bernoulli latents, two hidden layers of 64 LeakyReLU(0.3) units each
  way;
- ``categorical``: 8 latents × 8 classes (OneHotCategorical), the nonlinear architecture.

Uniform prior; the encoder sees the demeaned image; the decoder's output bias starts at the
training data's marginal logits. Every estimator is compared at an equal number of model
evaluations per data point, E ∈ {2, 4} (one evaluation = one decoder pass and log-joint for
one latent draw):

================================  ==============================  ========================
estimator                         particles at budget E           evaluations
================================  ==============================  ========================
Trace_ELBO (Pyro; REINFORCE)      K = E                           K
TraceGraph_ELBO (stock)           K = E                           K
ScoreFunction_ELBO optimal / loo  K = E                           K
DisARM_ELBO (Bernoulli only)      n = E coupled copies            n
IWAE_ELBO (VIMCO)                 K = E                           K
REBAR_ELBO / RELAX_ELBO           K = 1, ``coordinatewise=False``  3 (f(b), f(σ(z)), f(σ(z̃)));
                                                                  at E = 4 only
Concrete / straight-through etc.  K = E, Trace_ELBO               K
================================  ==============================  ========================

The library's default coordinate-wise REBAR/RELAX costs 1 + 2·D evaluations per particle
(65 at D = 32), so it has no place at E ≤ 4: its step time is measured separately (the
``step time`` table, K = 2, against TraceGraph_ELBO).

Recorded per model, budget, backend and estimator: the encoder-gradient variance
(``gradient_variance``'s total variance over ``--variance-samples`` estimates on one fixed
batch of 50) at fixed checkpoints of one *shared* training run (Pyro,
``ScoreFunction_ELBO(loo)`` at the largest budget; the same parameters are loaded on both
backends; estimator state such as running baselines and REBAR/RELAX's η, λ, ρ is warmed up for
``--warmup`` steps by an optimizer that moves only that state) and along the estimator's *own*
run; the 100-sample importance-weighted test bound against steps and against training
time; steps per CPU second. Time is CPU time of the process (``time.process_time``; the
wall-clock is recorded alongside): on a machine shared with other jobs the wall-clock
measures the load, the CPU time the estimator. NumPyro is jitted: the first, compiling call
is reported as ``compile_s`` and left out of both clocks and of steps/s; on Pyro the first
step, one-off set-up, is treated the same way. Relaxations use temperature 0.5 (ReinMax
1.0), fixed. ``--quick`` runs NumPyro on the linear model only (compiling every estimator
for every model takes minutes; ``--numpyro-models`` chooses); the full run does every model
on both backends. ``--jobs`` (default 2, one per core) splits the models between processes
and merges their results.

    python benchmarks/protocol.py --quick     # make bench (short; minutes)
    python benchmarks/protocol.py             # make bench-full (the whole protocol)

Quick settings: 80 steps, checkpoints 0/40/80, 20 gradient samples per variance, 20
warm-up steps; full: 2000 steps, checkpoints 0/500/…/2000, 100 samples, 100 warm-up steps
(measured: 27.2 min on 2 cores, 39.6 CPU-min). The tables
give each variance ratio's standard error (``ratio_se``, from the spread of the samples'
squared deviations, so heavy tails show) and the median relative SE of the run.

writes ``benchmarks/results/protocol.md``, ``protocol.json`` and ``protocol_<model>_E<E>.png``
(``--quick``: ``protocol_quick.*``, left out of the README tables, so ``make bench`` keeps the
results of ``make bench-full``).
Torch on one intra-op thread; float32 on both backends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS_DIR, machine_info, markdown_table  # noqa: E402
from examples.common import (  # noqa: E402
    load_binarized_digits,
    pyplot,
    pyro_running_state_kept,
)

BACKENDS = {"pyro": "pyro_reparam_ext", "numpyro": "numpyro_backend"}
BATCH_SIZE = 50
TEST_SAMPLES = 100
TEMPERATURE = 0.5
REFERENCE = "TraceGraph_ELBO"  # variance ratios are against Pyro's decaying-average version
SHARED_RUN = ("pyro", "ScoreFunction_ELBO(loo)")  # trains the shared run, at the largest E


@dataclass(frozen=True)
class ModelSpec:
    """One protocol model: ``latents`` variables of ``classes`` classes (1: Bernoulli)."""

    name: str
    latents: int
    classes: int
    hidden: tuple[int, ...]

    @property
    def family(self) -> str:
        return "bernoulli" if self.classes == 1 else "categorical"

    @property
    def latent_size(self) -> int:
        """Numbers the decoder reads per data point (one-hot for categorical latents)."""
        return self.latents * self.classes


MODELS = {
    "linear": ModelSpec("linear", 32, 1, ()),
    "nonlinear": ModelSpec("nonlinear", 32, 1, (64, 64)),
    "categorical": ModelSpec("categorical", 8, 8, (64, 64)),
}


@dataclass(frozen=True)
class Estimator:
    """One row of the comparison: how to build it on a backend and what it costs."""

    name: str
    make: Callable  # (backend, pkg, particles) -> ELBO
    relaxation: str = "none"  # the guide's latent: "none" (discrete) or a relaxation
    families: tuple[str, ...] = ("bernoulli", "categorical")
    backends: tuple[str, ...] = ("pyro", "numpyro")
    evals_per_particle: int = 1
    min_budget: int = 1
    stateful: bool = False  # running baselines / learned control variates to warm up

    def particles(self, budget: int) -> int:
        return budget // self.evals_per_particle

    def available(self, family: str, backend: str, budget: int) -> bool:
        return (
            family in self.families
            and backend in self.backends
            and budget >= self.min_budget
            and self.particles(budget) >= 1
        )


def _stock(backend: str, name: str):
    if backend == "pyro":
        import pyro.infer as stock
    else:
        import numpyro.infer as stock
    return getattr(stock, name)


def _stock_elbo(name: str):
    def make(backend, pkg, k):
        options = dict(num_particles=k, vectorize_particles=True)
        if backend == "pyro":
            options["max_plate_nesting"] = 1
        return _stock(backend, name)(**options)

    return make


def _ours(cls_name: str, **options):
    def make(backend, pkg, k):
        return getattr(pkg, cls_name)(k, max_plate_nesting=1, **options)

    return make


def estimators() -> list[Estimator]:
    """Every estimator of both packages (those present in this version) and the stock ones."""
    import numpyro_backend
    import pyro_reparam_ext

    def both_have(name):
        return hasattr(pyro_reparam_ext, name) and hasattr(numpyro_backend, name)

    table = [
        # NumPyro's Trace_ELBO gives a discrete guide site no score-function term at all
        Estimator("Trace_ELBO", _stock_elbo("Trace_ELBO"), backends=("pyro",)),
        Estimator(REFERENCE, _stock_elbo("TraceGraph_ELBO"), stateful=True),
        Estimator(
            "ScoreFunction_ELBO(optimal)",
            _ours("ScoreFunction_ELBO", baseline="optimal"),
            stateful=True,
        ),
        Estimator(
            "ScoreFunction_ELBO(loo)", _ours("ScoreFunction_ELBO", baseline="loo"), min_budget=2
        ),
    ]
    if both_have("DisARM_ELBO"):
        table.append(Estimator("DisARM_ELBO", _ours("DisARM_ELBO"), families=("bernoulli",)))
    if both_have("IWAE_ELBO"):
        table.append(Estimator("IWAE_ELBO (VIMCO)", _ours("IWAE_ELBO"), min_budget=2))
    for name in ("REBAR_ELBO", "RELAX_ELBO"):
        table.append(
            Estimator(
                name,
                _ours(name, coordinatewise=False),
                evals_per_particle=3,
                stateful=True,
            )
        )
    relaxations = [
        ("Concrete (relaxed model)", "concrete", ("bernoulli", "categorical")),
        ("Concrete straight-through", "straight_through", ("bernoulli", "categorical")),
    ]
    if both_have("ReinMaxStraightThrough"):
        relaxations.append(("ReinMax straight-through", "reinmax", ("categorical",)))
    if both_have("GumbelRaoStraightThrough"):
        relaxations.append(("Gumbel-Rao straight-through", "gumbel_rao", ("categorical",)))
    for name, relaxation, families in relaxations:
        table.append(
            Estimator(name, _stock_elbo("Trace_ELBO"), relaxation=relaxation, families=families)
        )
    return table


# ---- data and parameters ------------------------------------------------------------------


@dataclass
class Data:
    train: np.ndarray
    test: np.ndarray
    mean: np.ndarray  # per-pixel training mean (encoder input is x − mean)
    variance_batch: np.ndarray  # fixed batch every variance is measured on


def load_data() -> Data:
    train, test = load_binarized_digits(seed=0)
    train, test = train.astype(np.float32), test.astype(np.float32)
    return Data(train, test, train.mean(0), train[:BATCH_SIZE])


def layer_sizes(spec: ModelSpec, prefix: str, pixels: int) -> list[int]:
    inner = [pixels, *spec.hidden, spec.latent_size]
    return inner if prefix == "enc" else inner[::-1]


def initial_params(spec: ModelSpec, data: Data, seed: int) -> dict[str, np.ndarray]:
    """PyTorch-style uniform(±1/√fan_in) weights; decoder output bias = marginal logits."""
    rng = np.random.default_rng(seed)
    params = {}
    pixels = data.train.shape[1]
    for prefix in ("enc", "dec"):
        sizes = layer_sizes(spec, prefix, pixels)
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            bound = 1.0 / np.sqrt(fan_in)
            params[f"{prefix}.w{i}"] = rng.uniform(-bound, bound, (fan_in, fan_out))
            params[f"{prefix}.b{i}"] = rng.uniform(-bound, bound, fan_out)
        if prefix == "enc":
            params[f"{prefix}.b{len(sizes) - 2}"] = np.zeros(sizes[-1])
    marginal = np.clip(data.mean, 1e-3, 1 - 1e-3)
    params[f"dec.b{len(spec.hidden)}"] = np.log(marginal) - np.log1p(-marginal)
    return {name: value.astype(np.float32) for name, value in params.items()}


# ---- model and guide (pyroapi: one definition for both backends) --------------------------


def _latent(spec: ModelSpec, relaxation: str, logits, prior: bool):
    from pyroapi import distributions as dist

    if spec.family == "categorical":
        logits = logits.reshape(logits.shape[:-1] + (spec.latents, spec.classes))
        discrete, relaxed, straight = (
            dist.OneHotCategorical,
            dist.Concrete,
            dist.ConcreteStraightThrough,
        )
    else:
        discrete, relaxed, straight = (
            dist.Bernoulli,
            dist.BinaryConcrete,
            dist.BinaryConcreteStraightThrough,
        )
    if relaxation == "concrete":  # relaxed model too: Concrete prior (Maddison et al. 2017)
        return relaxed(TEMPERATURE, logits=logits).to_event(1)
    if relaxation == "none" or prior:  # hard samples: the discrete prior scores them
        return discrete(logits=logits).to_event(1)
    if relaxation == "reinmax":
        return dist.ReinMaxStraightThrough(1.0, logits=logits).to_event(1)
    if relaxation == "gumbel_rao":
        return dist.GumbelRaoStraightThrough(TEMPERATURE, logits=logits).to_event(1)
    return straight(TEMPERATURE, logits=logits).to_event(1)


def make_programs(spec: ModelSpec, init: dict, data: Data, relaxation: str, site_infer: dict):
    """``(model, guide)`` taking a batch of images, parameters ``enc.*`` / ``dec.*``."""
    from pyroapi import distributions as dist
    from pyroapi import ops, pyro

    layers = len(spec.hidden) + 1
    mean = ops.tensor(data.mean)
    prior_logits = ops.zeros(spec.latent_size)

    def network(prefix, h):
        for i in range(layers):
            w = pyro.param(f"{prefix}.w{i}", ops.tensor(init[f"{prefix}.w{i}"]))
            b = pyro.param(f"{prefix}.b{i}", ops.tensor(init[f"{prefix}.b{i}"]))
            h = h @ w + b
            if i < layers - 1:
                h = ops.maximum(h, 0.3 * h)  # LeakyReLU(0.3)
        return h

    def model(images):
        with pyro.plate("data", images.shape[0]):
            z = pyro.sample("z", _latent(spec, relaxation, prior_logits, prior=True))
            h = z.reshape(z.shape[: z.ndim - 2] + (-1,)) if spec.classes > 1 else z
            logits = network("dec", h * 1.0)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=images)

    def guide(images):
        with pyro.plate("data", images.shape[0]):
            logits = network("enc", images - mean)
            pyro.sample("z", _latent(spec, relaxation, logits, prior=False), infer=site_infer)

    return model, guide


# ---- the 100-sample importance-weighted test bound (numpy, the same for both backends) ----


def _network_np(params: dict, prefix: str, h: np.ndarray) -> np.ndarray:
    layers = sum(1 for name in params if name.startswith(f"{prefix}.w"))
    for i in range(layers):
        h = h @ params[f"{prefix}.w{i}"] + params[f"{prefix}.b{i}"]
        if i < layers - 1:
            h = np.maximum(h, 0.3 * h)
    return h


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_bound(spec: ModelSpec, params: dict, data: Data, seed: int) -> float:
    """Mean over test images of log (1/S) Σ_s p(x, z_s) / q(z_s | x), z_s ~ q, S = 100,
    for the *discrete* model (hard latents), whatever the estimator trained on."""
    rng = np.random.default_rng(seed)
    x = data.test.astype(np.float64)
    params = {name: value.astype(np.float64) for name, value in params.items()}
    logits = _network_np(params, "enc", x - data.mean)
    shape = (TEST_SAMPLES, *logits.shape)
    if spec.classes == 1:
        z = (rng.random(shape) < 1 / (1 + np.exp(-logits))).astype(np.float64)
        log_q = (z * logits - np.logaddexp(0, logits)).sum(-1)
        log_prior = -spec.latents * np.log(2.0)
    else:
        log_p = _log_softmax(logits.reshape(*logits.shape[:-1], spec.latents, spec.classes))
        gumbel = -np.log(-np.log(rng.random((TEST_SAMPLES, *log_p.shape))))
        z = np.eye(spec.classes)[np.argmax(log_p + gumbel, -1)]
        log_q = (z * log_p).sum((-1, -2))
        z = z.reshape(shape)
        log_prior = -spec.latents * np.log(spec.classes)
    decoded = _network_np(params, "dec", z)
    log_lik = (x * decoded - np.logaddexp(0, decoded)).sum(-1)
    log_w = log_lik + log_prior - log_q
    top = log_w.max(0)
    bound = top + np.log(np.exp(log_w - top).mean(0))
    return float(bound.mean())


# ---- one run: an estimator's own training, then the shared checkpoints --------------------


@dataclass
class Run:
    model: str
    backend: str
    budget: int
    estimator: str
    particles: int
    evaluations: int
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # training wall-clock at checkpoints
    cpu_seconds: list[float] = field(default_factory=list)  # training CPU time (process_time)
    test_bound: list[float] = field(default_factory=list)
    variance: list[float] = field(default_factory=list)
    shared_variance: dict = field(default_factory=dict)  # checkpoint step -> (var, se)
    steps_per_s: float = float("nan")
    compile_s: float = 0.0
    compile_cpu_s: float = 0.0
    run_wall_s: float = float("nan")  # the whole run: training, variances, test bounds
    run_cpu_s: float = float("nan")
    error: str = ""

    def time_axis(self) -> list[float]:
        """Training CPU seconds at the checkpoints (wall-clock for results saved without)."""
        return self.cpu_seconds or self.seconds


def checkpoint_steps(num_steps: int, count: int) -> list[int]:
    """Step 0 and ``count`` steps spread evenly up to ``num_steps``."""
    return [0] + sorted({int(round(s)) for s in np.linspace(0, num_steps, count + 1)[1:]})


def batches(data: Data, num_steps: int, seed: int) -> list[np.ndarray]:
    """The same minibatch sequence for every estimator and backend."""
    rng = np.random.default_rng(seed)
    return [rng.choice(len(data.train), BATCH_SIZE, replace=False) for _ in range(num_steps)]


@dataclass
class Settings:
    steps: int
    checkpoints: int
    variance_samples: int
    warmup: int
    lr: float
    seed: int
    timing_steps: int


def encoder_names(params: dict) -> list[str]:
    return sorted(name for name in params if name.startswith("enc."))


class PyroTrainer:
    """Pyro: ``SVI.step`` with Adam; variances through ``gradient_variance``."""

    def __init__(self, model, guide, make_elbo, settings: Settings, data: Data, init: dict):
        import pyro
        import torch
        from pyro.infer import SVI
        from pyro.optim import Adam

        pyro.clear_param_store()
        pyro.set_rng_seed(settings.seed)
        for name, value in init.items():  # in the store before the first step (checkpoint 0)
            pyro.param(name, torch.tensor(value))
        self.model, self.guide, self.make_elbo = model, guide, make_elbo
        self.elbo = make_elbo()
        self.svi = SVI(model, guide, Adam({"lr": settings.lr}), self.elbo)
        self.settings = settings
        self.variance_batch = torch.tensor(data.variance_batch)

    def step(self, batch: np.ndarray) -> float:
        import torch

        return self.svi.step(torch.tensor(batch))

    def params(self) -> dict:
        import pyro

        store = pyro.get_param_store()
        return {
            name: store[name].detach().cpu().numpy().copy()
            for name in store.keys()
            if name.startswith(("enc.", "dec."))
        }

    def variance(self, elbo=None) -> tuple[float, float]:
        import pyro_reparam_ext as pre

        with pyro_running_state_kept():
            stats = pre.gradient_variance(
                elbo or self.elbo,
                self.model,
                self.guide,
                self.variance_batch,
                num_samples=self.settings.variance_samples,
                param_names=encoder_names(self.params()),
            )
        return stats["total_variance"], stats["total_variance_se"]

    def shared_variance(self, checkpoint: dict, warm_batches: list, stateful: bool):
        """Variance at ``checkpoint``'s parameters with a fresh estimator whose own state
        (running baselines, η, λ, ρ) is first warmed up on ``warm_batches``, the model and
        guide parameters held at the checkpoint."""
        import pyro
        import torch

        pyro.clear_param_store()
        for name, value in checkpoint.items():
            pyro.param(name, torch.tensor(value))
        elbo = self.make_elbo()
        if stateful:
            _pyro_warm_up(elbo, self.model, self.guide, warm_batches, self.settings.lr)
        return self.variance(elbo)


def _pyro_warm_up(elbo, model, guide, warm_batches, lr: float) -> None:
    """Train only the estimator's own parameters (``reparam_ext.*``; running baselines update
    as in training): REBAR/RELAX's φ-gradient is that of the variance of the θ-gradient, so the
    programs keep their parameters, which are just not stepped."""
    import pyro
    import torch

    optimizer = None
    store = pyro.get_param_store()
    for batch in warm_batches:
        batch = torch.tensor(batch)
        if not hasattr(elbo, "differentiable_loss"):  # Pyro's TraceGraph_ELBO
            elbo.loss_and_grads(model, guide, batch)
            for name in store.keys():
                store[name].unconstrained().grad = None
            continue
        loss = elbo.differentiable_loss(model, guide, batch)
        names = [n for n in store.keys() if n.startswith("reparam_ext.") and "baseline" not in n]
        leaves = [store[n].unconstrained() for n in names]
        if not leaves or not loss.requires_grad:
            continue
        optimizer = optimizer or torch.optim.Adam(leaves, lr=lr)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        for leaf, grad in zip(leaves, grads, strict=True):
            leaf.grad = grad
        optimizer.step()
        optimizer.zero_grad()


def _state_only_adam(lr: float):
    """NumPyro Adam that steps only ``reparam_ext.*`` (zero gradient elsewhere: no move)."""
    import jax
    import jax.numpy as jnp
    import numpyro

    class StateOnlyAdam(numpyro.optim.Adam):
        def update(self, g, state, *args, **kwargs):
            g = {
                k: v if k.startswith("reparam_ext.") else jax.tree.map(jnp.zeros_like, v)
                for k, v in g.items()
            }
            return super().update(g, state, *args, **kwargs)

    return StateOnlyAdam(lr)


class NumPyroTrainer:
    """NumPyro: jitted ``SVI.update`` (first call timed as compile); ``gradient_variance``."""

    def __init__(self, model, guide, make_elbo, settings: Settings, data: Data, init: dict):
        import jax
        import jax.numpy as jnp
        import numpyro

        from numpyro_backend.infer import SVI

        self.model, self.guide, self.settings = model, guide, settings
        self.elbo = make_elbo()
        self.optimizer = numpyro.optim.Adam(settings.lr)
        self.svi = SVI(model, guide, self.optimizer, self.elbo)
        self.key = jax.random.PRNGKey(settings.seed)
        self.variance_batch = jnp.asarray(data.variance_batch)
        with _no_trace_elbo_warning():
            self.state = self.svi.init(jax.random.fold_in(self.key, 0), self.variance_batch)
        self.update = jax.jit(self.svi.update)
        self.warm_svi, self.warm_update = None, None
        self.calls = 0

    def step(self, batch: np.ndarray) -> float:
        import jax.numpy as jnp

        self.state, loss = self.update(self.state, jnp.asarray(batch))
        return float(loss)  # blocks until the step is done

    def params(self) -> dict:
        params = self.svi.get_params(self.state)
        return {n: np.asarray(v) for n, v in params.items() if n.startswith(("enc.", "dec."))}

    def variance(self, params=None, mutable=None) -> tuple[float, float]:
        import jax

        import numpyro_backend as npb

        if params is None:
            params, mutable = self.svi.get_params(self.state), self.state.mutable_state
        self.calls += 1
        stats = npb.gradient_variance(
            self.elbo,
            self.model,
            self.guide,
            self.variance_batch,
            num_samples=self.settings.variance_samples,
            param_names=encoder_names(params),
            rng_key=jax.random.fold_in(self.key, 10_000 + self.calls),
            params={**params, **(mutable or {})},
        )
        return stats["total_variance"], stats["total_variance_se"]

    def shared_variance(self, checkpoint: dict, warm_batches: list, stateful: bool):
        """As on Pyro: the estimator's state warmed up by an Adam that moves only it."""
        import jax
        import jax.numpy as jnp

        from numpyro_backend.infer import SVI

        params = {name: jnp.asarray(value) for name, value in checkpoint.items()}
        if not stateful:
            return self.variance(params, {})
        if self.warm_svi is None:
            optimizer = _state_only_adam(self.settings.lr)
            self.warm_svi = SVI(self.model, self.guide, optimizer, self.elbo)
            self.warm_update = jax.jit(self.warm_svi.update)
        with _no_trace_elbo_warning():
            state = self.warm_svi.init(
                jax.random.fold_in(self.key, 1), self.variance_batch, init_params=params
            )
        for batch in warm_batches:
            state, _ = self.warm_update(state, jnp.asarray(batch))
        warmed = self.warm_svi.get_params(state)
        return self.variance({**warmed, **params}, state.mutable_state)


@contextlib.contextmanager
def _no_trace_elbo_warning():
    # NumPyro warns that Trace_ELBO cannot handle the model's discrete z; with a relaxed or
    # straight-through guide z is a reparameterized sample, which is the point of it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Currently, SVI with Trace_ELBO", UserWarning)
        yield


TRAINERS = {"pyro": PyroTrainer, "numpyro": NumPyroTrainer}


# ---- orchestration ------------------------------------------------------------------------


def make_trainer(spec, est: Estimator, backend: str, budget: int, data, init, settings):
    import importlib

    pkg = importlib.import_module(BACKENDS[backend])
    site_infer = {}
    if backend == "pyro" and est.name == REFERENCE:
        site_infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}
    model, guide = make_programs(spec, init, data, est.relaxation, site_infer)
    particles = est.particles(budget)
    return TRAINERS[backend](
        model, guide, lambda: est.make(backend, pkg, particles), settings, data, init
    )


def train_own_run(run: Run, trainer, spec, data: Data, settings: Settings, snapshots=None):
    """Train ``settings.steps`` steps; at each checkpoint record the test bound and the
    encoder-gradient variance (and, for the shared run, the parameters in ``snapshots``)."""
    checkpoints = checkpoint_steps(settings.steps, settings.checkpoints)
    order = batches(data, settings.steps, settings.seed)
    seconds = cpu = 0.0
    for step in range(settings.steps + 1):
        if step > 0:
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = trainer.step(data.train[order[step - 1]])
            if step == 1:  # set-up (Pyro) / compilation (NumPyro): left out of both clocks
                run.compile_s = time.perf_counter() - start
                run.compile_cpu_s = time.process_time() - start_cpu
            else:
                seconds += time.perf_counter() - start
                cpu += time.process_time() - start_cpu
            if not np.isfinite(loss):
                raise FloatingPointError(f"loss {loss} at step {step}")
        if step in checkpoints:
            params = trainer.params()
            if snapshots is not None:
                snapshots[step] = params
            run.steps.append(step)
            run.seconds.append(seconds)
            run.cpu_seconds.append(cpu)
            run.test_bound.append(test_bound(spec, params, data, 1000 + step))
            run.variance.append(trainer.variance()[0])
    run.steps_per_s = (settings.steps - 1) / max(run.cpu_seconds[-1], 1e-9)


def run_model(spec, data, settings, budgets, backend: str, names, snapshots, record=None):
    """Every estimator × budget on one model and backend: own runs, then the shared
    checkpoints. On Pyro the shared run goes first and fills ``snapshots`` (step -> params).
    ``record(run)`` is called after each run."""
    init = initial_params(spec, data, settings.seed)
    # the reference and ours first, both budgets each, stock and relaxations last: a run
    # stopped early (a deadline) still has the headline's rows
    combos = [
        (est, budget)
        for est in estimators()
        for budget in budgets
        if est.available(spec.family, backend, budget) and (names is None or est.name in names)
    ]
    combos.sort(key=lambda c: c[0].name == "Trace_ELBO" or c[0].relaxation != "none")
    if backend == SHARED_RUN[0]:
        reference = next(
            (c for c in combos if c[0].name == SHARED_RUN[1] and c[1] == max(budgets)), None
        )
        if reference is None:
            raise ValueError(f"the shared run {SHARED_RUN} at E={max(budgets)} is not selected")
        combos.remove(reference)
        combos.insert(0, reference)
    runs = []
    for index, (est, budget) in enumerate(combos):
        is_reference = backend == SHARED_RUN[0] and index == 0
        runs.append(
            one_run(spec, est, backend, budget, data, init, settings, snapshots, is_reference)
        )
        if record is not None:
            record(runs[-1])
    return runs


def shared_snapshots(spec, data: Data, settings: Settings, budgets) -> dict[int, dict]:
    """The shared run's checkpoints (Pyro), for a process that runs only NumPyro: the same
    seeds, so the same parameters as the Pyro process's shared run."""
    import pyroapi

    est = next(e for e in estimators() if e.name == SHARED_RUN[1])
    init = initial_params(spec, data, settings.seed)
    snapshots: dict[int, dict] = {}
    with pyroapi.pyro_backend(BACKENDS[SHARED_RUN[0]]):
        run = one_run(spec, est, SHARED_RUN[0], max(budgets), data, init, settings, snapshots, True)
    if run.error:
        raise RuntimeError(f"the shared run failed: {run.error}")
    return snapshots


def one_run(spec, est, backend, budget, data, init, settings, snapshots, is_reference) -> Run:
    run = Run(spec.name, backend, budget, est.name, est.particles(budget), budget)
    run.evaluations = est.particles(budget) * est.evals_per_particle
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        trainer = make_trainer(spec, est, backend, budget, data, init, settings)
        train_own_run(run, trainer, spec, data, settings, snapshots if is_reference else None)
        warm = [data.train[i] for i in batches(data, settings.warmup, settings.seed + 1)]
        for step, params in sorted(snapshots.items()):
            run.shared_variance[step] = trainer.shared_variance(params, warm, est.stateful)
    except Exception as error:  # one broken estimator must not stop the benchmark
        run.error = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        traceback.print_exc()
    run.run_wall_s = time.perf_counter() - start
    run.run_cpu_s = time.process_time() - start_cpu
    bound = run.test_bound[-1] if run.test_bound else float("nan")
    print(
        f"{spec.name:11s} E={budget} {backend:7s} {est.name:30s} bound {bound:8.2f} "
        f"{run.steps_per_s:7.1f} steps/CPU-s (run {run.run_wall_s:.0f} s wall, "
        f"{run.run_cpu_s:.0f} s CPU) {run.error}",
        flush=True,
    )
    return run


def median_step(spec, est, backend, data, init, settings, order) -> float:
    """Median CPU seconds of one training step after two warm-up (NumPyro: compiling) steps."""
    trainer = make_trainer(spec, est, backend, 2, data, init, settings)
    for index in order[:2]:
        trainer.step(data.train[index])
    times = []
    for index in order[2:]:
        start = time.process_time()
        trainer.step(data.train[index])
        times.append(time.process_time() - start)
    return statistics.median(times)


def step_times(spec: ModelSpec, data: Data, settings: Settings, backends) -> list[dict]:
    """Median step time at K = 2 of TraceGraph_ELBO and REBAR/RELAX (default coordinate-wise
    control variates, and ``coordinatewise=False``)."""
    init = initial_params(spec, data, settings.seed)
    cases = [
        Estimator(REFERENCE, _stock_elbo("TraceGraph_ELBO")),
        Estimator("REBAR_ELBO (coordinatewise)", _ours("REBAR_ELBO")),
        Estimator("RELAX_ELBO (coordinatewise)", _ours("RELAX_ELBO")),
        Estimator("RELAX_ELBO (coordinatewise=False)", _ours("RELAX_ELBO", coordinatewise=False)),
    ]
    rows = []
    order = batches(data, settings.timing_steps + 2, settings.seed)
    for backend in backends:
        for est in cases:
            row = {
                "model": spec.name,
                "D": spec.latent_size,
                "K": 2,
                "backend": backend,
                "estimator": est.name,
                "error": "",
            }
            try:
                row["median_step_ms"] = 1e3 * median_step(
                    spec, est, backend, data, init, settings, order
                )
            except Exception as error:  # the library is changing: report, do not stop
                row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            rows.append(row)
        group = rows[-len(cases) :]
        reference = group[0].get("median_step_ms")
        for row in group:
            if reference and "median_step_ms" in row:
                row["vs_tracegraph"] = row["median_step_ms"] / reference
            print(
                f"step time {backend:7s} {row['estimator']:34s} "
                f"{row.get('median_step_ms', float('nan')):8.2f} ms "
                f"({row.get('vs_tracegraph', float('nan')):.2f}x TraceGraph) {row['error']}",
                flush=True,
            )
    return rows


# ---- summaries, files and plots -----------------------------------------------------------


def _find(runs, model, backend, budget, estimator):
    return next(
        (
            r
            for r in runs
            if (r.model, r.backend, r.budget, r.estimator) == (model, backend, budget, estimator)
            and not r.error
        ),
        None,
    )


def bound_at(run: Run, seconds: float) -> float:
    """Test bound at ``seconds`` of training CPU time, linear between checkpoints."""
    return float(np.interp(seconds, run.time_axis(), run.test_bound))


def ratio_se(reference: tuple[float, float], estimate: tuple[float, float]) -> float:
    """Standard error of ``reference[0] / estimate[0]`` from the two (variance, SE) pairs
    (delta method, independent estimates: relative SEs add in quadrature)."""
    ratio = reference[0] / estimate[0]
    return ratio * float(np.hypot(reference[1] / reference[0], estimate[1] / estimate[0]))


def shared_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for run in (r for r in runs if not r.error):
        reference = _find(runs, run.model, "pyro", run.budget, REFERENCE)
        row = {
            "model": run.model,
            "E": run.budget,
            "backend": run.backend,
            "estimator": run.estimator,
            "evals": run.evaluations,
        }
        for step, (variance, se) in sorted(run.shared_variance.items()):
            row[f"var@{step}"] = variance
            row[f"se@{step}"] = se
            if reference is not None and step in reference.shared_variance:
                row[f"ratio@{step}"] = reference.shared_variance[step][0] / variance
                row[f"ratio_se@{step}"] = (
                    0.0  # the reference itself: ratio 1 exactly
                    if run is reference
                    else ratio_se(reference.shared_variance[step], (variance, se))
                )
        rows.append(row)
    return rows


def own_rows(runs: list[Run]) -> list[dict]:
    rows = []
    for run in runs:
        row = {
            "model": run.model,
            "E": run.budget,
            "backend": run.backend,
            "estimator": run.estimator,
            "evals": run.evaluations,
            "error": run.error,
        }
        if run.error:
            rows.append(row)
            continue
        group = [
            r
            for r in runs
            if (r.model, r.budget, r.backend) == (run.model, run.budget, run.backend)
            and not r.error
        ]
        equal_s = min(r.time_axis()[-1] for r in group)
        row.update(
            steps_per_s=run.steps_per_s,
            compile_s=run.compile_s,
            train_s=run.time_axis()[-1],
            train_wall_s=run.seconds[-1],
            run_cpu_s=run.run_cpu_s,
            run_wall_s=run.run_wall_s,
            final_bound=run.test_bound[-1],
            equal_time_s=equal_s,
            bound_at_equal_time=bound_at(run, equal_s),
            final_variance=run.variance[-1],
        )
        rows.append(row)
    return rows


def headline_rows(runs: list[Run], shared: list[dict], own: list[dict]) -> list[dict]:
    """Per model and E: the best unbiased estimator of ours (lowest variance at the last
    shared checkpoint, over both backends) against Pyro's TraceGraph_ELBO."""
    ours = {
        "ScoreFunction_ELBO(optimal)",
        "ScoreFunction_ELBO(loo)",
        "DisARM_ELBO",
        "IWAE_ELBO (VIMCO)",
        "REBAR_ELBO",
        "RELAX_ELBO",
    }
    rows = []
    for model, budget in dict.fromkeys((r.model, r.budget) for r in runs):
        candidates = [
            s for s in shared if (s["model"], s["E"]) == (model, budget) and s["estimator"] in ours
        ]
        last = max(
            (int(k.split("@")[1]) for s in candidates for k in s if k.startswith("ratio@")),
            default=None,
        )
        candidates = [s for s in candidates if f"ratio@{last}" in s]
        if not candidates:
            continue
        best = max(candidates, key=lambda s: s[f"ratio@{last}"])
        row = {
            "model": model,
            "E": budget,
            "best unbiased (ours)": best["estimator"],
            "backend": best["backend"],
        }
        row.update({k: v for k, v in best.items() if k.startswith(("ratio@", "ratio_se@"))})
        mine = next(
            o
            for o in own
            if (o["model"], o["E"], o["backend"], o["estimator"])
            == (model, budget, best["backend"], best["estimator"])
        )
        tracegraph = next(
            (
                o
                for o in own
                if (o["model"], o["E"], o["backend"], o["estimator"])
                == (model, budget, "pyro", REFERENCE)
                and not o["error"]
            ),
            None,
        )
        if tracegraph is not None and not mine["error"]:
            pyro_group = [
                o
                for o in own
                if (o["model"], o["E"], o["backend"]) == (model, budget, best["backend"])
                and not o["error"]
            ]
            seconds = min(min(o["train_s"] for o in pyro_group), tracegraph["train_s"])
            row["equal_time_s"] = seconds
            row["bound (best)"] = bound_at(
                _find(runs, model, best["backend"], budget, best["estimator"]), seconds
            )
            row["bound (TraceGraph)"] = bound_at(
                _find(runs, model, "pyro", budget, REFERENCE), seconds
            )
            bounds = {
                o["estimator"]: bound_at(
                    _find(runs, model, o["backend"], budget, o["estimator"]), seconds
                )
                for o in pyro_group
                if o["estimator"] in ours
            }
            row["by"] = max(bounds, key=bounds.get)
            row["best bound (ours)"] = bounds[row["by"]]
        rows.append(row)
    return rows


def plot(runs: list[Run], model: str, budget: int, path: Path) -> None:
    """Test bound vs steps and vs wall-clock, own-run and shared-checkpoint variance."""
    plt = pyplot()
    selected = [r for r in runs if (r.model, r.budget) == (model, budget) and not r.error]
    names = list(dict.fromkeys(r.estimator for r in selected))
    palette = plt.get_cmap("tab10").colors
    styles = {
        name: dict(color=palette[i % 10], linestyle="-" if i < 10 else "--")
        for i, name in enumerate(names)
    }
    backends = list(dict.fromkeys(r.backend for r in selected))
    width = max(7 * len(backends), 10)
    fig, axes = plt.subplots(4, len(backends), figsize=(width, 15), squeeze=False)
    for column, backend in enumerate(backends):
        bound_steps, bound_time, own, shared = axes[:, column]
        for r in (r for r in selected if r.backend == backend):
            style = dict(**styles[r.estimator], label=r.estimator, marker="o", ms=3)
            bound_steps.plot(r.steps, r.test_bound, **style)
            bound_time.plot(r.time_axis()[1:], r.test_bound[1:], **style)
            own.plot(r.steps, r.variance, **style)
            points = sorted(r.shared_variance.items())
            shared.plot([p[0] for p in points], [p[1][0] for p in points], **style)
        bound_steps.set(
            title=f"{backend}: {model}, E = {budget}",
            xlabel="step",
            ylabel="test bound (nats, 100-sample IW)",
        )
        bound_time.set(
            xscale="log", xlabel="training CPU time (s, log)", ylabel="test bound (nats)"
        )
        own.set(yscale="log", xlabel="step (own run)", ylabel="encoder-gradient variance (log)")
        shared.set(
            yscale="log",
            xlabel="checkpoint step of the shared run",
            ylabel="encoder-gradient variance (log)",
        )
        for axis in axes[:, column]:
            axis.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=10, frameon=False
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def source_revision() -> str:
    """The checkout's commit (``+ local changes`` when the tree differs from it)."""
    import subprocess

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "pyro_reparam_ext",
        "numpyro_backend",
        "benchmarks/protocol.py",
    )
    return commit + (" + local changes" if dirty else "")


def numpyro_text(runs: list[Run]) -> str:
    on_numpyro = list(dict.fromkeys(r.model for r in runs if r.backend == "numpyro"))
    missing = [m for m in dict.fromkeys(r.model for r in runs) if m not in on_numpyro]
    if not missing:
        return ""
    if not on_numpyro:
        return "No NumPyro runs."
    return f"NumPyro runs: {', '.join(on_numpyro)} only (not {', '.join(missing)})."


def precision_text(shared: list[dict]) -> str:
    """The median relative SE of the variances and of the ratios, as a sentence."""
    variances = [
        row[k.replace("var@", "se@")] / row[k]
        for row in shared
        for k in row
        if k.startswith("var@") and row[k] > 0
    ]
    ratios = [
        row[k.replace("ratio@", "ratio_se@")] / row[k]
        for row in shared
        for k in row
        if k.startswith("ratio@") and row["estimator"] != REFERENCE
    ]
    if not variances or not ratios:
        return ""
    return (
        f"Precision: median relative SE {100 * np.median(variances):.0f}% per variance, "
        f"{100 * np.median(ratios):.0f}% per ratio (90th percentile "
        f"{100 * np.percentile(ratios, 90):.0f}%); ratio_se is the ratio's SE. "
    )


def write_outputs(runs, timing, settings: Settings, quick: bool, elapsed: float, info=None) -> Path:
    """``<stem>.md``, ``<stem>.json`` and ``<stem>_<model>_E<E>.png`` in ``RESULTS_DIR``
    (``stem``: ``info["name"]``, default ``protocol``)."""
    info = info or {}
    stem = info.get("name", "protocol")
    if quick and stem == "protocol":  # make bench's short run must not replace bench-full's
        stem = "protocol_quick"  # results; run_all.py leaves *_quick files out of the README
    models, backends = list(MODELS), list(BACKENDS)
    runs = sorted(runs, key=lambda r: (models.index(r.model), r.budget, backends.index(r.backend)))
    shared, own = shared_rows(runs), own_rows(runs)
    headline = headline_rows(runs, shared, own)
    meta = machine_info()
    checkpoints = sorted(
        {k for s in shared for k in s if k.startswith("ratio@")}, key=lambda k: int(k.split("@")[1])
    )
    mode = "QUICK run (`--quick`)" if quick else "full run"
    reduced = {k: v for k, v in FULL.items() if not quick and getattr(settings, k) != v}
    if reduced:
        mode = (
            "REDUCED full run (the `make bench-full` settings are "
            + ", ".join(f"{k} {v}" for k, v in FULL.items())
            + "; changed here: "
            + ", ".join(f"{k} {getattr(settings, k)}" for k in reduced)
            + ")"
        )
    md = [
        "## Estimator protocol (DisARM protocol scaled: digits, D = 32, batch 50)"
        + (f": {info['title']}" if info.get("title") else ""),
        "",
        f"{mode}: {settings.steps} steps per run (Adam, lr {settings.lr}), "
        f"{settings.variance_samples} gradient samples per variance, state warm-up "
        f"{settings.warmup} steps at shared checkpoints; {elapsed / 60:.1f} min wall-clock "
        + (
            f"in all ({info['cpu_s'] / 60:.1f} CPU-min over {info.get('jobs', 1)} process(es))"
            if "cpu_s" in info
            else "in all (CPU time not recorded)"
        )
        + f"; library at commit {info.get('revision', 'unknown')}. "
        + (
            "**Time axis = training CPU seconds** (`time.process_time`, set-up/compiling step "
            "left out): the machine was shared with other jobs, so wall-clock (also listed, "
            "`train_wall_s`) measures the load, not the estimator. "
            if all(r.cpu_seconds for r in runs)
            else "Time axis = training wall-clock seconds (this run predates CPU-time "
            "recording; the machine was shared, load ~11). "
        )
        + precision_text(shared)
        + "E = model evaluations per data point (see `benchmarks/protocol.py` for the count). "
        "ratio@s = variance of Pyro's TraceGraph_ELBO (decaying-average baseline) / variance "
        "of the estimator, at step s of the shared run (same parameters on both backends; "
        "> 1: lower variance than TraceGraph). Test bound: 100-sample importance-weighted "
        "bound of the discrete model on the 359 test images (nats; higher is better). "
        "Evaluations per data point: K particles = K (REBAR/RELAX with "
        "`coordinatewise=False`: 3 per particle, so K = 1 at E = 4 and absent at E = 2). "
        + numpyro_text(runs),
        "",
        "### Headline: best unbiased estimator of ours vs TraceGraph_ELBO",
        "",
        markdown_table(
            headline,
            [
                "model",
                "E",
                "best unbiased (ours)",
                "backend",
                *checkpoints,
                checkpoints[-1].replace("ratio", "ratio_se") if checkpoints else "",
                "equal_time_s",
                "bound (best)",
                "bound (TraceGraph)",
                "best bound (ours)",
                "by",
            ],
        ),
        "",
        "### Encoder-gradient variance at the shared checkpoints",
        "",
        markdown_table(
            shared,
            [
                "model",
                "E",
                "backend",
                "estimator",
                "evals",
                *checkpoints,
                checkpoints[-1].replace("ratio", "ratio_se") if checkpoints else "",
                checkpoints[-1].replace("ratio", "var") if checkpoints else "",
            ],
        ),
        "",
        "### Own runs: test bound, speed, variance",
        "",
        markdown_table(
            own,
            [
                "model",
                "E",
                "backend",
                "estimator",
                "evals",
                "steps_per_s",
                "compile_s",
                "train_s",
                "train_wall_s",
                "final_bound",
                "equal_time_s",
                "bound_at_equal_time",
                "final_variance",
                "error",
            ],
        ),
        "",
        "steps_per_s: training steps per CPU second; train_s: training CPU seconds "
        "(train_wall_s: the same steps' wall-clock). equal_time_s: the shortest training "
        "CPU time in the (model, E, backend) group; bound_at_equal_time interpolates each "
        "run's test bound there (headline: equal_time_s also capped by Pyro "
        "TraceGraph_ELBO's; `best bound (ours)`: the best of our unbiased estimators there, "
        "`by` which). final_variance: along the estimator's own run, at its own parameters.",
        "",
        "### Step time at K = 2 (median CPU time, ms)",
        "",
        markdown_table(
            timing,
            ["model", "D", "backend", "estimator", "median_step_ms", "vs_tracegraph", "error"],
        ),
        "",
        "Machine: {processor}, {cpu_count} cores; Python {python}, torch {torch}, "
        "pyro {pyro}, jax {jax}, numpyro {numpyro}.".format(**meta),
        "Plots: " + ", ".join(f"`{p}`" for p in sorted({plot_name(r, stem) for r in runs})) + ".",
    ]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stem}.md"
    path.write_text("\n".join(md) + "\n")
    payload = {
        "title": "Estimator protocol",
        "quick": quick,
        "settings": vars(settings),
        "machine": meta,
        "headline": headline,
        "shared_checkpoints": shared,
        "own_runs": own,
        "step_times": timing,
        "elapsed_s": elapsed,
        "info": info,
        "curves": curves_json(runs),
    }
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    for name in sorted({plot_name(r, stem) for r in runs}):
        model, budget = name[len(stem) + 1 : -len(".png")].rsplit("_E", 1)
        plot(runs, model, int(budget), RESULTS_DIR / name)
    return path


def plot_name(run: Run, stem: str = "protocol") -> str:
    return f"{stem}_{run.model}_E{run.budget}.png"


QUICK = dict(steps=80, checkpoints=2, variance_samples=20, warmup=20, timing_steps=5)
QUICK_NUMPYRO_MODELS = ("linear",)  # compiling every estimator for every model takes minutes
# measured (make bench-full from a fresh clone of 57e3d97): 27.2 min on 2 cores, 39.6 CPU-min
FULL = dict(steps=2000, checkpoints=4, variance_samples=100, warmup=100, timing_steps=20)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short version (make bench)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--budgets", default="2,4", help="evaluations per data point")
    parser.add_argument("--backends", default="pyro,numpyro")
    parser.add_argument("--estimators", default=None, help="subset of estimator names (;-sep)")
    parser.add_argument("--steps", type=int, default=None, help="override the mode's steps")
    parser.add_argument("--variance-samples", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--checkpoints", type=int, default=None, help="shared checkpoints > 0")
    parser.add_argument(
        "--numpyro-models",
        default=None,
        help="models also run on NumPyro (default: all; --quick: "
        + ",".join(QUICK_NUMPYRO_MODELS)
        + ")",
    )
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", type=int, default=2, help="processes (models split between them; 2 cores)"
    )
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)  # one job's output
    parser.add_argument("--parts-dir", default=None, help="keep the processes' part files here")
    parser.add_argument("--name", default="protocol", help="stem of the files --merge-parts writes")
    parser.add_argument("--title", default=None, help="a note under the heading (--merge-parts)")
    parser.add_argument(
        "--merge-parts",
        default=None,
        help="do not run: write the results from the part files in this folder",
    )
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="do not run: rewrite protocol.md and the plots from protocol.json",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        rerender(RESULTS_DIR / "protocol.json")
        return
    if args.merge_parts:
        parts = sorted(Path(args.merge_parts).glob("*.json"))
        merge_parts(parts, float("nan"), args.jobs, args.name, args.title)
        return
    chosen = dict(QUICK if args.quick else FULL)
    for key in ("steps", "variance_samples", "warmup", "checkpoints"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    settings = Settings(lr=args.lr, seed=args.seed, **chosen)
    models = [MODELS[name] for name in args.models.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    backends = args.backends.split(",")
    names = set(args.estimators.split(";")) if args.estimators else None
    if args.numpyro_models is not None:
        numpyro_models = tuple(args.numpyro_models.split(","))
    else:
        numpyro_models = QUICK_NUMPYRO_MODELS if args.quick else tuple(MODELS)
    pairs = units(models, backends, numpyro_models)
    if args.jobs > 1 and len(pairs) > 1 and args.part is None:
        argv = sys.argv[1:] if argv is None else list(argv)
        argv = _without(argv, ("--jobs", "--models", "--backends", "--parts-dir"))
        run_in_parallel(argv, pairs, args.jobs, args.parts_dir)
        return
    run_protocol(settings, models, budgets, backends, names, args.quick, numpyro_models, args.part)


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` less the given options and their values (``--opt v`` or ``--opt=v``)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in options)):
            kept.append(arg)
    return kept


def load_runs(payload: dict) -> list[Run]:
    runs = []
    for curve in payload["curves"]:
        shared = {int(step): tuple(value) for step, value in curve["shared_variance"].items()}
        runs.append(Run(**{**curve, "shared_variance": shared}))
    return runs


def rerender(path: Path) -> None:
    """``protocol.md`` and the plots again from the curves a run saved in ``path``."""
    payload = json.loads(path.read_text())
    settings = Settings(**payload["settings"])
    write_outputs(
        load_runs(payload),
        payload["step_times"],
        settings,
        payload["quick"],
        payload["elapsed_s"],
        payload.get("info"),
    )


# a unit's share of the work, from the quick run's CPU times (NumPyro: mostly compiling)
UNIT_COST = {"pyro": {"linear": 1.0, "nonlinear": 2.0, "categorical": 3.0}, "numpyro": 1.5}


def units(models: list[ModelSpec], backends: list[str], numpyro_models) -> list[tuple]:
    """(model, backend) pairs of a run, costliest first: each is one process of ``--jobs``
    (a NumPyro process recomputes the model's shared Pyro run: the same seeds, the same
    parameters)."""
    pairs = [
        (spec, backend)
        for spec in models
        for backend in backends
        if backend != "numpyro" or spec.name in numpyro_models
    ]

    def cost(pair):
        spec, backend = pair
        table = UNIT_COST[backend]
        return table.get(spec.name, 2.0) if isinstance(table, dict) else table

    return sorted(pairs, key=lambda pair: -cost(pair))


def run_in_parallel(argv: list[str], pairs: list[tuple], jobs: int, parts_dir=None) -> None:
    """This script once per (model, backend), at most ``jobs`` at a time, each writing its
    part file (after every run) into ``parts_dir``; then the merged results."""
    import subprocess
    import tempfile

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(parts_dir or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        waiting, running, codes = list(pairs), [], []
        while waiting or running:
            while waiting and len(running) < jobs:
                spec, backend = waiting.pop(0)
                part = folder / f"{spec.name}_{backend}.json"
                command = [sys.executable, __file__, *argv, "--jobs", "1"]
                command += ["--models", spec.name, "--backends", backend, "--part", str(part)]
                running.append(subprocess.Popen(command, cwd=ROOT))
            time.sleep(1.0)
            codes += [child.returncode for child in running if child.poll() is not None]
            running = [child for child in running if child.returncode is None]
        if any(codes):
            raise SystemExit(f"a protocol process failed (exit codes {codes})")
        merge_parts(sorted(folder.glob("*.json")), time.perf_counter() - start, jobs)


def merge_parts(parts, elapsed: float, jobs: int, name="protocol", title=None) -> None:
    """``protocol.md``/``.json``/plots from the part files of a parallel run."""
    payloads = [json.loads(part.read_text()) for part in parts]
    order = {name: i for i, name in enumerate(MODELS)}
    backend_order = {name: i for i, name in enumerate(BACKENDS)}

    def key(model, backend):
        return order[model], backend_order[backend]

    unique = {}  # a run repeated in a later part (a recomputed shared run): the first kept
    for run in (r for p in payloads for r in load_runs(p)):
        unique.setdefault((run.model, run.backend, run.budget, run.estimator), run)
    runs = sorted(unique.values(), key=lambda r: key(r.model, r.backend))
    timing = sorted(
        (row for p in payloads for row in p["step_times"]),
        key=lambda r: key(r["model"], r["backend"]),
    )
    if not np.isfinite(elapsed):  # merged by hand: the parts ran side by side
        elapsed = max(p["info"].get("wall_s", float("nan")) for p in payloads)
    info = {
        "jobs": jobs,
        "cpu_s": sum(p["info"]["cpu_s"] for p in payloads),
        "revision": payloads[0]["info"]["revision"],
        "name": name,
    }
    if title:
        info["title"] = title
    settings = Settings(**payloads[0]["settings"])
    path = write_outputs(runs, timing, settings, payloads[0]["quick"], elapsed, info)
    print("wrote", path)


def run_protocol(settings, models, budgets, backends, names, quick, numpyro_models, part=None):
    import pyroapi
    import torch

    import numpyro_backend  # noqa: F401  (registers the pyroapi backends)
    import pyro_reparam_ext  # noqa: F401

    torch.set_num_threads(1)
    start = time.perf_counter()
    data = load_data()
    runs, timing = [], []
    revision = source_revision()

    def save():
        if part is not None:  # one process of a parallel run: its curves so far, merged later
            info = {"jobs": 1, "cpu_s": time.process_time(), "revision": revision}
            info["wall_s"] = time.perf_counter() - start
            write_part(Path(part), runs, timing, settings, quick, info)

    def record(run):
        runs.append(run)
        save()

    for spec in models:
        snapshots: dict[int, dict] = {}  # filled by the shared run (Pyro, first)
        for backend in backends:
            if backend == "numpyro" and spec.name not in numpyro_models:
                continue
            if not snapshots and SHARED_RUN[0] not in backends:
                snapshots = shared_snapshots(spec, data, settings, budgets)
            with pyroapi.pyro_backend(BACKENDS[backend]):
                run_model(spec, data, settings, budgets, backend, names, snapshots, record)
                # the step-time table: D = 32 Bernoulli models (quick: the linear one only)
                if spec.family == "bernoulli" and (spec.name == "linear" or not quick):
                    timing += step_times(spec, data, settings, [backend])
                    save()
    if part is not None:
        return
    info = {"jobs": 1, "cpu_s": time.process_time(), "revision": revision}
    path = write_outputs(runs, timing, settings, quick, time.perf_counter() - start, info)
    print("wrote", path)


def curves_json(runs) -> list[dict]:
    """Every run's record as JSON-ready dicts (checkpoint keys as strings)."""
    return [
        vars(r) | {"shared_variance": {str(k): v for k, v in r.shared_variance.items()}}
        for r in runs
    ]


def write_part(path: Path, runs, timing, settings, quick: bool, info: dict) -> None:
    payload = {
        "settings": vars(settings),
        "quick": quick,
        "step_times": timing,
        "info": info,
        "curves": curves_json(runs),
    }
    path.with_suffix(".tmp").write_text(json.dumps(payload) + "\n")
    path.with_suffix(".tmp").replace(path)  # a reader never sees half a file


if __name__ == "__main__":
    main()
