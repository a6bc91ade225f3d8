"""Shared helpers of the benchmarks: statistics, tables, the machine description, processes.

Benchmarks measure and print; nothing here asserts a target.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PYTHON = sys.executable
LOCAL_MODEL = "all-minilm-l6-v2"
LARGE_MODEL = "qwen3-embedding-4b"


# -- statistics ---------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def spread(values: Sequence[float]) -> str:
    """min..max of the repetitions, for the tables' 'range' columns."""
    if not values:
        return "-"
    return f"{fmt(min(values))}..{fmt(max(values))}"


def fmt(value: float, digits: int = 3) -> str:
    """A number with `digits` significant digits, no exponent for usual magnitudes."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


# -- tables -------------------------------------------------------------------------------------


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """A plain table for the terminal; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w)
                  for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table; the first row is the header."""
    head, *body = rows
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(out)


@dataclass
class PartResult:
    """What one benchmark part hands to run_all: Markdown for RESULTS.md and headline rows."""

    title: str
    markdown: str
    headline: list[list[str]] = field(default_factory=list)
    """Rows of [measure, ours, baseline, ratio, target, met?]."""
    data: dict[str, Any] = field(default_factory=dict)


# -- the machine --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().total) / 2**30
    except ImportError:
        return math.nan


def load_average() -> float:
    return os.getloadavg()[0]


def package_versions(names: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True,
            text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_DIR, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
        return rev + (" + uncommitted work in the checkout" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- processes ----------------------------------------------------------------------------------


class ServerProcess:
    """A benchmark server run as a child process (`python bench/<script> ...`).

    The child prints one JSON line when it serves; that line is `info`.
    """

    def __init__(self, script: str, args: Sequence[str], *, timeout: float = 180.0,
                 env: dict[str, str] | None = None) -> None:
        self.argv = [PYTHON, str(BENCH_DIR / script), *args]
        self._proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=None, text=True,
            env={**os.environ, **(env or {})},
        )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{script} exited with {self._proc.wait()} before serving")
            if line.startswith("{"):
                break
        self.info: dict[str, Any] = json.loads(line)
        self.url: str = self.info["url"]

    @property
    def pid(self) -> int:
        return self._proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the child so far (all its threads)."""
        import psutil

        times = psutil.Process(self._proc.pid).cpu_times()
        return float(times.user + times.system)

    def rss_bytes(self) -> int:
        import psutil

        return int(psutil.Process(self._proc.pid).memory_info().rss)

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM, wait, and return what the child printed after its ready line."""
        if self._proc.poll() is None:
            self._proc.terminate()
        try:
            out, _ = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        return out or ""

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def exit_with_parent() -> None:
    """In a benchmark server: exit when the process that started it is gone (no orphans)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def get_counts(url: str) -> dict[str, int]:
    """The per-path request counts a benchmark server keeps (GET /_bench/counts)."""
    response = httpx.get(url + "/_bench/counts", timeout=10.0)
    response.raise_for_status()
    counts: dict[str, int] = response.json()
    return counts


def reset_counts(url: str) -> None:
    httpx.post(url + "/_bench/reset", timeout=10.0).raise_for_status()


def wait_proxy_ready(proxy_url: str, timeout: float = 120.0) -> None:
    """Until the proxy has attested its upstream and holds a secret."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(proxy_url + "/healthz", timeout=5.0).json()
        except httpx.HTTPError as exc:
            last = repr(exc)
        else:
            if last.get("upstream") == "ready":
                return
            if last.get("upstream") == "failed":
                raise RuntimeError(f"the proxy could not use its upstream: {last}")
        time.sleep(0.05)
    raise TimeoutError(f"the proxy did not become ready in {timeout} s: {last}")


def run_json(argv: Sequence[str], *, timeout: float = 3600.0) -> dict[str, Any]:
    """Run a child that prints one JSON object as its last stdout line; return it."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])}... failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON from {' '.join(argv[:4])}...:\n{done.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def load_note(loads: Sequence[float]) -> str:
    """How busy the machine was during a part (1-minute load averages sampled)."""
    if not loads:
        return ""
    return f"load average during this part: {min(loads):.1f}..{max(loads):.1f} (2 cores)"
