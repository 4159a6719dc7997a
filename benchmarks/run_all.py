"""Run every benchmark script and publish the results (what ``make bench`` runs).

Runs each ``benchmarks/*.py`` other than ``common.py`` and this file, one subprocess each
(``--quick`` is passed on when given; ``protocol.py`` and ``data_parallel.py`` always get it,
their full versions are ``make bench-full``), then gathers the ``benchmarks/results/*.md`` files the
scripts wrote (through ``benchmarks.common.write_results``) into ``benchmarks/results/README.md``
and replaces the part of the top-level ``README.md`` between the markers
``<!-- bench:start -->`` and ``<!-- bench:end -->`` with the same tables, so the README always
shows the numbers of the last run. A script that fails is reported (its last lines of output)
and makes the exit status 1; the results of the others are still published.

Usage::

    python benchmarks/run_all.py            # full runs (minutes)
    python benchmarks/run_all.py --quick    # smoke run: few samples and repeats
    python benchmarks/run_all.py --only implicit,sphere
    python benchmarks/run_all.py --collect-only   # just rebuild the README tables
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
README = ROOT / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
NOT_BENCHMARKS = {"common.py", "run_all.py", "__init__.py"}
# run with --quick even in a full `make bench` (≤ 10 min): the whole protocol and the four-row
# data-parallel table (2 batch sizes × 2 estimators, ~3 min) are `make bench-full`
ALWAYS_QUICK = {"protocol", "data_parallel"}


def benchmark_scripts() -> list[Path]:
    """The benchmark scripts, in name order."""
    return sorted(p for p in BENCH_DIR.glob("*.py") if p.name not in NOT_BENCHMARKS)


def run_script(script: Path, quick: bool) -> tuple[bool, float, str]:
    """Run one script; return (succeeded, seconds, last lines of its output)."""
    quick = quick or script.stem in ALWAYS_QUICK
    command = [sys.executable, str(script)] + (["--quick"] if quick else [])
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = (completed.stdout + completed.stderr).strip().splitlines()
    return completed.returncode == 0, seconds, "\n".join(output[-15:])


def children_cpu_seconds() -> float:
    """User + system CPU time of the finished child processes (and their children) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def collect(results_dir: Path = RESULTS_DIR) -> str:
    """Every ``results/*.md`` as one markdown text, by file name (``*_quick.md`` left out)."""
    parts = []
    for path in sorted(results_dir.glob("*.md")):
        if path.name == "README.md" or path.stem.endswith("_quick"):
            continue  # the index itself; smoke runs (``--quick``) that name their files so
        text = path.read_text().strip()
        # demote the scripts' "## Title" to "###" so they nest under the README's section
        if text.startswith("## "):
            text = "#" + text
        parts.append(text + f"\n\n(`benchmarks/results/{path.name}`)")
    return "\n\n".join(parts)


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with everything between the bench markers replaced by ``body``."""
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ValueError(f"README.md must contain {START} followed by {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body.strip()}\n{END}{tail}"


def publish(readme: Path = README, results_dir: Path = RESULTS_DIR) -> str:
    """Write ``results/README.md`` and the README's benchmark section; return the tables."""
    body = collect(results_dir)
    if not body:
        body = "_No results yet: run `make bench`._"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "README.md").write_text(
        "# Benchmark results\n\nWritten by `benchmarks/run_all.py` (`make bench`).\n\n"
        + body
        + "\n"
    )
    readme.write_text(replace_between_markers(readme.read_text(), body))
    return body


def main(argv=None) -> int:
    names = [p.stem for p in benchmark_scripts()]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument(
        "--only", default=None, help="comma-separated subset of: " + ",".join(names)
    )
    parser.add_argument(
        "--collect-only", action="store_true", help="do not run; rebuild the tables only"
    )
    args = parser.parse_args(argv)
    selected = benchmark_scripts()
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"--only: unknown {unknown}; choose from {names}")
        selected = [p for p in selected if p.stem in wanted]
    failed = []
    if not args.collect_only:
        total, total_cpu = 0.0, 0.0
        for script in selected:
            print(f"running {script.name} ...", flush=True)
            before = children_cpu_seconds()
            ok, seconds, tail = run_script(script, args.quick)
            cpu = children_cpu_seconds() - before
            total, total_cpu = total + seconds, total_cpu + cpu
            print(
                f"  {'done' if ok else 'FAILED'} in {seconds:.0f} s ({cpu:.0f} s CPU)", flush=True
            )
            if not ok:
                failed.append(script.name)
                print("  " + tail.replace("\n", "\n  "), flush=True)
        print(f"all scripts: {total:.0f} s wall-clock, {total_cpu:.0f} s CPU", flush=True)
    publish()
    print(f"wrote {RESULTS_DIR / 'README.md'} and the benchmark section of {README}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
