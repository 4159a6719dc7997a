"""Sphinx extension: the API reference of both packages, side by side, from ``__all__``.

``.. paired-api:: distributions`` documents the subpackage ``distributions`` of
``pyro_reparam_ext`` and of ``numpyro_backend``: one section per module file, then one entry per
public name (the module's ``__all__``, or the public names it defines), with the Pyro object
and the NumPyro object of that name in two columns. A name exported by the subpackage is
documented at the subpackage path (``pyro_reparam_ext.distributions.Concrete``), so new names
appear as soon as they land in an ``__all__``. A name on one backend only is marked as such.

It also rewrites the ``References:`` blocks of the docstrings (numbered ``[n]`` entries with
indented continuation lines) into a rubric and a bullet list, which plain reST would misparse.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

BACKENDS = (("pyro_reparam_ext", "Pyro (PyTorch)"), ("numpyro_backend", "NumPyro (JAX)"))
OURS = tuple(name for name, _ in BACKENDS)

# Modules whose helpers are internal: only the docstring and the names listed here appear.
INTERNAL = {"infer.particles": ()}


def _import(path: str):
    try:
        return importlib.import_module(path)
    except ImportError:
        return None


def _module_names(module) -> list[str]:
    """The public names of a module: ``__all__``, or the public names it defines itself."""
    if module is None:
        return []
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
    ]


def _submodules(subpackage: str) -> list[str]:
    """Module files of ``subpackage`` present on either backend, in order of first appearance."""
    found: list[str] = []
    for package, _ in BACKENDS:
        sub = _import(f"{package}.{subpackage}")
        for info in pkgutil.iter_modules(getattr(sub, "__path__", [])):
            if not info.name.startswith("_") and info.name not in found:
                found.append(info.name)
    return sorted(found)


def _directive(obj) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    return "autodata"


def _summary(module) -> str:
    doc = inspect.getdoc(module) if module is not None else None
    return doc.strip().split("\n\n")[0].replace("\n", " ") if doc else ""


def _entry_body(package, subpackage, rel, name, obj, exported) -> tuple[str | None, list[str]]:
    """(documented path or None, reST body) of one backend's object ``name`` in module ``rel``.

    Classes and functions are documented in their home module only (at the subpackage path
    when the subpackage exports them); elsewhere the entry links to that documentation or,
    for a third-party object, names where it comes from.
    """
    module_path = f"{package}.{rel}"
    if inspect.isclass(obj) or inspect.isfunction(obj):
        home = obj.__module__ or ""
        if not home.startswith(OURS):
            return None, [f"Re-exported from ``{home}.{obj.__qualname__}``.", ""]
        if home != module_path:
            home_sub = ".".join(home.split(".")[:2])
            target = f"{home_sub}.{name}"
            if getattr(_import(home_sub), name, None) is not obj:
                target = f"{home}.{obj.__qualname__}"
            return None, [f"The same object as :py:obj:`{target}`.", ""]
    path = f"{package}.{subpackage}.{name}"
    if getattr(exported, name, None) is not obj:
        path = f"{module_path}.{name}"
    body = [f".. {_directive(obj)}:: {path}", ""]
    if inspect.isclass(obj):
        body[1:1] = ["   :members:", "   :show-inheritance:"]
    return path, body


class PairedAPI(SphinxDirective):
    """``.. paired-api:: <subpackage>``: both backends' reference for one subpackage."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        subpackage = self.arguments[0]
        exported = {package: _import(f"{package}.{subpackage}") for package in OURS}
        lines: list[str] = []
        for module_name in _submodules(subpackage):
            lines += self._module_section(subpackage, module_name, exported)
        content = StringList(lines, source=f"<paired-api {subpackage}>")
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, content, node)
        return node.children

    def _module_section(self, subpackage: str, module_name: str, exported: dict) -> list[str]:
        rel = f"{subpackage}.{module_name}"
        modules = {package: _import(f"{package}.{rel}") for package in OURS}
        title = f"``{rel}``"
        lines = [title, "-" * len(title), ""]
        lines += self._columns(
            {
                package: [f".. automodule:: {package}.{rel}", "   :no-members:", ""]
                if modules[package] is not None
                else None
                for package in OURS
            },
            rel,
        )
        names: list[str] = []
        for package in OURS:
            for name in _module_names(modules[package]):
                if name not in names:
                    names.append(name)
        if rel in INTERNAL:
            names = [name for name in names if name in INTERNAL[rel]]
        for name in names:
            lines += self._entry(subpackage, rel, name, modules, exported)
        return lines

    def _entry(self, subpackage, rel, name, modules, exported) -> list[str]:
        columns, targets = {}, {}
        for package in OURS:
            obj = getattr(modules[package], name, None)
            if obj is None:
                columns[package] = None
                continue
            path, body = _entry_body(package, subpackage, rel, name, obj, exported[package])
            columns[package] = body
            if path is not None:
                targets[package] = path
        lines = [name, "~" * len(name), ""]
        if len(targets) == 2:
            links = " · ".join(
                f"{label}: :py:obj:`{targets[package]}`" for package, label in BACKENDS
            )
            lines += [f"Same name on both backends — {links}.", ""]
        return lines + self._columns(columns, name)

    @staticmethod
    def _columns(columns: dict, name: str) -> list[str]:
        lines = [".. container:: backend-pair", ""]
        for package, label in BACKENDS:
            body = columns[package]
            lines += ["   .. container:: backend-column", ""]
            lines += [f"      .. rubric:: {label}", "         :class: backend-label", ""]
            if body is None:
                body = [f"*No* ``{name}`` *on this backend.*", ""]
            lines += ["      " + line if line else "" for line in body]
        return lines


