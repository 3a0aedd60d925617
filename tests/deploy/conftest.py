import pytest

from tests.deploy.tools import OVERLAY, Manifest, render


@pytest.fixture(scope="session")
def manifests() -> list[Manifest]:
    """The production overlay, rendered by ``kubectl kustomize``."""
    rendered, _ = render(OVERLAY)
    return rendered
