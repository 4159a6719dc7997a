"""Poisson factorization with Gamma latents: ImplicitGamma against the built-in Gamma.

Counts x (users × items) are generated from the model itself (Gopalan et al. 2015)::

    θ_uk ~ Gamma(0.3, 0.3),  β_ik ~ Gamma(0.3, 0.3),  x_ui ~ Poisson(Σ_k θ_uk β_ik + 1e-6)

and fitted by SVI with a mean-field Gamma guide q(θ) q(β) whose concentrations and rates are
learned. A Gamma sample has no closed-form inverse CDF, so its pathwise gradient needs implicit
reparameterization (Figurnov et al. 2018): dz/dα = −(∂F/∂α)/p(z). Three guides, same model,
same SVI loop (``--guides``):

- ``implicit``: :class:`ImplicitGamma` (exact implicit gradient) with ``Trace_ELBO``;
- ``builtin``: the backend's own Gamma with ``Trace_ELBO`` (PyTorch: an approximate
  implicit gradient; NumPyro: JAX's gamma sampler gradient);
- ``score``: the built-in Gamma marked non-reparameterized, trained by
  ``ScoreFunction_ELBO(baseline="loo")`` — what a Gamma latent costs without a pathwise
  gradient.

The table gives the final ELBO per count (Trace_ELBO with ``--eval-particles`` particles), the
total variance of the gradient estimate for the guide's parameters (``gradient_variance`` with
``--variance-samples`` estimates at the end of training) and steps per second; the PNG in
``--output-dir`` shows the ELBO during training.

Usage::

    python examples/gamma_latent.py
    python examples/gamma_latent.py --backend numpyro --steps 1500
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402  (the examples folder is put on sys.path just above)
    ExampleParser,
    add_backend_argument,
    add_output_argument,
    comma_list,
    numpyro_gradient_variance_fn,
    positive_float,
    positive_int,
    pyplot,
    pyro_running_state_kept,
    torch_single_thread,
)

GUIDES = {
    "implicit": "ImplicitGamma (pathwise)",
    "builtin": "built-in Gamma (pathwise)",
    "score": "built-in Gamma, score function",
}
PRIOR_SHAPE, PRIOR_RATE = 0.3, 0.3


def generate_counts(args) -> np.ndarray:
    """Counts drawn from the model with ``--factors`` true factors."""
    rng = np.random.default_rng(args.seed)
    theta = rng.gamma(PRIOR_SHAPE, 1 / PRIOR_RATE, (args.users, args.factors))
    beta = rng.gamma(PRIOR_SHAPE, 1 / PRIOR_RATE, (args.items, args.factors))
    return rng.poisson(theta @ beta.T + 1e-6).astype(np.float64)


def initial_guide_params(args, shape, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Guide concentrations near the prior's and rates near 1 (jittered), as numpy arrays."""
    rng = np.random.default_rng(args.seed + offset)
    return 0.5 + 0.1 * rng.random(shape), 1.0 + 0.1 * rng.random(shape)


def run_pyro(guide_name: str, args, counts: np.ndarray) -> dict:
    with torch_single_thread():
        return _run_pyro(guide_name, args, counts)