_REFERENCE = re.compile(r"^\[(\d+)\]\s*(.*)$")


def rewrite_references(app, what, name, obj, options, lines: list[str]) -> None:
    """Turn a ``References:`` block of ``[n] ...`` entries into a rubric and a bullet list.

    The entries may be indented under the header or at its level after a blank line; an
    entry's continuation lines are indented more than the entry itself.
    """
    starts = [i for i, line in enumerate(lines) if line.strip() == "References:"]
    if not starts:
        return
    start = starts[0]
    indent = len(lines[start]) - len(lines[start].lstrip())
    entries: list[str] = []
    entry_indent = None
    end = start + 1
    while end < len(lines):
        line = lines[end]
        text = line.strip()
        level = len(line) - len(line.lstrip())
        match = _REFERENCE.match(text)
        if not text:
            pass
        elif match and level >= indent:
            entries.append(f"[{match.group(1)}] {match.group(2)}")
            entry_indent = level
        elif entries and level > entry_indent:
            entries[-1] += " " + text
        else:
            break
        end += 1
    if not entries:
        return
    pad = " " * indent
    block = [f"{pad}.. rubric:: References", ""]
    block += [f"{pad}- {entry}" for entry in entries]
    block.append("")
    lines[start:end] = block


_RELATIVE_ROLE = re.compile(r":(py:)?(mod|class|func|meth|obj|data|attr):`(~?)\.([\w.]+)`")


def _resolves(path: str) -> bool:
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        obj = _import(".".join(parts[:cut]))
        if obj is None:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return False
        return True
    return False


def absolute_relative_refs(app, what, name, obj, options, lines: list[str]) -> None:
    """Resolve ``:mod:`.particles```-style references against the docstring's own package.

    Both backends have a ``particles`` module, so Sphinx's fuzzy search for a relative name
    finds two targets; here the nearest enclosing package of the documented object wins.
    """
    if not name.startswith(OURS):
        return
    scope = name if what == "module" else (getattr(obj, "__module__", None) or name)

    def absolute(match):
        role, target = match.group(2), match.group(4)
        prefix = scope
        while prefix:
            if _resolves(f"{prefix}.{target}"):
                return f":py:{role}:`~{prefix}.{target}`"
            prefix = prefix.rpartition(".")[0]
        return match.group(0)

    lines[:] = [_RELATIVE_ROLE.sub(absolute, line) for line in lines]


_LITERAL_SEGMENT = re.compile(r"(``.*?``|`[^`]*`)")


def escape_bars(app, what, name, obj, options, lines: list[str]) -> None:
    """Escape ``|`` in prose (|u|², 1/|S^{d−1}|): the docstrings use no reST substitutions.

    Literal blocks (after ``::``), directive bodies (``.. math::``) and backquoted text are left
    as they are.
    """
    literal_indent = None
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None:
            if not line.strip() or indent > literal_indent:
                continue
            literal_indent = None
        stripped = line.strip()
        if stripped.startswith(".. ") or stripped.endswith("::"):
            literal_indent = indent
            if stripped.startswith(".. "):
                continue
        parts = _LITERAL_SEGMENT.split(line)
        lines[i] = "".join(
            part if k % 2 else part.replace("\\|", "|").replace("|", "\\|")
            for k, part in enumerate(parts)
        )


def setup(app):
    app.add_directive("paired-api", PairedAPI)
    app.connect("autodoc-process-docstring", rewrite_references)
    app.connect("autodoc-process-docstring", absolute_relative_refs)
    app.connect("autodoc-process-docstring", escape_bars)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
