"""``pyroapi.optim`` under the ``"numpyro_backend"`` backend: Pyro-style constructors.

``Adam({"lr": 0.01})`` etc. return NumPyro optimizers; the options dict is not modified.
"""

from __future__ import annotations

from numpyro import optim as _optim


def _options(options: dict, allowed: set[str], name: str) -> dict:
    options = dict(options)
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"{name}: unsupported option(s) {sorted(unknown)}; use {sorted(allowed)}")
    if "lr" not in options:
        raise ValueError(f"{name}: the options dict needs 'lr'")
    return options


def _step_size(lr, lrd):
    if lrd is None:
        return lr
    return lambda i: lr * lrd**i


def Adam(options: dict):
    o = _options(options, {"lr", "betas", "eps"}, "Adam")
    b1, b2 = o.get("betas", (0.9, 0.999))
    return _optim.Adam(step_size=o["lr"], b1=b1, b2=b2, eps=o.get("eps", 1e-8))


def ClippedAdam(options: dict):
    o = _options(options, {"lr", "betas", "eps", "clip_norm", "lrd"}, "ClippedAdam")
    b1, b2 = o.get("betas", (0.9, 0.999))
    return _optim.ClippedAdam(
        step_size=_step_size(o["lr"], o.get("lrd")),
        b1=b1,
        b2=b2,
        eps=o.get("eps", 1e-8),
        clip_norm=o.get("clip_norm", 10.0),
    )


def SGD(options: dict):
    o = _options(options, {"lr", "momentum"}, "SGD")
    if o.get("momentum"):
        return _optim.Momentum(step_size=o["lr"], mass=o["momentum"])
    return _optim.SGD(step_size=o["lr"])


def Adagrad(options: dict):
    o = _options(options, {"lr", "eps"}, "Adagrad")
    return _optim.Adagrad(step_size=o["lr"], eps=o.get("eps", 1e-8))


def RMSprop(options: dict):
    o = _options(options, {"lr", "alpha", "eps"}, "RMSprop")
    return _optim.RMSProp(step_size=o["lr"], gamma=o.get("alpha", 0.99), eps=o.get("eps", 1e-8))
