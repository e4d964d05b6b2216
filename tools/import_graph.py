"""Draw the import structure of the budgetnas package and check it has no import circle.

    python tools/import_graph.py            # the drawing (text), exit 1 if a circle exists
    python tools/import_graph.py --dot      # Graphviz DOT of the same graph

Every ``import budgetnas.X`` / ``from budgetnas.X import ...`` counts, at module level or inside a
function (a lazy import is still a dependency), except those under ``if TYPE_CHECKING:``, which
never run, and under ``if __name__ == "__main__":`` (a module's command-line alias, not a dependency). ``budgetnas/__init__.py``'s lazy re-exports are left out: they are the public face, not
a dependency of any module. The test suite runs :func:`cycles` (tests/test_structure.py).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "budgetnas"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines under ``if TYPE_CHECKING:`` (never run) and ``if __name__ == "__main__":`` (an entry point)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ("TYPE_CHECKING" in ast.unparse(node.test)
                                         or "__main__" in ast.unparse(node.test)):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def graph() -> dict[str, set[str]]:
    """module -> budgetnas modules it imports (names without the ``budgetnas.`` prefix)."""
    modules = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name == "budgetnas":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                candidates = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            for candidate in candidates:
                if candidate in modules and candidate != "budgetnas" and candidate != name:
                    targets.add(candidate)
                    break
        edges[name.removeprefix("budgetnas.")] = {t.removeprefix("budgetnas.") for t in targets}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, as a list of modules (empty when the graph is a DAG)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def layers(edges: dict[str, set[str]]) -> list[list[str]]:
    """Modules by depth: layer 0 imports no budgetnas module, layer k only lower layers."""
    depth: dict[str, int] = {}

    def level(node: str, seen: tuple[str, ...] = ()) -> int:
        if node not in depth:
            if node in seen:
                return 0  # a circle: reported by cycles()
            depth[node] = 1 + max((level(d, seen + (node,)) for d in edges.get(node, ())), default=-1)
        return depth[node]

    for node in edges:
        level(node)
    out: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for node, d in depth.items():
        out[d].append(node)
    return [sorted(layer) for layer in out]


def drawing(edges: dict[str, set[str]]) -> str:
    lines = ["budgetnas imports, by layer (a module imports only modules of lower layers):", ""]
    for i, layer in enumerate(layers(edges)):
        lines.append(f"layer {i}:")
        for node in layer:
            deps = ", ".join(sorted(edges[node])) or "-"
            lines.append(f"  {node:<22} -> {deps}")
    circles = cycles(edges)
    lines += ["", "import circles: " + ("none" if not circles else "; ".join(" -> ".join(c) for c in circles))]
    return "\n".join(lines)


def main() -> int:
    edges = graph()
    if "--dot" in sys.argv[1:]:
        print("digraph budgetnas {\n  rankdir=BT;")
        for node, deps in sorted(edges.items()):
            for dep in sorted(deps):
                print(f'  "{node}" -> "{dep}";')
        print("}")
    else:
        print(drawing(edges))
    return 1 if cycles(edges) else 0


if __name__ == "__main__":
    raise SystemExit(main())
