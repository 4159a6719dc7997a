"""Estimator shoot-out: which gradient estimator to pick for a model with binary latents.

The model is a variational autoencoder with binary latent codes (Tucker et al. 2017, section
6; here with one tanh hidden layer in encoder and decoder)::

    z ~ Bernoulli(1/2)^L,   x | z ~ Bernoulli(sigmoid(decoder(z)))^D      (model)
    z | x ~ Bernoulli(sigmoid(encoder(x)))^L                              (guide)

trained on scikit-learn's bundled digits, binarized (or your own 0/1 data with ``--data``).
The guide is discrete, so the ELBO's gradient with respect to the encoder has no pathwise
form: each estimator below is one ``loss=`` object in the same SVI loop, on Pyro and NumPyro.

=============  ===============================================================================
reinforce      ``ScoreFunction_ELBO(baseline="none")``: plain score function (REINFORCE)
tracegraph     stock ``TraceGraph_ELBO``; on Pyro with its decaying-average baseline
               (``infer={"baseline": {"use_decaying_avg_baseline": True}}``); NumPyro's stock
               TraceGraph_ELBO has no baseline option, so there it is REINFORCE with
               plate-aware credit
sf-optimal     ``ScoreFunction_ELBO(baseline="optimal")``: variance-minimising baseline per logit
sf-loo         ``ScoreFunction_ELBO(baseline="loo")``: leave-one-out baseline over particles
rebar          ``REBAR_ELBO()``: Concrete-relaxation control variate, learned temperature and η
relax          ``RELAX_ELBO()``: REBAR plus a learned neural control variate
disarm         ``DisARM_ELBO()``: antithetically coupled copies of each decision (DisARM at 2
               particles, its n-sample form ARMS at more; the default 4 is ARMS)
iwae           ``IWAE_ELBO()``: trains the K-sample importance-weighted bound instead of the
               ELBO, with VIMCO's leave-one-out learning signals for the discrete guide
concrete-st    straight-through Concrete (``BinaryConcreteStraightThrough`` guide,
               ``Trace_ELBO``): hard samples forward, relaxed gradient backward — biased
=============  ===============================================================================

Every estimator gets the same number of particles per step (``--particles``, default 4; the
leave-one-out baseline needs at least 2, and with exactly 2 it equals the optimal one). The
printed table gives, per backend and estimator, the final ELBO on the training and test images
(nats per image: the *discrete* model's ELBO for every estimator, estimated with
``--eval-samples`` draws from the guide), the total variance of the encoder's gradient estimate
at the end of training (the trace of its covariance over ``--variance-samples`` independent
estimates on one fixed minibatch, as ``gradient_variance`` computes it) and the training speed
in steps per second (NumPyro: after the first, compiling step). Under the table, one line per
backend recommends an estimator from this run's own numbers: among those whose test ELBO is
within 0.5 nats/image of the best (the spread of one short run between seeds), the one with
the most steps per second. The PNG in ``--output-dir``
shows the training-set ELBO against training wall time and the gradient variance against the
step.

Usage::

    python examples/estimator_shootout.py                       # what `make demo` runs
    python examples/estimator_shootout.py --backends pyro --estimators relax,tracegraph
    python examples/estimator_shootout.py --data my_binary_images.npz --steps 2000

The unbiased estimators differ only in variance (and cost), so their ELBOs after a fixed
number of steps mostly reflect how noisy their gradients are; straight-through trades a bias
for a small variance. ``iwae`` optimizes a different (tighter) objective; its reported ELBO
is still the discrete model's ELBO, so it is judged on the same scale as the others.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402  (the examples folder is put on sys.path just above)
    ExampleParser,
    add_output_argument,
    comma_list,
    load_data_or_digits,
    numpyro_gradient_variance_fn,
    positive_float,
    positive_int,
    pyplot,
    pyro_running_state_kept,
    torch_single_thread,
)

ESTIMATORS = {
    "reinforce": "REINFORCE (no baseline)",
    "tracegraph": "TraceGraph_ELBO",
    "sf-optimal": "ScoreFunction, optimal baseline",
    "sf-loo": "ScoreFunction, leave-one-out",
    "rebar": "REBAR",
    "relax": "RELAX",
    "disarm": "DisARM / ARMS",
    "iwae": "IWAE bound (VIMCO)",
    "concrete-st": "Concrete straight-through",
}
BACKENDS = ["pyro", "numpyro"]


@dataclass
class RunResult:
    """One backend × estimator run: curves recorded at checkpoints and final numbers."""

    backend: str
    estimator: str
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # training wall time at the checkpoint
    train_elbo_curve: list[float] = field(default_factory=list)
    variance_curve: list[float] = field(default_factory=list)
    train_elbo: float = float("nan")
    test_elbo: float = float("nan")
    steps_per_second: float = float("nan")

    @property
    def label(self) -> str:
        name = ESTIMATORS[self.estimator]
        if self.estimator == "tracegraph":
            name += " (decaying avg)" if self.backend == "pyro" else " (no baseline)"
        return name

    @property
    def variance(self) -> float:
        return self.variance_curve[-1] if self.variance_curve else float("nan")


def checkpoint_steps(num_steps: int, num_checkpoints: int) -> list[int]:
    """Steps (1-based, after that many updates) at which curves are recorded."""
    points = np.linspace(0, num_steps, num_checkpoints + 1)[1:]
    return sorted({max(1, int(round(p))) for p in points})


# ---- Pyro ---------------------------------------------------------------------------------


def run_pyro(estimator: str, args, train: np.ndarray, test: np.ndarray, progress) -> RunResult:
    with torch_single_thread():
        return _run_pyro(estimator, args, train, test, progress)


def _run_pyro(estimator: str, args, train: np.ndarray, test: np.ndarray, progress) -> RunResult:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO
    from pyro.optim import Adam
    from torch import nn

    import pyro_reparam_ext as pre

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    num_pixels, latents, hidden = train.shape[1], args.latents, args.hidden
    encoder = nn.Sequential(nn.Linear(num_pixels, hidden), nn.Tanh(), nn.Linear(hidden, latents))
    decoder = nn.Sequential(nn.Linear(latents, hidden), nn.Tanh(), nn.Linear(hidden, num_pixels))
    prior_logits = torch.zeros(latents)
    infer = {}
    if estimator == "tracegraph":
        infer = {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}}

    def model(images):
        pyro.module("decoder", decoder)
        with pyro.plate("data", images.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=prior_logits).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=images)

    def guide(images):
        pyro.module("encoder", encoder)
        with pyro.plate("data", images.shape[0]):
            logits = encoder(images)
            if estimator == "concrete-st":
                q = pre.BinaryConcreteStraightThrough(args.temperature, logits=logits)
            else:
                q = dist.Bernoulli(logits=logits)
            pyro.sample("z", q.to_event(1), infer=infer)

    options = dict(num_particles=args.particles, max_plate_nesting=1, vectorize_particles=True)
    elbo = {
        "reinforce": lambda: pre.ScoreFunction_ELBO(baseline="none", **options),
        "tracegraph": lambda: TraceGraph_ELBO(**options),
        "sf-optimal": lambda: pre.ScoreFunction_ELBO(baseline="optimal", **options),
        "sf-loo": lambda: pre.ScoreFunction_ELBO(baseline="loo", **options),
        "rebar": lambda: pre.REBAR_ELBO(**options),
        "relax": lambda: pre.RELAX_ELBO(**options),
        "disarm": lambda: pre.DisARM_ELBO(**options),
        "iwae": lambda: pre.IWAE_ELBO(**options),
        "concrete-st": lambda: Trace_ELBO(**options),
    }[estimator]()
    svi = SVI(model, guide, Adam({"lr": args.learning_rate}), elbo)

    dtype = torch.get_default_dtype()
    train_t, test_t = torch.tensor(train, dtype=dtype), torch.tensor(test, dtype=dtype)
    eval_t = train_t[: args.eval_size]
    variance_batch = train_t[: args.batch_size]

    def discrete_elbo(images, num_samples):
        """Mean over images of a Monte Carlo estimate of the discrete model's ELBO."""
        with torch.no_grad():
            q = dist.Bernoulli(logits=encoder(images))
            z = q.sample((num_samples,))
            log_joint = dist.Bernoulli(logits=decoder(z)).log_prob(images).sum(-1)
            log_joint = log_joint - latents * np.log(2.0)
            return float((log_joint - q.log_prob(z).sum(-1)).mean())

    def encoder_variance():
        # works for every Pyro ELBO (TraceGraph_ELBO through its loss_and_grads)
        names = [n for n in pyro.get_param_store().keys() if n.startswith("encoder$$$")]
        with pyro_running_state_kept():
            stats = pre.gradient_variance(
                elbo,
                model,
                guide,
                variance_batch,
                num_samples=args.variance_samples,
                param_names=names,
            )
        return stats["total_variance"]

    result = RunResult("pyro", estimator)
    checkpoints = set(checkpoint_steps(args.steps, args.checkpoints))
    rng = np.random.default_rng(args.seed)
    train_seconds = 0.0
    for step in range(1, args.steps + 1):
        batch = train_t[rng.choice(len(train_t), args.batch_size, replace=False)]
        start = time.perf_counter()
        loss = svi.step(batch)
        train_seconds += time.perf_counter() - start
        if not np.isfinite(loss):
            raise FloatingPointError(f"pyro/{estimator}: loss is {loss} at step {step}")
        progress.update(1)
        if step in checkpoints:
            result.steps.append(step)
            result.seconds.append(train_seconds)
            result.train_elbo_curve.append(discrete_elbo(eval_t, 1))
            result.variance_curve.append(encoder_variance())
    result.train_elbo = discrete_elbo(train_t, args.eval_samples)
    result.test_elbo = discrete_elbo(test_t, args.eval_samples)
    result.steps_per_second = args.steps / train_seconds
    return result


