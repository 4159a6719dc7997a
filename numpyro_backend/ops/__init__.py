"""Numerical kernels with custom gradients for the NumPyro (JAX) backend."""

from numpyro_backend.ops.bessel import bessel_iv_ratio, log_bessel_iv
from numpyro_backend.ops.betainc import beta_grad
from numpyro_backend.ops.gamma import gammainc, gammainc_grad_a, standard_gamma_grad
from numpyro_backend.ops.von_mises import centered_von_mises_grad, von_mises_cdf

__all__: list[str] = [
    "bessel_iv_ratio",
    "log_bessel_iv",
    "beta_grad",
    "centered_von_mises_grad",
    "gammainc",
    "gammainc_grad_a",
    "standard_gamma_grad",
    "von_mises_cdf",
]
