"""Offline validation of the deployment files: docker-compose.yml, the Dockerfile, and yamllint
on every YAML file. The Kustomize overlay is checked in test_kubernetes.py and
test_kubernetes_crds.py, the alerts and the dashboard in test_monitoring.py. Nothing here needs
Docker or a cluster; ``make deploy-tools`` installs ``kubectl`` and ``promtool``, and the dev
dependencies bring check-jsonschema, kubernetes-validate and yamllint. A missing tool fails
these tests: they never skip.
"""

import re
import tomllib

import yaml

from tests.deploy.tools import K8S, ROOT, run, tool

YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 100}, document-start: disable}}"
)


def test_compose_file_validates_against_the_compose_spec() -> None:
    result = run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        ROOT / "docker-compose.yml",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_whole_stack_with_healthchecks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "rabbitmq",
        "redis",
        "postgres",
        "router",
        "offline-store",
        "gateway-1",
        "gateway-2",
    }
    assert services["rabbitmq"]["image"].endswith("-management")
    for name, service in services.items():
        assert "healthcheck" in service, name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy", name
    for gateway in ("gateway-1", "gateway-2"):
        assert services[gateway]["command"] == ["gateway"]
        assert services[gateway]["environment"]["SWITCHBOARD_GATEWAY_ID"] == gateway


def test_dockerfile_runs_as_non_root_from_one_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(
        r"^RUN uv sync --frozen --no-default-groups", dockerfile, re.MULTILINE
    )
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)


def test_dockerfile_copies_every_package_of_the_distribution() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.removesuffix("*") for pattern in patterns}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert packages == copied
    assert {"proto", "runtime"} <= packages


def test_yaml_files_pass_yamllint() -> None:
    files = [
        ROOT / "docker-compose.yml",
        *sorted(K8S.rglob("*.yaml")),
        ROOT / "tests" / "deploy" / "alerts_test.yaml",
    ]
    result = run(tool("yamllint"), "--strict", "-d", YAMLLINT_CONFIG, *files)
    assert result.returncode == 0, result.stdout + result.stderr
