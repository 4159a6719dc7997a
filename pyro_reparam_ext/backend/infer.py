"""``pyroapi.infer`` under the ``"pyro_reparam_ext"`` backend."""

from pyro.infer import *  # stock names

from pyro_reparam_ext.infer import *  # ours
