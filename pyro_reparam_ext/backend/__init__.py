"""pyroapi backend modules: every stock Pyro name plus this package's."""

import pyroapi

BACKEND_NAME = "pyro_reparam_ext"


def register_pyroapi_backend() -> None:
    """Register the ``"pyro_reparam_ext"`` alias with :func:`pyroapi.register_backend`."""
    pyroapi.register_backend(
        BACKEND_NAME,
        {
            "distributions": "pyro_reparam_ext.backend.distributions",
            "handlers": "pyro.poutine",
            "infer": "pyro_reparam_ext.backend.infer",
            "ops": "torch",
            "optim": "pyro.optim",
            "pyro": "pyro",
        },
    )
