"""Run the notebooks top to bottom, each in a fresh kernel; a cell that raises fails the run.

    python notebooks/run.py                 every notebook, outputs discarded (what CI does)
    python notebooks/run.py 03 --write      the notebooks whose names contain "03", outputs saved
                                            into them (they are committed with their outputs)

Needs the notebooks extra: pip install -e '.[notebooks]'. The notebooks run in this folder, so the
paths in them (../../shared/data, runs/) are relative to it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
MAX_BYTES = 1_000_000  # a notebook with its outputs stays under 1 MB in git


def run(path: Path, *, write: bool, timeout: int) -> bool:
    notebook = nbformat.read(path, as_version=4)
    started = time.monotonic()
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                            resources={"metadata": {"path": str(HERE)}})
    try:
        client.execute()
    except CellExecutionError as error:
        print(f"{path.name}: FAILED after {time.monotonic() - started:.0f} s\n{error}", file=sys.stderr)
        return False
    seconds = time.monotonic() - started
    if write:
        for cell in notebook.cells:  # keep git diffs to what changed: no timestamps
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(notebook, path)
        size = path.stat().st_size
        print(f"{path.name}: ran in {seconds:.0f} s, written ({size / 1000:.0f} kB)")
        if size > MAX_BYTES:
            print(f"{path.name}: {size:,} bytes, over the {MAX_BYTES:,} a notebook may have", file=sys.stderr)
            return False
    else:
        print(f"{path.name}: ran in {seconds:.0f} s")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the notebooks in a fresh kernel each.")
    parser.add_argument("names", nargs="*", help="run only the notebooks whose file names contain one of these")
    parser.add_argument("--write", action="store_true", help="save the outputs into the notebooks")
    parser.add_argument("--timeout", type=int, default=300, help="seconds a cell may take (default 300)")
    args = parser.parse_args(argv)
    paths = [p for p in sorted(HERE.glob("*.ipynb")) if not args.names or any(n in p.name for n in args.names)]
    if not paths:
        print("no notebook matches", file=sys.stderr)
        return 1
    started = time.monotonic()
    failed = [p.name for p in paths if not run(p, write=args.write, timeout=args.timeout)]
    print(f"{len(paths) - len(failed)} of {len(paths)} notebooks ran in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
