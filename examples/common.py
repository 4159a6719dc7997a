"""Shared helpers for the example scripts: data, argument parsing and plotting set-up.

- :func:`load_binarized_digits`: scikit-learn's bundled 8×8 digits (no download), binarized.
- :func:`load_binary_data`: a user's own binarized data set from ``.npy`` / ``.npz``.
- :class:`ExampleParser`: an ``argparse`` parser whose errors are one line (no usage dump).
- ``positive_int`` / ``positive_float`` / ``nonnegative_int``: argparse ``type=`` checkers.
- :func:`pyplot`: matplotlib with the non-interactive Agg backend (works without a display).

The examples import this module by path (``sys.path`` gets the ``examples`` folder), so they
run both as scripts and when loaded by the tests with ``importlib``.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import numpy as np

DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parent / "output"


class DataError(ValueError):
    """A data file that cannot be used; the message is one line meant for the user."""


class ExampleParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are a single line on stderr, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = _parse(int, text, "an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    value = _parse(int, text, "an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = _parse(float, text, "a number")
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _parse(kind, text: str, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def comma_list(choices: list[str]):
    """argparse type: a comma-separated subset of ``choices`` (order kept, ``all`` = every one)."""

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        if names == ["all"]:
            return list(choices)
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                f"choose from {', '.join(choices)} or 'all'"
            )
        return list(dict.fromkeys(names))

    return parse


def add_backend_argument(parser: argparse.ArgumentParser, default: str = "pyro") -> None:
    parser.add_argument(
        "--backend",
        choices=["pyro", "numpyro"],
        default=default,
        help=f"pyro (PyTorch) or numpyro (JAX) (default: {default})",
    )


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help="folder for the PNG plot (default: examples/output/)",
    )


def load_binarized_digits(seed: int, test_fraction: float = 0.2):
    """scikit-learn's bundled 8×8 digits, binarized at half intensity, shuffled and split.

    :returns: ``(train, test)`` float64 arrays of 0/1 with 64 columns (1437 / 359 rows).
    """
    from sklearn.datasets import load_digits

    images = (load_digits().data > 8).astype(np.float64)
    return split(images, seed, test_fraction)


def split(images: np.ndarray, seed: int, test_fraction: float = 0.2):
    """Shuffle the rows with ``seed`` and split off ``test_fraction`` of them as a test set."""
    order = np.random.default_rng(seed).permutation(len(images))
    num_test = max(1, int(round(test_fraction * len(images))))
    return images[order[num_test:]], images[order[:num_test]]


def load_binary_data(path: str | Path, seed: int, test_fraction: float = 0.2):
    """Load a user's binarized data set: one row per example, values 0/1.

    ``.npy``: one array of shape ``(N, ...)`` (trailing axes are flattened), shuffled and
    split with ``seed``. ``.npz``: arrays ``train`` and ``test`` if both are present (used
    as given), otherwise its single array (or the one named ``x`` / ``data`` / ``images``),
    split like ``.npy``.

    :raises DataError: with a one-line message for a missing file, another format, a file
        numpy cannot read, non-binary values or too few rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data: no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"--data: expected a .npy or .npz file, got {path.name!r}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as error:  # numpy raises several types for corrupt files
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"--data: cannot read {path.name}: {message}") from None
    if suffix == ".npy":
        return split(_binary_rows(loaded, path.name), seed, test_fraction)
    with loaded:
        names = list(loaded.files)
        if "train" in names and "test" in names:
            train = _binary_rows(loaded["train"], f"{path.name}['train']")
            test = _binary_rows(loaded["test"], f"{path.name}['test']")
            if train.shape[1] != test.shape[1]:
                raise DataError(
                    f"--data: train and test have {train.shape[1]} and {test.shape[1]} columns"
                )
            return train, test
        preferred = [name for name in ("x", "data", "images") if name in names]
        if preferred:
            key = preferred[0]
        elif len(names) == 1:
            key = names[0]
        else:
            raise DataError(
                f"--data: {path.name} holds {names}; expected 'train' and 'test', "
                "or one array (or one named 'x', 'data' or 'images')"
            )
        return split(_binary_rows(loaded[key], f"{path.name}[{key!r}]"), seed, test_fraction)


def _binary_rows(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim < 2:
        raise DataError(
            f"--data: {where} must have one row per example (ndim >= 2), got shape {array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise DataError(f"--data: {where} must be numeric, got dtype {array.dtype}")
    rows = array.reshape(len(array), -1).astype(np.float64)
    if len(rows) < 10:
        raise DataError(f"--data: {where} has {len(rows)} rows; need at least 10")
    if not np.isin(rows, (0.0, 1.0)).all():
        raise DataError(f"--data: {where} must be binarized (only 0 and 1 values)")
    return rows


def load_data_or_digits(parser: argparse.ArgumentParser, data_path, seed: int):
    """``--data`` if given (errors reported through ``parser.error``), else the digits."""
    if data_path is None:
        return load_binarized_digits(seed)
    try:
        return load_binary_data(data_path, seed)
    except DataError as error:
        parser.error(str(error))


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def numpyro_gradient_variance_fn(elbo, model, guide, *args, select):
    """``numpyro_backend.gradient_variance``'s ``total_variance`` as ``measure(...)``.

    Returns ``measure(params, mutable_state, key, num_samples) -> total variance``: the
    unbiased per-coordinate variance of ∇ −ELBO (w.r.t. the unconstrained parameters) over
    ``num_samples`` independent keys, summed over the parameters whose names satisfy
    ``select(name)``; ``params`` as ``svi.get_params(state)``, ``mutable_state`` as
    ``state.mutable_state`` (running baselines update between the samples, as on Pyro; the
    caller's state is not changed). ``gradient_variance`` compiles once per program, so
    measuring at many checkpoints costs one compile.
    """
    import numpyro_backend as npb

    def measure(params, mutable_state, key, num_samples: int) -> float:
        names = [n for n in params if select(n) and not n.startswith("reparam_ext.")]
        stats = npb.gradient_variance(
            elbo,
            model,
            guide,
            *args,
            num_samples=num_samples,
            param_names=names,
            rng_key=key,
            params={**params, **(mutable_state or {})},
        )
        return stats["total_variance"]

    return measure


@contextlib.contextmanager
def torch_single_thread():
    """Run PyTorch on one thread, restoring the caller's setting afterwards.

    The examples' tensors are tiny: thread hand-offs cost more than they save (5-30x slower
    steps on a busy 2-core machine).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def pyro_running_state_kept():
    """Undo, on exit, what a measurement did to running baselines in Pyro's param store.

    ``gradient_variance`` updates running-average baselines between its samples, as training
    does; measuring at checkpoints must not warm them up for the training steps that follow
    (NumPyro's measurement, :func:`numpyro_gradient_variance_fn`, holds them fixed).
    Covers ``reparam_ext.*`` state and Pyro's own ``__baseline_*`` averages.
    """
    import pyro
    import torch

    store = pyro.get_param_store()
    running = ("reparam_ext.", "__baseline")
    saved = {
        name: store.get_param(name).unconstrained().detach().clone()
        for name in store.keys()
        if name.startswith(running)
    }
    try:
        yield
    finally:
        # state the measurement created must go too: left behind, it hands the first training
        # step a warmed-up baseline that an unmeasured run never has
        for name in [n for n in store.keys() if n.startswith(running) and n not in saved]:
            del store[name]
        with torch.no_grad():
            for name, value in saved.items():
                current = store.get_param(name).unconstrained()
                if current.shape == value.shape:
                    current.copy_(value)
