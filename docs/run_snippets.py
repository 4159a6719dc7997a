"""Extract and run the Python examples of the README and of the documentation pages.

README.md: every fenced ```` ```python ```` block; docs/**/*.rst: every ``.. code-block:: python``
directive. The blocks of one file run in order in one namespace (later blocks may use names
from earlier ones, as a reader would type them), each file in a fresh namespace. Used by
tests/test_readme.py and tests/test_docs.py, which run it in a subprocess (a user's default
dtype and flags, no state shared with other tests):

    python docs/run_snippets.py README.md docs/guides/numpyro.rst ...

Exit status 0 when every block ran; otherwise the traceback names the file and block.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import time

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_DIRECTIVE = re.compile(r"^(\s*)\.\. code-block:: python\s*$")


def markdown_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every fenced python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _FENCE.finditer(text)]


def rst_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every ``.. code-block:: python`` directive."""
    lines = text.split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        i += 1
        if not match:
            continue
        indent = len(match.group(1))
        start = i
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            i += 1
        body = lines[start:i]
        if any(line.strip().startswith(":") for line in body[:1]):
            raise ValueError(f"line {start}: code-block options are not supported here")
        blocks.append((start + 1, textwrap.dedent("\n".join(body)).strip("\n") + "\n"))
    return blocks


def blocks_of(path: str) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    return markdown_blocks(text) if path.endswith(".md") else rst_blocks(text)


def run_file(path: str) -> None:
    namespace = {"__name__": "__snippets__"}
    for number, (line, code) in enumerate(blocks_of(path)):
        start = time.perf_counter()
        # blank lines in front keep the traceback's line numbers those of the file
        exec(compile("\n" * (line - 1) + code, path, "exec"), namespace)
        print(f"{path}:{line}: block {number} ran in {time.perf_counter() - start:.2f} s")


def main(paths: list[str]) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    for path in paths:
        run_file(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
