"""Reparameterizable distributions for the Pyro (PyTorch) backend."""

# Concrete family (issue: foundation)
from pyro_reparam_ext.distributions import concrete

# Implicitly reparameterized distributions

# Sphere: von Mises-Fisher, uniform, Power Spherical, KLs

__all__: list[str] = []
