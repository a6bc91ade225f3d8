"""Python 3.10 fails at once and says why (issue 14, item 6).

pip resolves a local project's dependencies before it checks its `requires-python`; on 3.10
that backtracked for many minutes. `hatch_build.py` refuses when pip first asks the build
backend what it needs, before any resolution.
"""

from __future__ import annotations

import glob
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _hook_class() -> type:
    spec = importlib.util.spec_from_file_location("hatch_build", REPO / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CustomBuildHook  # type: ignore[no-any-return]


def test_the_build_hook_refuses_python_3_10_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = _hook_class()
    instance = hook.__new__(hook)  # the check needs none of the builder's state
    assert instance.dependencies() == []  # this interpreter is new enough
    monkeypatch.setattr(sys, "version_info", (3, 10, 12, "final", 0))
    with pytest.raises(SystemExit) as info:
        instance.dependencies()
    assert "requires Python >= 3.11" in str(info.value) and "3.10.12" in str(info.value)


def test_the_hook_is_wired_into_the_build() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert "[tool.hatch.build.hooks.custom]" in text
    assert 'requires-python = ">=3.11"' in text


def _python_310() -> str | None:
    """A working Python 3.10 (pyenv's shims exist even where they cannot run one)."""
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.10*/bin/python3.10")))
    found = shutil.which("python3.10")
    candidates += [found] if found else []
    for candidate in candidates:
        probe = subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False)
        if probe.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(_python_310() is None, reason="no Python 3.10 interpreter on this machine")
def test_pip_on_python_3_10_stops_before_resolving(tmp_path: Path) -> None:
    python = _python_310()
    assert python is not None
    venv = tmp_path / "venv310"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    project = tmp_path / "project"
    shutil.copytree(
        REPO,
        project,
        ignore=shutil.ignore_patterns(".venv", ".git", "*_cache", "__pycache__", "tests", "bench"),
    )
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-e", f"{project}[local]"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "requires Python >= 3.11; this is Python 3.10" in output, output
    assert "tokenizers" not in output  # stopped before resolving any dependency
