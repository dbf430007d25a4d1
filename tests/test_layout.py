"""The package's architecture, checked from its source with `ast`: imports point only down the layers,
no module imports itself round a cycle, library code does not print, and `rnnlab --help` imports no torch."""

import ast
import functools
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "src" / "rnnlab"
# lowest first. A module may import from its own package and from lower layers. The packages of the
# middle layers are peers that do not import each other (data, models and baselines know nothing of one
# another); the leaf modules of the bottom layer may use each other, and __main__ is the command line.
LAYERS = [
    {"errors", "version", "options", "files", "devices"},
    {"data", "models", "baselines"},
    {"inference"},
    {"training"},
    {"studies"},
    {"cli", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAY_PRINT = ("cli", "inference.launch")  # the command line, and the server's banner (main_serve)


@functools.cache  # parsed once for all the tests here (none changes what it reads)
def modules() -> dict[str, ast.Module]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imports(tree: ast.Module) -> set[str]:
    """Every rnnlab module a module imports, at its top or inside a function, as 'package.module'."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.removeprefix("rnnlab.") if n != "rnnlab" else "" for n in names if n.split(".")[0] == "rnnlab"}
    return found


def resolve(name: str, known: set[str]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name if name in known else None


@functools.cache
def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {m: {t for t in (resolve(i, known) for i in imports(tree)) if t is not None and t != m}
            for m, tree in found.items()}


def test_every_module_has_a_layer():
    assert {m.split(".")[0] for m in graph() if m} <= set(RANK)


def test_imports_point_down_the_layers_and_never_at_the_package_root():
    wrong = []
    for source, targets in graph().items():
        if not source:
            continue  # the package root: its public names load lazily by module path
        top = source.split(".")[0]
        for target in targets:
            if not target:
                wrong.append(f"{source} imports the package root")
                continue
            other = target.split(".")[0]
            peers = RANK[other] == RANK[top] and other != top and RANK[top] not in (0, len(LAYERS) - 1)
            if RANK[other] > RANK[top] or peers:
                wrong.append(f"{source} -> {target}")
    assert not wrong, wrong


def test_no_import_cycles():
    edges = {m: {t for t in targets if t} for m, targets in graph().items() if m}
    # a package's __init__ re-exporting its modules is not a cycle with them
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_layer_check_finds_a_cycle_and_an_upward_import(monkeypatch):
    # the checks above, on a made-up graph, fail as they should
    fake = {"data.a": {"training.b"}, "training.b": {"data.a"}}
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: fake)
    for check in (test_imports_point_down_the_layers_and_never_at_the_package_root, test_no_import_cycles):
        try:
            check()
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} passed on a broken graph")


def test_library_code_does_not_print_to_stdout():
    printing = []
    for name, tree in modules().items():
        if name.startswith(MAY_PRINT):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                is_print = isinstance(func, ast.Name) and func.id == "print" and not any(
                    k.arg == "file" for k in node.keywords)
                is_write = (isinstance(func, ast.Attribute) and func.attr == "write"
                            and ast.unparse(func.value) == "sys.stdout")
                if is_print or is_write:
                    printing.append(f"{name}:{node.lineno}")
    assert not printing, printing


def test_help_imports_no_torch():
    code = ("import sys, contextlib, io\nfrom rnnlab.cli import main\n"
            "for argv in (['--help'], ['train', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try: main(argv)\n"
            "        except SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'numpy'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