def _run_pyro(guide_name: str, args, counts: np.ndarray) -> dict:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    import pyro_reparam_ext as pre

    class ScoreGamma(dist.Gamma):
        has_rsample = False  # forces the score-function estimator for this site

    family = {"implicit": pre.ImplicitGamma, "builtin": dist.Gamma, "score": ScoreGamma}
    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    x = torch.tensor(counts, dtype=torch.get_default_dtype())
    users, items, factors = x.shape[0], x.shape[1], args.factors

    def model(x):
        prior = dist.Gamma(x.new_tensor(PRIOR_SHAPE), x.new_tensor(PRIOR_RATE))
        theta = pyro.sample("theta", prior.expand([users, factors]).to_event(2))
        beta = pyro.sample("beta", prior.expand([items, factors]).to_event(2))
        pyro.sample("x", dist.Poisson(theta @ beta.transpose(-1, -2) + 1e-6).to_event(2), obs=x)

    def make_guide(gamma):
        def guide(x):
            for offset, (name, rows) in enumerate([("theta", users), ("beta", items)]):
                conc, rate = initial_guide_params(args, (rows, factors), offset)
                # log-space parameters: gradient_variance sees the same coordinates on both
                # backends (Pyro differentiates unconstrained values, NumPyro the params)
                log_conc = pyro.param(f"{name}_log_conc", x.new_tensor(np.log(conc)))
                log_rate = pyro.param(f"{name}_log_rate", x.new_tensor(np.log(rate)))
                pyro.sample(name, gamma(log_conc.exp(), log_rate.exp()).to_event(2))

        return guide

    guide = make_guide(family[guide_name])
    options = dict(num_particles=args.particles, vectorize_particles=True, max_plate_nesting=0)
    if guide_name == "score":
        elbo = pre.ScoreFunction_ELBO(baseline="loo", **options)
    else:
        elbo = Trace_ELBO(**options)
    svi = SVI(model, guide, Adam({"lr": args.learning_rate}), elbo)
    evaluation = Trace_ELBO(
        num_particles=args.eval_particles, vectorize_particles=True, max_plate_nesting=0
    )
    evaluation_guide = make_guide(dist.Gamma)  # same parameters, any Gamma sampler
    history = {"step": [], "elbo": []}
    seconds = 0.0
    for step in range(1, args.steps + 1):
        start = time.perf_counter()
        svi.step(x)
        seconds += time.perf_counter() - start
        if step % args.every == 0 or step == args.steps:
            with torch.no_grad():
                loss = evaluation.loss(model, evaluation_guide, x)
            history["step"].append(step)
            history["elbo"].append(-loss / x.numel())
    names = ["theta_log_conc", "theta_log_rate", "beta_log_conc", "beta_log_rate"]
    with pyro_running_state_kept():
        stats = pre.gradient_variance(
            elbo, model, guide, x, num_samples=args.variance_samples, param_names=names
        )
    history["variance"] = stats["total_variance"]
    history["steps_per_second"] = args.steps / seconds
    return history


def run_numpyro(guide_name: str, args, counts: np.ndarray) -> dict:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import Trace_ELBO
    from numpyro.optim import Adam

    import numpyro_backend as npb
    from numpyro_backend.infer import SVI

    class ScoreGamma(dist.Gamma):
        reparametrized_params = []  # has_rsample False: the score-function estimator

        def sample(self, key, sample_shape=()):
            # as torch: keep draws ≥ tiny, where float32 gamma draws underflow to 0 at small α
            value = super().sample(key, sample_shape)
            return jnp.maximum(value, jnp.finfo(value.dtype).tiny)

    family = {"implicit": npb.ImplicitGamma, "builtin": dist.Gamma, "score": ScoreGamma}
    x = jnp.asarray(counts, jnp.float32)
    users, items, factors = x.shape[0], x.shape[1], args.factors
    initial = {
        name: initial_guide_params(args, (rows, factors), offset)
        for offset, (name, rows) in enumerate([("theta", users), ("beta", items)])
    }

    def model(x):
        prior = dist.Gamma(PRIOR_SHAPE, PRIOR_RATE)
        theta = numpyro.sample("theta", prior.expand([users, factors]).to_event(2))
        beta = numpyro.sample("beta", prior.expand([items, factors]).to_event(2))
        numpyro.sample("x", dist.Poisson(theta @ beta.T + 1e-6).to_event(2), obs=x)

    def make_guide(gamma):
        def guide(x):
            for name, (conc, rate) in initial.items():
                log_conc = numpyro.param(f"{name}_log_conc", jnp.asarray(np.log(conc), x.dtype))
                log_rate = numpyro.param(f"{name}_log_rate", jnp.asarray(np.log(rate), x.dtype))
                numpyro.sample(name, gamma(jnp.exp(log_conc), jnp.exp(log_rate)).to_event(2))

        return guide

    guide = make_guide(family[guide_name])
    particles = dict(num_particles=args.particles, vectorize_particles=True)
    if guide_name == "score":
        elbo = npb.ScoreFunction_ELBO(baseline="loo", max_plate_nesting=0, **particles)
    else:
        elbo = Trace_ELBO(**particles)
    svi = SVI(model, guide, Adam(args.learning_rate), elbo)  # stable_update: skips non-finite
    key = jax.random.PRNGKey(args.seed)
    with warnings.catch_warnings():
        # the score variant's guide is (deliberately) not reparameterized; NumPyro's
        # Trace_ELBO check warns about it, although this SVI uses ScoreFunction_ELBO
        warnings.filterwarnings("ignore", "Currently, SVI with Trace_ELBO", UserWarning)
        state = svi.init(jax.random.fold_in(key, 0), x)
    evaluation = Trace_ELBO(num_particles=args.eval_particles)
    evaluation_guide = make_guide(dist.Gamma)
    evaluate = jax.jit(lambda params, key: evaluation.loss(key, params, model, evaluation_guide, x))

    def block(state, _):
        return svi.stable_update(state, x)

    run_block = jax.jit(lambda state: jax.lax.scan(block, state, None, length=args.every))
    history = {"step": [], "elbo": []}
    seconds, step = 0.0, 0
    while step < args.steps:
        start = time.perf_counter()
        state, losses = run_block(state)
        losses.block_until_ready()
        if step > 0:  # the first block compiles
            seconds += time.perf_counter() - start
        step += args.every
        loss = evaluate(svi.get_params(state), jax.random.fold_in(key, step))
        history["step"].append(step)
        history["elbo"].append(-float(loss) / x.size)
    measure = numpyro_gradient_variance_fn(
        elbo, model, guide, x, select=lambda name: name.startswith(("theta_", "beta_"))
    )
    history["variance"] = measure(
        svi.get_params(state),
        state.mutable_state,
        jax.random.fold_in(key, args.steps + 1),
        args.variance_samples,
    )
    timed_steps = args.steps - args.every
    history["steps_per_second"] = timed_steps / seconds if seconds > 0 else float("nan")
    return history


