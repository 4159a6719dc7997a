"""``pyroapi.infer`` under the ``"numpyro_backend"`` backend."""

from numpyro.compat.infer import *  # stock names

from numpyro_backend.infer import *  # ours
