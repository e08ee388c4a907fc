"""Imports go one way (DESIGN.md): a lower layer never imports a higher one."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "lmforge"

# package -> lmforge subpackages/modules it must never import
FORBIDDEN = {
    "nn": {"config", "tokenizer", "data", "models", "objectives", "train", "generate", "evaluate", "serve", "cli", "api", "quickstart"},
    "models": {"train", "data", "serve", "cli", "objectives", "generate", "evaluate", "api", "quickstart"},
    "data": {"models", "nn", "train", "generate", "evaluate", "serve", "cli", "api", "quickstart"},
    "objectives": {"train", "generate", "evaluate", "serve", "cli", "api", "quickstart"},
    "generate": {"tokenizer", "train", "data", "serve", "cli", "api", "quickstart"},
    "evaluate": {"train", "serve", "cli", "api", "quickstart"},
    "tasks": {"train", "serve", "cli", "api", "quickstart", "generate"},
    "train": {"serve", "cli", "api", "quickstart", "generate"},
}


def imported_lmforge_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return {n.split(".")[1] for n in names if n.startswith("lmforge.") and n.count(".") >= 1}


def test_import_direction():
    problems = []
    for pkg, forbidden in FORBIDDEN.items():
        assert (PKG / pkg).is_dir(), pkg
        for path in (PKG / pkg).rglob("*.py"):
            bad = imported_lmforge_modules(path) & forbidden
            if bad:
                problems.append(f"{path.relative_to(PKG)} imports {sorted(bad)}")
    assert not problems, problems


def test_nn_imports_only_torch_and_itself():
    for path in (PKG / "nn").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] in {"torch", "lmforge", "__future__", "math"}, (path, node.module)
                if node.module.startswith("lmforge"):
                    assert node.module.startswith("lmforge.nn"), (path, node.module)


def test_tokenizer_imports_no_torch():
    tree = ast.parse((PKG / "tokenizer.py").read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m.split(".")[0] == "torch" for m in mods)


def test_nothing_imports_cli():
    """The command line is the outermost ring: no module of the library imports it."""
    problems = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                if not p.relative_to(PKG).parts[0] in ("cli", "__main__.py") and "cli" in imported_lmforge_modules(p)]
    assert not problems, problems
