"""The layout's rules, checked on the code as it is: services never import each other,
`shared/` never imports `services/`, and the booking domain knows nothing of HTTP."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("booking", "scheduler", "notifier")
# `regimen dev` runs every service in one process and `regimen` starts any of them: these two
# places may name the services; nothing else may.
STARTERS = ("services/cli.py", "services/devkit/")
HTTP = ("aiohttp", "services.booking.api", "services.booking.web", "services.booking.clients")


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module name `path` imports (absolute imports only: the project uses no others)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_shared_never_imports_services() -> None:
    offenders = {
        relative(path): sorted(n for n in imported(path) if n.startswith("services"))
        for path in modules("shared")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_imports_another(service: str) -> None:
    others = tuple(f"services.{name}" for name in SERVICES if name != service)
    offenders = {
        relative(path): sorted(n for n in imported(path) if n.startswith(others))
        for path in modules(f"services/{service}")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_only_the_starters_name_the_services() -> None:
    offenders = {}
    for path in modules("services"):
        name = relative(path)
        if name.startswith(STARTERS) or name.startswith(tuple(f"services/{s}/" for s in SERVICES)):
            continue
        found = sorted(n for n in imported(path) if n.startswith("services."))
        if found:
            offenders[name] = found
    assert offenders == {}


def test_the_booking_domain_knows_nothing_of_http() -> None:
    offenders = {
        relative(path): sorted(n for n in imported(path) if n.startswith(HTTP))
        for path in modules("services/booking/domain")
    }
    assert {path: names for path, names in offenders.items() if names} == {}
    assert len(offenders) >= 10  # the rule was checked on the domain, not on an empty folder


def test_the_rules_would_catch_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from aiohttp import web\nimport services.notifier.app\n")
    assert {"aiohttp", "services.notifier.app"} <= imported(bad)


def _project_imports() -> dict[str, set[str]]:
    """module name → the project modules it imports (at any depth of its code)."""
    graph: dict[str, set[str]] = {}
    for folder in ("services", "shared"):
        for path in modules(folder):
            name = relative(path).removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            graph[name] = set()
    for name in graph:
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        graph[name] = {n for n in imported(path) if n in graph and n != name}
    return graph


def test_no_import_cycles() -> None:
    """A module importing one that imports it back is a knot for whoever changes either (the
    booking app and its pages used to import each other over the templates)."""
    graph = _project_imports()
    cycles: list[list[str]] = []
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node) :] + [node])
            return
        visiting.append(node)
        for child in sorted(graph[node]):
            # A package's own init importing its submodules is how packages are built.
            if not child.startswith(node + "."):
                visit(child)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert cycles == []
