"""Configuration flows downward: front-ends are handed their section, never import it.

ARCHITECTURE.md: a front-end "receives its own config section"; rooms get "never
the config". Only the composition roots (``mediafed.server``, ``mediafed.cli``,
and the worker they build) read :mod:`mediafed.config`, which composes the
front-ends' sections, so no front-end may import it back. Read from the source
(every import statement, also those inside functions and ``TYPE_CHECKING``), not
from what an import happens to load.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import mediafed

ROOT = Path(mediafed.__file__).parent
CONFIG = "mediafed.config"
HANDED_THEIR_SECTION = ("signal", "matrix", "rocketchat", "operator")
"""The front-ends: one per audience."""
BELOW_THE_FRONT_ENDS = ("media", "transport", "wire", "store")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in ROOT.rglob("*.py")}


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module ``path`` names in an import statement, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module
            # `from mediafed import config` imports the module mediafed.config
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _graph() -> dict[str, set[str]]:
    """mediafed's modules and the mediafed modules each one's imports load (packages too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        loaded: set[str] = set()
        for imported in _imports(name, path):
            parts = imported.split(".")
            loaded.update(
                ".".join(parts[:i])
                for i in range(1, len(parts) + 1)
                if ".".join(parts[:i]) in modules
            )
        loaded.discard(name)
        graph[name] = loaded
    return graph


def _in(packages: tuple[str, ...], name: str) -> bool:
    return any(name == f"mediafed.{p}" or name.startswith(f"mediafed.{p}.") for p in packages)


def test_no_front_end_imports_the_configuration() -> None:
    graph = _graph()
    front_ends = [name for name in graph if _in(HANDED_THEIR_SECTION, name)]
    assert "mediafed.signal.livekit.rtc" in front_ends and "mediafed.operator.twirp" in front_ends
    offenders = sorted(name for name in front_ends if CONFIG in graph[name])
    assert offenders == [], (
        f"{', '.join(offenders)} import {CONFIG}; take the section and the values needed "
        "as parameters from mediafed.server instead"
    )


def test_the_room_core_and_below_do_not_import_the_configuration() -> None:
    graph = _graph()
    offenders = sorted(
        name for name in graph if _in(BELOW_THE_FRONT_ENDS, name) and CONFIG in graph[name]
    )
    assert offenders == [], f"{', '.join(offenders)} import {CONFIG}"


def test_the_configuration_is_not_part_of_an_import_cycle() -> None:
    graph = _graph()
    assert "mediafed.matrix.config" in graph[CONFIG]
    assert "mediafed.rocketchat.config" in graph[CONFIG]
    seen: set[str] = set()
    path: dict[str, str] = {}
    stack = [CONFIG]
    while stack:
        name = stack.pop()
        for imported in graph[name]:
            if imported == CONFIG:
                chain = [name]
                while chain[-1] != CONFIG:
                    chain.append(path[chain[-1]])
                cycle = " -> ".join(reversed([CONFIG, *chain]))
                raise AssertionError(f"import cycle: {cycle}")
            if imported not in seen:
                seen.add(imported)
                path[imported] = name
                stack.append(imported)
