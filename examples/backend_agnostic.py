"""One discrete VAE, written once with pyroapi imports, trained with RELAX on Pyro or NumPyro.

The model and guide below use only ``pyroapi`` (``pyro``, ``distributions``, ``ops``); the
backend is chosen at run time by ``pyro_backend("pyro_reparam_ext")`` or
``pyro_backend("numpyro_backend")``, and the estimator line
``infer.RELAX_ELBO(num_particles=..., max_plate_nesting=1)`` is the same on both.

    python examples/backend_agnostic.py --backend numpyro --steps 300

Data: noisy copies of a few binary prototypes (no download). Model: z ~ Bernoulli(1/2)^L per
data point, x | z ~ Bernoulli(logits = z W + c); guide: z | x ~ Bernoulli(logits = x V + d).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyroapi
from pyroapi import distributions as dist
from pyroapi import infer, ops, optim, pyro

import numpyro_backend  # noqa: F401  (registers the "numpyro_backend" pyroapi backend)
import pyro_reparam_ext  # noqa: F401  (registers the "pyro_reparam_ext" pyroapi backend)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402  (the examples folder is put on sys.path just above)
    ExampleParser,
    add_backend_argument,
    positive_float,
    positive_int,
)

BACKENDS = {"pyro": "pyro_reparam_ext", "numpyro": "numpyro_backend"}


def make_data(num_points: int, num_pixels: int, seed: int) -> np.ndarray:
    """Noisy copies (10% flipped pixels) of three random binary prototypes, float32."""
    rng = np.random.RandomState(seed)
    prototypes = (rng.uniform(size=(3, num_pixels)) < 0.5).astype(np.float32)
    rows = prototypes[rng.randint(0, 3, num_points)]
    flips = rng.uniform(size=rows.shape) < 0.1
    return np.where(flips, 1.0 - rows, rows).astype(np.float32)


def make_model(latent_dim: int, num_pixels: int, seed: int):
    """Backend-agnostic (model, guide) with parameters initialized from ``seed``."""
    rng = np.random.RandomState(seed)
    init = {
        "dec_w": rng.normal(0.0, 0.1, (latent_dim, num_pixels)).astype(np.float32),
        "dec_b": np.zeros(num_pixels, np.float32),
        "enc_w": rng.normal(0.0, 0.1, (num_pixels, latent_dim)).astype(np.float32),
        "enc_b": np.zeros(latent_dim, np.float32),
    }

    def model(x):
        dec_w = pyro.param("dec_w", ops.tensor(init["dec_w"]))
        dec_b = pyro.param("dec_b", ops.tensor(init["dec_b"]))
        prior_logits = ops.zeros(latent_dim)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(logits=prior_logits).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z @ dec_w + dec_b).to_event(1), obs=x)

    def guide(x):
        enc_w = pyro.param("enc_w", ops.tensor(init["enc_w"]))
        enc_b = pyro.param("enc_b", ops.tensor(init["enc_b"]))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=x @ enc_w + enc_b).to_event(1))

    return model, guide


def train(
    backend: str = "numpyro",
    steps: int = 200,
    lr: float = 0.05,
    latent_dim: int = 3,
    num_points: int = 32,
    num_pixels: int = 12,
    particles: int = 2,
    seed: int = 0,
    log_every: int = 50,
) -> list[float]:
    """Train the VAE with RELAX_ELBO on ``backend``; return the loss (−ELBO) of every step."""
    data_np = make_data(num_points, num_pixels, seed)
    with pyroapi.pyro_backend(BACKENDS[backend]):
        pyro.set_rng_seed(seed)
        pyro.clear_param_store()
        model, guide = make_model(latent_dim, num_pixels, seed)
        data = ops.tensor(data_np)
        elbo = infer.RELAX_ELBO(num_particles=particles, max_plate_nesting=1)
        svi = infer.SVI(model, guide, optim.Adam({"lr": lr}), elbo)
        losses = []
        for step in range(steps):
            losses.append(float(svi.step(data)))
            if log_every and (step + 1) % log_every == 0:
                recent = np.mean(losses[-log_every:])
                print(f"[{backend}] step {step + 1:5d}  -ELBO per point {recent / num_points:.4f}")
        pyro.clear_param_store()
    return losses


def main(argv=None) -> int:
    parser = ExampleParser(
        prog="backend_agnostic.py",
        description="Train one backend-agnostic discrete VAE with RELAX_ELBO on Pyro or NumPyro.",
    )
    add_backend_argument(parser, default="numpyro")
    parser.add_argument("--steps", type=positive_int, default=200, help="SVI steps")
    parser.add_argument("--lr", type=positive_float, default=0.05, help="Adam learning rate")
    parser.add_argument("--latent-dim", type=positive_int, default=3)
    parser.add_argument("--num-points", type=positive_int, default=32)
    parser.add_argument("--num-pixels", type=positive_int, default=12)
    parser.add_argument("--particles", type=positive_int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    losses = train(
        args.backend,
        args.steps,
        args.lr,
        args.latent_dim,
        args.num_points,
        args.num_pixels,
        args.particles,
        args.seed,
        log_every=max(1, args.steps // 5),
    )
    window = max(1, min(20, args.steps // 4))
    first, last = np.mean(losses[:window]), np.mean(losses[-window:])
    print(
        f"[{args.backend}] -ELBO per point: first {window} steps {first / args.num_points:.4f}, "
        f"last {window} steps {last / args.num_points:.4f} ({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
