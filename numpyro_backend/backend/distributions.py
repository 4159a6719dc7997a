"""``pyroapi.distributions`` under the ``"numpyro_backend"`` backend."""

from numpyro.compat.distributions import *  # stock names
from numpyro.distributions import constraints, kl_divergence, transforms

from numpyro_backend.distributions import *  # ours
