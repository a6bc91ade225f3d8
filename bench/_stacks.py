"""The server arrangements the benchmarks run against, each server in a process of its own.

- `InstantStack`: the InstantUpstream harness (fixed vectors, real protocol) and the real proxy
  in front of it. `direct_base_url` is the harness's plaintext OpenAI endpoint (no proxy),
  `proxy_base_url` the proxy's.
- `LocalModelStack`: the real proxy with the real local backend (the model) in one process, as
  `LocalStack` arranges them for local mode.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from _common import ServerProcess, get_counts, reset_counts, wait_proxy_ready


class InstantStack:
    """`extra_proxies` (label -> environment) starts more proxies in front of the same harness,
    e.g. one whose PYTHONPATH adds uvloop and httptools, to measure a proposed change beside the
    proxy as it is."""

    def __init__(self, *, profile_dir: Path | None = None,
                 extra_proxies: dict[str, dict[str, str]] | None = None) -> None:
        self._workspace = Path(tempfile.mkdtemp(prefix="privatemode-bench-harness-"))
        self._profile_dir = profile_dir
        self._extra_env = dict(extra_proxies or {})
        self.harness: ServerProcess | None = None
        self.proxy: ServerProcess | None = None
        self.extra: dict[str, ServerProcess] = {}

    def start(self) -> InstantStack:
        self.harness = ServerProcess("_instant_upstream.py", ["--workspace", str(self._workspace)])
        args = ["--upstream", self.harness.url, "--root", self.harness.info["root_pem"],
                "--manifest", self.harness.info["manifest"]]
        if self._profile_dir is not None:
            args += ["--profile-dir", str(self._profile_dir)]
        self.proxy = ServerProcess("_proxy_server.py", args)
        wait_proxy_ready(self.proxy.url)
        for label, env in self._extra_env.items():
            extra = ServerProcess("_proxy_server.py", args, env=env)
            wait_proxy_ready(extra.url)
            self.extra[label] = extra
        return self

    @property
    def proxy_url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    @property
    def harness_url(self) -> str:
        assert self.harness is not None
        return self.harness.url

    @property
    def proxy_base_url(self) -> str:
        return self.proxy_url + "/v1"

    @property
    def direct_base_url(self) -> str:
        return self.harness_url + "/direct/v1"

    def reset_counts(self) -> None:
        reset_counts(self.proxy_url)
        reset_counts(self.harness_url)

    def counts(self) -> dict[str, Any]:
        return {"proxy": get_counts(self.proxy_url)["proxy"],
                "upstream": get_counts(self.harness_url)}

    def stop(self) -> None:
        for extra in self.extra.values():
            extra.stop()
        self.extra = {}
        for server in (self.proxy, self.harness):
            if server is not None:
                server.stop()
        self.proxy = self.harness = None
        shutil.rmtree(self._workspace, ignore_errors=True)

    def __enter__(self) -> InstantStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class LocalModelStack:
    def __init__(self) -> None:
        self._workspace = Path(tempfile.mkdtemp(prefix="privatemode-bench-local-"))
        self.proxy: ServerProcess | None = None

    def start(self) -> LocalModelStack:
        self.proxy = ServerProcess("_proxy_server.py", ["--local-backend", str(self._workspace)])
        wait_proxy_ready(self.proxy.url)
        return self

    @property
    def proxy_url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    @property
    def proxy_base_url(self) -> str:
        return self.proxy_url + "/v1"

    def reset_counts(self) -> None:
        reset_counts(self.proxy_url)

    def counts(self) -> dict[str, Any]:
        return get_counts(self.proxy_url)

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        shutil.rmtree(self._workspace, ignore_errors=True)

    def __enter__(self) -> LocalModelStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
