"""The estimator core has one layout on both backends (issue 11): the same infer/ modules, the
same names in the shared-piece modules, and discrete-family objects with the same interface.

Signatures of the public estimators are compared in tests/test_api_parity.py; this file covers
the internal modules a reader moves between when checking one backend against the other.
"""

import importlib
import inspect
import pkgutil

import pytest

import numpyro_backend.infer as numpyro_infer
import pyro_reparam_ext.infer as pyro_infer

#: Modules that exist on one backend only, with the reason.
BACKEND_ONLY_MODULES = {
    "svi": "numpyro_backend",  # NumPyro's SVI must also initialize the estimators' state
}

#: Names in a shared module that exist on one backend only, with the reason.
BACKEND_ONLY_NAMES = {
    ("sites", "guide_sites"): "numpyro_backend",  # a seeded guide trace (Pyro: poutine.trace)
}

#: Family methods whose arguments differ by the backends' RNG (global torch RNG vs rng_key).
RNG_METHODS = {"noise"}


def _modules(package) -> set[str]:
    return {m.name for m in pkgutil.iter_modules(package.__path__)}


def test_same_infer_modules():
    pyro_modules = _modules(pyro_infer) - {
        m for m, b in BACKEND_ONLY_MODULES.items() if b == "pyro_reparam_ext"
    }
    numpyro_modules = _modules(numpyro_infer) - {
        m for m, b in BACKEND_ONLY_MODULES.items() if b == "numpyro_backend"
    }
    assert pyro_modules == numpyro_modules


@pytest.mark.parametrize("module", ["sites", "relaxation"])
def test_shared_modules_export_the_same_names(module):
    exported = {}
    for package in ("pyro_reparam_ext", "numpyro_backend"):
        names = set(importlib.import_module(f"{package}.infer.{module}").__all__)
        exported[package] = names - {
            n for (m, n), b in BACKEND_ONLY_NAMES.items() if m == module and b == package
        }
    assert exported["pyro_reparam_ext"] == exported["numpyro_backend"]


def _interface(cls) -> dict:
    return {
        name: value
        for name, value in inspect.getmembers(cls)
        if not name.startswith("_") and not isinstance(value, property)
    }


@pytest.mark.parametrize(
    "family", ["BernoulliRelaxation", "OneHotCategoricalRelaxation", "CategoricalRelaxation"]
)
def test_family_objects_have_the_same_interface(family):
    from numpyro_backend.infer import relaxation as numpyro_relaxation
    from pyro_reparam_ext.infer import relaxation as pyro_relaxation

    pyro_cls = getattr(pyro_relaxation, family)
    numpyro_cls = getattr(numpyro_relaxation, family)
    pyro_api, numpyro_api = _interface(pyro_cls), _interface(numpyro_cls)
    assert set(pyro_api) == set(numpyro_api)
    for name, pyro_value in pyro_api.items():
        numpyro_value = numpyro_api[name]
        if not callable(pyro_value):  # name, category_dims, replayable
            assert pyro_value == numpyro_value, name
            continue
        pyro_args = list(inspect.signature(pyro_value).parameters)
        numpyro_args = list(inspect.signature(numpyro_value).parameters)
        if name in RNG_METHODS:
            assert numpyro_args == ["rng_key"] + pyro_args, name
        else:
            assert pyro_args == numpyro_args, name


def test_families_in_the_same_order():
    from numpyro_backend.infer.relaxation import FAMILIES as NUMPYRO_FAMILIES
    from pyro_reparam_ext.infer.relaxation import FAMILIES as PYRO_FAMILIES

    assert [f.name for f in PYRO_FAMILIES] == [f.name for f in NUMPYRO_FAMILIES]
