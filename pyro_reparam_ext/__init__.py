"""pyro-reparam-ext, Pyro (PyTorch) backend.

Importing this package registers the pyroapi backend ``"pyro_reparam_ext"``::

    import pyroapi
    import pyro_reparam_ext  # noqa: F401

    with pyroapi.pyro_backend("pyro_reparam_ext"):
        ...
"""

from pyro_reparam_ext import distributions, infer, ops
from pyro_reparam_ext.backend import register_pyroapi_backend
from pyro_reparam_ext.distributions import *  # noqa: F403
from pyro_reparam_ext.infer import *  # noqa: F403

__version__ = "0.1.0"

register_pyroapi_backend()

__all__ = ["distributions", "infer", "ops", *distributions.__all__, *infer.__all__]