# ---- NumPyro ------------------------------------------------------------------------------


def _numpyro_mlp(params: dict, name: str, x):
    """Two-layer tanh MLP reading the flat parameters ``name.w0``, ``name.b0``, ..."""
    import jax.numpy as jnp

    hidden_layer = jnp.tanh(x @ params[f"{name}.w0"] + params[f"{name}.b0"])
    return hidden_layer @ params[f"{name}.w1"] + params[f"{name}.b1"]


_NUMPYRO_JIT_CACHE: dict = {}


def _numpyro_discrete_elbo(params: dict, images, key, num_samples: int) -> float:
    """Mean over images of a Monte Carlo estimate of the discrete model's ELBO (jit, cached)."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist

    if "elbo" not in _NUMPYRO_JIT_CACHE:  # module level, so every run reuses the compilation

        def elbo(params, images, key, num_samples):
            q = dist.Bernoulli(logits=_numpyro_mlp(params, "encoder", images)).to_event(1)
            z = q.sample(key, (num_samples,))
            logits = _numpyro_mlp(params, "decoder", jnp.asarray(z, images.dtype))
            log_joint = dist.Bernoulli(logits=logits).to_event(1).log_prob(images)
            latents = q.event_shape[0]
            return jnp.mean(log_joint - latents * jnp.log(2.0) - q.log_prob(z))

        _NUMPYRO_JIT_CACHE["elbo"] = jax.jit(elbo, static_argnums=3)
    return float(_NUMPYRO_JIT_CACHE["elbo"](params, images, key, num_samples))


def run_numpyro(estimator: str, args, train: np.ndarray, test: np.ndarray, progress) -> RunResult:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import Trace_ELBO, TraceGraph_ELBO
    from numpyro.optim import Adam

    import numpyro_backend as npb
    from numpyro_backend.infer import SVI

    num_pixels, latents, hidden = train.shape[1], args.latents, args.hidden
    encoder_key, decoder_key = jax.random.split(jax.random.PRNGKey(args.seed + 1))

    def mlp_params(name, sizes, key):
        """Flat parameter sites ``name.w0``, ``name.b0``, ... (PyTorch's default init)."""
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            w_key, b_key = jax.random.split(jax.random.fold_in(key, i))
            bound = 1.0 / np.sqrt(fan_in)
            w = jax.random.uniform(w_key, (fan_in, fan_out), jnp.float32, -bound, bound)
            b = jax.random.uniform(b_key, (fan_out,), jnp.float32, -bound, bound)
            params[f"{name}.w{i}"] = numpyro.param(f"{name}.w{i}", w)
            params[f"{name}.b{i}"] = numpyro.param(f"{name}.b{i}", b)
        return params

    def model(images):
        params = mlp_params("decoder", (latents, hidden, num_pixels), decoder_key)
        with numpyro.plate("data", images.shape[0]):
            z = numpyro.sample("z", dist.Bernoulli(logits=jnp.zeros(latents)).to_event(1))
            logits = _numpyro_mlp(params, "decoder", jnp.asarray(z, images.dtype))
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=images)

    def guide(images):
        params = mlp_params("encoder", (num_pixels, hidden, latents), encoder_key)
        with numpyro.plate("data", images.shape[0]):
            logits = _numpyro_mlp(params, "encoder", images)
            if estimator == "concrete-st":
                q = npb.BinaryConcreteStraightThrough(args.temperature, logits=logits)
            else:
                q = dist.Bernoulli(logits=logits)
            numpyro.sample("z", q.to_event(1))

    particles = dict(num_particles=args.particles, vectorize_particles=True)
    options = dict(max_plate_nesting=1, **particles)
    elbo = {
        "reinforce": lambda: npb.ScoreFunction_ELBO(baseline="none", **options),
        "tracegraph": lambda: TraceGraph_ELBO(**particles),
        "sf-optimal": lambda: npb.ScoreFunction_ELBO(baseline="optimal", **options),
        "sf-loo": lambda: npb.ScoreFunction_ELBO(baseline="loo", **options),
        "rebar": lambda: npb.REBAR_ELBO(**options),
        "relax": lambda: npb.RELAX_ELBO(**options),
        "disarm": lambda: npb.DisARM_ELBO(**options),
        "iwae": lambda: npb.IWAE_ELBO(**options),
        "concrete-st": lambda: Trace_ELBO(**particles),
    }[estimator]()
    svi = SVI(model, guide, Adam(args.learning_rate), elbo)

    train_j, test_j = jnp.asarray(train, jnp.float32), jnp.asarray(test, jnp.float32)
    eval_j = train_j[: args.eval_size]
    variance_batch = train_j[: args.batch_size]
    rng_key = jax.random.PRNGKey(args.seed)
    with warnings.catch_warnings():
        # NumPyro warns that Trace_ELBO cannot handle the model's discrete z; with the
        # straight-through guide z is a reparameterized sample, which is the point of it.
        warnings.filterwarnings("ignore", "Currently, SVI with Trace_ELBO", UserWarning)
        state = svi.init(jax.random.fold_in(rng_key, 0), variance_batch)
    update = jax.jit(svi.update)

    # encoder gradient variance: compiled once per run, reused at every checkpoint
    measure_variance = numpyro_gradient_variance_fn(
        elbo, model, guide, variance_batch, select=lambda name: name.startswith("encoder.")
    )

    result = RunResult("numpyro", estimator)
    checkpoints = set(checkpoint_steps(args.steps, args.checkpoints))
    rng = np.random.default_rng(args.seed)
    train_seconds = 0.0
    for step in range(1, args.steps + 1):
        batch = train_j[rng.choice(len(train), args.batch_size, replace=False)]
        start = time.perf_counter()
        state, loss = update(state, batch)
        loss = float(loss)  # blocks until the step is done
        if step > 1:  # the first call compiles; time the steps, not the compiler
            train_seconds += time.perf_counter() - start
        if not np.isfinite(loss):
            raise FloatingPointError(f"numpyro/{estimator}: loss is {loss} at step {step}")
        progress.update(1)
        if step in checkpoints:
            key = jax.random.fold_in(rng_key, step)
            result.steps.append(step)
            result.seconds.append(train_seconds)
            params = svi.get_params(state)
            result.train_elbo_curve.append(_numpyro_discrete_elbo(params, eval_j, key, 1))
            variance = measure_variance(
                params, state.mutable_state, jax.random.fold_in(key, 1), args.variance_samples
            )
            result.variance_curve.append(variance)
    params = svi.get_params(state)
    train_key, test_key = jax.random.split(jax.random.fold_in(rng_key, args.steps + 1))
    result.train_elbo = _numpyro_discrete_elbo(params, train_j, train_key, args.eval_samples)
    result.test_elbo = _numpyro_discrete_elbo(params, test_j, test_key, args.eval_samples)
    result.steps_per_second = max(args.steps - 1, 1) / max(train_seconds, 1e-9)
    return result


