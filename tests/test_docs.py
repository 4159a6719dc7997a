"""The documentation builds without warnings, its examples run, and it covers the API.

- ``sphinx-build -W --keep-going`` of docs/ into a temporary folder (the same command as
  ``make docs``; no network is used: MathJax comes from the ``sphinx-mathjax-offline`` wheel);
- every ``.. code-block:: python`` of docs/ runs (docs/run_snippets.py, in a subprocess);
- every name in the ``__all__`` of both packages and of their subpackages has an entry in the
  built inventory, with a docstring whose first line is a summary;
- every ``pre.<name>`` / ``npb.<name>`` used in the README tour has an entry.
"""

import importlib
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.test_readme import run_snippet_files

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pyro_reparam_ext", "numpyro_backend")
SUBPACKAGES = ("distributions", "infer", "ops")


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory) -> Path:
    # sphinx comes with the `docs` extra that `make install` installs: a missing sphinx is a
    # broken install and must fail here, not skip the docs build check
    import sphinx  # noqa: F401

    out = tmp_path_factory.mktemp("docs")
    env = dict(os.environ, OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q"]
    command += ["-d", str(out / "doctrees"), str(ROOT / "docs"), str(out / "html")]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout}\n{done.stderr}"
    return out / "html"


@pytest.fixture(scope="module")
def inventory(built_docs) -> set:
    """Object names of the built ``objects.inv`` (4 header lines, then zlib text)."""
    raw = (built_docs / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):
        header_end = raw.index(b"\n", header_end) + 1
    text = zlib.decompress(raw[header_end:]).decode("utf-8")
    return {line.split(" ", 1)[0] for line in text.splitlines() if line}


def _public_names():
    for package in PACKAGES:
        for sub in SUBPACKAGES:
            module = importlib.import_module(f"{package}.{sub}")
            for name in module.__all__:
                yield package, sub, name, getattr(module, name)


def test_docs_build_offline_assets(built_docs):
    page = (built_docs / "api" / "infer.html").read_text(encoding="utf-8")
    assert "_static/mathjax/tex-chtml.js" in page
    assert (built_docs / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', page), "a CDN asset"


def test_every_public_name_has_a_reference_entry(inventory):
    missing = [
        f"{package}.{sub}.{name}"
        for package, sub, name, obj in _public_names()
        if f"{package}.{sub}.{name}" not in inventory
        and not (isinstance(obj, type) and not obj.__module__.startswith(PACKAGES))
    ]
    assert not missing, f"no reference entry for {missing}"


def test_every_public_name_has_a_summary():
    undocumented = [
        f"{package}.{sub}.{name}"
        for package, sub, name, obj in _public_names()
        if callable(obj)
        and getattr(obj, "__module__", "").startswith(PACKAGES)
        and not (obj.__doc__ or "").strip()
    ]
    assert not undocumented, f"no docstring summary for {undocumented}"


def test_readme_tour_names_are_in_the_reference(inventory):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    used = set(re.findall(r"\b(pre|npb)\.((?:ops\.)?[A-Za-z_]\w*)", readme))
    prefix = {"pre": "pyro_reparam_ext", "npb": "numpyro_backend"}
    missing = []
    for alias, name in sorted(used):
        package = prefix[alias]
        tail = name.split(".")[-1]
        candidates = [f"{package}.{name}"] + [f"{package}.{sub}.{tail}" for sub in SUBPACKAGES]
        if not any(candidate in inventory for candidate in candidates):
            missing.append(f"{alias}.{name}")
    assert not missing, f"README names without a reference entry: {missing}"


def test_docs_examples_run():
    pages = sorted((ROOT / "docs").rglob("*.rst"))
    with_code = [p for p in pages if ".. code-block:: python" in p.read_text(encoding="utf-8")]
    assert len(with_code) >= 5, with_code
    done = run_snippet_files(*with_code)
    assert done.returncode == 0, f"a docs example failed:\n{done.stdout}\n{done.stderr[-4000:]}"
