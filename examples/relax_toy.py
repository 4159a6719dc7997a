"""The RELAX paper's toy problem: minimise E_{b ~ Bernoulli(θ)}[(b − 0.499)²] over θ.

Grathwohl et al. (2018, section 6.1) use this one-bit problem to show how much a learned
control variate helps: the two outcomes cost almost the same (f(1) − f(0) = 0.002), so the
gradient signal, σ'(ℓ)·0.002 for θ = σ(ℓ), is tiny next to the score-function noise, whose scale
is f itself (≈ 0.25). The optimum is θ → 0.

As an ELBO (the form every estimator here takes): the observation 0.499 ~ Normal(b, 1/√2)
contributes −(b − 0.499)² − ½ log π, and the latent b (prior Bernoulli(1/2)) sits under
``scale(1e-4)`` in model and guide, so that

    −ELBO = E[(b − 0.499)²] + ½ log π + 1e-4 · KL(Bernoulli(θ) ‖ Bernoulli(1/2)),

the paper's objective up to a constant and a KL term that moves the optimum only to
ℓ ≈ −20 (this is the toy of the library's own estimator tests). Each estimator trains ℓ with
Adam from ℓ = 0; every ``--every`` steps the script records the exact objective
E[(b − 0.499)²] = θ(1 − 0.499)² + (1 − θ)·0.499² and the variance of the gradient estimate of
ℓ over ``--variance-samples`` independent estimates (``gradient_variance``). It prints the final
θ, loss and mean log₁₀ variance per estimator and plots loss and log-variance against the step.

Usage::

    python examples/relax_toy.py                       # Pyro
    python examples/relax_toy.py --backend numpyro --steps 2000
"""

from __future__ import annotations

import sys
import time
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

TARGET = 0.499
KL_SCALE = 1e-4
ESTIMATORS = {
    "reinforce": "REINFORCE (no baseline)",
    "sf-optimal": "ScoreFunction, optimal baseline",
    "rebar": "REBAR",
    "relax": "RELAX",
}


def exact_loss(logit: float) -> float:
    """E[(b − t)²] for b ~ Bernoulli(σ(logit)), t = 0.499."""
    theta = 1.0 / (1.0 + np.exp(-logit))
    return theta * (1 - TARGET) ** 2 + (1 - theta) * TARGET**2


def log10_variance(history: dict) -> np.ndarray:
    """log₁₀ of the recorded variances (a variance of exactly 0 shows as −300, not −inf)."""
    return np.log10(np.maximum(np.asarray(history["variance"], dtype=float), 1e-300))


def run_pyro(estimator: str, args) -> dict:
    with torch_single_thread():
        return _run_pyro(estimator, args)


def _run_pyro(estimator: str, args) -> dict:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro import poutine
    from pyro.infer import SVI
    from pyro.optim import Adam

    import pyro_reparam_ext as pre

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    target = torch.tensor(TARGET)

    def model():
        with poutine.scale(scale=KL_SCALE):
            b = pyro.sample("b", dist.Bernoulli(probs=torch.tensor(0.5)))
        pyro.sample("f", dist.Normal(b, 0.5**0.5), obs=target)

    def guide():
        logit = pyro.param("theta_logit", torch.tensor(0.0))
        with poutine.scale(scale=KL_SCALE):
            pyro.sample("b", dist.Bernoulli(logits=logit))

    elbo = make_elbo(pre, estimator, args)
    svi = SVI(model, guide, Adam({"lr": args.learning_rate}), elbo)
    history = {"step": [], "loss": [], "variance": []}
    for step in range(args.steps + 1):
        if step % args.every == 0:
            with pyro_running_state_kept():
                stats = pre.gradient_variance(
                    elbo,
                    model,
                    guide,
                    num_samples=args.variance_samples,
                    param_names=["theta_logit"],
                )
            logit = float(pyro.param("theta_logit").detach())
            history["step"].append(step)
            history["loss"].append(exact_loss(logit))
            history["variance"].append(stats["total_variance"])
        if step < args.steps:
            svi.step()
    history["logit"] = float(pyro.param("theta_logit").detach())
    return history


