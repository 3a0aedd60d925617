"""uv.lock pins every distribution that `make venv` installs, and agrees with pyproject.toml.

A fresh clone (and CI) installs the lock with `uv sync --frozen`, so a library's new release never
changes what a fresh machine gets. These checks read files and the running environment only.
"""

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path


def canonicalize_name(name: str) -> str:
    """The normalised form of a distribution name (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


ROOT = Path(__file__).resolve().parents[2]
LOCK = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
LOCKED = {canonicalize_name(package["name"]): package for package in LOCK["package"]}

EDITABLE = {"switchboard", "switchboard-client"}  # this repository's own two packages


def uv() -> str:
    return str(Path(sys.executable).with_name("uv"))


def test_the_lock_agrees_with_pyproject() -> None:
    result = subprocess.run(
        [uv(), "lock", "--check", "--offline"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        result.stderr + "\nrun `make lock` and commit uv.lock"
    )


def test_every_installed_distribution_is_pinned_by_the_lock() -> None:
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
    }
    assert installed.keys() >= EDITABLE
    for name, version in installed.items():
        assert name in LOCKED, f"{name} {version} is installed but not in uv.lock"
        if name in EDITABLE:
            assert LOCKED[name]["source"].get("editable"), name
        else:
            assert LOCKED[name]["version"] == version, name


def test_the_image_gets_the_lock_and_the_locked_uv() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    (pinned,) = re.findall(r"^RUN pip install uv==(\S+)$", dockerfile, re.MULTILINE)
    assert pinned == LOCKED["uv"]["version"]
    assert "uv.lock" in (ROOT / ".dockerignore").read_text(encoding="utf-8")


def test_known_vulnerable_releases_are_excluded() -> None:
    """aiohttp 3.13.3 fixes CVE-2025-69223 and 3.14.1 fixes CVE-2026-54278."""
    version = tuple(int(part) for part in LOCKED["aiohttp"]["version"].split(".")[:3])
    assert version >= (3, 14, 1)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "aiohttp>=3.14.1,<4" in pyproject["project"]["dependencies"]
