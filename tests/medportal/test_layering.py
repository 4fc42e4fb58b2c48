"""The layers hold (docs/architecture.md): every import statement, also the ones inside functions.

- training/engine and training/inference import no Django (and nothing of the apps);
- curation imports neither training nor chat;
- training does not import chat.

An AST walk over the source, not an import at run time: a lazy import inside a function counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("medportal", "curation", "training", "chat")


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def violations(folder: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    out = []
    for path in sorted((root / folder).rglob("*.py")):
        for line, module in imported_modules(path, root):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                out.append(f"{path.relative_to(root)}:{line} imports {module}")
    return out


RULES = [
    ("training/engine", ("django", "rest_framework", "channels", "django_q", "medportal", "curation", "chat", "training.inference", "training.models")),
    ("training/inference", ("django", "rest_framework", "channels", "django_q", "medportal", "curation", "chat", "training.models", "training.services")),
    ("curation", ("training", "chat")),
    ("training", ("chat",)),
]


@pytest.mark.parametrize(("folder", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_layer(folder, forbidden):
    assert violations(folder, forbidden) == []


def test_the_check_sees_lazy_and_relative_imports(tmp_path):
    """The walker itself: a function-level import and a relative import are both found."""
    pkg = tmp_path / "training" / "engine"
    pkg.mkdir(parents=True)
    (pkg / "__layering_probe__.py").write_text("import json\n\ndef f():\n    from django.conf import settings\n    from ..inference import base\n")
    found = violations("training/engine", ("django", "training.inference"), root=tmp_path)
    assert found == [
        "training/engine/__layering_probe__.py:4 imports django.conf",
        "training/engine/__layering_probe__.py:5 imports training.inference",
    ]
