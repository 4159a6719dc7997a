"""Sphinx extension: repository files rendered into the docs at build time.

- ``.. bench-table:: path.md`` renders a benchmark result written by ``make bench`` (a markdown
  file of ``|``-tables and paragraphs) as reST, so the guide shows the numbers in the
  repository. Lines that start with ``#`` (headings) are dropped.
- ``.. script-docstring:: path.py`` renders the module docstring of a script (the examples),
  read with :mod:`ast`, without importing it.

Paths are relative to the document.
"""

from __future__ import annotations

import ast

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|") or " "


def markdown_to_rst(text: str) -> list[str]:
    lines: list[str] = []
    rows: list[list[str]] = []

    def flush():
        if not rows:
            return
        header, body = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]
        if not body:  # a table without rows (e.g. a run stopped early): list-table needs one
            lines.extend(["(no rows: " + ", ".join(_escape(c) for c in header) + ")", ""])
            rows.clear()
            return
        lines.extend([".. list-table::", "   :header-rows: 1", "   :class: bench-table", ""])
        for row in [header, *body]:
            lines.append(f"   * - {_escape(row[0])}")
            lines.extend(f"     - {_escape(cell)}" for cell in row[1:])
        lines.append("")
        rows.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            rows.append(_cells(line))
            continue
        flush()
        if line.startswith("#"):
            continue
        # inline code: markdown `x` is reST ``x``; a bare | would start a substitution
        lines.append(line.replace("`", "``").replace("````", "``").replace("|", "\\|"))
    flush()
    return lines


class BenchTable(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        rel, path = self.env.relfn2path(self.arguments[0])
        self.env.note_dependency(rel)
        with open(path, encoding="utf-8") as handle:
            lines = markdown_to_rst(handle.read())
        node = nodes.container(classes=["bench-result"])
        self.state.nested_parse(StringList(lines, source=path), self.content_offset, node)
        return [node]


class ScriptDocstring(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from paired_api import escape_bars

        rel, path = self.env.relfn2path(self.arguments[0])
        self.env.note_dependency(rel)
        with open(path, encoding="utf-8") as handle:
            docstring = ast.get_docstring(ast.parse(handle.read())) or ""
        lines = docstring.splitlines()
        escape_bars(None, "module", path, None, None, lines)
        node = nodes.container(classes=["script-docstring"])
        self.state.nested_parse(StringList(lines, source=path), self.content_offset, node)
        return [node]


def setup(app):
    app.add_directive("bench-table", BenchTable)
    app.add_directive("script-docstring", ScriptDocstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
