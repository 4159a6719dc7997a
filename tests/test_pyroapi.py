"""pyroapi's own test suite (``pyroapi.tests``) under both of this library's backends.

Every test function of ``pyroapi.tests`` runs once per alias through the ``backend`` fixture
that pyroapi's suite expects (see pyroapi/tests/test_svi.py).
"""

import pytest
from pyroapi import pyro_backend
from pyroapi.tests import *  # noqa: F403  (the suite's test functions)

import numpyro_backend  # noqa: F401  (registers "numpyro_backend")
import pyro_reparam_ext  # noqa: F401  (registers "pyro_reparam_ext")
from tests.infer.numpyro_helpers import fast_compile  # noqa: F401  (fixture: compile-bound tests)

# Pyro's JitTrace_ELBO calls torch.jit.trace, which torch 2.13 deprecates; that warning is
# torch's, not a failure of the backend (pyproject turns warnings into errors).
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning"),
    pytest.mark.usefixtures("fast_compile"),
]


@pytest.fixture(params=["pyro_reparam_ext", "numpyro_backend"])
def backend(request):
    with pyro_backend(request.param):
        yield
