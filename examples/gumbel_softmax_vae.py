"""Gumbel-Softmax (Concrete) VAE on scikit-learn's digits, on Pyro or NumPyro.

The latent code is ``num_latents`` categorical variables with ``num_categories`` classes each,
relaxed with the Concrete distribution (Maddison et al. 2017; Jang et al. 2017). Following
Maddison et al., section 3.3, both the prior and the guide use :class:`ExpConcrete` in log space,
so the KL term stays finite at low temperature; the decoder reads ``exp(y)``, a point on the
simplex. The guide is fully reparameterized, so plain ``Trace_ELBO`` gives pathwise gradients.

Usage::

    python examples/gumbel_softmax_vae.py --backend pyro --steps 800
    python examples/gumbel_softmax_vae.py --backend numpyro --steps 800

Prints the training loss and the held-out ELBO (nats per image; relaxed, so not a bound on the
discrete model's likelihood).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_binarized_digits, torch_single_thread  # noqa: E402  (examples/ on path)

NUM_PIXELS = 64


def run_pyro(args, train, test):
    import pyro
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam
    from torch import nn

    import pyro_reparam_ext as pre

    pyro.set_rng_seed(args.seed)
    pyro.clear_param_store()
    latent = args.num_latents * args.num_categories
    decoder = nn.Sequential(nn.Linear(latent, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 64))
    encoder = nn.Sequential(nn.Linear(64, args.hidden), nn.Tanh(), nn.Linear(args.hidden, latent))
    shape = (args.num_latents, args.num_categories)

    def model(images):
        pyro.module("decoder", decoder)
        with pyro.plate("data", len(images)):
            prior = pre.ExpConcrete(args.prior_temperature, logits=torch.zeros(shape))
            y = pyro.sample("y", prior.to_event(1))
            logits = decoder(y.exp().reshape(len(images), -1))
            pyro.sample("x", pyro.distributions.Bernoulli(logits=logits).to_event(1), obs=images)

    def guide(images):
        pyro.module("encoder", encoder)
        with pyro.plate("data", len(images)):
            logits = encoder(images).reshape((len(images),) + shape)
            pyro.sample("y", pre.ExpConcrete(args.temperature, logits=logits).to_event(1))

    svi = SVI(model, guide, Adam({"lr": args.learning_rate}), Trace_ELBO())
    train_t = torch.tensor(train, dtype=torch.get_default_dtype())
    test_t = torch.tensor(test, dtype=torch.get_default_dtype())
    generator = np.random.default_rng(args.seed)
    for step in range(args.steps):
        batch = train_t[generator.choice(len(train_t), args.batch_size, replace=False)]
        loss = svi.step(batch) / args.batch_size
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"  step {step:5d}  train loss {loss:8.3f} nats/image")
    with torch.no_grad():
        test_loss = np.mean([svi.evaluate_loss(test_t) / len(test_t) for _ in range(5)])
    return test_loss


def run_numpyro(args, train, test):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax.example_libraries import stax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import Adam

    import numpyro_backend as npb

    latent = args.num_latents * args.num_categories
    shape = (args.num_latents, args.num_categories)
    decoder = stax.serial(stax.Dense(args.hidden), stax.Tanh, stax.Dense(NUM_PIXELS))
    encoder = stax.serial(stax.Dense(args.hidden), stax.Tanh, stax.Dense(latent))

    def model(images):
        decode = numpyro.module("decoder", decoder, (len(images), latent))
        with numpyro.plate("data", len(images)):
            prior = npb.ExpConcrete(args.prior_temperature, logits=jnp.zeros(shape))
            y = numpyro.sample("y", prior.to_event(1))
            logits = decode(jnp.exp(y).reshape(len(images), -1))
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=images)

    def guide(images):
        encode = numpyro.module("encoder", encoder, (len(images), NUM_PIXELS))
        with numpyro.plate("data", len(images)):
            logits = encode(images).reshape((len(images),) + shape)
            numpyro.sample("y", npb.ExpConcrete(args.temperature, logits=logits).to_event(1))

    svi = SVI(model, guide, Adam(args.learning_rate), Trace_ELBO())
    train_j = jnp.asarray(train, dtype=jnp.float32)
    test_j = jnp.asarray(test, dtype=jnp.float32)
    rng_key = jax.random.PRNGKey(args.seed)
    state = svi.init(rng_key, train_j[: args.batch_size])
    update = jax.jit(svi.update)
    generator = np.random.default_rng(args.seed)
    for step in range(args.steps):
        batch = train_j[generator.choice(len(train), args.batch_size, replace=False)]
        state, loss = update(state, batch)
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"  step {step:5d}  train loss {float(loss) / args.batch_size:8.3f} nats/image")
    params = svi.get_params(state)
    test_loss = jax.jit(lambda key: Trace_ELBO().loss(key, params, model, guide, test_j))
    losses = [test_loss(jax.random.PRNGKey(i)) / len(test) for i in range(5)]
    return float(np.mean(losses))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["pyro", "numpyro"], default="pyro")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-latents", type=int, default=8)
    parser.add_argument("--num-categories", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--prior-temperature", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "num_latents", "hidden"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_categories < 2:
        parser.error("--num-categories must be at least 2")
    if args.temperature <= 0 or args.prior_temperature <= 0:
        parser.error("--temperature and --prior-temperature must be > 0")
    return args


def main(argv=None) -> float:
    args = parse_args(argv)
    train, test = load_binarized_digits(args.seed)
    if args.batch_size > len(train):
        raise SystemExit(f"error: --batch-size must be at most {len(train)}")
    print(f"Gumbel-Softmax VAE on digits ({len(train)} train / {len(test)} test), {args.backend}")
    start = time.perf_counter()
    if args.backend == "pyro":
        with torch_single_thread():  # tiny tensors: thread hand-offs cost more than they save
            test_loss = run_pyro(args, train, test)
    else:
        test_loss = run_numpyro(args, train, test)
    elapsed = time.perf_counter() - start
    print(f"held-out relaxed ELBO: {-test_loss:.3f} nats/image  ({elapsed:.1f} s)")
    return test_loss


if __name__ == "__main__":
    sys.exit(0 if np.isfinite(main()) else 1)
