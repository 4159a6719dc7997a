"""Shared helpers for the benchmark scripts: timing by medians and result files.

Every script in this folder compares against the built-in alternative *in the same run* and
writes ``benchmarks/results/<name>.md`` (a markdown table) and ``<name>.json`` (the same rows
plus machine and version metadata) through :func:`write_results`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    ``fn`` must block until its work is done (call ``.block_until_ready()`` on JAX results).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_info() -> dict:
    """Machine and library versions recorded with every result file."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    for module_name in ("torch", "pyro", "jax", "numpyro"):
        try:
            module = __import__(module_name)
            info[module_name] = module.__version__
        except ImportError:
            info[module_name] = None
    return info


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns`` (floats to 4 sig. digits)."""

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def write_results(
    name: str, title: str, rows: list[dict], columns: list[str], notes: str = ""
) -> Path:
    """Write ``results/<name>.md`` and ``results/<name>.json``; return the markdown path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    meta = machine_info()
    md = [f"## {title}", "", markdown_table(rows, columns), ""]
    if notes:
        md += [notes, ""]
    md.append(
        "Machine: {processor}, {cpu_count} cores; Python {python}, torch {torch}, "
        "pyro {pyro}, jax {jax}, numpyro {numpyro}.".format(**meta)
    )
    md_path = RESULTS_DIR / f"{name}.md"
    md_path.write_text("\n".join(md) + "\n")
    (RESULTS_DIR / f"{name}.json").write_text(
        json.dumps({"title": title, "machine": meta, "rows": rows, "notes": notes}, indent=2) + "\n"
    )
    return md_path
