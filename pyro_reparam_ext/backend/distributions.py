"""``pyroapi.distributions`` under the ``"pyro_reparam_ext"`` backend."""

from pyro.distributions import *  # stock names
from pyro.distributions import constraints, transforms
from torch.distributions import kl_divergence

from pyro_reparam_ext.distributions import *  # ours
