"""The README's promises that are code: its "Use from Python" blocks run as written."""

import contextlib
import io
import os
import re

from conftest import REPO


def python_blocks(section: str) -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    body = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_use_from_python_runs_as_written(tmp_path):
    blocks = python_blocks("Use from Python")
    assert blocks
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the example writes runs/quick where it runs
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            for block in blocks:
                exec(compile(block, "README.md", "exec"), {"__name__": "readme"})
    finally:
        os.chdir(cwd)
    printed = out.getvalue()
    assert (tmp_path / "runs" / "quick" / "model.safetensors").is_file()
    assert printed.startswith("LanguageModel(1x64 lstm, char level")
    assert "Return the " in printed and "'perplexity'" in printed


def test_the_module_map_names_every_module_of_the_tree_and_nothing_else():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("```\nsrc/rnnlab/\n", 1)[1].split("```", 1)[0]
    named, folder = set(), ""
    for line in block.splitlines():
        if re.match(r"  \w+/", line):
            folder = re.match(r"  (\w+)/", line).group(1) + "/"
        elif re.match(r"  \w+\.py", line):
            folder = ""
        named |= {folder + name for name in re.findall(r"\b(\w+\.py)\b", line)}
    package = REPO / "src" / "rnnlab"
    tree = {p.relative_to(package).as_posix() for p in package.rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}
    assert named == tree
