"""Numerical kernels with custom gradients for the Pyro (PyTorch) backend."""

from pyro_reparam_ext.ops.bessel import bessel_iv_ratio, log_bessel_iv
from pyro_reparam_ext.ops.betainc import beta_grad
from pyro_reparam_ext.ops.gamma import gammainc, gammainc_grad_a, standard_gamma_grad
from pyro_reparam_ext.ops.von_mises import centered_von_mises_grad, von_mises_cdf

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
