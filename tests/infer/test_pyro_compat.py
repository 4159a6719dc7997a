"""Pyro estimators accept what Pyro's own ELBOs accept: constructor contract and standard patterns.

The constructor contract is /work/notes/signatures.md (``num_particles`` positional, everything
else keyword-only, unknown keywords rejected). The reproducers of issue 12 (Pyro items) and a
catalogue of standard model/guide patterns follow.
"""

from __future__ import annotations

import inspect

import pytest

from pyro_reparam_ext.infer import REBAR_ELBO, RELAX_ELBO, ScoreFunction_ELBO

ESTIMATOR_CLASSES = (ScoreFunction_ELBO, REBAR_ELBO, RELAX_ELBO)
INF = float("inf")

#: The constructor contract (name, default) after ``num_particles=1``, all keyword-only.
CONTRACT = {
    ScoreFunction_ELBO: [
        ("max_plate_nesting", INF),
        ("vectorize_particles", True),
        ("baseline", "optimal"),
        ("baseline_decay", 0.9),
    ],
    REBAR_ELBO: [
        ("max_plate_nesting", INF),
        ("vectorize_particles", True),
        ("temperature", 0.5),
        ("eta", 1.0),
        ("learn_temperature", True),
        ("learn_eta", True),
        ("coordinatewise", True),
    ],
}
CONTRACT[RELAX_ELBO] = CONTRACT[REBAR_ELBO] + [("control_variate", None), ("hidden_dim", 32)]
PYRO_KEYWORDS = [
    ("retain_graph", None),
    ("strict_enumeration_warning", True),
    ("ignore_jit_warnings", False),
]


@pytest.mark.parametrize("cls", ESTIMATOR_CLASSES, ids=lambda c: c.__name__)
def test_constructor_signature(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    first, rest = params[0], params[1:]
    assert (first.name, first.default, first.kind) == (
        "num_particles",
        1,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )
    expected = CONTRACT[cls] + PYRO_KEYWORDS
    assert [(p.name, p.default) for p in rest] == expected
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in rest)


@pytest.mark.parametrize("cls", ESTIMATOR_CLASSES, ids=lambda c: c.__name__)
def test_constructor_rejects_unknown_and_positional(cls):
    with pytest.raises(TypeError):
        cls(num_particle=2)  # misspelled
    with pytest.raises(TypeError):
        cls(2, 1)  # max_plate_nesting is keyword-only


@pytest.mark.parametrize("cls", ESTIMATOR_CLASSES, ids=lambda c: c.__name__)
def test_pyro_elbo_keywords_forwarded(cls):
    elbo = cls(
        2,
        max_plate_nesting=1,
        retain_graph=True,
        strict_enumeration_warning=False,
        ignore_jit_warnings=True,
    )
    assert elbo.num_particles == 2
    assert elbo.retain_graph is True
    assert elbo.strict_enumeration_warning is False
    assert elbo.ignore_jit_warnings is True
