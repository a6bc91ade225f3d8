"""The README's "Your own documents" recipes run as written, offline (issue 14: the README is true).

Each Python block of that section runs in a fresh interpreter, in a directory holding `my-docs/`
(three of the test documents), with its own per-user cache; it must exit 0 and print three hits,
the first from the document that answers the question.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = Path(__file__).resolve().parent / "documents"


def recipes() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Your own documents", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_section_has_one_recipe_per_framework() -> None:
    blocks = recipes()
    assert len(blocks) == 2
    assert "text_splitter()" in blocks[0] and "node_parser()" in blocks[1]


@pytest.mark.parametrize("index", [0, 1], ids=["langchain", "llamaindex"])
def test_recipe_runs_as_written(index: int, tmp_path: Path) -> None:
    docs = tmp_path / "my-docs"
    docs.mkdir()
    for name in ("protocol.md", "gettysburg-address.txt", "design.md"):
        shutil.copy(DOCUMENTS / name, docs / name)
    env = {**os.environ, "PRIVATEMODE_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PRIVATEMODE_BASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", recipes()[index]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    hits = [line for line in proc.stdout.splitlines() if re.match(r"^\d\.\d{3}  ", line)]
    assert len(hits) == 3, proc.stdout
    assert "protocol.md" in hits[0], proc.stdout  # its "## 6. Manifest" section answers
