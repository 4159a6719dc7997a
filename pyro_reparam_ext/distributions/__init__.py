"""Reparameterizable distributions for the Pyro (PyTorch) backend."""

# Concrete family (issue: foundation)
from pyro_reparam_ext.distributions.concrete import (
    BinaryConcrete,
    BinaryConcreteStraightThrough,
    Concrete,
    ConcreteStraightThrough,
    ExpConcrete,
)

# Implicitly reparameterized distributions
from pyro_reparam_ext.distributions.implicit import (
    ImplicitBeta,
    ImplicitDirichlet,
    ImplicitGamma,
    ImplicitlyReparameterized,
    ImplicitStudentT,
    ImplicitVonMises,
)

# Sphere: von Mises-Fisher, uniform, Power Spherical, KLs

__all__ = [
    "BinaryConcrete",
    "BinaryConcreteStraightThrough",
    "Concrete",
    "ConcreteStraightThrough",
    "ExpConcrete",
    "ImplicitBeta",
    "ImplicitDirichlet",
    "ImplicitGamma",
    "ImplicitlyReparameterized",
    "ImplicitStudentT",
    "ImplicitVonMises",
]
