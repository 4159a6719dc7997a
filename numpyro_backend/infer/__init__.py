"""ELBO gradient estimators for the NumPyro (JAX) backend."""

from numpyro_backend.infer import distributed
from numpyro_backend.infer.diagnostics import gradient_variance
from numpyro_backend.infer.disarm import DisARM_ELBO
from numpyro_backend.infer.iwae import IWAE_ELBO
from numpyro_backend.infer.relax import REBAR_ELBO, RELAX_ELBO
from numpyro_backend.infer.score_function import ScoreFunction_ELBO
from numpyro_backend.infer.svi import SVI

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
