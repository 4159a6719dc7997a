"""Numerical kernels with custom gradients for the Pyro (PyTorch) backend."""

__all__: list[str] = []
