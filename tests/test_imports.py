"""Imports go one way (DESIGN.md, "Which way imports go"), with no cycle, lazy imports included.

Every .py file under lmforge/ is read as an AST and every import in it (at the top, inside a
function, anywhere but under `if TYPE_CHECKING:`) becomes an edge of a graph of lmforge modules;
`from lmforge.x import y` is an edge to lmforge.x.y when that is a module, else to lmforge.x, and
importing lmforge.x.y also runs the __init__ of every package above it (other than the importer's
own packages, which are already running, and the root). Each module belongs to a part (its first
name under lmforge/: a package or a top-level module), and ALLOWED says which other parts each
part may import. Parts that do not exist yet simply have no files.
"""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "lmforge"
BOTTOM = {"errors", "io", "config", "runtime"}  # import nothing of lmforge above them
FRONT = {"cli", "serve", "quickstart", "lmforge"}  # front doors: nothing below may import them

# The model registry: the `lmforge.models` package itself (its __init__ exports build_model) and
# registry.py; "=x" allows module lmforge.x alone, "x.y" module lmforge.x.y and what is under it.
REGISTRY = {"=models", "models.registry"}
# part -> the parts it may import (besides itself).
ALLOWED = {
    "errors": set(),
    "io": {"errors"},
    "config": {"errors", "io"},
    "runtime": {"errors", "io", "config", "nn"},  # the bfloat16 probe times one Transformer layer (nn.Block)
    "nn": set(),  # torch only (test_nn_imports_only_torch)
    "tokenizer": BOTTOM,
    "chat_jinja": {"errors"},
    "models": {"nn"} | BOTTOM,
    "data": {"tokenizer"} | BOTTOM,
    "objectives": {"models", "data", "nn", "tokenizer"} | BOTTOM,
    "generate": {"models", "nn"} | BOTTOM,  # token ids only: never the tokenizer
    "evaluate": {"models", "generate", "objectives", "data", "tokenizer", "nn", "interpret"} | BOTTOM,  # plots
    # compress reads a run and writes its smaller copy as a run (checkpoint), as merge does
    "compress": {"models", "generate", "objectives", "evaluate", "data", "tokenizer", "nn", "checkpoint"} | BOTTOM,
    "interpret": {"models", "generate", "objectives", "data", "tokenizer", "nn"} | BOTTOM,
    "tasks": {"objectives", "data", "evaluate", "tokenizer", "chat_jinja"} | REGISTRY | BOTTOM,
    # a LoRA run's adapter read onto its base, and the adapters put on a model being fine-tuned
    "adapters": {"models", "tokenizer"} | BOTTOM,
    "checkpoint": {"adapters", "models", "tokenizer"} | BOTTOM,
    # never a specific model file; nn for parallel.py, which wraps a built model's blocks
    "train": {"tasks", "objectives", "data", "checkpoint", "adapters", "evaluate", "tokenizer", "nn", "chat"} | REGISTRY
    | BOTTOM,
    "chat": {"chat_jinja", "checkpoint", "models", "tokenizer"} | BOTTOM,
    # word vectors: trained here, or read from a run's input embeddings; pictures with interpret's fonts
    "embed": {"checkpoint", "interpret", "data", "tokenizer", "models"} | BOTTOM,
    "api": {"checkpoint", "generate", "models", "tokenizer", "chat", "tasks", "data", "evaluate"} | BOTTOM,
    "lmforge": {"api"} | BOTTOM,  # the root package: lmforge.load
    # a classifier's labels (tasks), the drift of its predictions (evaluate), a canary file (data)
    "serve": {"api", "generate", "tokenizer", "checkpoint", "chat", "models", "tasks", "evaluate", "data"} | BOTTOM,
    # The front doors import anything beneath them; only the CLI starts the server.
    "quickstart": {"lmforge", "api", "train", "tasks", "data", "evaluate", "checkpoint", "models", "tokenizer",
                   "generate", "objectives"} | BOTTOM,
    "__main__": {"cli"},  # `python -m lmforge`
    "cli": {"lmforge", "quickstart", "serve", "api", "train", "tasks", "data", "evaluate", "checkpoint", "models",
            "tokenizer", "generate", "objectives", "compress", "interpret", "chat", "embed"} | BOTTOM,
}
ALIASES = {"cli_tasks": "cli", "__init__": "lmforge"}  # today's second CLI module is part of the CLI
OUTSIDE = {"bench", "tests", "recipes"}  # nothing in lmforge imports these


