"""The layout rules, read from the source: who may import what.

- ``proto/`` imports no service and no I/O library (nor asyncio, but for the drain's deadline).
- Pure modules (decisions, not I/O) import no I/O library and read no clock or
  randomness, directly or through another first-party module they import.
- No service package imports another.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "router", "offline_store")
IO_LIBRARIES = frozenset({"aio_pika", "aiormq", "websockets", "redis", "asyncpg"})
PROTO_FORBIDDEN = IO_LIBRARIES | {"asyncio"} | set(SERVICES)
PROTO_PROCESS_MODULES = frozenset({"shutdown.py"})
"""proto/ modules that every service process runs rather than a description of the wire (how a
drain ends on SIGTERM): they may use asyncio, never an I/O library or a service."""
PURE_FORBIDDEN = IO_LIBRARIES | {"asyncio", "time", "random", "uuid", "secrets", "os"}
PURE_MODULES = (
    "gateway/session.py",
    "gateway/tokens.py",
    "gateway/fanout.py",
    "gateway/commands.py",
    "gateway/batching.py",
    "gateway/acks.py",
    "gateway/admission.py",
    "router/routing.py",
    "offline_store/replay.py",
)
# Attribute reads that consult the clock even without importing ``time``.
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line, absolute module name)`` for every import in the file."""
    is_package = path.name == "__init__.py"
    source = path.read_text(encoding="utf-8")
    return parse_imports(source, module_name(path), is_package=is_package)


def parse_imports(
    source: str, module: str, *, is_package: bool = False
) -> Iterator[tuple[int, str]]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - (node.level - 1)])
                imported = f"{parent}.{node.module}" if node.module else parent
            else:
                imported = node.module or ""
            yield node.lineno, imported
            # ``from proto import names`` imports the submodule proto.names.
            for alias in node.names:
                yield node.lineno, f"{imported}.{alias.name}"


def top_level(module: str) -> str:
    return module.split(".")[0]


def first_party_file(module: str) -> Path | None:
    if top_level(module) not in ("proto", *SERVICES):
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reachable_imports(path: Path) -> Iterator[tuple[Path, int, str]]:
    """Yield every import of ``path`` and of the first-party modules it reaches."""
    seen: set[Path] = set()
    pending = [path]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for line, module in imported_modules(current):
            yield current, line, module
            target = first_party_file(module)
            if target is not None:
                pending.append(target)


def clock_reads(source: str) -> Iterator[tuple[int, str]]:
    """Yield clock reads such as ``datetime.now()`` and ``date.today()``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in CLOCK_CALLS:
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else None
            if isinstance(owner, ast.Attribute):
                name = owner.attr
            if name in ("datetime", "date"):
                yield node.lineno, f"{name}.{node.attr}"


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("proto"), ids=lambda p: p.name)
def test_proto_imports_no_service_and_no_io(path: Path) -> None:
    forbidden = PROTO_FORBIDDEN
    if path.name in PROTO_PROCESS_MODULES:
        forbidden = forbidden - {"asyncio"}
    offending = [
        f"{where(path, line)} imports {module}"
        for line, module in imported_modules(path)
        if top_level(module) in forbidden
    ]
    assert not offending, "proto/ must stay free of services and I/O:\n" + "\n".join(
        offending
    )


@pytest.mark.parametrize("relative", PURE_MODULES)
def test_pure_module_does_no_io_and_reads_no_clock(relative: str) -> None:
    path = ROOT / relative
    if not path.is_file():
        package = path.parent
        if (package / "app.py").is_file():
            pytest.fail(f"{relative} is missing, but {package.name}/app.py exists")
        pytest.skip(f"{relative} is not written yet")
    offending = [
        f"{where(source, line)} imports {module}"
        for source, line, module in reachable_imports(path)
        if top_level(module) in PURE_FORBIDDEN
    ]
    offending += [
        f"{where(path, line)} reads the clock with {call}"
        for line, call in clock_reads(path.read_text(encoding="utf-8"))
    ]
    assert not offending, (
        f"{relative} must take time, ids and I/O results as arguments:\n"
        + "\n".join(offending)
    )


@pytest.mark.parametrize("service", SERVICES)
def test_service_imports_no_other_service(service: str) -> None:
    others = set(SERVICES) - {service}
    offending = [
        f"{where(path, line)} imports {module}"
        for path in python_files(service)
        for line, module in imported_modules(path)
        if top_level(module) in others
    ]
    assert not offending, (
        f"{service} may import proto, never another service:\n" + "\n".join(offending)
    )


def test_import_reader_resolves_relative_imports() -> None:
    # The checks above are only as good as this reader.
    source = "from . import bus\nfrom .ws import serve\nimport redis.asyncio\n"
    found = [module for _, module in parse_imports(source, "gateway.session")]
    assert "gateway.bus" in found
    assert "gateway.ws" in found
    assert "redis.asyncio" in found
    in_package = [
        m for _, m in parse_imports("from .. import x", "a.b", is_package=True)
    ]
    assert in_package == ["a", "a.x"]


def test_clock_reads_are_found() -> None:
    source = "import datetime\na = datetime.datetime.now()\nb = date.today()\n"
    assert [call for _, call in clock_reads(source)] == ["datetime.now", "date.today"]