def plot(histories: dict, backend: str, path: Path) -> None:
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4))
    for name, history in histories.items():
        axis.plot(history["step"], history["elbo"], "o-", ms=3, label=GUIDES[name])
    axis.set(
        title=f"Poisson factorization ({backend})", xlabel="step", ylabel="ELBO per count (nats)"
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    parser = ExampleParser(description=__doc__.split("\n\n")[0])
    add_backend_argument(parser)
    parser.add_argument(
        "--guides",
        type=comma_list(list(GUIDES)),
        default=list(GUIDES),
        help="comma-separated subset of: " + ",".join(GUIDES) + " (default: all)",
    )
    parser.add_argument("--steps", type=positive_int, default=1000)
    parser.add_argument(
        "--every", type=positive_int, default=100, help="evaluate the ELBO every this many steps"
    )
    parser.add_argument("--users", type=positive_int, default=60)
    parser.add_argument("--items", type=positive_int, default=40)
    parser.add_argument("--factors", type=positive_int, default=3)
    parser.add_argument(
        "--particles",
        type=positive_int,
        default=2,
        help="particles per step, every guide (>= 2: leave-one-out baseline)",
    )
    parser.add_argument("--learning-rate", type=positive_float, default=0.05)
    parser.add_argument("--eval-particles", type=positive_int, default=50)
    parser.add_argument("--variance-samples", type=positive_int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    if args.steps % args.every:
        parser.error(f"--steps ({args.steps}) must be a multiple of --every ({args.every})")
    if args.particles < 2 and "score" in args.guides:
        parser.error("--particles must be at least 2 for the score guide (leave-one-out)")
    if args.variance_samples < 2:
        parser.error("--variance-samples must be at least 2")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    counts = generate_counts(args)
    print(
        f"Poisson factorization on {args.backend}: {args.users} users x {args.items} items, "
        f"{int(counts.sum())} counts, {args.factors} factors, {args.steps} steps"
    )
    runner = run_pyro if args.backend == "pyro" else run_numpyro
    header = f"{'guide':<32}{'ELBO/count':>12}{'grad variance':>15}{'steps/s':>9}"
    print(header + "\n" + "-" * len(header))
    histories = {}
    for name in args.guides:
        history = runner(name, args, counts)
        histories[name] = history
        variance = history["variance"]
        variance_text = f"{variance:.4g}" if np.isfinite(variance) else "non-finite"
        print(
            f"{GUIDES[name]:<32}{history['elbo'][-1]:>12.4f}{variance_text:>15}"
            f"{history['steps_per_second']:>9.0f}"
        )
    if not all(np.isfinite(h["variance"]) for h in histories.values()):
        print(
            "non-finite: some gradient estimates overflowed (score-function gradients at Gamma "
            "draws that underflow float32); training skips such steps"
        )
    path = Path(args.output_dir) / f"gamma_latent_{args.backend}.png"
    plot(histories, args.backend, path)
    print(f"plot: {path}")
    return histories


if __name__ == "__main__":
    main()
