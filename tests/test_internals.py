"""The package layout docs/internals.md describes: arrows that run one way.

Read from the source with `ast` (imports inside functions included), so a new import that breaks
an arrow fails here rather than in a review.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "privatemode_integrations": ROOT / "privatemode_integrations",
    "privatemode_proxy": ROOT / "proxy" / "privatemode_proxy",
    "privatemode_demo": ROOT / "privatemode_demo",
}


def modules() -> Iterator[tuple[str, Path]]:
    for package, directory in PACKAGES.items():
        for path in sorted(directory.rglob("*.py")):
            parts = path.relative_to(directory).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def imported(name: str, path: Path) -> set[str]:
    """Every module `name` imports, absolute, wherever in the file the import is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def test_the_local_backend_is_a_leaf() -> None:
    """Only the CLI and the local stack see both the proxy and the local backend."""
    allowed = {"privatemode_proxy._cli", "privatemode_proxy._stack"}
    offenders = {
        name
        for name, path in modules()
        if not name.startswith("privatemode_proxy.local")
        and name not in allowed
        and any(m.startswith("privatemode_proxy.local") for m in imported(name, path))
    }
    assert offenders == set()


def test_the_wire_layer_and_the_protocol_import_no_server() -> None:
    """`openai` and `protocol` are what the client and both servers share: they import no server,
    session, CLI or local backend (the client imports them without starting anything)."""
    servers = ("_server", "_session", "_cli", "_stack", "local", "_pacing", "_coalescing")
    offenders = {
        (name, m)
        for name, path in modules()
        if name.startswith(("privatemode_proxy.openai", "privatemode_proxy.protocol"))
        for m in imported(name, path)
        if m.startswith(tuple(f"privatemode_proxy.{s}" for s in servers))
    }
    assert offenders == set()


def test_the_client_uses_the_proxy_package_only_through_light_modules() -> None:
    """The client core reaches into `privatemode_proxy` for the catalogue, the wire layer, the
    batch splitter and the tokenizer; the server and the local stack only to start local mode."""
    light = (
        "privatemode_proxy._batching",
        "privatemode_proxy._catalogue",
        "privatemode_proxy._tokenizer",
        "privatemode_proxy.openai",
    )
    starts_local_mode = {"privatemode_integrations._local"}
    offenders = {
        (name, m)
        for name, path in modules()
        if name.startswith("privatemode_integrations") and name not in starts_local_mode
        for m in imported(name, path)
        if m.startswith("privatemode_proxy.") and not m.startswith(light)
    }
    assert offenders == set()


def test_public_exceptions_name_their_public_package() -> None:
    import privatemode_proxy

    import privatemode_integrations

    for package in (privatemode_integrations, privatemode_proxy):
        public = [getattr(package, n) for n in package.__all__]
        errors = [e for e in public if isinstance(e, type) and issubclass(e, BaseException)]
        assert errors, package.__name__
        for error in errors:
            assert error.__module__ == package.__name__, error
            assert getattr(package, error.__name__) is error


def test_upstream_errors_are_openai_errors() -> None:
    from privatemode_proxy import AttestationFailed, UpstreamError
    from privatemode_proxy.openai import ApiError

    error = AttestationFailed("the report's measurement is not in the manifest")
    assert isinstance(error, UpstreamError) and isinstance(error, ApiError)
    assert (error.status_code, error.type, error.code) == (
        503,
        "service_unavailable",
        "attestation_failed",
    )
    assert error.body()["error"]["message"] == "the report's measurement is not in the manifest"


def documented_modules() -> set[str]:
    """The modules docs/internals.md lists: `- `_name.py` — ...` (or `; `_other.py` — ...`)
    under a `## `package`` heading."""
    package = None
    listed: set[str] = set()
    for line in (ROOT / "docs" / "internals.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## `([\w.]+)`", line)
        if heading:
            package = heading[1]
        elif package is not None and line.startswith("- "):
            for module in re.findall(r"`(_\w+)\.py` —", line):
                listed.add(f"{package}.{module}")
    return listed


def test_internals_md_lists_every_module() -> None:
    on_disk = {name for name, path in modules() if path.name != "__init__.py"}
    listed = documented_modules()
    assert sorted(on_disk - listed) == [], "modules missing from docs/internals.md"
    assert sorted(listed - on_disk) == [], "docs/internals.md lists modules that do not exist"
