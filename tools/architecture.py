"""The layer contract of rnnrec_cli, checked by tests/test_architecture.py and rendered into
docs/architecture.md.

    python tools/architecture.py            # check the contract; exit 1 naming each breach
    python tools/architecture.py --write    # regenerate docs/architecture.md from the code

A module may import modules of its own layer or a lower one, never a higher one; no two modules
import each other, directly or through others; no module is longer than MAX_LINES. Type-only
imports (under `if TYPE_CHECKING:`) are not imports at run time and are left out.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "rnnrec_cli"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 400

# Lowest first. The top-level modules are the leaves everything else may use.
LAYERS: tuple[tuple[str, str], ...] = (
    ("core", "errors, configuration, atomic files and strict JSON, the run directory's layout"),
    ("data", "reading event logs, cleaning and splitting them, sequences and session-parallel batches"),
    ("model", "the recurrent network, its losses, the jitted training step, devices, saved weights"),
    ("evaluation", "metrics, full-catalogue scoring, baselines, evaluate, compare, recommend, predict"),
    ("training", "the training loop, its checkpoints and the tuner"),
    ("reporting", "the self-contained HTML report"),
    ("cli", "the `rnnrec` command: options, commands, what people see"),
    ("api", "the public Python API (`import rnnrec_cli`)"),
)


@dataclass(frozen=True)
class Module:
    name: str  # dotted
    path: Path
    layer: str
    lines: int
    summary: str
    imports: frozenset[str]


def layer_of(name: str) -> str:
    parts = name.split(".")
    if name in (PACKAGE, f"{PACKAGE}.__main__", f"{PACKAGE}.api"):
        return "api"
    if len(parts) > 2 or (len(parts) == 2 and (ROOT / PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "core"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT / Path(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement except those under `if TYPE_CHECKING:`."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == PACKAGE}
    if node.level or not node.module or node.module.split(".")[0] != PACKAGE:
        return set()
    out = set()
    for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        # `from rnnrec_cli import __version__` reads the package's own attribute, not its API.
        if node.module == PACKAGE and alias.name == "__version__":
            out.add(f"{PACKAGE}.version")
        else:
            out.add(sub if _is_module(sub) else node.module)
    return out


def modules() -> dict[str, Module]:
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        name = _module_name(path)
        doc = ast.get_docstring(tree) or ""
        imports = set().union(*(_targets(n) for n in _runtime_imports(tree))) - {name}
        found[name] = Module(
            name, path, layer_of(name), len(text.splitlines()), doc.split("\n\n")[0].replace("\n", " "),
            frozenset(imports),
        )  # fmt: skip
    return found


def layer_breaches(mods: dict[str, Module]) -> list[str]:
    rank = {layer: i for i, (layer, _) in enumerate(LAYERS)}
    out = []
    for m in mods.values():
        for target in sorted(m.imports):
            if target == f"{PACKAGE}.version":
                continue
            if target not in mods:
                out.append(f"{m.name} imports {target}, which is not a module")
            elif rank[mods[target].layer] > rank[m.layer]:
                out.append(f"{m.name} ({m.layer}) imports {target} ({mods[target].layer}), a higher layer")
    return out


def cycles(mods: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in mods[v].imports:
            if w not in mods:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                out.append(sorted(scc))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return out


def too_long(mods: dict[str, Module]) -> list[str]:
    return [f"{m.name}: {m.lines} lines (at most {MAX_LINES})" for m in mods.values() if m.lines > MAX_LINES]


def breaches(mods: dict[str, Module] | None = None) -> list[str]:
    mods = modules() if mods is None else mods
    out = layer_breaches(mods) + too_long(mods)
    out += [f"import cycle: {' -> '.join(c)}" for c in cycles(mods)]
    out += [f"{m.name} has no docstring" for m in mods.values() if not m.summary and not m.name.endswith("__init__")]
    return out


def render(mods: dict[str, Module] | None = None) -> str:
    mods = modules() if mods is None else mods
    lines = [
        "# Architecture",
        "",
        "<!-- Generated by `python tools/architecture.py --write` from the code; a test fails when it is stale. -->",
        "",
        "The package `rnnrec_cli` is layered. A module imports only modules of its own layer or a lower",
        "one (lowest first below), no two modules import each other even through others, and no module is",
        f"longer than {MAX_LINES} lines; `tools/architecture.py` checks all three in the test suite.",
        "Pure, jittable functions form the core; reading and writing files are thin shells around them;",
        "the command line only parses options, calls one library function and renders the result.",
        "",
    ]
    for layer, what in LAYERS:
        members = sorted((m for m in mods.values() if m.layer == layer), key=lambda m: m.name)
        lines += [f"## {layer}: {what}", "", "| module | what it owns |", "|---|---|"]
        for m in members:
            if m.name.endswith("__init__") or (not m.summary and m.path.name == "__init__.py"):
                continue
            summary = m.summary.replace("|", "\\|")
            lines.append(f"| `{m.name}` | {summary} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if "--write" in argv:
        DOC.write_text(render())
        print(f"wrote {DOC.relative_to(ROOT)}")
    problems = breaches()
    if DOC.is_file() and DOC.read_text() != render() and "--write" not in argv:
        problems.append(f"{DOC.relative_to(ROOT)} is stale: run python tools/architecture.py --write")
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
