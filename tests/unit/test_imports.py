"""The layout rules, read from the source: who may import what.

- ``proto/`` imports no service, not ``runtime``, no I/O library and not asyncio.
- ``runtime/`` imports ``proto`` and third-party libraries, never a service.
- Pure modules (decisions, not I/O) import neither ``runtime`` nor an I/O library, and read no
  clock or randomness, directly or through another first-party module they import.
- No service package imports another, nor defines again what ``runtime/`` defines.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "router", "offline_store")
RUNTIME = "runtime"
FIRST_PARTY = frozenset(
    {
        "proto",
        RUNTIME,
        *SERVICES,
        "switchboard",
        "tests",
        "bench",
        "scripts",
        "switchboard_client",
    }
)
IO_LIBRARIES = frozenset(
    {"aio_pika", "aiormq", "websockets", "redis", "asyncpg", "aiohttp"}
)
PROTO_FORBIDDEN = IO_LIBRARIES | {"asyncio", RUNTIME} | set(SERVICES)
RUNTIME_FORBIDDEN = FIRST_PARTY - {"proto", RUNTIME}
PURE_FORBIDDEN = IO_LIBRARIES | {
    RUNTIME,
    "asyncio",
    "time",
    "random",
    "uuid",
    "secrets",
    "os",
}
PURE_MODULES = (
    "gateway/session.py",
    "gateway/frame_envelopes.py",
    "gateway/effects.py",
    "gateway/decoding.py",
    "gateway/tokens.py",
    "gateway/keyset.py",
    "gateway/credentials.py",
    "gateway/fanout.py",
    "gateway/throttles.py",
    "gateway/commands.py",
    "gateway/coalescing.py",
    "gateway/acks.py",
    "gateway/admission.py",
    "gateway/cursor.py",
    "gateway/sync_split.py",
    "gateway/queries.py",
    "router/inbound.py",
    "router/requests.py",
    "router/results.py",
    "router/lookups.py",
    "router/message_lookups.py",
    "router/answers.py",
    "router/routing.py",
    "router/message_routing.py",
    "router/plan.py",
    "router/limits.py",
    "router/liveness.py",
    "router/debounce.py",
    "router/delivery_items.py",
    "router/publications.py",
    "router/scripts.py",
    "router/groups.py",
    "offline_store/rows.py",
    "offline_store/group_commands.py",
    "offline_store/group_pages.py",
    "router/inbox_items.py",
    "offline_store/numbering.py",
    "offline_store/inbox.py",
    "offline_store/announcements.py",
    "offline_store/acked.py",
    "offline_store/replay.py",
    "offline_store/markers.py",
    "router/receipts.py",
    "offline_store/queries.py",
    "offline_store/migration_plan.py",
    "switchboard/cli.py",
    "offline_store/windows.py",
)
# Attribute reads that consult the clock even without importing ``time``.
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})
REDEFINED_ON_PURPOSE = {
    "count_error": "the gateway counts codes outside its fixed set as `other`",
}
"""Names that a service may define beside ``runtime/``'s, and why."""


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
            # ``from proto import frames`` imports the submodule proto.frames.
            for alias in node.names:
                yield node.lineno, f"{imported}.{alias.name}"


def top_level(module: str) -> str:
    return module.split(".")[0]


def first_party_file(module: str) -> Path | None:
    if top_level(module) not in ("proto", RUNTIME, *SERVICES):
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
    offending = [
        f"{where(path, line)} imports {module}"
        for line, module in imported_modules(path)
        if top_level(module) in PROTO_FORBIDDEN
    ]
    assert not offending, "proto/ must stay free of services and I/O:\n" + "\n".join(
        offending
    )


@pytest.mark.parametrize("path", python_files(RUNTIME), ids=lambda p: p.name)
def test_runtime_imports_only_proto_and_libraries(path: Path) -> None:
    offending = [
        f"{where(path, line)} imports {module}"
        for line, module in imported_modules(path)
        if top_level(module) in RUNTIME_FORBIDDEN
    ]
    assert not offending, (
        "runtime/ may import proto and libraries, never a service:\n"
        + "\n".join(offending)
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


def defined_names(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line, name)`` for every class and function defined at the module's top."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.lineno, node.name


@pytest.mark.parametrize("service", SERVICES)
def test_service_defines_nothing_the_runtime_defines(service: str) -> None:
    shared = {
        name
        for path in python_files(RUNTIME)
        for _, name in defined_names(path)
        if not name.startswith("_")
    } - set(REDEFINED_ON_PURPOSE)
    offending = [
        f"{where(path, line)} defines {name}, which runtime/ has"
        for path in python_files(service)
        for line, name in defined_names(path)
        if name in shared
    ]
    assert not offending, (
        f"{service} must use runtime/, not a copy of it:\n" + "\n".join(offending)
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
