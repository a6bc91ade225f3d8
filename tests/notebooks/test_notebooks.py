"""The notebooks: every committed notebook runs top to bottom on the real local stack.

Each notebook is executed with nbclient in a fresh kernel of this interpreter (a kernelspec
written to a temporary directory, so no other Python's `python3` kernel can be picked up); a
failing cell fails the test with its traceback. The committed notebooks must also match their
source, notebooks/build_notebooks.py, and carry their outputs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
COMMITTED = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", NOTEBOOKS_DIR / "build_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def test_every_notebook_source_is_committed_and_nothing_else() -> None:
    assert [p.stem for p in COMMITTED] == sorted(builder.NOTEBOOKS)


def test_the_kernel_is_this_interpreter(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    NotebookClient(nb, km=builder.kernel_manager(tmp_path), timeout=60).execute()
    assert nb.cells[0].outputs[0]["text"].strip() == sys.executable


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_notebook_matches_its_source_and_has_outputs(path: Path) -> None:
    committed = nbformat.read(path, as_version=4)
    nbformat.validate(committed)
    assert _cells(committed) == _cells(builder.build(path.stem)), (
        f"{path.name} differs from notebooks/build_notebooks.py; "
        f"run: python notebooks/build_notebooks.py --execute {path.stem}"
    )
    code_cells = [c for c in committed.cells if c.cell_type == "code"]
    assert code_cells
    assert all(c.execution_count is not None for c in code_cells), "committed without running"
    assert all(c.outputs for c in code_cells), "committed without outputs"
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_notebook_runs_on_the_local_stack(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The notebooks use PRIVATEMODE_BASE_URL when set; here they must start the local stack.
    monkeypatch.delenv("PRIVATEMODE_BASE_URL", raising=False)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        nb,
        km=builder.kernel_manager(tmp_path),
        timeout=builder.TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code_cells)
    assert not [o for c in code_cells for o in c.outputs if o.output_type == "error"]
