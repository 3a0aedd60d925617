"""Secrets that are public: the placeholders this repository publishes, and what looks like one.

A deployment that starts with one of them accepts tokens anyone can sign; ``env.secret``
refuses them unless the development flag (``SWITCHBOARD_DEVELOPMENT=on``) is set.
"""

PUBLIC_SECRETS = frozenset(
    {
        "switchboard-development-secret-not-for-production",  # Makefile, make run
        "CHANGE-ME-to-at-least-32-random-characters",  # k8s/base/secret.yaml
    }
)
"""Secrets published in this repository: anyone can sign tokens with them."""
MARKERS = ("change-me", "changeme", "change_me", "replace-me", "not-for-production")
"""Words of a placeholder copied instead of replaced (compared in lower case)."""


def is_placeholder(secret: str) -> bool:
    """Whether a secret is public: one of this repository's, or one that says to change it."""
    lowered = secret.lower()
    return secret in PUBLIC_SECRETS or any(marker in lowered for marker in MARKERS)
