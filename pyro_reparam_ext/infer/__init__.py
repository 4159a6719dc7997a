"""ELBO gradient estimators for the Pyro (PyTorch) backend."""

from pyro.infer import SVI  # re-exported so both packages name the same SVI entry point

from pyro_reparam_ext.infer import distributed
from pyro_reparam_ext.infer.diagnostics import gradient_variance
from pyro_reparam_ext.infer.disarm import DisARM_ELBO
from pyro_reparam_ext.infer.iwae import IWAE_ELBO
from pyro_reparam_ext.infer.relax import REBAR_ELBO, RELAX_ELBO
from pyro_reparam_ext.infer.score_function import ScoreFunction_ELBO

__all__: list[str] = [
    "IWAE_ELBO",
    "DisARM_ELBO",
    "REBAR_ELBO",
    "RELAX_ELBO",
    "SVI",
    "ScoreFunction_ELBO",
    "distributed",
    "gradient_variance",
]
