"""The RELAX paper's toy problem: minimise E_{b ~ Bernoulli(θ)}[(b − 0.499)²] over θ.

Grathwohl et al. (2018, section 6.1 and Figure 1; after Tucker et al. 2017) use this one-bit
problem to show how much a learned control variate helps: the two outcomes cost almost the
same (f(1) − f(0) = 0.002), so the gradient signal, σ'(ℓ)·0.002 for θ = σ(ℓ), is tiny next to
the score-function noise, whose scale is f itself (≈ 0.25). The optimum is θ → 0. The paper's
protocol, the default here: one Bernoulli, ℓ = 0 at the start, Adam with learning rate 0.01
for θ and the control variate, 10,000 steps (the paper's figure and its reference code).

As an ELBO (the form every estimator here takes): the cost enters the model as
``factor("f", −(b − 0.499)²)`` and the latent b (prior Bernoulli(1/2)) sits under
``scale(1e-4)`` in model and guide, so that

    −ELBO = E[(b − 0.499)²] + 1e-4 · KL(Bernoulli(θ) ‖ Bernoulli(1/2)),

the paper's objective plus a KL term that moves the optimum only to ℓ ≈ −20. Each estimator
trains ℓ from ℓ = 0; every ``--every`` steps the script records the exact objective
E[(b − 0.499)²] = θ(1 − 0.499)² + (1 − θ)·0.499² and the variance of the gradient estimate of
ℓ over ``--variance-samples`` independent estimates (``gradient_variance``). It prints, per
estimator, the cost of a step in evaluations of f, the final θ, the final loss and its excess
over the optimum, log₁₀ of the variance averaged over the checkpoints and the run time, and
plots loss and log-variance against the step. On NumPyro the steps between checkpoints run in
one compiled ``lax.scan``.

Measured (seed 0, the default protocol, both backends alike; README "Examples"): REINFORCE
(θ = 0.73) and REBAR (θ = 0.45 / 0.28) barely move, as in the paper's Figure 1; RELAX gets
to θ ≈ 0.1 but does not reach the optimum in 10,000 steps — its learned control variate's Adam
jitter at lr 0.01 is larger than the 0.002 signal. The score function with a decaying-average
or optimal baseline (θ ≈ 0.003 / 0.001, one evaluation of f per step) and leave-one-out or
DisARM at two evaluations (θ ≈ 0.0005) do: a running constant removes almost all of the noise
when f takes two nearly equal values. When *not* to use RELAX: a cost with few outcomes and a
small signal (use a baseline), or a tight budget of function evaluations (REBAR/RELAX cost 3
per sample). Use it where f varies a lot across samples and a learned surrogate can track it
(the paper's VAEs).

Usage::

    python examples/relax_toy.py                       # Pyro, 10,000 steps
    python examples/relax_toy.py --backend numpyro     # the same in lax.scan (seconds)
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
    "sf-decaying": "ScoreFunction, decaying avg",
    "sf-optimal": "ScoreFunction, optimal baseline",
    "sf-loo": "ScoreFunction, leave-one-out",
    "disarm": "DisARM",
    "rebar": "REBAR",
    "relax": "RELAX",
}
#: evaluations of f per step: particles, and 3 per particle for REBAR / RELAX (f(b), the
#: relaxed f(σ_λ(z)) and f(σ_λ(z̃)))
EVALUATIONS = {
    "reinforce": 1,
    "sf-decaying": 1,
    "sf-optimal": 1,
    "sf-loo": 2,
    "disarm": 2,
    "rebar": 3,
    "relax": 3,
}


def exact_loss(logit: float) -> float:
    """E[(b − t)²] for b ~ Bernoulli(σ(logit)), t = 0.499."""
    theta = 1.0 / (1.0 + np.exp(-logit))
    return theta * (1 - TARGET) ** 2 + (1 - theta) * TARGET**2


def log10_variance(history: dict) -> np.ndarray:
    """log₁₀ of the recorded variances (a variance of exactly 0 shows as −300, not −inf)."""
    return np.log10(np.maximum(np.asarray(history["variance"], dtype=float), 1e-300))


def log10_mean_variance(history: dict) -> float:
    """log₁₀ of the variance averaged over the checkpoints (zeros, where every draw of b was
    the same, weigh as zeros instead of as −300)."""
    return float(np.log10(max(np.mean(history["variance"]), 1e-300)))


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
        pyro.factor("f", -((b - target) ** 2))

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
        numpyro.factor("f", -((b - TARGET) ** 2))

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
    options = dict(max_plate_nesting=0)
    score = package.ScoreFunction_ELBO
    return {
        "reinforce": lambda: score(1, baseline="none", **options),
        "sf-decaying": lambda: score(1, baseline="decaying_avg", **options),
        "sf-optimal": lambda: score(1, baseline="optimal", **options),
        "sf-loo": lambda: score(2, baseline="loo", **options),
        "disarm": lambda: package.DisARM_ELBO(2, **options),
        "rebar": lambda: package.REBAR_ELBO(1, **options),
        "relax": lambda: package.RELAX_ELBO(1, **options),
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
    parser.add_argument(
        "--steps", type=positive_int, default=10000, help="default: the paper's 10,000"
    )
    parser.add_argument(
        "--every",
        type=positive_int,
        default=500,
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
    header = (
        f"{'estimator':<33}{'f evals/step':>13}{'θ final':>10}{'loss':>10}"
        f"{'loss − optimum':>16}{'log10 mean var':>16}{'time (s)':>10}"
    )
    print(header + "\n" + "-" * len(header))
    for name in args.estimators:
        start = time.perf_counter()
        history = runner(name, args)
        history["seconds"] = time.perf_counter() - start
        histories[name] = history
        theta = 1.0 / (1.0 + np.exp(-history["logit"]))
        loss = history["loss"][-1]
        print(
            f"{ESTIMATORS[name]:<33}{EVALUATIONS[name]:>13}{theta:>10.4f}{loss:>10.5f}"
            f"{loss - TARGET**2:>16.2e}{log10_mean_variance(history):>16.2f}"
            f"{history['seconds']:>10.1f}"
        )
    path = Path(args.output_dir) / f"relax_toy_{args.backend}.png"
    plot(histories, args.backend, path)
    print(f"optimum: θ = 0, loss = {TARGET**2:.5f}; plot: {path}")
    return histories


if __name__ == "__main__":
    main()
