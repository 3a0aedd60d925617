"""k8s/examples/migrate-job.yaml: the Job that runs ``switchboard migrate`` before a release's
offline stores roll, with their settings and their security context, valid for Kubernetes."""

from pathlib import Path

import yaml

from tests.deploy.test_kubernetes import pod_spec, validate
from tests.deploy.tools import K8S, Manifest

JOB = K8S / "examples" / "migrate-job.yaml"


def test_the_job_is_valid_kubernetes(tmp_path: Path) -> None:
    assert validate(yaml.safe_load(JOB.read_text()), tmp_path) is None


def test_the_job_migrates_with_the_offline_stores_settings(
    manifests: list[Manifest],
) -> None:
    job = yaml.safe_load(JOB.read_text())
    assert job["kind"] == "Job"
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["switchboard", "migrate"]
    assert spec["restartPolicy"] == "Never"
    store = pod_spec(manifests, "switchboard-offline-store")
    (store_container,) = store["containers"]
    assert container["envFrom"] == store_container["envFrom"]
    assert container["securityContext"] == store_container["securityContext"]
    assert spec["securityContext"] == store["securityContext"]