def module_name(path: Path) -> str:
    parts = ("lmforge",) + path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def part(module: str) -> str:
    name = module.split(".")[1] if "." in module else "lmforge"
    return ALIASES.get(name, name)


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, skipping `if TYPE_CHECKING:` blocks (they never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for s in node.orelse for n in _imports(ast.Module([s], [])))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _resolve(node, module: str, is_package: bool) -> list[str]:
    """The modules an import statement runs (names in lmforge only)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importer's package upwards
        here = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def imports_of(module: str) -> dict[str, int]:
    """lmforge modules `module` imports (with the parent packages that run first) -> line number."""
    path = MODULES[module]
    found: dict[str, int] = {}
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        for name in _resolve(node, module, path.name == "__init__.py"):
            while name and name not in MODULES:  # `import lmforge.x.y.func`-like spellings
                name = name.rpartition(".")[0]
            if not name.startswith("lmforge"):
                continue
            chain = name.split(".")
            for i in range(2, len(chain) + 1):
                target = ".".join(chain[:i])
                if target != module and (target == name or target not in own):
                    found.setdefault(target, node.lineno)
            if name == "lmforge" and module != "lmforge":
                found.setdefault(name, node.lineno)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _allowed(importer: str, target: str) -> bool:
    mine, theirs = part(importer), part(target)
    if mine == theirs:
        return True
    rules = ALLOWED.get(mine)
    assert rules is not None, f"{importer}: part {mine!r} has no row in ALLOWED; add one, following DESIGN.md"
    names = {"lmforge" if r == "lmforge" else f"lmforge.{r.lstrip('=')}": r.startswith("=") for r in rules}
    return any(target == n or (not exact and target.startswith(n + ".")) for n, exact in names.items())


def test_every_module_is_in_the_graph():
    assert {"lmforge", "lmforge.api", "lmforge.chat", "lmforge.config", "lmforge.errors", "lmforge.io",
            "lmforge.tokenizer", "lmforge.quickstart", "lmforge.runtime", "lmforge.nn", "lmforge.data",
            "lmforge.models", "lmforge.generate", "lmforge.train"} <= set(MODULES)
    assert len(GRAPH) == len(list(PKG.rglob("*.py")))
    assert "lmforge.data.corpora" in imports_of("lmforge.data.encoder")  # a top-level `from ... import`
    lazy = next(m for m, path in MODULES.items() if "    from lmforge" in path.read_text(encoding="utf-8"))
    assert imports_of(lazy), lazy  # imports inside functions count too


def test_import_direction():
    problems = [f"{MODULES[m].relative_to(PKG.parent)}:{line} imports {t} ({part(m)} -> {part(t)})"
                for m, targets in sorted(GRAPH.items()) for t, line in sorted(targets.items()) if not _allowed(m, t)]
    assert not problems, "\n".join(problems)


def _cycles() -> list[list[str]]:
    """Each strongly connected group of modules (Tarjan), as one cycle through it."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return [_one_cycle(sorted(g)[0], g) for g in groups]


def _one_cycle(start: str, group: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside `group` (breadth first)."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(GRAPH[v]):
                if w == start:
                    return paths[v] + [start]
                if w in group and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return [start]


def test_no_import_cycles_lazy_imports_included():
    cycles = [" -> ".join(c) for c in _cycles()]
    assert not cycles, "\n".join(cycles)


def test_cycles_are_found():
    global GRAPH
    saved = GRAPH
    GRAPH = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}}
    try:
        assert _cycles() == [["a", "b", "c", "a"]]
    finally:
        GRAPH = saved


def test_nothing_imports_tests_bench_or_recipes():
    for path in PKG.rglob("*.py"):
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not {n.split(".")[0] for n in names if not getattr(node, "level", 0)} & OUTSIDE, path


def _external(path: Path) -> set[str]:
    return {(a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
            for n in _imports(ast.parse(path.read_text(encoding="utf-8"))) if not getattr(n, "level", 0)
            for a in (n.names if isinstance(n, ast.Import) else [n])}


def test_nn_imports_only_torch():
    for path in (PKG / "nn").rglob("*.py"):
        assert _external(path) <= {"torch", "lmforge", "__future__", "math", "typing", "dataclasses"}, path


def test_tokenizer_imports_no_torch():
    assert "torch" not in _external(PKG / "tokenizer.py")


def test_config_knows_the_builtin_corpus_names_without_importing_data():
    from lmforge.config import BUILTIN_CORPORA
    from lmforge.data.corpora import BUILTIN

    assert tuple(BUILTIN) == BUILTIN_CORPORA
