"""Reparameterizable distributions for the NumPyro (JAX) backend."""

# Concrete family (issue: foundation)
from numpyro_backend.distributions import concrete

# Implicitly reparameterized distributions

# Sphere: von Mises-Fisher, uniform, Power Spherical, KLs

__all__: list[str] = []
