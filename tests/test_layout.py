"""Dependencies point one way: `worker` may use `app` and `models`; `app` never imports `worker`;
`models` imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"app": ("worker",), "models": ("app", "worker")}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & set(FORBIDDEN[package]))
        for path in (REPO / package).rglob("*.py")
    }
    assert {path: bad for path, bad in offenders.items() if bad} == {}