# ---- report -------------------------------------------------------------------------------


def format_table(results: list[RunResult]) -> str:
    header = (
        "backend",
        "estimator",
        "train ELBO (nats/image)",
        "test ELBO (nats/image)",
        "grad variance (nats^2)",
        "steps/s",
    )
    rows = [
        (
            r.backend,
            r.label,
            f"{r.train_elbo:.2f}",
            f"{r.test_elbo:.2f}",
            f"{r.variance:.3g}",
            f"{r.steps_per_second:.0f}",
        )
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


#: test ELBOs this close to the best count as a tie (nats/image); the test ELBO of one short
#: run differs between seeds by a few tenths of a nat
TIE_NATS = 0.5


def recommendations(results: list[RunResult]) -> list[str]:
    """One line per backend, derived from this run's table: among the estimators whose test
    ELBO is within TIE_NATS of the best, the one with the most steps per second."""
    lines = []
    for backend in dict.fromkeys(r.backend for r in results):
        runs = [r for r in results if r.backend == backend and np.isfinite(r.test_elbo)]
        if not runs:
            continue
        best = max(runs, key=lambda r: r.test_elbo)
        close = [r for r in runs if r.test_elbo >= best.test_elbo - TIE_NATS]
        pick = max(close, key=lambda r: r.steps_per_second)
        line = (
            f"Recommendation ({backend}, from this run): {pick.label} — test ELBO "
            f"{pick.test_elbo:.2f} nats/image at {pick.steps_per_second:.0f} steps/s"
        )
        if pick is best:
            line += ", the best test ELBO"
        else:
            line += (
                f", within {TIE_NATS} nats of the best ({best.label}, {best.test_elbo:.2f}) "
                f"at {pick.steps_per_second / best.steps_per_second:.1f}x its speed"
            )
        if pick.estimator == "concrete-st":
            line += " (biased: straight-through)"
        lines.append(line)
    return lines


def plot(results: list[RunResult], path: Path) -> None:
    plt = pyplot()
    backends = list(dict.fromkeys(r.backend for r in results))
    fig, axes = plt.subplots(2, len(backends), figsize=(6.5 * len(backends), 8), squeeze=False)
    colors = dict(zip(ESTIMATORS, plt.get_cmap("tab10").colors, strict=False))
    for column, backend in enumerate(backends):
        top, bottom = axes[0, column], axes[1, column]
        for r in (r for r in results if r.backend == backend):
            top.plot(
                r.seconds, r.train_elbo_curve, "o-", ms=3, color=colors[r.estimator], label=r.label
            )
            bottom.semilogy(
                r.steps, r.variance_curve, "o-", ms=3, color=colors[r.estimator], label=r.label
            )
        top.set_xscale("log")
        top.set(
            title=f"{backend}: training ELBO",
            xlabel="training wall time (s, log scale)",
            ylabel="ELBO (nats / image)",
        )
        bottom.set(
            title=f"{backend}: encoder gradient variance",
            xlabel="step",
            ylabel="total variance (trace of covariance)",
        )
        top.legend(fontsize=8)
        top.grid(alpha=0.3)
        bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = ExampleParser(
        description=__doc__.split("\n\n")[0],
        epilog="Estimators: " + "; ".join(f"{k} = {v}" for k, v in ESTIMATORS.items()),
    )
    parser.add_argument("--steps", type=positive_int, default=300, help="SVI steps per run")
    parser.add_argument(
        "--backends",
        type=comma_list(BACKENDS),
        default=BACKENDS,
        help="comma-separated: pyro,numpyro (default: both)",
    )
    parser.add_argument(
        "--estimators",
        type=comma_list(list(ESTIMATORS)),
        default=list(ESTIMATORS),
        help="comma-separated subset of: " + ",".join(ESTIMATORS) + " (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="your own binarized data (.npy: rows of 0/1; .npz: 'train' and 'test' or one "
        "array); default: scikit-learn's digits",
    )
    parser.add_argument(
        "--particles",
        type=positive_int,
        default=4,
        help="particles per step for every estimator (>= 2 for sf-loo and disarm)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--latents", type=positive_int, default=16, help="binary latents")
    parser.add_argument("--hidden", type=positive_int, default=64, help="hidden units")
    parser.add_argument("--learning-rate", type=positive_float, default=3e-3)
    parser.add_argument(
        "--temperature",
        type=positive_float,
        default=0.5,
        help="relaxation temperature of concrete-st",
    )
    parser.add_argument("--checkpoints", type=positive_int, default=6, help="points on each curve")
    parser.add_argument(
        "--variance-samples",
        type=positive_int,
        default=25,
        help="gradient estimates per variance measurement (>= 2)",
    )
    parser.add_argument(
        "--eval-samples",
        type=positive_int,
        default=20,
        help="guide draws per image for the final ELBOs",
    )
    parser.add_argument(
        "--eval-size",
        type=positive_int,
        default=512,
        help="training images used for the ELBO curve",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_output_argument(parser)
    args = parser.parse_args(argv)
    if args.variance_samples < 2:
        parser.error("--variance-samples must be at least 2")
    if "sf-loo" in args.estimators and args.particles < 2:
        parser.error("--particles must be at least 2 for sf-loo (leave-one-out baseline)")
    if "disarm" in args.estimators and args.particles < 2:
        parser.error("--particles must be at least 2 for disarm (coupled copies)")
    train, test = load_data_or_digits(parser, args.data, args.seed)
    if args.batch_size > len(train):
        parser.error(f"--batch-size must be at most the {len(train)} training examples")
    return args, train, test


def main(argv=None) -> list[RunResult]:
    args, train, test = parse_args(argv)
    from tqdm import tqdm

    source = args.data or "scikit-learn digits (binarized)"
    print(
        f"Estimator shoot-out on {source}: {len(train)} train / {len(test)} test images of "
        f"{train.shape[1]} pixels, {args.latents} binary latents, {args.steps} steps, "
        f"batch {args.batch_size}, {args.particles} particles"
    )
    runs = [(b, e) for b in args.backends for e in args.estimators]
    results = []
    started = time.perf_counter()
    with tqdm(
        total=len(runs) * args.steps,
        disable=args.no_progress,
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
    ) as progress:
        for backend, estimator in runs:
            progress.set_description(f"{backend}/{estimator}")
            runner = run_pyro if backend == "pyro" else run_numpyro
            results.append(runner(estimator, args, train, test, progress))
    print()
    print(format_table(results))
    for line in recommendations(results):
        print(line)
    path = Path(args.output_dir) / "estimator_shootout.png"
    plot(results, path)
    print(f"\nplot: {path}   total time {time.perf_counter() - started:.0f} s")
    return results


if __name__ == "__main__":
    main()
