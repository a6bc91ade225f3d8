"""Build-time check: refuse Python < 3.11 before pip starts resolving dependencies.

pip checks `requires-python` of a local project only after resolving its dependencies, and on
Python 3.10 that resolution backtracks through every `tokenizers` release for many minutes
before failing with an unrelated message. This hook runs first, when pip asks the build backend
what it needs to build, and fails at once with the reason.
"""

from __future__ import annotations

import sys

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

REQUIRED = (3, 11)


class CustomBuildHook(BuildHookInterface):
    def dependencies(self) -> list[str]:
        # Asked first, before metadata and long before pip resolves any dependency.
        if sys.version_info < REQUIRED:
            found = ".".join(map(str, sys.version_info[:3]))
            # SystemExit: pip shows the message alone, not a traceback through hatchling.
            raise SystemExit(
                f"\nprivatemode-integrations requires Python >= 3.11; this is Python {found} "
                f"({sys.executable}). Make the venv with python3.11 or newer, e.g. "
                "`python3.11 -m venv .venv`."
            )
        return []
