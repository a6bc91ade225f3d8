"""Where local mode keeps its files: one per-user cache directory, reused across runs.

The local backend's identity (its self-made root and chip keys, RSA-4096: seconds to generate)
lives in `<cache>/local-backend/`, made once and loaded on every later start. Nothing is
written into the current directory and nothing is left in /tmp by a killed process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_DIR_ENV = "PRIVATEMODE_CACHE_DIR"


def user_cache_dir() -> Path:
    """`PRIVATEMODE_CACHE_DIR`, else the platform's per-user cache directory + `privatemode`.

    Linux and other Unixes: `$XDG_CACHE_HOME/privatemode` or `~/.cache/privatemode`; macOS:
    `~/Library/Caches/privatemode`; Windows: `%LOCALAPPDATA%\\privatemode\\Cache`.
    """
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "privatemode" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "privatemode"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base_dir = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base_dir / "privatemode"


def local_backend_workspace() -> Path:
    """The local backend's workspace in the per-user cache, created private to the user."""
    workspace = user_cache_dir() / "local-backend"
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)
    return workspace
