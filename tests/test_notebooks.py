"""The notebooks as committed: run top to bottom with their outputs saved, small, on the public Python API,
reading nothing from the network, and each linked from the README. (`make notebooks`, which CI runs after
the tests, executes them; this checks what a reader of the repository sees without running anything.)"""

import json
import re

import pytest

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def code_cells(path):
    return [cell for cell in json.loads(path.read_text(encoding="utf-8"))["cells"] if cell["cell_type"] == "code"]


def test_there_are_the_six_notebooks_of_the_chapter():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_run_in_order_with_outputs_and_no_errors(path):
    assert path.stat().st_size < 1_000_000
    cells = code_cells(path)
    counts = [cell["execution_count"] for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), "run top to bottom in one fresh kernel, then saved"
    outputs = [output for cell in cells for output in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "a notebook shows at least one plot"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_uses_the_python_api_and_no_shell_or_network(path):
    source = "\n".join("".join(cell["source"]) for cell in code_cells(path))
    assert "import rnnlab" in source or "from rnnlab" in source
    for forbidden in ("subprocess", "os.system", "!rnnlab", "%%bash", "%%sh", "urllib", "requests", "http://",
                      "https://", "download("):
        assert forbidden not in source, forbidden
    assert not re.search(r"^\s*!", source, re.M), "no shell escapes"


def test_the_readme_links_each_notebook_with_what_it_teaches():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        line = next((line for line in readme.splitlines() if f"(notebooks/{path.name})" in line), None)
        assert line is not None, path.name
        assert len(line.split(")", 1)[1].strip(" :-—")) > 20, f"{path.name}: say what it teaches"
