"""pyroapi backend modules: every stock NumPyro name plus this package's."""

import pyroapi

BACKEND_NAME = "numpyro_backend"


def register_pyroapi_backend() -> None:
    """Register the ``"numpyro_backend"`` alias with :func:`pyroapi.register_backend`."""
    pyroapi.register_backend(
        BACKEND_NAME,
        {
            "distributions": "numpyro_backend.backend.distributions",
            "handlers": "numpyro.handlers",
            "infer": "numpyro_backend.backend.infer",
            "ops": "numpyro_backend.backend.ops",
            "optim": "numpyro_backend.backend.optim",
            "pyro": "numpyro_backend.backend.pyro",
        },
    )
