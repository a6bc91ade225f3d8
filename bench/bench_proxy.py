"""Part 1 — proxy overhead: /v1/embeddings through the proxy (full encryption) vs direct.

Both sides talk to the same InstantUpstream benchmark harness (fixed vectors, no model), in its
own process: "direct" posts plaintext OpenAI JSON to the harness's /direct/v1/embeddings; "proxy"
posts the same body to the real proxy (another process), which attests the harness, encrypts the
fields, forwards to the harness's encrypted /v1/embeddings, decrypts, decodes and re-encodes.
The two sides alternate block by block so that other load on the machine hits both alike.

Per case and side: embeddings/s and MB/s (response bytes the client received) over a block of
sequential requests on one keep-alive connection, latency p50/p99 within the block, and the CPU
the proxy and the harness processes used per request; medians over the repetitions.
Afterwards each case is profiled with pyinstrument inside the proxy process.

    python bench/bench_proxy.py            # full
    python bench/bench_proxy.py --quick
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from _common import (
    BENCH_DIR,
    LARGE_MODEL,
    LOCAL_MODEL,
    PartResult,
    ServerProcess,
    fmt,
    load_average,
    md_table,
    median,
    percentile,
    text_table,
)
from _proxy_steps import measure_steps
from _stacks import InstantStack
from bench_engine import make_texts

WHATIF = "proxy + uvloop/httptools"


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    inputs: int
    encoding: str
    requests: int
    """Requests per block (one block per side per repetition)."""
    large: bool

    @property
    def label(self) -> str:
        return f"{self.name}, {self.encoding}"

    @property
    def slug(self) -> str:
        return f"{self.name.replace(' ', '')}-{self.encoding}"


def cases(quick: bool, only: str | None = None) -> list[Case]:
    small, big = (40, 3) if quick else (150, 8)
    out: list[Case] = []
    for encoding in ("float", "base64"):
        out.append(Case("1 input", LOCAL_MODEL, 1, encoding, small, False))
        out.append(Case("2048 x 384", LOCAL_MODEL, 2048, encoding, big, True))
        out.append(Case("256 x 2560", LARGE_MODEL, 256, encoding, big, True))
    out.sort(key=lambda c: (c.inputs, c.model, c.encoding))
    if only:
        wanted = [w.strip() for w in only.split(",")]
        out = [c for c in out if any(w in c.slug for w in wanted)]
    return out


@dataclass
class Block:
    wall: float
    latencies: list[float]
    bytes_received: int
    proxy_cpu: float
    harness_cpu: float


@dataclass
class SideStats:
    blocks: list[Block] = field(default_factory=list)

    def per_block(self, case: Case, what: str) -> list[float]:
        out = []
        for b in self.blocks:
            n = len(b.latencies)
            if what == "emb/s":
                out.append(case.inputs * n / b.wall)
            elif what == "MB/s":
                out.append(b.bytes_received / b.wall / 1e6)
            elif what == "p50":
                out.append(percentile(b.latencies, 50) * 1e3)
            elif what == "p99":
                out.append(percentile(b.latencies, 99) * 1e3)
            elif what == "proxy_cpu":
                out.append(b.proxy_cpu / n * 1e3)
            elif what == "harness_cpu":
                out.append(b.harness_cpu / n * 1e3)
        return out

    def med(self, case: Case, what: str) -> float:
        return median(self.per_block(case, what))


@dataclass
class Side:
    label: str
    url: str
    server: ServerProcess | None
    """The proxy process of this side (None for direct)."""
    client: httpx.Client


def _decode(content: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    data = orjson.loads(content)["data"]
    rows = []
    for item in sorted(data, key=lambda d: d["index"]):
        emb = item["embedding"]
        if isinstance(emb, str):
            rows.append(np.frombuffer(base64.b64decode(emb), dtype="<f4"))
        else:
            rows.append(np.asarray(emb, dtype=np.float32))
    return np.vstack(rows)


_HEADERS = {"Content-Type": "application/json"}


def _run_block(side: Side, body: bytes, case: Case, harness: ServerProcess) -> Block:
    latencies = []
    received = 0
    proxy_cpu0 = side.server.cpu_seconds() if side.server is not None else 0.0
    harness_cpu0 = harness.cpu_seconds()
    start = time.perf_counter()
    for _ in range(case.requests):
        t0 = time.perf_counter()
        response = side.client.post(side.url, content=body, headers=_HEADERS)
        t1 = time.perf_counter()
        if response.status_code != 200:
            raise RuntimeError(f"{side.url} answered {response.status_code}: "
                               f"{response.text[:300]}")
        latencies.append(t1 - t0)
        received += len(response.content)
    wall = time.perf_counter() - start
    proxy_cpu = side.server.cpu_seconds() - proxy_cpu0 if side.server is not None else 0.0
    return Block(wall, latencies, received, proxy_cpu, harness.cpu_seconds() - harness_cpu0)


def export_revision(rev: str) -> tuple[str, dict[str, str]]:
    """`rev` of this repository as a source tree in a temporary directory: the label and the
    environment that runs the proxy from it (a 'before' side beside the proxy as it is)."""
    root = BENCH_DIR.parent
    sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix=f"privatemode-bench-{sha}-"))
    archive = subprocess.run(["git", "-C", str(root), "archive", sha], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return f"before ({sha})", {"PYTHONPATH": f"{target}:{target / 'proxy'}"}


def _rss_mb(server: ServerProcess | None) -> float:
    return server.rss_bytes() / 2**20 if server is not None else float("nan")


def measure(quick: bool, repeats: int, profile: bool, only: str | None = None,
            whatif_path: str | None = None, profile_only: bool = False,
            baseline: str | None = None) -> dict[str, Any]:
    texts = make_texts(2048, 12, seed=11)
    profile_dir = BENCH_DIR / "profiles"
    extra = {}
    if baseline:
        label, env = export_revision(baseline)
        extra[label] = env
    if whatif_path:
        extra[WHATIF] = {"PYTHONPATH": whatif_path}
    results: dict[str, Any] = {"cases": [], "profiles": {}, "loads": [], "sides": []}
    with InstantStack(profile_dir=profile_dir if profile else None,
                      extra_proxies=extra) as stack:
        assert stack.harness is not None
        sides = [Side("direct", stack.direct_base_url + "/embeddings", None,
                      httpx.Client(timeout=300.0)),
                 Side("proxy", stack.proxy_base_url + "/embeddings", stack.proxy,
                      httpx.Client(timeout=300.0))]
        for label, server in stack.extra.items():
            sides.append(Side(label, server.url + "/v1/embeddings", server,
                              httpx.Client(timeout=300.0)))
        results["sides"] = [s.label for s in sides]
        results["rss"] = {s.label: {"idle": _rss_mb(s.server)} for s in sides if s.server}
        results["servers"] = {s.label: (s.server.info if s.server else stack.harness.info)
                              for s in sides}
        try:
            for case in ([] if profile_only else cases(quick, only)):
                body = orjson.dumps({"model": case.model, "input": texts[: case.inputs],
                                     "encoding_format": case.encoding})
                # Same vectors every way (and warms caches and connections).
                answers = {}
                for side in sides:
                    for _ in range(3):
                        response = side.client.post(side.url, content=body, headers=_HEADERS)
                        response.raise_for_status()
                    answers[side.label] = _decode(response.content)
                identical = all(np.array_equal(answers["direct"], a) for a in answers.values())
                shape = answers["proxy"].shape
                stack.reset_counts()
                stats = {s.label: SideStats() for s in sides}
                for rep in range(repeats):
                    order = sides if rep % 2 == 0 else list(reversed(sides))
                    for side in order:
                        stats[side.label].blocks.append(
                            _run_block(side, body, case, stack.harness))
                    results["loads"].append(load_average())
                counts = stack.counts()
                results["cases"].append({"case": case, "stats": stats, "identical": identical,
                                         "shape": shape, "request_bytes": len(body),
                                         "counts": counts})
                print(f"  {case.label}: " + ", ".join(
                    f"{label} {fmt(st.med(case, 'emb/s'))} emb/s p50 {fmt(st.med(case, 'p50'))} ms"
                    for label, st in stats.items()), flush=True)
            if results["cases"]:
                for side in sides:
                    if side.server is not None:
                        results["rss"][side.label]["after"] = _rss_mb(side.server)
                time.sleep(3.0)
                for side in sides:
                    if side.server is not None:
                        results["rss"][side.label]["quiet"] = _rss_mb(side.server)
            if profile:
                proxy_side = sides[1]
                for case in cases(quick, only):
                    body = orjson.dumps({"model": case.model, "input": texts[: case.inputs],
                                         "encoding_format": case.encoding})
                    n = case.requests * (2 if quick else 3)
                    httpx.post(stack.proxy_url + "/_bench/profile/start").raise_for_status()
                    for _ in range(n):
                        proxy_side.client.post(proxy_side.url, content=body, headers=_HEADERS)
                    summary = httpx.post(stack.proxy_url + "/_bench/profile/stop?label=proxy-"
                                         f"{case.slug}", timeout=120.0).json()
                    summary["requests"] = n
                    results["profiles"][case.label] = summary
        finally:
            for side in sides:
                side.client.close()
    if profile_only:
        return results
    step_cases = [(c.label, c.model, c.inputs, c.encoding) for c in cases(quick, only)]
    results["steps"] = measure_steps(texts, step_cases, repeats=5 if quick else 15)
    results["loads"].append(load_average())
    return results


def report(results: dict[str, Any], repeats: int) -> PartResult:
    sides: list[str] = results["sides"]
    proxies = [s for s in sides if s != "direct"]
    header = ["case", "direct emb/s"]
    for label in proxies:
        header += [f"{label} emb/s", f"{label} / direct"]
    header += ["direct MB/s"] + [f"{label} MB/s" for label in proxies]
    header += ["direct p50 ms"] + [f"{label} p50 ms (added)" for label in proxies]
    header += ["direct p99 ms"] + [f"{label} p99 ms" for label in proxies]
    header += [f"{label} CPU ms/req" for label in proxies]
    header += ["harness CPU ms/req plain / encrypted"]
    rows = [header]
    headline: list[list[str]] = []
    checks = []
    breakeven = []
    floors = {s["label"]: s["steps"]["floor: total"] * 1e3 for s in results.get("steps") or []
              if "floor: total" in s["steps"]}
    for entry in results["cases"]:
        case: Case = entry["case"]
        st: dict[str, SideStats] = entry["stats"]
        d = st["direct"]

        def added(label: str, st: dict[str, SideStats] = st, case: Case = case) -> float:
            base = st["direct"].per_block(case, "p50")
            return median(pp - dd for pp, dd in zip(st[label].per_block(case, "p50"), base,
                                                    strict=True))

        row = [case.label, fmt(d.med(case, "emb/s"))]
        for label in proxies:
            row += [fmt(st[label].med(case, "emb/s")),
                    f"{st[label].med(case, 'emb/s') / d.med(case, 'emb/s'):.2f}"]
        row += [fmt(d.med(case, "MB/s"))] + [fmt(st[label].med(case, "MB/s")) for label in proxies]
        row += [fmt(d.med(case, "p50"))] + [
            f"{fmt(st[label].med(case, 'p50'))} (+{fmt(added(label))})" for label in proxies]
        row += [fmt(d.med(case, "p99"))] + [fmt(st[label].med(case, "p99")) for label in proxies]
        row += [fmt(st[label].med(case, "proxy_cpu")) for label in proxies]
        row += [f"{fmt(d.med(case, 'harness_cpu'))} / "
                f"{fmt(st['proxy'].med(case, 'harness_cpu'))}"]
        rows.append(row)
        checks.append(f"{case.label}: {entry['shape'][0]} x {entry['shape'][1]}, "
                      f"{'identical' if entry['identical'] else 'DIFFERENT'}")
        p = st["proxy"]
        before = next((label for label in proxies if label.startswith("before")), None)
        if case.large:
            cpu = p.med(case, "proxy_cpu")
            floor = floors.get(case.label)
            was = f"; before: {fmt(st[before].med(case, 'proxy_cpu'))} ms" if before else ""
            if floor:
                headline.append([f"Proxy CPU per answer, {case.label}", f"{fmt(cpu)} ms",
                                 f"floor {fmt(floor)} ms{was}", f"{cpu / floor:.2f}x floor",
                                 "<= 2x floor", "yes" if cpu <= 2 * floor else "no"])
            # With an upstream that needs T ms per request, one request at a time keeps
            # (T + direct) / (T + direct + added) of direct's throughput: >= 0.9 from T below.
            a = added("proxy")
            t_needed = max(0.0, 9 * a - d.med(case, "p50"))
            breakeven.append(f"{case.label}: upstream time >= {fmt(t_needed)} ms per request "
                             f"(= {fmt(case.inputs / t_needed * 1e3) if t_needed else '-'} emb/s "
                             "or slower)")
        else:
            a = added("proxy")
            met = "yes" if a <= 1.5 else "no"
            was = f"; before: +{fmt(added(before))} ms" if before else ""
            headline.append([f"Proxy added p50 latency, {case.label}",
                             f"{fmt(p.med(case, 'p50'))} ms",
                             f"{fmt(d.med(case, 'p50'))} ms direct{was}",
                             f"+{fmt(a)} ms", "<= +1.5 ms", met])
    loads = results["loads"]
    servers = results.get("servers", {})
    http_impl = ", ".join(f"{'harness' if label == 'direct' else label}: uvicorn with "
                          f"{info.get('http')}, event loop from {info.get('loop')}"
                          for label, info in servers.items())
    md = [
        "Setup: the client (the benchmark process: httpx, one keep-alive connection per side, "
        "one request at a time) -> [proxy process] -> InstantUpstream harness process, all on "
        "the same 2 cores. 'direct' posts the same body to the harness's plaintext endpoint. "
        "Same fixed vectors every way (checked: "
        + "; ".join(checks) + "). The proxy always asks the harness for base64 and encodes "
        "for its client. emb/s and MB/s (response bytes the client read) per block of "
        f"requests; p50/p99 within a block; medians over {repeats} blocks per side, sides "
        "alternating. CPU ms/req from psutil on each server process (all threads).",
        f"Servers: {http_impl}. Load average during the part: {min(loads):.1f}..{max(loads):.1f} "
        "(2 cores).",
        "",
        md_table(rows),
        "",
        "Where the proxy would meet the 90 % target, one request at a time (from the added "
        "latency above): " + "; ".join(breakeven) + ".",
    ]
    if WHATIF in sides:
        md += ["", f"'{WHATIF}' is the same proxy code with uvloop and httptools importable "
               "(uvicorn picks them up by itself: `uvicorn[standard]`); they are not installed in "
               "the project venv, so 'proxy' runs uvicorn on h11 and asyncio's own loop."]
    rss = results.get("rss") or {}
    if rss and any("quiet" in v for v in rss.values()):
        md += ["", "#### Proxy memory (RSS) around the large answers", "",
               "RSS of each proxy process: once started and warmed up, right after the last "
               "block of the cases above, and 3 s later with no request in flight.", ""]
        mrows = [["proxy", "idle MB", "after the cases MB", "3 s later MB"]]
        for label, v in rss.items():
            mrows.append([label, fmt(v["idle"]), fmt(v.get("after", float("nan"))),
                          fmt(v.get("quiet", float("nan")))])
        md.append(md_table(mrows))
        headline.append(["Proxy RSS 3 s after large answers", f"{fmt(rss['proxy']['quiet'])} MB",
                         f"{fmt(rss['proxy']['idle'])} MB idle" + "".join(
                             f"; {label}: {fmt(v['quiet'])} MB" for label, v in rss.items()
                             if label.startswith("before") and "quiet" in v),
                         f"{rss['proxy']['quiet'] / rss['proxy']['idle']:.2f}x idle",
                         "near idle", "yes" if rss["proxy"]["quiet"] <= 1.5 * rss["proxy"]["idle"]
                         else "no"])
    steps = results.get("steps") or []
    if steps:
        md += ["", "#### The proxy's CPU per request, step by step (in-process, no HTTP)", "",
               "The proxy's own code as it is in the checkout, on the same bodies "
               "(`_proxy_steps.py`), fastest of several calls; the encrypted upstream answer is "
               "made by `ResponseCipher` as the harness makes it. The 'proposed' row is a variant "
               "defined in the benchmark, not in the proxy.", ""]
        names = list(dict.fromkeys(k for s in steps for k in s["steps"]))
        srows = [["step (ms)"] + [s["label"] for s in steps]]
        for name in names:
            srows.append([name] + [
                fmt(s["steps"][name] * 1e3) if name in s["steps"] else "-" for s in steps])
        srows.append(["upstream answer size (bytes, hex-encrypted)"] +
                     [f"{s['upstream_bytes']:,}" for s in steps])
        md.append(md_table(srows))
    profiles = results.get("profiles") or {}
    if profiles:
        md += ["", "#### Where the proxy's time goes (pyinstrument, inside the proxy process)", "",
               "Self time per place in the code over the profiled requests; built-in calls "
               "(orjson, AES-GCM, base64, socket I/O) are charged to the module that calls them. "
               "The event loop waiting in epoll (for the client or the harness) is left out. "
               "Sampling inflates pure-Python code, so read shares, not absolute times. Call "
               "trees: `bench/profiles/proxy-*.txt` (`python bench/bench_proxy.py "
               "--profile-only` rewrites them).", ""]
        for label, summary in profiles.items():
            total = summary["duration_s"]
            busy = max(total - summary["idle_s"], 1e-9)
            n = summary["requests"]
            md.append(f"**{label}** — {n} requests; {fmt(busy / n * 1e3)} ms busy per request on "
                      "the event-loop thread (profiled):")
            md.append("")
            prow = [["where", "share of busy", "top functions there"]]
            by_fn = summary["by_function"]
            for where, seconds in summary["by_package"][:9]:
                if where.startswith("(idle"):
                    continue
                tops = [f"{fn.split(' [')[0]} {seconds_fn / busy:.0%}"
                        for fn, seconds_fn in by_fn
                        if fn.split(" [", 1)[-1].startswith(where)][:3]
                prow.append([where, f"{seconds / busy:.0%}", ", ".join(tops).replace("|", "/")])
            md.append(md_table(prow))
            md.append("")
    return PartResult("1. Proxy overhead (InstantUpstream harness, full encryption)",
                      "\n".join(md), headline, {"table": text_table(rows)})


def run(quick: bool, repeats: int | None = None, profile: bool = True,
        only: str | None = None, whatif_path: str | None = None,
        baseline: str | None = None) -> PartResult:
    repeats = repeats or (3 if quick else 7)
    results = measure(quick, repeats, profile, only, whatif_path, baseline=baseline)
    part = report(results, repeats)
    print(part.data["table"])
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--cases", default=None,
                        help="only cases whose slug contains one of these (comma-separated), "
                             "e.g. 1input-float,2048x384")
    parser.add_argument("--profile-only", action="store_true",
                        help="only write the pyinstrument profiles to bench/profiles/")
    parser.add_argument("--whatif-pythonpath", default=None, metavar="DIR",
                        help="also run a proxy with DIR on its PYTHONPATH (a directory holding "
                             "uvloop and httptools), beside the proxy as it is")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also run the proxy of git revision REV (e.g. main~3), interleaved")
    args = parser.parse_args()
    if args.profile_only:
        results = measure(args.quick, 1, True, args.cases, profile_only=True)
        for label, summary in results["profiles"].items():
            print(f"{label}: {summary['requests']} requests profiled")
    else:
        run(args.quick, args.repeats, not args.no_profile, args.cases, args.whatif_pythonpath,
            args.baseline)
    if not args.no_profile:
        print(f"\nprofiles in {BENCH_DIR / 'profiles'}")


if __name__ == "__main__":
    main()
