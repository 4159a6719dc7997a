"""The README's Python code blocks run, in order, as a reader would paste them.

They run in a subprocess (the user's defaults: float32, no validation flags from conftest)
through docs/run_snippets.py; the README's blocks are self-contained or build on the blocks
above them, so no stand-in names are needed.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

import run_snippets  # noqa: E402  (docs/ is put on sys.path just above)


def run_snippet_files(*paths: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the Python blocks of ``paths`` in a fresh interpreter from the repository root."""
    env = dict(os.environ, OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, str(ROOT / "docs" / "run_snippets.py"), *map(str, paths)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_readme_has_python_blocks():
    blocks = run_snippets.blocks_of(str(ROOT / "README.md"))
    assert len(blocks) >= 5, "the README tour lost its Python examples"


def test_readme_python_blocks_run():
    done = run_snippet_files(ROOT / "README.md")
    assert done.returncode == 0, f"a README block failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    ran = done.stdout.count(" ran in ")
    assert ran == len(run_snippets.blocks_of(str(ROOT / "README.md"))), done.stdout
