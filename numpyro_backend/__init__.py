"""pyro-reparam-ext, NumPyro (JAX) backend.

Importing this package registers the pyroapi backend ``"numpyro_backend"``::

    import pyroapi
    import numpyro_backend  # noqa: F401

    with pyroapi.pyro_backend("numpyro_backend"):
        ...
"""

from numpyro_backend import distributions, infer, ops
from numpyro_backend.backend import register_pyroapi_backend
from numpyro_backend.distributions import *  # noqa: F403
from numpyro_backend.infer import *  # noqa: F403

__version__ = "0.1.0"

register_pyroapi_backend()

__all__ = ["distributions", "infer", "ops", *distributions.__all__, *infer.__all__]
