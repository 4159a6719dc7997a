"""pyroapi backend modules: every stock NumPyro name plus this package's."""

import pyroapi

BACKEND_NAME = "numpyro_backend"


def register_pyroapi_backend() -> None:
    """Register the ``"numpyro_backend"`` alias with :func:`pyroapi.register_backend`."""
    pyroapi.register_backend(
        BACKEND_NAME,
        {
            "distributions": "numpyro_backend.backend.distributions",
            "handlers": "numpyro.compat.handlers",
            "infer": "numpyro_backend.backend.infer",
            "ops": "numpyro.compat.ops",
            "optim": "numpyro.compat.optim",
            "pyro": "numpyro.compat.pyro",
        },
    )
