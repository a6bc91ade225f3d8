"""Child process of bench_hardening.py: the local stack (backend + proxy) in one process.

Prints one JSON line with the URLs when it serves, then writes its memory and the backend's work
to `--stats` every 0.1 s, so the parent can see peaks and when the backend goes idle.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import exit_with_parent


def _status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stats", required=True)
    parser.add_argument("--nofile", type=int, default=0, help="soft open-file limit")
    args = parser.parse_args()
    exit_with_parent()
    if args.nofile:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    else:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from privatemode_proxy import LocalStack

    stack = LocalStack(Path(tempfile.mkdtemp(prefix="pm-harden-bench-")))
    stack.start()
    backend = stack.backend
    stats_path = Path(args.stats)

    def write_stats() -> None:
        while True:
            entry = {
                "t": time.time(),
                **_status(),
                "texts": backend.batcher_stats.texts,
                "embeddings_requests": backend.request_log.count("/v1/embeddings"),
            }
            tmp = stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(entry))
            tmp.replace(stats_path)
            time.sleep(0.1)

    threading.Thread(target=write_stats, daemon=True).start()
    print(json.dumps({"url": stack.proxy_url, "backend": backend.url}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