def run_numpyro(estimator: str, args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro import handlers
    from numpyro.optim import Adam

    import numpyro_backend as npb
    from numpyro_backend.infer import SVI

    def model():
        with handlers.scale(scale=KL_SCALE):
            b = numpyro.sample("b", dist.Bernoulli(probs=0.5))
        numpyro.sample("f", dist.Normal(b, 0.5**0.5), obs=jnp.asarray(TARGET))

    def guide():
        logit = numpyro.param("theta_logit", jnp.asarray(0.0))
        with handlers.scale(scale=KL_SCALE):
            numpyro.sample("b", dist.Bernoulli(logits=logit))

    elbo = make_elbo(npb, estimator, args)
    svi = SVI(model, guide, Adam(args.learning_rate), elbo)
    key = jax.random.PRNGKey(args.seed)
    state = svi.init(jax.random.fold_in(key, 0))
    measure = numpyro_gradient_variance_fn(
        elbo, model, guide, select=lambda name: name == "theta_logit"
    )

    # train between checkpoints with lax.scan: one compiled block of `every` steps
    def block(state, _):
        state, loss = svi.stable_update(state)
        return state, loss

    run_block = jax.jit(lambda state: jax.lax.scan(block, state, None, length=args.every))
    history = {"step": [], "loss": [], "variance": []}
    step = 0
    while True:
        params = svi.get_params(state)
        history["step"].append(step)
        history["loss"].append(exact_loss(float(params["theta_logit"])))
        variance_key = jax.random.fold_in(key, step + 1)
        history["variance"].append(
            measure(params, state.mutable_state, variance_key, args.variance_samples)
        )
        if step >= args.steps:
            break
        state, _ = run_block(state)
        step += args.every
    history["logit"] = float(svi.get_params(state)["theta_logit"])
    return history


def make_elbo(package, estimator: str, args):
    options = dict(num_particles=1, max_plate_nesting=0)
    return {
        "reinforce": lambda: package.ScoreFunction_ELBO(baseline="none", **options),
        "sf-optimal": lambda: package.ScoreFunction_ELBO(baseline="optimal", **options),
        "rebar": lambda: package.REBAR_ELBO(**options),
        "relax": lambda: package.RELAX_ELBO(**options),
    }[estimator]()


def plot(histories: dict, backend: str, path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        left.plot(history["step"], history["loss"], label=ESTIMATORS[name])
        right.plot(history["step"], log10_variance(history), label=ESTIMATORS[name])
    left.axhline(TARGET**2, color="gray", ls=":", lw=1, label="optimum (θ = 0)")
    left.set(title=f"RELAX toy ({backend}): E[(b − 0.499)²]", xlabel="step", ylabel="loss")
    right.set(title="gradient variance for the logit", xlabel="step", ylabel="log₁₀ variance")
    for axis in (left, right):
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
        "--estimators",
        type=comma_list(list(ESTIMATORS)),
        default=list(ESTIMATORS),
        help="comma-separated subset of: " + ",".join(ESTIMATORS) + " (default: all)",
    )
    parser.add_argument("--steps", type=positive_int, default=1000)
    parser.add_argument(
        "--every",
        type=positive_int,
        default=100,
        help="record loss and variance every this many steps",
    )
    parser.add_argument(
        "--variance-samples",
        type=positive_int,
        default=100,
        help="gradient estimates per variance measurement (>= 2)",
    )
    parser.add_argument("--learning-rate", type=positive_float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    add_output_argument(parser)
    args = parser.parse_args(argv)
    if args.variance_samples < 2:
        parser.error("--variance-samples must be at least 2")
    if args.steps % args.every:
        parser.error(f"--steps ({args.steps}) must be a multiple of --every ({args.every})")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(f"RELAX toy on {args.backend}: {args.steps} steps of Adam(lr={args.learning_rate})")
    runner = run_pyro if args.backend == "pyro" else run_numpyro
    histories = {}
    header = f"{'estimator':<33}{'θ final':>10}{'loss':>10}{'mean log10 var':>16}{'time':>8}"
    print(header + "\n" + "-" * len(header))
    for name in args.estimators:
        start = time.perf_counter()
        history = runner(name, args)
        histories[name] = history
        theta = 1.0 / (1.0 + np.exp(-history["logit"]))
        print(
            f"{ESTIMATORS[name]:<33}{theta:>10.4f}{history['loss'][-1]:>10.5f}"
            f"{np.mean(log10_variance(history)):>16.2f}"
            f"{time.perf_counter() - start:>7.1f}s"
        )
    path = Path(args.output_dir) / f"relax_toy_{args.backend}.png"
    plot(histories, args.backend, path)
    print(f"optimum: θ = 0, loss = {TARGET**2:.5f}; plot: {path}")
    return histories


if __name__ == "__main__":
    main()
