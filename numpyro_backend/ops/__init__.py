"""Numerical kernels with custom gradients for the NumPyro (JAX) backend."""

__all__: list[str] = []
