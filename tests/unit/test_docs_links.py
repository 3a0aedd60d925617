"""The links of the README and the operations guide lead somewhere: each ``(#anchor)`` to a
heading of the same file (GitHub's anchors), each relative path to a file of the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/operations.md")
CODE_BLOCK = re.compile(r"```.*?```", re.DOTALL)
HEADING = re.compile(r"^#+ (.*)$", re.MULTILINE)
ANCHOR_LINK = re.compile(r"\]\(#([^)]+)\)")
FILE_LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)(?:#[^)]*)?\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_anchor_follows_github() -> None:
    assert anchor("RabbitMQ: sizing and supported versions") == (
        "rabbitmq-sizing-and-supported-versions"
    )
    assert anchor("The `switchboard` command") == "the-switchboard-command"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_link_leads_somewhere(document: str) -> None:
    path = ROOT / document
    text = path.read_text(encoding="utf-8")
    anchors = {anchor(h) for h in HEADING.findall(CODE_BLOCK.sub("", text))}
    missing = [f"#{a}" for a in ANCHOR_LINK.findall(text) if a not in anchors]
    missing += [
        target
        for target in FILE_LINK.findall(text)
        if not (path.parent / target).exists()
    ]
    assert not missing, f"{document} links to nothing: {missing}"
